"""How much memory a training step needs, and which activation checkpointing fits.

``ModelConfig.checkpointing`` is one of:

* ``"none"``: keep every activation for the backward pass (fastest);
* ``"attention"``: recompute the attention branch (norm, q/k/v projection, attention, output
  projection) of every block in the backward pass; the feed-forward keeps its activations;
* ``"block"``: recompute every residual block (the paper's setting);
* ``"full"``: as ``"block"``, and inside the block being recomputed the feed-forward runs in
  chunks of positions (``FF_CHUNK``), each recomputed once more, so that the
  backward pass never holds a whole sequence's feed-forward activations (least memory; one
  more feed-forward forward pass per step). For contexts of a million tokens and more;
* ``"auto"``: the cheapest of the four whose estimated peak fits the device's free memory.

The estimate counts, per token and per block, the tensors autograd keeps for an eager bf16 /
fp16 step (an fp32 step keeps twice as many bytes), plus the fp32 weights, gradients and the two
AdamW moments, and the logits. It errs high: on one H200 the ``enwik8`` preset (batch 2) was
estimated within the measured peak plus 25% (see docs/benchmarks.md, "Training step").
"""
from __future__ import annotations

import os

import torch

MODES = ("none", "attention", "block", "full")
CHOICES = MODES + ("auto",)
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
# Share of the free device memory a plan may use: the allocator fragments, and kernels need
# workspace beyond what the estimate counts.
HEADROOM = 0.8
# Positions per feed-forward chunk under "full" checkpointing (``transformer.FeedForward``):
# large enough that each chunk's GEMMs run at full speed, small enough that one chunk's
# activations are a few hundred MiB.
FF_CHUNK = 1 << 16


def normalize_checkpointing(value) -> str:
    """``ModelConfig.checkpointing`` as one of ``CHOICES``; ``True`` / ``False`` (and their CLI
    spellings) mean ``"block"`` / ``"none"``, as in configs saved before the modes existed."""
    if isinstance(value, bool):
        return "block" if value else "none"
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return "block"
        if v in _FALSE:
            return "none"
        if v in CHOICES:
            return v
    raise ValueError(f"checkpointing must be one of {CHOICES} (or true / false), got {value!r}")


def activation_bytes(cfg, tokens: int, mode: str, act_bytes: int = 2,
                     stream_bytes: int = 4) -> int:
    """Estimated bytes autograd holds at the peak of one step for ``tokens`` = batch x seq_len
    tokens with checkpointing ``mode`` (``act_bytes``: 2 for bf16 / fp16, 4 for fp32;
    ``stream_bytes``: bytes per element of the block inputs "block" stores, 2 when they are
    kept in bf16)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    d = cfg.d_model
    d_qk = int(d * cfg.qk_ratio)
    f = int(round(d * cfg.ff_mult))
    a = act_bytes
    drop = 2 * d if cfg.dropout > 0 else 0  # two dropout masks (bool)
    # Residual stream in float32: the block input and h + a (LayerNorm inputs).
    stream = 8 * d
    attn = a * (d + 2 * d_qk + d + d + d) + 4 * cfg.n_heads  # norm out, q k v, out, proj in, lse
    ff = a * (d + 3 * f + f)  # norm out, w1 out and the activation's two saved tensors, w2 in
    per_block = {"none": stream + attn + ff + drop,
                 "attention": stream + ff + drop,
                 "block": stream_bytes * d,
                 "full": stream_bytes * d}[mode]
    # The block being recomputed holds its full activations once ("full": its feed-forward's
    # for one chunk of positions, and the chunks' joined output).
    recompute = 0 if mode == "none" else stream + attn + ff + drop
    chunk = 0
    if mode == "full" and tokens > FF_CHUNK:  # shorter inputs run the feed-forward whole
        recompute, chunk = stream + attn + drop + a * d, FF_CHUNK * ff
    logits = tokens * cfg.vocab_size * 4 * 3  # float32 logits, softmax and its gradient
    return tokens * (per_block * cfg.n_layers + recompute) + chunk + logits


def state_bytes(num_params: int) -> int:
    """fp32 weights, gradients and two AdamW moments."""
    return 16 * num_params


def step_bytes(cfg, tokens: int, mode: str, num_params: int, act_bytes: int = 2,
               stream_bytes: int = 4) -> int:
    return activation_bytes(cfg, tokens, mode, act_bytes, stream_bytes) + state_bytes(num_params)


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the CUDA allocator's view, or half the host's RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def choose_checkpointing(cfg, tokens: int, num_params: int, budget: int,
                         act_bytes: int = 2, stream_bytes: int = 4) -> str:
    """The cheapest mode whose estimated step fits ``HEADROOM`` x ``budget`` bytes ("full" when
    none does: it is the least memory there is)."""
    for mode in MODES:
        if step_bytes(cfg, tokens, mode, num_params, act_bytes, stream_bytes) <= HEADROOM * budget:
            return mode
    return "full"
