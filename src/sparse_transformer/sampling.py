"""Sampling bytes from a trained model: temperature (1.0 by default, as the paper) and top-k."""
from __future__ import annotations

import torch


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


@torch.no_grad()
def generate(model, prompt: bytes | torch.Tensor, length: int, temperature: float = 1.0,
             top_k: int = 0, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """Sample ``length`` bytes after ``prompt``; re-runs the model over the last ``seq_len`` bytes
    for each new byte. Returns long (batch, len(prompt) + length)."""
    device = next(model.parameters()).device
    if isinstance(prompt, (bytes, bytearray)):
        prompt = torch.tensor(list(prompt), dtype=torch.long)
    seq = prompt.to(device).view(1, -1).expand(batch, -1).clone()
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    was = model.training
    model.eval()
    ctx_len = model.cfg.seq_len
    for _ in range(length):
        window = seq[:, -ctx_len:]
        if window.shape[1] == 0:  # no prompt: start from a newline byte
            window = torch.full((batch, 1), 10, dtype=torch.long, device=device)
        logits = model(window)[:, -1]
        nxt = sample_next(logits, temperature, top_k, gen)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
    model.train(was)
    return seq
