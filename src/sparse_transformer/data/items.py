"""Data sets of whole sequences (images, audio clips): one row per sequence, scored whole.

A row of L bytes is fed as inputs ``[START, b_0, ..., b_{L-2}]`` with targets ``[b_0, ..., b_{L-1}]``:
every byte is predicted, the first one from the start symbol alone. START is byte 0; since it only
ever appears at position 0, where the position embedding marks it, it acts as a learned start
token without enlarging the vocabulary. A model for L-byte items has ``seq_len = L``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

START = 0


def is_items(split) -> bool:
    return getattr(split, "ndim", 1) == 2


def item_inputs(rows) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, L) -> inputs (B, L) starting with START, targets (B, L); long tensors."""
    y = torch.from_numpy(np.asarray(rows).astype(np.int64))
    x = torch.cat([torch.full((y.shape[0], 1), START, dtype=torch.long), y[:, :-1]], dim=1)
    return x, y


def item_batch(items: np.ndarray, batch_size: int, rng: np.random.Generator):
    """A random batch of whole rows (see the module doc)."""
    if len(items) == 0:
        raise ValueError("the split holds no sequences")
    return item_inputs(items[rng.integers(0, len(items), size=batch_size)])


@torch.no_grad()
def items_bits_per_byte(model, items: np.ndarray, batch_size: int = 8, max_items: int = 0,
                        device="cpu", autocast=None) -> dict:
    """Mean bits per byte (bits per dim for images) over whole rows, every byte scored with all
    the bytes before it in its row as context."""
    if items.shape[1] > model.cfg.seq_len:
        raise ValueError(f"sequences of {items.shape[1]} bytes exceed the model's seq_len "
                         f"{model.cfg.seq_len}")
    items = items[:max_items] if max_items else items
    was = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(items), batch_size):
        x, y = item_inputs(items[i:i + batch_size])
        x, y = x.to(device), y.to(device)
        if autocast:
            with autocast():
                logits = model(x)
        else:
            logits = model(x)
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                 reduction="sum").item()
    model.train(was)
    count = len(items) * items.shape[1]
    return {"bits_per_byte": total / math.log(2) / max(1, count), "bytes": count,
            "items": len(items), "seq_len": items.shape[1], "min_context": 0}
