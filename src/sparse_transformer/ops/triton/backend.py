"""The "triton" backend: fused sparse attention kernels behind ``sparse_attention``.

``triton_attention`` takes the same arguments and returns the same thing as every backend. It
derives ``TritonPlan``s from the pattern (cached by pattern, length, heads, causality, device and
tile size; the forward, dq and dk/dv kernels may each use their own tile size, see ``TUNING``)
and runs the kernels of ``kernels.py``. Every cache here is bounded (``CACHE_SIZES``, least
recently used entries go first): an eager call keeps its plans in its autograd context, and the
custom ops rebuild a plan evicted since their forward from the pattern's token.

* in eager calls through an ``autograd.Function``, launching Triton's compiled kernels directly
  after the first call, because per-call argument binding dominates small problems (each call
  signature's launches are laid out once, ``_Launch``);
* inside ``torch.compile`` through two registered custom ops (``sparse_transformer::
  triton_sparse_fwd`` / ``..._bwd``) with autograd wired through ``register_autograd``. The ops
  name the pattern by its token (``Pattern.token``) and look the plan up (or rebuild it) when
  they run, so graphs hold no pattern object and symbolic lengths need no specialising.

Inputs: float16, bfloat16 or float32 (float32 uses exact float32 dots, not tf32), head_dim 1..128
(dims that are not 16, 32, 64 or 128 are padded inside the kernel by masked loads), on a CUDA
device, or on the CPU when Triton's interpreter is on (``TRITON_INTERPRET=1``, for CI).
Importing this module never needs CUDA or Triton; ``is_available()`` says whether it can run.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

import torch

from ...patterns import Pattern
from ...patterns.base import by_token
from ..cache import LRUCache
from . import tuning
from .plan import RUN, Pass, TritonPlan, build_plan, dkdv_schedule, split_rows

MAX_HEAD_DIM = 128
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Entries each module cache keeps. Plans hold device tensors that grow with the computed tile
# pairs (a few MB at n = 64K); a model uses one plan set per (pattern, length) it runs, and a
# benchmark sweep a few dozen. Compiled launches are small handles, one per kernel
# specialisation; placeholder passes one per device.
CACHE_SIZES = {"plans": 64, "plan_sets": 64, "launches": 512, "empty_passes": 16,
               "layouts": 128}
_PLANS: LRUCache = LRUCache(CACHE_SIZES["plans"])  # key string -> TritonPlan


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def is_available(device: torch.device | str | None = None) -> bool:
    """True when the kernels can run on ``device`` (CUDA, or CPU under the interpreter)."""
    if not triton_importable():
        return False
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type == "cuda":
        return torch.cuda.is_available() or (dev is None and interpreting())
    return dev.type == "cpu" and interpreting()


_KERNELS = []


def _kernels():
    """The kernels module (imported on first use: importing this file never needs Triton)."""
    if not _KERNELS:
        from . import kernels

        _KERNELS.append(kernels)
    return _KERNELS[0]


def default_block(device: torch.device) -> int:
    """Tile size: 64 on GPUs; 16 under the interpreter, so small tests still span many tiles."""
    return 16 if device.type == "cpu" else 64


def check_inputs(q: torch.Tensor) -> None:
    check_tensor(q)
    if not triton_importable():
        raise RuntimeError("the triton backend needs the 'triton' package (pip install triton)")
    if q.device.type == "cpu" and not interpreting():
        raise ValueError("the triton backend runs on CUDA tensors, or on CPU tensors only with "
                         f"TRITON_INTERPRET=1; got q on {q.device}")


def check_tensor(q: torch.Tensor) -> None:
    """The checks that only read tensor metadata (torch.compile traces them without a break)."""
    if q.dtype not in DTYPES:
        raise ValueError(f"the triton backend takes q, k, v in float16, bfloat16 or float32, "
                         f"got {q.dtype}")
    d = q.shape[-1]
    if d > MAX_HEAD_DIM:
        raise ValueError(f"the triton backend supports head_dim <= {MAX_HEAD_DIM} (32, 64 and 128 "
                         f"natively, others padded), got head_dim={d}")
    if q.device.type not in ("cpu", "cuda"):
        raise ValueError(f"the triton backend runs on CUDA devices, got q on {q.device}")


def get_plan(pattern: Pattern, n: int, heads: int, causal: bool, device, block: int | None = None):
    """(key, plan) for this problem, the key naming it by value (built on a miss)."""
    device = _canonical(device)
    block = default_block(device) if block is None else block
    key = f"{pattern!r}|n={n}|h={heads}|causal={causal}|{device}|block={block}"
    plan = _PLANS.get(key)
    if plan is None:
        plan = build_plan(pattern, n, heads, causal, device, block)
        _PLANS[key] = plan
    return key, plan


def _canonical(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


# Default launch settings per kernel role: tile size (None: ``default_block``), warps and
# pipeline stages (the stages Triton's software pipeliner gives the affine loop over a run's full
# tiles), from ``tuning.json``, which says how they were measured. Settings measured per
# (pattern kind, head dim, dtype) in that table take precedence (``ops/triton/tuning.py``).
# Benchmarks may change these at run time.
TUNING = tuning.DEFAULT
# Computed (tile pair x batch x head) count under which dq and dk/dv share a launch: fusing saves
# host time on small problems (strided and local at n = 4096, H = 16: about 5,000) and costs GPU
# time on larger ones (strided at 16384: 0.91 ms fused against 0.83 ms apart, H100).
FUSE_BWD_BELOW = 10_000
# The one-pass backward: the dk/dv programs also compute dq and add it to a float32 buffer with
# atomic adds, so no dq pass recomputes the scores (five matmuls per computed tile pair instead of
# seven). The order of the additions varies, so results are not bit-for-bit repeatable.
# "auto" (the default) takes it where it was measured faster: plans of several passes (strided's
# two tilings: 6-20% less forward+backward time on an H100 at n = 16K and 64K, d = 64), and not
# single-pass plans (fixed 7-10% slower, local 1-3% slower; docs/benchmarks.md). True: always;
# False: never (deterministic). ``torch.use_deterministic_algorithms(True)`` also turns it off.
# ``SPARSE_TRANSFORMER_ATOMIC_DQ`` = auto | 1 | 0 sets it for a run. Small fused backwards
# (``FUSE_BWD_BELOW``) keep their two roles.
ATOMIC_DQ: "bool | str" = {"1": True, "0": False}.get(
    os.environ.get("SPARSE_TRANSFORMER_ATOMIC_DQ", "auto"), "auto")


# The order the GPU starts a launch's programs in (``kernels._ids``): head after head, each head's
# programs most work first; or the heads interleaved, so that every head's longest programs
# start first. "auto" (the default): forward and dq launches head after head, each dk/dv launch
# as ``plan.dkdv_schedule`` decides from its rows (interleaved where rows are uneven, as fixed's
# summary columns are). On an H100 (docs/benchmarks.md, "Launch order and split rows") that took
# fixed's forward+backward at 16K from 2.49 to 2.32 ms (d = 64) and 2.26 to 1.96 ms (d = 128),
# while interleaving every launch made fixed's forward 16% slower (L2 locality) and strided's
# forward+backward 7% slower.
# ``SPARSE_TRANSFORMER_HEADS_FAST`` = auto | 1 | 0 sets it for a run (1: every launch).
def _heads_fast_setting(text: str) -> "bool | str":
    text = text.strip().lower()
    if text in ("auto", "1", "0"):
        return {"1": True, "0": False}.get(text, "auto")
    raise ValueError(f"SPARSE_TRANSFORMER_HEADS_FAST must be 'auto', '1' or '0', got {text!r}")


HEADS_FAST: "bool | str" = _heads_fast_setting(
    os.environ.get("SPARSE_TRANSFORMER_HEADS_FAST", "auto"))


# dk/dv rows of more than this many tile pairs run as several programs (``plan.split_rows``),
# whose float32 partial sums the last one to finish adds up and writes. A key every query sees
# (a global position) otherwise makes one program loop over the whole sequence while the rest of
# the launch has finished: longformer's and bigbird's backward at 16K took half the time split
# (H100, docs/benchmarks.md). "auto" (the default): rows are split where the longest is more than
# twice a balanced slot's work (``plan.dkdv_schedule``), at ``plan.auto_split_cap``; None: rows
# stay whole. ``SPARSE_TRANSFORMER_SPLIT_ROWS`` = N | auto sets it for a run (0: off; N: every
# row longer than N). Split results vary in the last bits from run to run (additions in any
# order), so ``torch.use_deterministic_algorithms(True)`` turns splitting off.
def _split_setting(text: str) -> "int | str | None":
    text = text.strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text) or None
    raise ValueError(f"SPARSE_TRANSFORMER_SPLIT_ROWS must be 'auto' or an integer >= 0 (0: off), "
                     f"got {text!r}")


SPLIT_ROWS_ABOVE: "int | str | None" = _split_setting(
    os.environ.get("SPARSE_TRANSFORMER_SPLIT_ROWS", "auto"))


def _dkdv_schedule(kp: Pass, batch_heads: int, device) -> "tuple[int | None, bool]":
    """(``split_rows`` cap or None, heads interleaved) for this dk/dv launch."""
    split = SPLIT_ROWS_ABOVE is not None and not torch.are_deterministic_algorithms_enabled()
    sms = (torch.cuda.get_device_properties(device).multi_processor_count
           if device.type == "cuda" else 4)
    cap, fast = dkdv_schedule(kp, batch_heads, 2 * sms,  # 2 dk/dv programs per SM (ncu, H100)
                              split=split and SPLIT_ROWS_ABOVE == "auto",
                              interleave=HEADS_FAST == "auto")
    if split and SPLIT_ROWS_ABOVE != "auto":
        cap = SPLIT_ROWS_ABOVE
    if HEADS_FAST != "auto":
        fast = HEADS_FAST
    return cap, fast


# Tensor-descriptor (TMA) loads per kernel role (``kernels._descs``): a pass whose runs are all
# contiguous tiles reads them through descriptors made once per program instead of per-thread
# pointers. Hopper and later, 16-bit inputs whose rows start on 16-byte boundaries. "auto" (the
# default): the roles in ``TMA_AUTO_ROLES`` on GPUs of compute capability 9 or more, none
# elsewhere. ``SPARSE_TRANSFORMER_TMA`` = auto | 0 | all | a comma list of fwd, dq, dkdv sets it
# for a run; named roles apply under Triton's interpreter too (how CI tests them).
# ``TMA_AUTO_ROLES`` is empty: the descriptor kernels compile for sm_90 (Triton 3.6: the forward
# at 127 registers against 140, dk/dv at 217 against 255; ``benchmarks/kernel_resources.py
# --tma``) and match the reference under the interpreter, but have not yet run on a GPU, so no
# role takes them unasked. ``benchmarks/tma.py`` measures them against the pointer loads.
TMA_ROLES = ("fwd", "dq", "dkdv")
TMA_AUTO_ROLES: frozenset = frozenset()


def _tma_setting(text: str) -> "frozenset | str":
    text = text.strip().lower()
    if text == "auto":
        return "auto"
    if text in ("0", "none"):
        return frozenset()
    if text in ("1", "all"):
        return frozenset(TMA_ROLES)
    roles = frozenset(r.strip() for r in text.split(",") if r.strip())
    bad = sorted(roles - set(TMA_ROLES))
    if bad or not roles:
        raise ValueError(f"SPARSE_TRANSFORMER_TMA must be 'auto', '0', 'all' or a comma list of "
                         f"{', '.join(TMA_ROLES)}; got {text!r}")
    return roles


TMA: "frozenset | str" = _tma_setting(os.environ.get("SPARSE_TRANSFORMER_TMA", "auto"))


def _tma_roles(device: torch.device) -> frozenset:
    if TMA != "auto":
        return TMA
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 9:
        return frozenset()
    return TMA_AUTO_ROLES


def _tma_ok(role: str, roles: frozenset, ps: Pass, dtype, d: int, aligned: bool,
            *strides) -> bool:
    """Whether ``role``'s launch of pass ``ps`` may read through tensor descriptors: the role is
    on, the inputs are 16-bit and their rows start on 16-byte boundaries (``aligned``: the
    call's pointers; ``strides``: every stride of the tensors read, in elements), and every run
    of the pass is contiguous."""
    return (role in roles and aligned and dtype in (torch.float16, torch.bfloat16)
            and d % 8 == 0 and all(st % 8 == 0 for st in strides) and ps.contiguous_runs)


def _tma_alloc(size: int, alignment: int, stream) -> torch.Tensor:
    """Global scratch for the descriptors a launch makes on the device (128 bytes a program)."""
    return torch.empty(size, dtype=torch.int8, device=torch.cuda.current_device())


def _aligned(*tensors) -> bool:
    bits = 0
    for t in tensors:
        bits |= t.data_ptr()
    return not bits & 15


def _atomic_dq(qplan: TritonPlan) -> bool:
    if torch.are_deterministic_algorithms_enabled() or ATOMIC_DQ is False:
        return False
    return ATOMIC_DQ is True or len(qplan.fwd) > 1


def _settings(role: str, kind: str, head_dim: int | None, dtype) -> dict:
    """The launch settings of ``role`` for this case: the tuning table's entry, else
    ``TUNING``'s defaults (``head_dim`` None: the defaults)."""
    e = tuning.entry(role, kind, head_dim, dtype) if head_dim is not None else None
    return TUNING[role] if e is None else e


def _role_block(role: str, device: torch.device, block: int | None, kind: str = "",
                head_dim: int | None = None, dtype=None) -> int:
    if block is not None:
        return block
    b = _settings(role, kind, head_dim, dtype)["block"]
    return default_block(device) if b is None or device.type == "cpu" else b


def plan_set(pattern: Pattern, n: int, heads: int, causal: bool, device,
             block: int | None = None, head_dim: int | None = None,
             dtype=None) -> tuple[TritonPlan, TritonPlan, TritonPlan]:
    """The (forward, dq, dk/dv) plans; each role may use its own tile size (tuned per pattern
    kind, ``head_dim`` and ``dtype``, see ``tuning.py``). Built on a miss, so a caller may always
    ask again (an evicted set is rebuilt, equal to the first)."""
    kind = type(pattern).__name__
    if head_dim is not None and tuning.INDEX and tuning.USE_TABLE:
        blocks = tuple(_settings(r, kind, head_dim, dtype)["block"] for r in ("fwd", "dq", "dkdv"))
    else:  # no table entries (today's packaged table): the defaults, without a lookup
        blocks = (TUNING["fwd"]["block"], TUNING["dq"]["block"], TUNING["dkdv"]["block"])
    fast = (pattern, n, heads, causal, device, block, blocks)
    plans = _PLAN_SETS.get(fast)
    if plans is not None:
        return plans
    dev = _canonical(device)
    plans = tuple(get_plan(pattern, n, heads, causal, dev,
                           _role_block(r, dev, block, kind, head_dim, dtype))[1]
                  for r in ("fwd", "dq", "dkdv"))
    if not (dev.type == "cuda" and torch.device(device).index is None):  # "cuda" follows the
        _PLAN_SETS[fast] = plans                                           # current device
    return plans


def prepare(pattern: Pattern, n: int, heads: int, causal: bool, device,
            head_dim: int | None = None) -> None:
    """Allocate now every device tensor a call for this problem keeps (its plans, the fused
    backward's placeholder pass): inside a CUDA-graph capture, tensors allocated and kept past
    the capture would belong to the graph's private memory pool. With ``head_dim``, the plans
    of both dtype classes (their tuned tile sizes may differ)."""
    for dtype in ((None,) if head_dim is None else (torch.bfloat16, torch.float32)):
        plan_set(pattern, n, heads, causal, device, head_dim=head_dim, dtype=dtype)
    _empty_pass(_canonical(device))


# (pattern, n, heads, causal, device, block, role blocks) -> (forward, dq, dk/dv) plans
_PLAN_SETS: LRUCache = LRUCache(CACHE_SIZES["plan_sets"])


def _launch_opts(role: str, device: torch.device, kind: str = "", head_dim: int | None = None,
                 dtype=None) -> tuple:
    """Launch options of a kernel role as (name, value) pairs (none under the interpreter)."""
    if device.type == "cpu":
        return ()
    t = _settings(role, kind, head_dim, dtype)
    opts = (("num_warps", t["num_warps"]), ("num_stages", t["num_stages"]))
    if t.get("maxnreg"):  # a cap on registers per thread (more programs per SM, some spills)
        opts += (("maxnreg", int(t["maxnreg"])),)
    return opts


def _dot_prec(dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _strides(q, k, v) -> tuple:
    """The batch, head and position strides of q, k and v, as every kernel takes them."""
    sq, sk, sv = q.stride(), k.stride(), v.stride()
    return sq[:3] + sk[:3] + sv[:3]


INT32_LIMIT = 2**31 - 1


def _needs_i64(shape, strides: tuple, block: int) -> bool:
    """Whether an element offset a kernel forms can pass 2**31: in q, k or v at their strides
    (``strides`` as ``_strides`` gives them; positions run up to a tile past n), or in the
    (B, H, n, d) outputs and float32 scratch. The kernels then do their position and row
    arithmetic in 64 bits (a constexpr: no cost below). A bound, from the largest stride of each
    dimension: a few multiplications a call."""
    b, h, n, d = shape
    far = ((b - 1) * max(strides[0::3]) + (h - 1) * max(strides[1::3])
           + (n + block) * max(strides[2::3]) + d)
    return max(far, b * h * (n + block) * d) > INT32_LIMIT


def _tile_consts(plan: TritonPlan, d: int) -> tuple:
    """(HP_MUL, BLOCK, BLOCK_D): whether the plan has a pattern per head, its tile size, and the
    head dim padded to a power of two (at least 16)."""
    return (1 if plan.heads > 1 else 0, plan.block, tuning.head_dim_class(d))


# -- launch layouts ---------------------------------------------------------------------------
# A call's launches depend on its plans, shapes, strides, dtypes, flags and the launch settings,
# not on its tensors' contents: each is described once per call signature, every kernel argument
# given by name (checked against the kernel's own names), and kept as a ``_Launch``. A call then
# allocates its outputs, fills the per-call slots (its tensors and the softmax scale) and
# launches: no strides, flags, cache keys or launch options are worked out again.
class _Slot(str):
    """A per-call argument of a launch layout: the name of a value the call supplies."""

    __slots__ = ()


def _strided(prefix: str, strides) -> dict:
    """Batch, head and position strides as the kernels name them (``sq`` -> sqb, sqh, sqn)."""
    return {prefix + "b": strides[0], prefix + "h": strides[1], prefix + "n": strides[2]}


def _contiguous_strides(b: int, h: int, n: int, d: int) -> tuple:
    return (h * n * d, n * d, d)


class _Launch:
    """One kernel launch of a layout: grid, launch options and the arguments in the kernel's
    order, per-call ones as slots. The compiled kernel is kept after the first launch whose
    per-call tensors are 16-byte aligned (what Triton specialises tensors on; every other
    argument is fixed here) and called directly from then on."""

    __slots__ = ("kernel", "grid", "opts", "args", "slots", "compiled", "tma")

    def __init__(self, kernel, grid: tuple, opts: tuple, named: dict):
        names = list(kernel.arg_names)
        if set(named) != set(names):
            missing = [a for a in names if a not in named]
            unknown = [a for a in named if a not in names]
            raise TypeError(f"{getattr(kernel, '__name__', kernel)}: arguments missing {missing}, "
                            f"unknown {unknown}")
        self.kernel, self.opts = kernel, opts
        self.grid = (grid[0], grid[1] if len(grid) > 1 else 1, 1)
        self.args = [named[a] for a in names]
        self.slots = tuple((i, a) for i, a in enumerate(self.args) if isinstance(a, _Slot))
        self.compiled = None
        self.tma = bool(named.get("TMA", False))

    def bind(self, values: dict) -> list:
        args = self.args.copy()
        for i, name in self.slots:
            args[i] = values[name]
        return args

    def run(self, values: dict, fast: bool) -> None:
        """Launch with the call's ``values``; ``fast``: direct launches are on and the call's
        tensors are aligned."""
        args = self.bind(values)
        if self.tma:  # descriptors made on the device need Triton's scratch allocator, which is
            # per thread (the backward may run on autograd's device thread)
            import triton
            triton.set_allocator(_tma_alloc)
        if fast and FAST_LAUNCH:
            compiled = self.compiled
            if compiled is None:
                compiled = _COMPILED.get(self._key(args))
            if compiled is not None:
                try:
                    compiled[self.grid](*args)
                    self.compiled = compiled
                    return
                except (TypeError, AttributeError):  # a Triton whose compiled-kernel call differs
                    _COMPILED.clear()
                    globals()["FAST_LAUNCH"] = False
        compiled = self.kernel[self.grid](*args, **dict(self.opts))
        if fast and FAST_LAUNCH and hasattr(compiled, "__getitem__") and hasattr(compiled, "run"):
            _COMPILED[self._key(args)] = compiled
            self.compiled = compiled

    def _key(self, args: list) -> tuple:
        """The shared launch key of these arguments (``_launch_key``; floats stay out)."""
        tensors = tuple(a for a in args if isinstance(a, torch.Tensor))
        ints = tuple(a for a in args if not isinstance(a, (torch.Tensor, float)))
        return _launch_key(self.kernel, self.opts, tensors, ints)


def _fast(*tensors) -> bool:
    """Direct launches may serve this call: on a GPU, every per-call tensor 16-byte aligned."""
    if not FAST_LAUNCH or interpreting():
        return False
    bits = 0
    for t in tensors:
        bits |= t.data_ptr()
    return not bits & 15


class _FwdLayout:
    __slots__ = ("plan", "scratch", "launches")

    def __init__(self, plan, scratch: bool, launches: list):
        self.plan, self.scratch, self.launches = plan, scratch, launches


def _fwd_layout(plan: TritonPlan, q, k, v, has_kpm: bool, aligned: bool) -> _FwdLayout:
    kern = _kernels()
    b, h, n, d = q.shape
    roles = _tma_roles(q.device)
    out_strides, scratch_strides = (n * h * d, d, h * d), _contiguous_strides(b, h, n, d)
    strides = _strides(q, k, v)
    hp_mul, block, block_d = _tile_consts(plan, d)
    common = dict(Q=_Slot("q"), K=_Slot("k"), V=_Slot("v"), LSE=_Slot("lse"),
                  SEED_O=_Slot("scratch"), SEED_LSE=_Slot("lse"), KPM=_Slot("kpm"),
                  MASKS=plan.masks, qk_scale=_Slot("qk_scale"),
                  **_strided("sq", strides[0:3]), **_strided("sk", strides[3:6]),
                  **_strided("sv", strides[6:9]), H=h, N=n, D=d, HP_MUL=hp_mul, BLOCK=block,
                  BLOCK_D=block_d, HAS_KPM=has_kpm, DOT_PREC=_dot_prec(q.dtype),
                  I64=_needs_i64(q.shape, strides + out_strides, plan.block),
                  HEADS_FAST=HEADS_FAST is True)
    opts = _launch_opts("fwd", q.device, plan.kind, d, q.dtype)
    launches = []
    for i, ps in enumerate(plan.fwd):
        last = i == len(plan.fwd) - 1
        launches.append(_Launch(kern._fwd_kernel, (ps.num_tiles, b * h), opts, dict(
            common, O=_Slot("out" if last else "scratch"), TILES=ps.tiles, ORDER=ps.order,
            ROWPTR=ps.rowptr, ENT=ps.entries, T=ps.num_tiles, E=ps.entries.shape[1],
            HAS_SEED=i > 0, **_strided("so", out_strides if last else scratch_strides),
            NMASK=plan.masks.shape[0],
            TMA=_tma_ok("fwd", roles, ps, q.dtype, d, aligned, *strides[3:9]))))
    return _FwdLayout(plan, len(plan.fwd) > 1, launches)


# call signature -> layout (each holds its plan, so an id in the key is never reused wrongly)
_LAYOUTS: LRUCache = LRUCache(CACHE_SIZES["layouts"])


def _forward(q, k, v, kpm, plan: TritonPlan, scale: float):
    """(out, lse). out is a (B, H, n, d) view of a token-major (B, n, H, d) tensor (as flash
    attention lays its output out), so that merging the heads
    (``out.transpose(1, 2).reshape(B, n, H * d)``) is a view, not a copy, and the gradient that
    comes back through it is read where it lies."""
    b, h, n, d = q.shape
    sig = ("fwd", id(plan), q.shape, q.stride(), k.stride(), v.stride(), q.dtype, k.dtype,
           v.dtype, q.device, kpm is not None, tuning.GENERATION, tuning.USE_TABLE, HEADS_FAST,
           TMA, _aligned(k, v))
    layout = _LAYOUTS.get(sig)
    if layout is None or layout.plan is not plan:
        layout = _LAYOUTS[sig] = _fwd_layout(plan, q, k, v, kpm is not None, sig[-1])
    out = torch.empty_strided((b, h, n, d), (n * h * d, d, h * d, 1), dtype=q.dtype,
                              device=q.device)
    lse = torch.empty(b, h, n, dtype=torch.float32, device=q.device)
    kpm_t = lse if kpm is None else kpm.contiguous().view(torch.uint8)
    scratch = (torch.empty(b, h, n, d, dtype=torch.float32, device=q.device) if layout.scratch
               else out)
    values = dict(q=q, k=k, v=v, out=out, lse=lse, scratch=scratch, kpm=kpm_t,
                  qk_scale=scale * _kernels().LOG2E)
    fast = _fast(q, k, v, kpm_t)
    for launch_ in layout.launches:
        launch_.run(values, fast)
    return out, lse


class _BwdLayout:
    __slots__ = ("plans", "kv_zero", "acc_kv", "acc_zero", "atomic", "acc_q", "launches",
                 "splits")

    def __init__(self, plans, **fields):
        self.plans = plans
        for name, value in fields.items():
            setattr(self, name, value)


def _bwd_layout(plans, q, k, v, out, dout, grads, has_dlse: bool, has_kpm: bool,
                kv_aligned: bool = False, qdo_aligned: bool = False) -> _BwdLayout:
    """The backward's launches: delta, then dq over the dq plan's query-major passes and dk/dv
    over the dk/dv plan's key-major passes (or both in one launch per pass, or dq added up
    atomically by the dk/dv programs), with what the call must allocate."""
    kern = _kernels()
    b, h, n, d = q.shape
    dev = q.device
    _, qplan, kplan = plans
    kind = qplan.kind
    roles = _tma_roles(dev)
    cont = _contiguous_strides(b, h, n, d)
    strides = _strides(q, k, v)
    do_strides = dout.stride()[:3]
    g_strides = tuple(g.stride()[:3] for g in grads) if grads is not None else (cont,) * 3
    i64 = _needs_i64(q.shape, strides + _strides(out, dout, dout) + sum(g_strides, ()),
                     max(qplan.block, kplan.block))
    launches = [_Launch(kern._delta_kernel, (triton_cdiv(b * h * n, 64),), (), dict(
        O=_Slot("out"), DO=_Slot("dout"), DLSE=_Slot("dlse"), DELTA=_Slot("delta"),
        **_strided("so", out.stride()), **_strided("sd", do_strides), total=b * h * n, H=h,
        N=n, D=d, HAS_DLSE=has_dlse, ROWS=64, BLOCK_D=tuning.head_dim_class(d), I64=i64))]
    qpasses, kpasses = qplan.fwd, kplan.bwd
    single = len(kpasses) == 1
    # Small problems are bound by launches: dq and dk/dv share one launch per pass when both
    # roles use the same plan. Large ones run them as two kernels, each compiled for its role.
    fuse = (qplan is kplan and FUSE_BWD_BELOW is not None
            and qplan.tiles_computed * b * h < FUSE_BWD_BELOW)
    atomic = not fuse and _atomic_dq(qplan)
    if atomic:  # dq from the key-major passes alone, added up in float32
        qpasses = ()
    common = dict(Q=_Slot("q"), K=_Slot("k"), V=_Slot("v"), DO=_Slot("dout"), LSE=_Slot("lse"),
                  DELTA=_Slot("delta"), KPM=_Slot("kpm"), MASKS=qplan.masks,
                  qk_scale=_Slot("qk_scale"), sm_scale=_Slot("sm_scale"),
                  **_strided("sq", strides[0:3]), **_strided("sk", strides[3:6]),
                  **_strided("sv", strides[6:9]), **_strided("sd", do_strides), H=h, N=n, D=d,
                  BLOCK_D=tuning.head_dim_class(d), HAS_KPM=has_kpm,
                  DOT_PREC=_dot_prec(q.dtype), I64=i64, HEADS_FAST=HEADS_FAST is True)
    empty = _empty_pass(dev)
    splits = []  # (slot name prefix, slots S, tile size) of each launch with split rows
    for i in range(max(len(qpasses), len(kpasses))):
        qp = qpasses[i] if i < len(qpasses) else None
        kp = kpasses[i] if i < len(kpasses) else None
        qlast, klast = i == len(qpasses) - 1, i == len(kpasses) - 1
        tq = qp.num_tiles if qp is not None else 0
        tk = kp.num_tiles if kp is not None else 0
        # dk/dv: the last pass covers every key and writes the result; earlier passes
        # accumulate in float32 scratch, which starts from zeros unless the first pass covers
        # every key itself.
        kv_seed = not single and (i > 0 or not kpasses[0].covers_all)
        dq_dst = "dq" if qlast else "acc_q"
        dq_st = g_strides[0] if qlast else cont  # float32 accumulators are contiguous
        k_dst, v_dst = ("dk", "dv") if klast else ("acc_k", "acc_v")
        k_st, v_st = (g_strides[1], g_strides[2]) if klast else (cont, cont)
        q_side = dict(DQ=_Slot(dq_dst), SEED_DQ=_Slot("acc_q"), **_strided("sg", dq_st))
        k_side = dict(DK=_Slot(k_dst), DV=_Slot(v_dst), SEED_DK=_Slot("acc_k"),
                      SEED_DV=_Slot("acc_v"), **_strided("sgk", k_st), **_strided("sgv", v_st))
        hp_mul, block, _ = _tile_consts(qplan, d)
        if fuse:
            qp_, kp_ = qp or empty, kp or empty
            launches.append(_Launch(kern._bwd_kernel, (tq + tk, b * h),
                                    _launch_opts("dq", dev, kind, d, q.dtype), dict(
                common, **q_side, **k_side, QTILES=qp_.tiles, QORDER=qp_.order,
                QROWPTR=qp_.rowptr, QENT=qp_.entries, KTILES=kp_.tiles, KORDER=kp_.order,
                KROWPTR=kp_.rowptr, KENT=kp_.entries, TQ=tq, EQ=qp_.entries.shape[1], TK=tk,
                EK=kp_.entries.shape[1], HP_MUL=hp_mul, BLOCK=block, DQ_SEED=i > 0,
                KV_SEED=kv_seed)))
            continue
        if qp is not None:
            launches.append(_Launch(kern._dq_kernel, (tq, b * h),
                                    _launch_opts("dq", dev, kind, d, q.dtype), dict(
                common, **q_side, TILES=qp.tiles, ORDER=qp.order, ROWPTR=qp.rowptr,
                ENT=qp.entries, T=tq, E=qp.entries.shape[1], HP_MUL=hp_mul, BLOCK=block,
                HAS_SEED=i > 0, NMASK=qplan.masks.shape[0],
                TMA=_tma_ok("dq", roles, qp, q.dtype, d, kv_aligned, *strides[3:9]))))
        if kp is not None:
            k_mul, k_block, _ = _tile_consts(kplan, d)
            cap, fast = _dkdv_schedule(kp, b * h, dev)
            tma = (kplan.masks_kt is not None and not atomic
                   and _tma_ok("dkdv", roles, kp, q.dtype, d, qdo_aligned, *strides[0:3],
                               *do_strides))
            sp = split_rows(kp, cap) if cap is not None else None
            if sp is not None:
                kp, tk = sp, sp.num_tiles
                name = f"split{i}"
                splits.append((name, int(sp.parts.numel()), k_block))
                split_args = dict(SPLIT=sp.split, PARTS=sp.parts, DKS=_Slot(name + "_k"),
                                  DVS=_Slot(name + "_v"), CNT=_Slot(name + "_n"),
                                  S=int(sp.parts.numel()), HAS_SPLIT=True)
            else:
                split_args = dict(SPLIT=kp.order, PARTS=kp.order, DKS=_Slot("delta"),
                                  DVS=_Slot("delta"), CNT=kp.order, S=0, HAS_SPLIT=False)
            launches.append(_Launch(kern._dkdv_kernel, (tk, b * h),
                                    _launch_opts("dkdv", dev, kind, d, q.dtype), dict(
                common, **k_side, **split_args, MASKS=kplan.masks_kt if tma else kplan.masks,
                DQACC=_Slot("dq_acc"), TILES=kp.tiles, ORDER=kp.order, ROWPTR=kp.rowptr,
                ENT=kp.entries, T=tk, E=kp.entries.shape[1], HP_MUL=k_mul, BLOCK=k_block,
                HAS_SEED=kv_seed, ATOMIC_DQ=atomic, HEADS_FAST=fast,
                NMASK=kplan.masks.shape[0], TMA=tma)))
    return _BwdLayout(plans, kv_zero=not kpasses[-1].covers_all, acc_kv=not single,
                      acc_zero=not kpasses[0].covers_all, atomic=atomic,
                      acc_q=len(qpasses) > 1, launches=launches, splits=tuple(splits))


def _backward(dout, dlse, q, k, v, out, lse, kpm, plans, scale: float, grads=None):
    """dq, dk, dv (see ``_bwd_layout``). ``grads``: (dq, dk, dv) to write into, of q's shape at
    any strides (views of one packed gradient); by default new contiguous tensors."""
    if dout.stride(-1) != 1:  # the kernels read dO at any batch, head and position strides
        dout = dout.contiguous()
    dlse = dlse.float().contiguous() if dlse is not None else None
    sig = ("bwd", id(plans[1]), id(plans[2]), q.shape, q.stride(), k.stride(), v.stride(),
           out.stride(), dout.stride(), q.dtype, k.dtype, v.dtype, dout.dtype, q.device,
           dlse is not None, kpm is not None,
           None if grads is None else tuple((g.stride(), g.dtype) for g in grads),
           FUSE_BWD_BELOW, ATOMIC_DQ, torch.are_deterministic_algorithms_enabled(),
           tuning.GENERATION, tuning.USE_TABLE, HEADS_FAST, SPLIT_ROWS_ABOVE, TMA,
           _aligned(k, v), _aligned(q, dout))
    layout = _LAYOUTS.get(sig)
    if layout is None or layout.plans[1] is not plans[1] or layout.plans[2] is not plans[2]:
        layout = _LAYOUTS[sig] = _bwd_layout(plans, q, k, v, out, dout, grads,
                                             dlse is not None, kpm is not None, sig[-2], sig[-1])
    b, h, n, d = q.shape
    dev = q.device
    f32 = torch.float32
    delta = torch.empty(b, h, n, dtype=f32, device=dev)
    if grads is not None:
        dq, dk, dv = grads
        if layout.kv_zero:
            dk.zero_()
            dv.zero_()
    else:
        alloc = torch.zeros if layout.kv_zero else torch.empty
        dq = None
        dk = alloc(b, h, n, d, dtype=k.dtype, device=dev)
        dv = alloc(b, h, n, d, dtype=v.dtype, device=dev)
    if layout.acc_kv:
        alloc = torch.zeros if layout.acc_zero else torch.empty
        acc_k = alloc(b, h, n, d, dtype=f32, device=dev)
        acc_v = alloc(b, h, n, d, dtype=f32, device=dev)
    else:
        acc_k, acc_v = dk, dv
    if layout.atomic:
        dq_acc = acc_q = torch.zeros(b, h, n, d, dtype=f32, device=dev)
        dq_out = dq_acc
    else:
        if dq is None:
            dq = torch.empty(b, h, n, d, dtype=q.dtype, device=dev)
        acc_q = dq_acc = (torch.empty(b, h, n, d, dtype=f32, device=dev) if layout.acc_q
                          else dq)
        dq_out = dq
    values = dict(q=q, k=k, v=v, out=out, dout=dout, lse=lse, delta=delta,
                  dlse=dlse if dlse is not None else delta,
                  kpm=delta if kpm is None else kpm.contiguous().view(torch.uint8),
                  dq=dq_out, acc_q=acc_q, dq_acc=dq_acc, dk=dk, dv=dv, acc_k=acc_k, acc_v=acc_v,
                  qk_scale=scale * _kernels().LOG2E, sm_scale=scale)
    for name, slots, block in layout.splits:  # split rows' float32 partial sums and counts
        acc = torch.zeros(2, b * h, slots, block, d, dtype=f32, device=dev)
        values[name + "_k"], values[name + "_v"] = acc[0], acc[1]
        values[name + "_n"] = torch.zeros(b * h, slots, dtype=torch.int32, device=dev)
    fast = _fast(q, k, v, out, dout, values["dlse"], values["kpm"], dq_out, dk, dv)
    for launch_ in layout.launches:
        launch_.run(values, fast)
    if layout.atomic:
        if grads is not None:
            return grads[0].copy_(dq_acc), dk, dv
        return dq_acc.to(q.dtype), dk, dv
    return dq, dk, dv


def _empty_pass(device):
    """Placeholder arrays for the half of a fused backward launch that has no pass."""
    key = str(device)
    if key not in _EMPTY:
        z = torch.zeros(1, 1, RUN, dtype=torch.int32, device=device)
        _EMPTY[key] = Pass(z[..., :3].contiguous(), z[..., 0].contiguous(),
                           z[..., :2].contiguous(), z, True)
    return _EMPTY[key]


_EMPTY: LRUCache = LRUCache(CACHE_SIZES["empty_passes"])  # device string -> Pass


# -- launching --------------------------------------------------------------------------------
# Triton's ``kernel[grid](...)`` binds and specialises every argument on each call (tens of
# microseconds for kernels with this many arguments), which dominates small problems. After the
# first launch a ``_Launch`` keeps Triton's compiled kernel and calls it directly. Compiled
# kernels are shared between layouts under a key of what Triton specialises on: each tensor's
# dtype and 16-byte alignment (its address mod 16), every integer, flag and constexpr by value
# (stricter than Triton, so a key never covers two specialisations); float scalars are never
# specialised and stay out of it. Off under the interpreter and when the installed Triton has no
# compiled-kernel call.
FAST_LAUNCH = True
_COMPILED: LRUCache = LRUCache(CACHE_SIZES["launches"])  # launch key -> compiled kernel


def _launch_key(kernel, opts: tuple, tensors: tuple, ints: tuple) -> tuple:
    return (kernel, tensors[0].device.index, opts,
            tuple([(t.dtype, t.data_ptr() & 15) for t in tensors]), ints)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


# -- custom ops (torch.compile sees them as opaque nodes with fake shapes) ----------------------
# They name the pattern by its token (a string, constant while tracing) and look the plan up when
# they run, from the real sizes: symbolic lengths (dynamic shapes) need no specialising, and no
# pattern object crosses into the graph (torch 2.11 cannot turn a frozen dataclass into one).
def _op_plans(pattern_token: str, q: torch.Tensor, causal: bool, block: int):
    b, h, n, d = q.shape
    return plan_set(by_token(pattern_token), n, h, causal, q.device, block if block > 0 else None,
                    d, q.dtype)


def _op_scale(scale: float, q: torch.Tensor) -> float:
    return q.shape[-1] ** -0.5 if scale <= 0 else scale


@torch.library.custom_op("sparse_transformer::triton_sparse_fwd", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            key_padding_mask: Optional[torch.Tensor], pattern_token: str, causal: bool,
            block: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    check_inputs(q)
    plans = _op_plans(pattern_token, q, causal, block)
    return _forward(q, k, v, key_padding_mask, plans[0], _op_scale(scale, q))


@_fwd_op.register_fake
def _fwd_fake(q, k, v, key_padding_mask, pattern_token, causal, block, scale):
    b, h, n, d = q.shape  # token-major, as the real output (strides must agree)
    return (q.new_empty(b, n, h, d).transpose(1, 2), q.new_empty(b, h, n, dtype=torch.float32))


@torch.library.custom_op("sparse_transformer::triton_sparse_bwd", mutates_args=())
def _bwd_op(dout: torch.Tensor, dlse: Optional[torch.Tensor], q: torch.Tensor,
            k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
            key_padding_mask: Optional[torch.Tensor], pattern_token: str, causal: bool,
            block: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    plans = _op_plans(pattern_token, q, causal, block)
    return _backward(dout, dlse, q, k, v, out, lse, key_padding_mask, plans, _op_scale(scale, q))


@_bwd_op.register_fake
def _bwd_fake(dout, dlse, q, k, v, out, lse, key_padding_mask, pattern_token, causal, block,
              scale):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    q, k, v, kpm, token, causal, block, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, kpm)
    ctx.args = (token, causal, block, scale)


def _autograd_backward(ctx, dout, dlse):
    q, k, v, out, lse, kpm = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv = _bwd_op(dout, dlse, q, k, v, out, lse, kpm, *ctx.args)
    return dq, dk, dv, None, None, None, None, None


_fwd_op.register_autograd(_autograd_backward, setup_context=_setup_context)


class _EagerSparseAttention(torch.autograd.Function):
    """The same forward and backward as the custom ops, without their per-call dispatch cost
    (measured at several hundred microseconds per call on an H100 host); used outside
    torch.compile."""

    @staticmethod
    def forward(ctx, q, k, v, kpm, plans, scale):
        out, lse = _forward(q, k, v, kpm, plans[0], scale)
        ctx.save_for_backward(q, k, v, out, lse, kpm)
        ctx.plans, ctx.scale = plans, scale  # the backward never depends on a cache entry
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, kpm = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv = _backward(dout, dlse, q, k, v, out, lse, kpm, ctx.plans, ctx.scale)
        return dq, dk, dv, None, None, None


def triton_attention(q, k, v, pattern: Pattern, causal: bool = True, key_padding_mask=None,
                     scale=None, return_lse: bool = False, block: int | None = None):
    """Sparse attention through the fused Triton kernels (see the module docstring). The
    (B, H, n, d) output is token-major in memory (a view of (B, n, H, d)), as flash attention's
    is: merging heads with ``out.transpose(1, 2).reshape(B, n, H * d)`` copies nothing."""
    if torch.compiler.is_compiling():
        # Package and environment look-ups would break the graph on some torch versions; the
        # op checks them again when it runs.
        check_tensor(q)
        scale = -1.0 if scale is None else float(scale)  # -1: head_dim ** -0.5, set by the op
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        out, lse = _fwd_op(q, k, v, key_padding_mask, pattern._token, causal,  # token: see Pattern
                           -1 if block is None else block, scale)
        return (out, lse) if return_lse else out
    check_inputs(q)
    b, h, n, d = q.shape
    scale = d ** -0.5 if scale is None else float(scale)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    plans = plan_set(pattern, n, h, causal, q.device, block, d, q.dtype)
    out, lse = _EagerSparseAttention.apply(q, k, v, key_padding_mask, plans, scale)
    return (out, lse) if return_lse else out


# -- packed q/k/v ---------------------------------------------------------------------------------
# A layer that projects q, k and v with one linear layer hands its output here whole. The kernels
# read q, k and v as strided views of it and write dq, dk and dv straight into one gradient of its
# layout, so the backward needs no concatenation of three gradients into the projection's (a
# copy of three activations per layer otherwise).

def unpack_qkv(qkv: torch.Tensor, heads: int):
    """q, k, v (B, heads, n, d) as views of ``qkv`` (B, n, 3 x heads x d)."""
    b, n, width = qkv.shape
    if heads < 1 or width % (3 * heads):
        raise ValueError(f"qkv's last dimension ({width}) must be 3 x heads x head_dim "
                         f"(heads = {heads})")
    t = qkv.view(b, n, 3, heads, width // (3 * heads))
    return tuple(t[:, :, i].transpose(1, 2) for i in range(3))


def _packed_backward(dout, dlse, qkv, heads, out, lse, kpm, plans, scale):
    dqkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    _backward(dout, dlse, *unpack_qkv(qkv, heads), out, lse, kpm, plans, scale,
              grads=unpack_qkv(dqkv, heads))
    return dqkv


@torch.library.custom_op("sparse_transformer::triton_sparse_fwd_packed", mutates_args=())
def _fwd_packed_op(qkv: torch.Tensor, heads: int, key_padding_mask: Optional[torch.Tensor],
                   pattern_token: str, causal: bool, block: int,
                   scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = unpack_qkv(qkv, heads)
    check_inputs(q)
    plans = _op_plans(pattern_token, q, causal, block)
    return _forward(q, k, v, key_padding_mask, plans[0], _op_scale(scale, q))


@_fwd_packed_op.register_fake
def _fwd_packed_fake(qkv, heads, key_padding_mask, pattern_token, causal, block, scale):
    b, n, width = qkv.shape  # the output is token-major, as the real op's (strides must agree)
    return (qkv.new_empty(b, n, heads, width // (3 * heads)).transpose(1, 2),
            qkv.new_empty(b, heads, n, dtype=torch.float32))


@torch.library.custom_op("sparse_transformer::triton_sparse_bwd_packed", mutates_args=())
def _bwd_packed_op(dout: torch.Tensor, dlse: Optional[torch.Tensor], qkv: torch.Tensor,
                   heads: int, out: torch.Tensor, lse: torch.Tensor,
                   key_padding_mask: Optional[torch.Tensor], pattern_token: str, causal: bool,
                   block: int, scale: float) -> torch.Tensor:
    q = unpack_qkv(qkv, heads)[0]
    plans = _op_plans(pattern_token, q, causal, block)
    return _packed_backward(dout, dlse, qkv, heads, out, lse, key_padding_mask, plans,
                            _op_scale(scale, q))


@_bwd_packed_op.register_fake
def _bwd_packed_fake(dout, dlse, qkv, heads, out, lse, key_padding_mask, pattern_token, causal,
                     block, scale):
    return torch.empty_like(qkv, memory_format=torch.contiguous_format)


def _setup_packed_context(ctx, inputs, output):
    qkv, heads, kpm, token, causal, block, scale = inputs
    out, lse = output
    ctx.save_for_backward(qkv, out, lse, kpm)
    ctx.heads, ctx.args = heads, (token, causal, block, scale)


def _packed_autograd_backward(ctx, dout, dlse):
    qkv, out, lse, kpm = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    dqkv = _bwd_packed_op(dout, dlse, qkv, ctx.heads, out, lse, kpm, *ctx.args)
    return dqkv, None, None, None, None, None, None


_fwd_packed_op.register_autograd(_packed_autograd_backward, setup_context=_setup_packed_context)


class _EagerPackedAttention(torch.autograd.Function):
    """``_EagerSparseAttention`` for a packed q/k/v (outside torch.compile)."""

    @staticmethod
    def forward(ctx, qkv, heads, kpm, plans, scale):
        out, lse = _forward(*unpack_qkv(qkv, heads), kpm, plans[0], scale)
        ctx.save_for_backward(qkv, out, lse, kpm)
        ctx.heads, ctx.plans, ctx.scale = heads, plans, scale
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        qkv, out, lse, kpm = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        return (_packed_backward(dout, dlse, qkv, ctx.heads, out, lse, kpm, ctx.plans,
                                 ctx.scale), None, None, None, None)


def triton_attention_packed(qkv, heads: int, pattern: Pattern, causal: bool = True,
                            key_padding_mask=None, scale=None, return_lse: bool = False,
                            block: int | None = None):
    """``triton_attention`` of q, k, v packed in one (B, n, 3 x heads x head_dim) tensor, as
    one linear layer projects them (q first, then k, then v; heads within each). Returns the
    (B, heads, n, head_dim) output as a view of a token-major (B, n, heads, head_dim) tensor, so
    ``out.transpose(1, 2).reshape(B, n, heads * head_dim)`` copies nothing (and the gradient
    arriving through it is read in place); the gradient comes back as one tensor of ``qkv``'s
    shape."""
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    if torch.compiler.is_compiling():
        check_tensor(qkv)
        scale = -1.0 if scale is None else float(scale)
        out, lse = _fwd_packed_op(qkv, heads, key_padding_mask, pattern._token, causal,
                                  -1 if block is None else block, scale)
        return (out, lse) if return_lse else out
    q = unpack_qkv(qkv, heads)[0]
    check_inputs(q)
    b, h, n, d = q.shape
    scale = d ** -0.5 if scale is None else float(scale)
    plans = plan_set(pattern, n, h, causal, q.device, block, d, q.dtype)
    out, lse = _EagerPackedAttention.apply(qkv, heads, key_padding_mask, plans, scale)
    return (out, lse) if return_lse else out
