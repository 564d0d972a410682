"""Bits per byte on held-out data, and a classical PPMd baseline on the same bytes.

Protocol: the split is cut into windows of ``seq_len + 1`` bytes that overlap by
``min_context``. The first window scores all its ``seq_len`` predictions; every later window
scores only its last ``seq_len - min_context`` predictions, so each scored byte after the first
window sees at least ``min_context`` bytes of context (and at most ``seq_len - 1``). Every byte of
the evaluated range (but the very first, which has no context) is scored exactly once. The result
is the mean negative log2-likelihood over the scored bytes.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def eval_windows(total: int, seq_len: int, min_context: int):
    """Yield (start, first_scored) pairs: window [start, start + seq_len], scored predictions
    [first_scored, seq_len). Covers predictions of bytes 1 .. total - 1 exactly once."""
    if not 0 <= min_context < seq_len:
        raise ValueError(f"min_context must be in [0, seq_len), got {min_context}")
    step = seq_len - min_context
    start, first = 0, 0
    while True:
        end = min(start + seq_len, total - 1)  # window covers inputs start .. end - 1
        if end <= start:
            return
        yield start, first, end - start
        if end == total - 1:
            return
        start += step
        first = min_context
        if start + seq_len > total - 1:  # last window: align to the end, score only new bytes
            new_start = max(0, total - 1 - seq_len)
            first = (start + min_context) - new_start
            start = new_start


@torch.no_grad()
def bits_per_byte(model, data: np.ndarray, seq_len: int, min_context: int | None = None,
                  batch_size: int = 8, max_bytes: int = 0, device="cpu", autocast=None) -> dict:
    """Mean bits per byte of ``model`` on ``data`` (see the protocol in the module doc)."""
    if max_bytes and len(data) > max_bytes:
        data = data[:max_bytes]
    min_context = seq_len // 2 if min_context is None else min_context
    was_training = model.training
    model.eval()
    total_bits, count = 0.0, 0
    windows = list(eval_windows(len(data), seq_len, min_context))
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        width = max(w for _, _, w in chunk)
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        y = torch.full((len(chunk), width), -100, dtype=torch.long)
        for r, (s, first, w) in enumerate(chunk):
            win = torch.from_numpy(np.asarray(data[s:s + w + 1]).astype(np.int64))
            x[r, :w] = win[:-1]
            y[r, first:w] = win[1 + first:]
        x, y = x.to(device), y.to(device)
        ctx = autocast() if autocast else _null()
        with ctx:
            logits = model(x)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                              ignore_index=-100, reduction="sum")
        total_bits += nll.item() / math.log(2)
        count += int((y != -100).sum())
    model.train(was_training)
    return {"bits_per_byte": total_bits / max(1, count), "bytes": count,
            "min_context": min_context, "seq_len": seq_len}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def ppmd_bits_per_byte(test: np.ndarray, train: np.ndarray | None = None, order: int = 6,
                       mem_mb: int = 256) -> float | None:
    """PPMd (variant H) code length of ``test`` in bits per byte, optionally primed on ``train``.

    Primed: bits(train + test) - bits(train), i.e. the cost of the test bytes after the model has
    adapted to the training bytes, as a trained network has. Returns None without ``pyppmd``.
    """
    try:
        import pyppmd
    except ImportError:
        return None

    def size(b: bytes) -> int:
        return len(pyppmd.compress(b, max_order=order, mem_size=mem_mb << 20))

    t = np.asarray(test).tobytes()
    if train is None or len(train) == 0:
        return 8.0 * size(t) / len(t)
    p = np.asarray(train).tobytes()
    return 8.0 * (size(p + t) - size(p)) / len(t)


def dynamic_bits_per_byte(model, data: np.ndarray, seq_len: int, lr: float = 1e-4,
                          min_context: int | None = None, max_bytes: int = 0, device="cpu",
                          betas: tuple[float, float] = (0.9, 0.999),
                          return_logprobs: bool = False) -> dict:
    """Dynamic evaluation (Krause et al. 2018, 2019): the windows of the static protocol (module
    doc) in order, one at a time; each window's new bytes are scored, then one Adam step of
    learning rate ``lr`` is taken on the loss of exactly those bytes. A byte is therefore scored
    by weights trained only on bytes before it (never on itself or later ones): the network
    adapts to the document it reads, as PPMd does. ``model`` is not changed (a copy adapts).

    Returns the static protocol's dict with ``lr`` and ``seconds``; with ``return_logprobs``
    also ``logprobs``, the (scored bytes, vocab) log-probabilities in byte order (for tests)."""
    import copy
    import time

    if max_bytes and len(data) > max_bytes:
        data = data[:max_bytes]
    min_context = seq_len // 2 if min_context is None else min_context
    t0 = time.perf_counter()
    net = copy.deepcopy(model).to(device)
    net.eval()  # no dropout while scoring; the steps use the same deterministic forward
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr,
                           betas=tuple(betas))
    total_bits, count, rows = 0.0, 0, []
    for s, first, w in eval_windows(len(data), seq_len, min_context):
        win = torch.from_numpy(np.asarray(data[s:s + w + 1]).astype(np.int64)).to(device)
        x, y = win[:-1].unsqueeze(0), win[1 + first:]
        logits = net(x)[0, first:w].float()
        logp = F.log_softmax(logits, dim=-1)
        nll = F.nll_loss(logp, y, reduction="sum")
        total_bits += nll.item() / math.log(2)  # scored with the weights before the step
        count += len(y)
        if return_logprobs:
            rows.append(logp.detach().cpu())
        opt.zero_grad(set_to_none=True)
        (nll / len(y)).backward()  # then trained on the bytes just scored
        opt.step()
    out = {"bits_per_byte": total_bits / max(1, count), "bytes": count, "min_context": min_context,
           "seq_len": seq_len, "lr": lr, "seconds": time.perf_counter() - t0}
    if return_logprobs:
        out["logprobs"] = torch.cat(rows) if rows else torch.zeros(0, 0)
    return out
