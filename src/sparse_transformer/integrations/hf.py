"""Sparse attention inside Hugging Face transformers models (``pip install sparse-transformer[hf]``).

    from sparse_transformer import patterns
    from sparse_transformer.integrations import hf

    hf.register()                                        # once: the name "sparse"
    config.sparse_pattern = {"pattern": "bigbird", "window": 64, "global_tokens": [0]}
    model = AutoModel.from_config(config, attn_implementation="sparse")
    # or model.set_attn_implementation("sparse"), or from_pretrained(..., attn_implementation=...)
    with hf.use_pattern(patterns.Local(128)):            # overrides the config's pattern here
        out = model(**batch)

``register`` adds two functions to transformers' registries under one name:

* an attention function (``AttentionInterface``), called by every attention layer of the models
  that dispatch through it (GPT-2, BERT, Llama, Mistral, Qwen2, ... ) with q (batch, heads,
  q_len, head_dim) and k, v (batch, kv_heads, k_len, head_dim). It runs ``sparse_attention``
  with the layer's scaling, its causality (the ``is_causal`` argument, else ``module.is_causal``)
  and grouped-query k/v as they come;
* a mask function (``AttentionMaskInterface``). Without one, transformers hands a custom
  implementation ``attention_mask=None`` and padding is silently lost. Ours returns the
  2-D bool padding mask (batch, key slots), True where a key is real, or None when nothing is
  padded; causality is ours to apply, from the layer.

Positions: key j is at position j of the key tensor (the cache's slots, left padding included),
query i at ``k_len - q_len + i`` (the queries are the newest slots: prefill and decoding with
``generate()`` and its cache), or at ``filled - q_len + i`` when the mask says only ``filled``
slots are in use (a static cache). Patterns that depend on absolute positions (Fixed, Global,
Random) therefore see the slots as the positions.

The pattern comes from, first, the innermost ``use_pattern`` context, else the model config's
``sparse_pattern``: a Pattern, or a dict (JSON-friendly, saved with the config) of the pattern
fields of ``ModelConfig`` (``models/pattern_spec.py``; ``seed`` is read as ``pattern_seed``) with
the spec under ``"pattern"``, e.g. ``{"pattern": "fixed", "stride": 64, "summary": 8}`` or
``{"pattern": "local+global", "window": 64, "global_tokens": [0]}``. A layer with ``layer_idx`` may also get
its own entry when ``sparse_pattern`` is a list (one per layer). ``config.sparse_backend``
(default "auto") picks the backend.

Not supported (each raises an error that names it): attention dropout in training (set the
model's attention dropout to 0), ``softcap``, attention sinks (``s_aux``), the model's own
``sliding_window`` (express it as a pattern), masks other than plain causal / bidirectional ones
(packed sequences detected from ``position_ids``, chunked windows, overlays), and 4-D masks
passed by the caller. ``output_attentions`` gives None: the weights are never built.
"""
from __future__ import annotations

import contextlib
import contextvars

import torch

from ..models.pattern_spec import PATTERN_FIELDS, build_pattern
from ..ops import sparse_attention
from ..patterns import Pattern

NAME = "sparse"
_CONTEXT: contextvars.ContextVar = contextvars.ContextVar("sparse_transformer_hf_pattern",
                                                          default=None)


def register(name: str = NAME) -> str:
    """Register the attention and mask functions under ``name`` (idempotent); returns it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, sparse_attention_forward)
    AttentionMaskInterface.register(name, sparse_attention_mask)
    return name


@contextlib.contextmanager
def use_pattern(pattern, backend: str | None = None):
    """Within this context, every layer running the "sparse" implementation uses ``pattern``
    (a Pattern or a dict as for ``config.sparse_pattern``) and, if given, ``backend``."""
    token = _CONTEXT.set((pattern_from_spec(pattern, "pattern"), backend))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def pattern_from_spec(spec, where: str = "config.sparse_pattern") -> Pattern:
    """A Pattern from a Pattern, or from a dict of pattern fields with the spec under "pattern"
    (``models.pattern_spec.build_pattern``)."""
    if isinstance(spec, Pattern):
        return spec
    if isinstance(spec, dict):
        args = dict(spec)
        if args.get("pattern") is None:
            raise ValueError(f"{where} must name its kind under 'pattern', got {spec!r}")
        if "seed" in args and "pattern_seed" not in args:  # the earlier name
            args["pattern_seed"] = args.pop("seed")
        unknown = sorted(set(args) - set(PATTERN_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; keys: "
                             f"{', '.join(PATTERN_FIELDS)}")
        if "global_tokens" in args:
            args["global_tokens"] = tuple(args["global_tokens"])
        try:
            return build_pattern(**args)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    raise ValueError(f"{where} must be a sparse_transformer Pattern or a dict such as "
                     f"{{'pattern': 'local', 'window': 128}}, got {type(spec).__name__}")


def _resolve(module) -> tuple[Pattern, str]:
    ctx = _CONTEXT.get()
    config = getattr(module, "config", None)
    backend = getattr(config, "sparse_backend", None) or "auto"
    if ctx is not None:
        return ctx[0], ctx[1] or backend
    spec = getattr(config, "sparse_pattern", None)
    if spec is None:
        raise ValueError("attn_implementation='sparse' needs a pattern: set "
                         "model.config.sparse_pattern (a Pattern or a dict such as "
                         "{'pattern': 'local', 'window': 128}) or run the model inside "
                         "sparse_transformer.integrations.hf.use_pattern(...)")
    if isinstance(spec, (list, tuple)):
        idx = getattr(module, "layer_idx", None)
        if idx is None or not 0 <= idx < len(spec):
            raise ValueError(f"config.sparse_pattern is a list of {len(spec)} patterns, one per "
                             f"layer, but this layer's layer_idx is {idx!r}")
        spec = spec[idx]
    return pattern_from_spec(spec), backend


def sparse_attention_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0,
                          kv_offset=0, mask_function=None, attention_mask=None, device="cpu",
                          **kwargs):
    """Mask function for ``AttentionMaskInterface``: bool (batch, slots) with True at real keys
    (slots: the key slots in use, at most ``kv_length``), or None when every key is real."""
    _check_mask_function(mask_function)
    filled = int(q_offset) + q_length
    keep = None
    if attention_mask is not None:
        keep = attention_mask[:, -kv_length:].to(device=device, dtype=torch.bool)
    elif filled < kv_length:  # a static cache: only the first ``filled`` slots hold keys
        keep = torch.ones(batch_size, filled, dtype=torch.bool, device=device)
    if keep is not None and keep.shape[1] == kv_length and bool(keep.all()):
        return None
    return keep


def _check_mask_function(mask_function) -> None:
    """Refuse the masks that transformers builds beyond plain causal / bidirectional ones
    (packed sequences, sliding or chunked windows, overlays): the pattern would silently replace
    them."""
    from transformers import masking_utils as mu

    plain = (None, getattr(mu, "causal_mask_function", None),
             getattr(mu, "bidirectional_mask_function", None))
    if mask_function not in plain:
        name = getattr(mask_function, "__qualname__", type(mask_function).__name__)
        raise ValueError("attn_implementation='sparse' applies its pattern with plain causal or "
                         f"bidirectional masks; this model asked for another mask ({name}: "
                         "packed sequences from position_ids, a sliding or chunked window, or a "
                         "mask overlay), which the pattern would silently replace. Pass an "
                         "attention_mask instead of packed position_ids, or express the window "
                         "as a pattern")


def _padding(attention_mask, b: int, lq: int, lk: int):
    """(key_padding_mask, q_offset) from what our mask function produced."""
    if attention_mask is None:
        return None, None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
        shape = tuple(getattr(attention_mask, "shape", ()))
        raise ValueError("attn_implementation='sparse' takes the 2-D padding mask its own mask "
                         f"function builds; got attention_mask of shape {shape} (4-D masks "
                         "and other custom masks are not supported)")
    keep = attention_mask.to(torch.bool)
    if keep.shape[0] != b or keep.shape[1] > lk:
        raise ValueError(f"attention_mask must have shape (batch, <= k_len) = ({b}, <= {lk}), "
                         f"got {tuple(keep.shape)}")
    filled = keep.shape[1]
    pad = ~keep
    if filled < lk:
        pad = torch.cat([pad, pad.new_ones(b, lk - filled)], 1)
    return pad, max(0, filled - lq)


def sparse_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, is_causal: bool | None = None,
                             **kwargs):
    """Attention function for ``AttentionInterface`` (see the module docstring)."""
    if dropout:
        raise ValueError(f"attn_implementation='sparse' has no attention dropout, got "
                         f"dropout={dropout}: set the model's attention dropout to 0 (e.g. GPT-2 "
                         "attn_pdrop, BERT attention_probs_dropout_prob, Llama attention_dropout)")
    for name in ("softcap", "s_aux", "sliding_window"):
        if kwargs.get(name) is not None:
            raise ValueError(f"attn_implementation='sparse' does not support {name}="
                             f"{kwargs[name]!r}" + (" (express the window as a pattern, e.g. "
                                                    "patterns.Local, and set it to None)"
                                                    if name == "sliding_window" else ""))
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    pattern, backend = _resolve(module)
    b, _, lq, _ = query.shape
    kpm, q_offset = _padding(attention_mask, b, lq, key.shape[2])
    out = sparse_attention(query, key, value, pattern, causal=bool(causal),
                           key_padding_mask=kpm, scale=scaling, backend=backend,
                           q_offset=q_offset)
    return out.transpose(1, 2).contiguous(), None
