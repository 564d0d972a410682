"""Images as bytes: the CIFAR-10 layout (HWC, raster order), Fashion-MNIST, ImageNet 64x64."""
import hashlib
import io
import tarfile

import numpy as np
import pytest

from sparse_transformer.data import load_dataset
from sparse_transformer.data.downloads import DataUnavailable
from sparse_transformer.data.images import (FASHION_DEBIAN, cifar10, foolbox_cifar10, imagenet64,
                                            planar_to_hwc, rows_to_images)
from sparse_transformer.models import DataConfig


def test_planar_to_hwc_order():
    # one 2x2 image: R plane 0..3, G plane 10..13, B plane 20..23
    rows = np.array([[0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]], np.uint8)
    assert planar_to_hwc(rows, 2, 2).tolist() == [[0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23]]


def _fake_cifar_tarball(path, images, extra=()):
    """A tarball laid out as the published cifar-10-binary.tar.gz, holding ``images``."""
    planar = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CHW, as published
    labels = np.arange(len(images), dtype=np.uint8)[:, None] % 10
    records = np.concatenate([labels, planar], axis=1)  # a label byte, then 3,072 bytes
    with tarfile.open(path, "w:gz") as tar:
        for name, rows in [("data_batch_1.bin", records[:8]), ("data_batch_2.bin", records[8:16]),
                           ("test_batch.bin", records[16:])]:
            blob = rows.tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info in extra:
            tar.addfile(info)


def _sha256(path):
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_cifar10_layout_on_real_images(tmp_path, monkeypatch):
    got = foolbox_cifar10()
    if got is None:
        pytest.skip("foolbox (the 20 real CIFAR-10 test images) is not installed")
    x, labels = got
    assert x.shape == (20, 32, 32, 3) and labels[:4] == [3, 8, 8, 0]
    src = tmp_path / "cifar-10-binary.tar.gz"
    _fake_cifar_tarball(src, x)
    monkeypatch.setattr("sparse_transformer.data.images.CIFAR10_VALID", 4)
    splits = cifar10(tmp_path / "root", download=True, url=src.as_uri(), checksum=_sha256(src))
    assert splits["train"].shape == (12, 3072) and splits["valid"].shape == (4, 3072)
    # each row is the image in raster order with the 3 channels of each pixel together
    assert np.array_equal(splits["test"][0], x[16].reshape(-1))
    assert splits["test"][0][:3].tolist() == x[16, 0, 0].tolist()
    assert np.array_equal(rows_to_images(splits["train"], (32, 32, 3)), x[:12])


def test_cifar10_binary_records_synthetic(tmp_path, monkeypatch):
    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    link = tarfile.TarInfo("cifar-10-batches-bin/data_batch_9.bin")  # a link member: not read
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    src = tmp_path / "cifar-10-binary.tar.gz"
    _fake_cifar_tarball(src, x, extra=[link])
    monkeypatch.setattr("sparse_transformer.data.images.CIFAR10_VALID", 4)
    splits = cifar10(tmp_path / "root", download=True, url=src.as_uri(), checksum=_sha256(src))
    assert np.array_equal(rows_to_images(splits["train"], (32, 32, 3)), x[:12])
    assert np.array_equal(rows_to_images(splits["test"], (32, 32, 3)), x[16:])


def test_cifar10_download_is_verified_by_sha256(tmp_path):
    x = np.zeros((20, 32, 32, 3), np.uint8)
    src = tmp_path / "cifar-10-binary.tar.gz"
    _fake_cifar_tarball(src, x)
    root = tmp_path / "root"
    with pytest.raises(DataUnavailable, match="checksum"):
        cifar10(root, download=True, url=src.as_uri(), checksum="sha256:" + "0" * 64)
    assert not list((root / "cifar10").iterdir())  # the bad download was discarded


def test_cifar10_never_unpickles():
    import sparse_transformer.data.images as images

    assert "pickle" not in images.__dict__
    assert images.CIFAR10_CHECKSUM.startswith("sha256:")
    assert images.CIFAR10_URL.endswith("cifar-10-binary.tar.gz")


def test_cifar10_truncated_batch_is_refused(tmp_path):
    src = tmp_path / "root" / "cifar10" / "cifar-10-binary.tar.gz"
    src.parent.mkdir(parents=True)
    with tarfile.open(src, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = 5000
        tar.addfile(info, io.BytesIO(b"\0" * 5000))
    with pytest.raises(DataUnavailable, match="3073-byte"):
        cifar10(tmp_path / "root", checksum=None)


def test_cifar10_missing_names_url(tmp_path):
    with pytest.raises(DataUnavailable, match="cifar-10-binary.tar.gz"):
        cifar10(tmp_path)


def test_fashion_mnist_real():
    if not (FASHION_DEBIAN / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian dataset-fashion-mnist is not installed")
    s = load_dataset(DataConfig(kind="image", source="fashion-mnist", limit=100))
    assert {k: v.shape for k, v in s.items()} == {k: (100, 784) for k in ("train", "valid", "test")}
    assert s["train"].dtype == np.uint8 and 40 < s["train"].mean() < 110  # real photos, dark bg
    assert not np.array_equal(s["train"][:5], s["test"][:5])


def test_imagenet64_npz_folder(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    for split, part in (("train", imgs[:20]), ("valid", imgs[20:])):
        (tmp_path / "imagenet64" / split).mkdir(parents=True)
        np.savez(tmp_path / "imagenet64" / split / "b.npz",
                 data=part.transpose(0, 3, 1, 2).reshape(len(part), -1))
    s = imagenet64(tmp_path)
    assert s["train"].shape == (18, 12288) and s["valid"].shape == (2, 12288)
    assert np.array_equal(s["test"][3], imgs[23].reshape(-1))


def test_imagenet64_missing_explains(tmp_path):
    with pytest.raises(DataUnavailable, match="image-net.org"):
        imagenet64(tmp_path)


def test_bad_kind_and_source_named():
    with pytest.raises(ValueError, match="data.kind must be one of"):
        load_dataset(DataConfig(kind="video"))
    with pytest.raises(ValueError, match="fashion-mnist"):
        load_dataset(DataConfig(kind="image", source="mnist"))
