"""Sampling bytes from a trained model: temperature (1.0 by default, as the paper) and top-k.

Decoding is incremental: the prompt is run once (``prefill``), then each new byte costs one
``decode_step`` over a KV cache whose contents follow the attention pattern (``layers.kv_cache``).
Text longer than the context continues from a fresh cache primed with the last half context.
Images and audio clips (``sample_items``) are whole sequences of the model's context length,
started from the start symbol of ``data.items`` and optionally from a prefix (e.g. the top half of
an image).
"""
from __future__ import annotations

import numpy as np
import torch

from .data.items import START


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> long (B,). temperature 0 means greedy."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _generator(device, seed):
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


@torch.no_grad()
def generate(model, prompt: bytes | torch.Tensor, length: int, temperature: float = 1.0,
             top_k: int = 0, seed: int = 0, batch: int = 1, use_cache: bool = True) -> torch.Tensor:
    """Sample ``length`` bytes after ``prompt``. Returns long (batch, len(prompt) + length).

    ``use_cache=False`` re-runs the model over the last ``seq_len`` bytes for every new byte (the
    slow reference). With the cache, the context restarts from the last ``seq_len // 2`` bytes
    whenever it fills up."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    device = next(model.parameters()).device
    if isinstance(prompt, (bytes, bytearray)):
        prompt = torch.tensor(list(prompt), dtype=torch.long)
    seq = prompt.to(device).view(1, -1).expand(batch, -1).clone()
    gen = _generator(device, seed)
    was = model.training
    model.eval()
    ctx_len = model.cfg.seq_len
    start = seq if seq.shape[1] else torch.full((batch, 1), 10, dtype=torch.long, device=device)
    cache, logits = None, None
    for _ in range(length):
        if not use_cache:
            window = seq[:, -ctx_len:] if seq.shape[1] else start
            logits = model(window)[:, -1]
        elif cache is None or cache.length >= ctx_len:
            window = (seq if seq.shape[1] else start)[:, -(ctx_len if cache is None else ctx_len // 2):]
            cache = model.new_cache()
            logits = model.prefill(window, cache)[:, -1]
        nxt = sample_next(logits, temperature, top_k, gen)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        if use_cache and cache.length < ctx_len:
            logits = model.decode_step(nxt, cache)
    model.train(was)
    return seq


@torch.no_grad()
def sample_items(model, count: int, prefix: np.ndarray | None = None, temperature: float = 1.0,
                 top_k: int = 0, seed: int = 0, length: int | None = None) -> np.ndarray:
    """Sample ``count`` whole sequences (images, audio clips) of ``length`` bytes (default the
    model's context). ``prefix``: uint8 (count, P) bytes every sequence starts with. Returns uint8
    (count, length)."""
    length = model.cfg.seq_len if length is None else length
    if not 1 <= length <= model.cfg.seq_len:
        raise ValueError(f"length must be in [1, seq_len={model.cfg.seq_len}], got {length}")
    device = next(model.parameters()).device
    x = torch.full((count, 1), START, dtype=torch.long, device=device)
    if prefix is not None:
        prefix = torch.as_tensor(np.asarray(prefix, dtype=np.int64), device=device)
        if prefix.dim() != 2 or prefix.shape[0] != count or prefix.shape[1] >= length:
            raise ValueError(f"prefix must be (count={count}, P < {length}) bytes, "
                             f"got {tuple(prefix.shape)}")
        x = torch.cat([x, prefix], dim=1)
    was = model.training
    model.eval()
    gen = _generator(device, seed)
    cache = model.new_cache()
    logits = model.prefill(x, cache)[:, -1]
    out = [x[:, 1:]]
    for i in range(x.shape[1] - 1, length):
        nxt = sample_next(logits, temperature, top_k, gen)
        out.append(nxt[:, None])
        if i + 1 < length:
            logits = model.decode_step(nxt, cache)
    model.train(was)
    return torch.cat(out, dim=1).to(torch.uint8).cpu().numpy()
