"""One way to name any pattern from a config: a spec string and the fields its kinds read.

Both ``ModelConfig`` and the encoder's ``EncoderConfig`` hold ``PATTERN_FIELDS`` and build their
pattern here, so a pattern is named the same way in Python, in a saved config and on the command
line (``model.pattern=local+global model.window=64``).

The spec, ``pattern``:

* a kind: ``"fixed"``;
* a union of kinds joined by ``+``: ``"local+global+random"`` is ``Local | Global | Random``;
* one pattern per head, separated by ``,``: ``"local+global,strided"`` is
  ``PerHead((Local | Global, Strided))``: head h follows entry h mod 2.

Every kind takes its parameters from the config's fields (one value per field, shared by the
kinds that read it):

==============  =============================================  ================================
kind            pattern                                        fields
==============  =============================================  ================================
``dense``       ``Dense()``                                    -
``local``       ``Local(window)``                              window
``strided``     ``Strided(stride)``                            stride
``column``      ``Column(stride)`` (strided's 2nd factor)      stride
``fixed``       ``Fixed(stride, summary, distinct_heads)``     stride, summary, distinct_heads
``block``       ``Block(stride)`` (fixed's 1st factor)         stride
``summary``     ``Summary(stride, summary, distinct_heads)``   stride, summary, distinct_heads
``global``      ``Global(global_tokens)``                      global_tokens
``random``      ``Random(random_blocks, random_block_size,     random_blocks, random_block_size,
                pattern_seed, distinct_heads)``                pattern_seed, distinct_heads
``bigbird``     ``patterns.bigbird(...)``: local | global |    window, global_tokens,
                random                                         random_blocks, random_block_size,
                                                               pattern_seed
``longformer``  ``patterns.longformer(window, global_tokens)`` window, global_tokens
==============  =============================================  ================================

``LEGACY_FIELDS``: the encoder's earlier names (``n_global``, ``n_random``, ``block_size``,
``seed``), still read from saved configs, the constructor and the command line.
"""
from __future__ import annotations

from ..patterns import (Block, Column, Dense, Fixed, Global, Local, Pattern, PerHead, Random,
                        Strided, Summary, bigbird, longformer)

PATTERN_FIELDS = ("pattern", "stride", "summary", "distinct_heads", "window", "global_tokens",
                  "random_blocks", "random_block_size", "pattern_seed")

_RANDOM = ("random_blocks", "random_block_size", "pattern_seed")
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "dense": (),
    "local": ("window",),
    "strided": ("stride",),
    "column": ("stride",),
    "fixed": ("stride", "summary", "distinct_heads"),
    "block": ("stride",),
    "summary": ("stride", "summary", "distinct_heads"),
    "global": ("global_tokens",),
    "random": _RANDOM + ("distinct_heads",),
    "bigbird": ("window", "global_tokens") + _RANDOM,
    "longformer": ("window", "global_tokens"),
}
PATTERN_KINDS = tuple(KIND_FIELDS)
UNION, PER_HEAD = "+", ","
SYNTAX = (f"kinds joined by '{UNION}' (a union: local+global+random) and '{PER_HEAD}' (one "
          f"pattern per head: local+global,strided)")

# old name -> (field, conversion): EncoderConfig's names before the fields were shared.
LEGACY_FIELDS = {
    "n_global": ("global_tokens", lambda n: tuple(range(n))),  # the first n positions
    "n_random": ("random_blocks", lambda n: n),
    "block_size": ("random_block_size", lambda n: n),
    "seed": ("pattern_seed", lambda n: n),
}


def _int(name: str, v, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")


def parse_spec(spec) -> tuple[tuple[str, ...], ...]:
    """``"local+global,strided"`` -> ``(("local", "global"), ("strided",))``: per head, the kinds
    of its union. Raises ValueError naming ``pattern``, the bad part and the allowed kinds."""
    def bad(why: str):
        return ValueError(f"pattern must be one of {PATTERN_KINDS}, or {SYNTAX}; got {spec!r}"
                          + (f" ({why})" if why else ""))

    if not isinstance(spec, str) or not spec.strip():
        raise bad("")
    heads = []
    for head in spec.split(PER_HEAD):
        kinds = tuple(k.strip() for k in head.split(UNION))
        for k in kinds:
            if k not in KIND_FIELDS:
                raise bad(f"{k!r} is not a kind" if k else "an empty kind")
        heads.append(kinds)
    return tuple(heads)


def normalize_pattern_fields(cfg) -> None:
    """Check every field of ``PATTERN_FIELDS`` on ``cfg`` (naming it) and store
    ``global_tokens`` as a tuple; then build the pattern once, so a bad combination (a summary
    longer than the stride, ``global`` without positions) is refused here."""
    for name in ("stride", "summary", "window", "random_block_size"):
        _int(name, getattr(cfg, name), 1)
    for name in ("random_blocks", "pattern_seed"):
        _int(name, getattr(cfg, name), 0)
    if not isinstance(cfg.distinct_heads, bool):
        raise ValueError(f"distinct_heads must be true or false, got {cfg.distinct_heads!r}")
    toks = cfg.global_tokens
    toks = (toks,) if isinstance(toks, int) and not isinstance(toks, bool) else toks
    if not isinstance(toks, (tuple, list)) or any(
            isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in toks) \
            or len(set(toks)) != len(toks):
        raise ValueError(f"global_tokens must be distinct ints >= 0 (positions), got "
                         f"{cfg.global_tokens!r}")
    cfg.global_tokens = tuple(toks)
    config_pattern(cfg)


def apply_legacy_fields(cfg, defaults: dict, **old) -> None:
    """Set the fields named by old names given to the constructor (``LEGACY_FIELDS``); an old
    name and its new one set to different values is refused."""
    for name, value in old.items():
        if value is None:
            continue
        new, convert = LEGACY_FIELDS[name]
        _int(name, value, 1 if name == "block_size" else 0)
        want, have = convert(value), getattr(cfg, new)
        if isinstance(have, list):
            have = tuple(have)
        if have != defaults[new] and have != want:
            raise ValueError(f"{name} is the old name of {new}; give one of them (got "
                             f"{name}={value!r} and {new}={have!r})")
        setattr(cfg, new, want)


def _member(kind: str, f: dict, spec: str) -> Pattern:
    if kind == "global" and not f["global_tokens"]:
        raise ValueError(f"global_tokens must hold at least one position for the kind 'global' "
                         f"(pattern={spec!r}), got ()")
    if kind == "random" and f["random_blocks"] < 1:
        raise ValueError(f"random_blocks must be >= 1 for the kind 'random' (pattern={spec!r}; "
                         f"0 leaves the random part out of 'bigbird' only), got "
                         f"{f['random_blocks']}")
    if kind == "dense":
        return Dense()
    if kind == "local":
        return Local(f["window"])
    if kind == "strided":
        return Strided(f["stride"])
    if kind == "column":
        return Column(f["stride"])
    if kind == "fixed":
        return Fixed(f["stride"], f["summary"], f["distinct_heads"])
    if kind == "block":
        return Block(f["stride"])
    if kind == "summary":
        return Summary(f["stride"], f["summary"], f["distinct_heads"])
    if kind == "global":
        return Global(tuple(f["global_tokens"]))
    if kind == "random":
        return Random(f["random_blocks"], f["random_block_size"], f["pattern_seed"],
                      f["distinct_heads"])
    if kind == "bigbird":
        return bigbird(f["window"], tuple(f["global_tokens"]), f["random_blocks"],
                       f["random_block_size"], f["pattern_seed"])
    return longformer(f["window"], tuple(f["global_tokens"]))


def build_pattern(pattern: str, *, stride: int = 32, summary: int = 8,
                  distinct_heads: bool = False, window: int = 128,
                  global_tokens: tuple[int, ...] = (0,), random_blocks: int = 2,
                  random_block_size: int = 64, pattern_seed: int = 0) -> Pattern:
    """The pattern named by the spec ``pattern`` (see the module doc), its kinds reading these
    fields."""
    fields = dict(stride=stride, summary=summary, distinct_heads=distinct_heads, window=window,
                  global_tokens=global_tokens, random_blocks=random_blocks,
                  random_block_size=random_block_size, pattern_seed=pattern_seed)
    heads = []
    for kinds in parse_spec(pattern):
        members = [_member(k, fields, pattern) for k in kinds]
        union = members[0]
        for m in members[1:]:
            union = union | m
        heads.append(union)
    return heads[0] if len(heads) == 1 else PerHead(tuple(heads))


def config_pattern(cfg) -> Pattern:
    """The pattern a config (anything holding ``PATTERN_FIELDS``) names."""
    return build_pattern(**{name: getattr(cfg, name) for name in PATTERN_FIELDS})
