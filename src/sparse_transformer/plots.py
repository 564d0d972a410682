"""Pictures of runs: training curves from a run's ``log.jsonl`` and grids of sampled images.

Drawn with Pillow only. ``training_curves`` plots bits per byte (train loss and held-out) against
steps and against seconds, side by side.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TRAIN_COLOUR, VALID_COLOUR = (40, 90, 200), (230, 110, 20)


def read_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no training log at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(s - raw))
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _panel(draw, box, series, xlabel, ylim, font):
    x0, y0, x1, y1 = box
    xs = [x for s in series for x in s[0]]
    xlo, xhi = (min(xs), max(xs)) if xs else (0, 1)
    xhi = xhi if xhi > xlo else xlo + 1
    ylo, yhi = ylim

    def px(x, y):
        return (x0 + (x - xlo) / (xhi - xlo) * (x1 - x0), y1 - (y - ylo) / (yhi - ylo) * (y1 - y0))

    draw.rectangle(box, outline=(0, 0, 0))
    for t in _nice_ticks(ylo, yhi):
        _, y = px(xlo, t)
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        draw.text((x0 - 6, y), f"{t:g}", fill=(0, 0, 0), anchor="rm", font=font)
    for t in _nice_ticks(xlo, xhi):
        x, _ = px(t, ylo)
        draw.line([(x, y1), (x, y1 + 4)], fill=(0, 0, 0))
        draw.text((x, y1 + 6), f"{t:g}", fill=(0, 0, 0), anchor="ma", font=font)
    draw.text(((x0 + x1) / 2, y1 + 22), xlabel, fill=(0, 0, 0), anchor="ma", font=font)
    for xs_, ys_, colour in series:
        pts = [px(x, y) for x, y in zip(xs_, ys_)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for p in pts if len(pts) < 30 else []:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)


def training_curves(records: list[dict], title: str = "") -> Image.Image:
    """Two panels, bits/byte vs steps and vs seconds: train loss (blue), held-out (orange)."""
    train = [r for r in records if "loss_bpb" in r]
    valid = [r for r in records if "valid_bpb" in r]
    if not train and not valid:
        raise ValueError("the log holds no records with loss_bpb or valid_bpb")
    ys = [r["loss_bpb"] for r in train] + [r["valid_bpb"] for r in valid]
    ylo, yhi = min(ys), max(ys)
    pad = 0.05 * (yhi - ylo or 1.0)
    ylim = (max(0.0, ylo - pad), yhi + pad)
    W, H = 1000, 420
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, key in enumerate(("step", "elapsed_s")):
        series = [([r[key] for r in train], [r["loss_bpb"] for r in train], TRAIN_COLOUR),
                  ([r[key] for r in valid], [r["valid_bpb"] for r in valid], VALID_COLOUR)]
        box = (70 + i * 490, 40, 450 + i * 490, H - 60)
        _panel(draw, box, series, "steps" if key == "step" else "seconds", ylim, font)
    draw.text((10, 10), title or "bits per byte", fill=(0, 0, 0), font=font)
    draw.text((W - 260, 10), "train (loss)", fill=TRAIN_COLOUR, font=font)
    draw.text((W - 150, 10), "held-out", fill=VALID_COLOUR, font=font)
    return img


def save_training_curves(log: str | Path, out: str | Path, title: str = "") -> Path:
    return _save(training_curves(read_log(log), title), out)


def sample_grid(images: np.ndarray, cols: int = 0, scale: int = 2, pad: int = 2) -> Image.Image:
    """(N, H, W, C) uint8 (C = 1 or 3) -> one picture, ``cols`` per row, each scaled up."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1 or 3) uint8, got {images.shape}")
    n, h, w, c = images.shape
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = im if c == 3 else im.repeat(3, axis=-1)
    return Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                                        Image.NEAREST)


def save_sample_grid(images: np.ndarray, out: str | Path, cols: int = 0, scale: int = 2) -> Path:
    return _save(sample_grid(images, cols, scale), out)


def _save(img: Image.Image, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(out)
    return out
