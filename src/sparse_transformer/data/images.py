"""Images as byte sequences: raster order, the channels of each pixel together (HWC).

An image data set is a dict of splits, each a uint8 array (N, H * W * C): one row per image, one
image per sequence. CIFAR-10 rows are 3,072 bytes, ImageNet 64x64 rows 12,288, Fashion-MNIST 784.

* ``cifar10``: the published binary-format tarball ``cifar-10-binary.tar.gz`` (50,000 train, 10,000
  test), verified by sha256 and read in memory: fixed-size records (one label byte, then the
  image as three 1,024-byte colour planes), no pickle and nothing extracted to disk. The last 2,000
  training images are held out as ``valid`` (48,000 / 2,000, as in the paper); ``test`` is the
  published test set. The colour planes (CHW) are reordered to HWC.
* ``imagenet64``: ImageNet downsampled to 64x64 (van den Oord et al. 2016 / Chrabaszcz et al.
  2017). It needs an image-net.org account, so it is never downloaded: put the ``.npz`` batches
  (``Imagenet64_train_part*``, ``Imagenet64_val``) or folders of 64x64 PNGs under
  ``ROOT/imagenet64/{train,valid}`` (read with ``allow_pickle=False``; links skipped, see
  ``data.files``). The published validation set serves as ``test``; the last
  10,000 training images are ``valid``.
* ``fashion-mnist``: IDX files, from Debian's ``dataset-fashion-mnist`` when installed (offline),
  else ``ROOT/fashion-mnist``. The last 5,000 training images are ``valid``.
"""
from __future__ import annotations

import gzip
import importlib.util
import tarfile
from pathlib import Path

import numpy as np

from .downloads import DataUnavailable, default_root, ensure_file
from .files import data_files

IMAGE_SHAPES = {"cifar10": (32, 32, 3), "imagenet64": (64, 64, 3), "fashion-mnist": (28, 28, 1)}

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
# sha256 of the published binary tarball (170,052,171 bytes; its published md5 is
# c32a1d4ab5d03f1284b67883e8d87530)
CIFAR10_CHECKSUM = "sha256:c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
CIFAR10_FILE = "cifar-10-binary.tar.gz"
CIFAR10_RECORD = 1 + 32 * 32 * 3  # a label byte, then the R, G and B planes
CIFAR10_VALID = 2000  # the paper: 48,000 train, 2,000 valid

FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_FILES = {  # file -> sha256, measured on Debian's dataset-fashion-mnist files
    "train-images-idx3-ubyte.gz":
        "sha256:b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "t10k-images-idx3-ubyte.gz":
        "sha256:cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
}
FASHION_VALID = 5000


def planar_to_hwc(rows: np.ndarray, height: int, width: int, channels: int = 3) -> np.ndarray:
    """(N, C*H*W) colour planes (CIFAR's storage) -> (N, H*W*C) raster order, channels per pixel."""
    rows = np.asarray(rows, dtype=np.uint8)
    n = rows.shape[0]
    return rows.reshape(n, channels, height, width).transpose(0, 2, 3, 1).reshape(n, -1).copy()


def images_to_rows(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) uint8 images -> (N, H*W*C) sequences."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    return images.reshape(images.shape[0], -1).copy()


def rows_to_images(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(N, L) sequences -> (N, H, W, C) uint8 for ``shape`` = (H, W, C)."""
    rows = np.asarray(rows, dtype=np.uint8)
    if len(shape) != 3:
        raise ValueError(f"shape must be (height, width, channels), got {shape}")
    return rows.reshape(rows.shape[0], *shape)


def _limit(splits: dict, limit: int) -> dict:
    return {k: v[:limit] if limit else v for k, v in splits.items()}


# -- CIFAR-10 ----------------------------------------------------------------------------------
def read_cifar_records(raw: bytes, name: str = "CIFAR-10 batch") -> np.ndarray:
    """A binary-format CIFAR-10 batch (records of a label byte and 3,072 planar bytes) ->
    (N, 3072) uint8 rows in HWC raster order (labels dropped)."""
    if not raw or len(raw) % CIFAR10_RECORD:
        raise DataUnavailable(f"{name}: {len(raw)} bytes is not a whole number of "
                              f"{CIFAR10_RECORD}-byte CIFAR-10 records")
    records = np.frombuffer(raw, np.uint8).reshape(-1, CIFAR10_RECORD)
    return planar_to_hwc(records[:, 1:], 32, 32)


def cifar10(root: str | Path | None = None, download: bool = False, limit: int = 0,
            fetch=None, checksum: str | None = CIFAR10_CHECKSUM, url: str = CIFAR10_URL) -> dict:
    root = Path(root) if root else default_root()
    tarball = ensure_file(root / "cifar10" / CIFAR10_FILE, url, checksum, download_ok=download,
                          what="CIFAR-10", fetch=fetch)
    batches: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(tarball, "r:gz") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for m in members:  # read in memory: nothing is extracted, links are not members read
            base = m.name.rsplit("/", 1)[-1]
            split = ("train" if base.startswith("data_batch_") and base.endswith(".bin") else
                     "test" if base == "test_batch.bin" else None)
            if split:
                batches[split].append(read_cifar_records(tar.extractfile(m).read(),
                                                         f"CIFAR-10 {m.name}"))
    if not batches["train"] or not batches["test"]:
        raise DataUnavailable(f"CIFAR-10: {tarball} holds no data_batch_*.bin / test_batch.bin "
                              f"(the binary version); delete it and fetch {url} again")
    train = np.concatenate(batches["train"])
    out = {"train": train[:-CIFAR10_VALID], "valid": train[-CIFAR10_VALID:],
           "test": np.concatenate(batches["test"])}
    return _limit(out, limit)


def foolbox_cifar10() -> tuple[np.ndarray, list[int]] | None:
    """The first 20 CIFAR-10 test images shipped as PNGs in PyPI ``foolbox`` (read as files, no
    import): (20, 32, 32, 3) uint8 and their labels, or None when foolbox is not installed."""
    from PIL import Image

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted((Path(spec.submodule_search_locations[0]) / "data").glob("cifar10_*.png"))
    if not files:
        return None
    x = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return x, [int(f.stem.split("_")[-1]) for f in files]


# -- Fashion-MNIST -----------------------------------------------------------------------------
def read_idx_images(path: str | Path) -> np.ndarray:
    """An IDX3 image file (optionally gzipped) -> (N, H, W) uint8."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 16 or raw[:4] != b"\x00\x00\x08\x03":
        raise ValueError(f"{path} is not an IDX3 uint8 image file")
    n, h, w = (int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(3))
    data = np.frombuffer(raw, np.uint8, offset=16)
    if data.size != n * h * w:
        raise ValueError(f"{path}: header says {n}x{h}x{w} images, file holds {data.size} bytes")
    return data.reshape(n, h, w)


def fashion_mnist(root: str | Path | None = None, download: bool = False, limit: int = 0,
                  fetch=None) -> dict:
    folder = FASHION_DEBIAN if (FASHION_DEBIAN / "t10k-images-idx3-ubyte.gz").exists() else \
        (Path(root) if root else default_root()) / "fashion-mnist"
    hint = "(offline: apt-get install dataset-fashion-mnist)"
    files = {}
    for name, digest in FASHION_FILES.items():
        files[name] = ensure_file(folder / name, FASHION_URL + name, digest, download_ok=download,
                                  what="Fashion-MNIST", fetch=fetch, hint=hint)
    train = images_to_rows(read_idx_images(files["train-images-idx3-ubyte.gz"]))
    test = images_to_rows(read_idx_images(files["t10k-images-idx3-ubyte.gz"]))
    out = {"train": train[:-FASHION_VALID], "valid": train[-FASHION_VALID:], "test": test}
    return _limit(out, limit)


# -- ImageNet 64x64 ----------------------------------------------------------------------------
def _read_imagenet_folder(folder: Path) -> np.ndarray:
    from PIL import Image

    parts = []
    for f in data_files(folder, (".npz",), recursive=False):
        with np.load(f, allow_pickle=False) as z:
            parts.append(planar_to_hwc(z["data"], 64, 64))
    pngs = data_files(folder, (".png",), recursive=False)
    if pngs:
        parts.append(images_to_rows(np.stack([np.asarray(Image.open(p).convert("RGB"))
                                              for p in pngs])))
    return np.concatenate(parts) if parts else np.zeros((0, 64 * 64 * 3), np.uint8)


def imagenet64(root: str | Path | None = None, download: bool = False, limit: int = 0) -> dict:
    base = (Path(root) if root else default_root()) / "imagenet64"
    help_ = (f"ImageNet 64x64 needs an account at https://image-net.org (Downloads, 'Downsampled "
             f"ImageNet 64x64'); it is never downloaded automatically. Unpack the training "
             f"batches (.npz, or 64x64 PNGs) into {base / 'train'} and the validation batch "
             f"into {base / 'valid'}")
    splits = {}
    for name in ("train", "valid"):
        if not (base / name).is_dir():
            raise DataUnavailable(f"ImageNet 64x64: {base / name} not found. {help_}")
        splits[name] = _read_imagenet_folder(base / name)
        if not len(splits[name]):
            raise DataUnavailable(f"ImageNet 64x64: {base / name} holds no .npz or .png. {help_}")
    hold = min(10_000, len(splits["train"]) // 10)
    out = {"train": splits["train"][:len(splits["train"]) - hold],
           "valid": splits["train"][len(splits["train"]) - hold:], "test": splits["valid"]}
    return _limit(out, limit)


def load_images(source: str, root: str | Path | None = None, download: bool = False,
                limit: int = 0) -> dict:
    if source == "cifar10":
        return cifar10(root, download, limit)
    if source == "fashion-mnist":
        return fashion_mnist(root, download, limit)
    if source == "imagenet64":
        return imagenet64(root, limit=limit)
    raise ValueError(f"data.source for kind='image' must be one of {sorted(IMAGE_SHAPES)}, "
                     f"got {source!r}")
