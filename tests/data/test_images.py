"""Images as bytes: the CIFAR-10 layout (HWC, raster order), Fashion-MNIST, ImageNet 64x64."""
import hashlib
import io
import pickle
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


def _fake_cifar_tarball(path, images):
    """A tarball laid out as the published cifar-10-python.tar.gz, holding ``images``."""
    planar = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CHW, as published
    with tarfile.open(path, "w:gz") as tar:
        for name, rows in [("data_batch_1", planar[:8]), ("data_batch_2", planar[8:16]),
                           ("test_batch", planar[16:])]:
            blob = pickle.dumps({"data": rows, "labels": [0] * len(rows)})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_cifar10_layout_on_real_images(tmp_path, monkeypatch):
    got = foolbox_cifar10()
    if got is None:
        pytest.skip("foolbox (the 20 real CIFAR-10 test images) is not installed")
    x, labels = got
    assert x.shape == (20, 32, 32, 3) and labels[:4] == [3, 8, 8, 0]
    src = tmp_path / "cifar-10-python.tar.gz"
    _fake_cifar_tarball(src, x)
    checksum = "md5:" + hashlib.md5(src.read_bytes()).hexdigest()
    monkeypatch.setattr("sparse_transformer.data.images.CIFAR10_VALID", 4)
    splits = cifar10(tmp_path / "root", download=True, url=src.as_uri(), checksum=checksum)
    assert splits["train"].shape == (12, 3072) and splits["valid"].shape == (4, 3072)
    # each row is the image in raster order with the 3 channels of each pixel together
    assert np.array_equal(splits["test"][0], x[16].reshape(-1))
    assert splits["test"][0][:3].tolist() == x[16, 0, 0].tolist()
    assert np.array_equal(rows_to_images(splits["train"], (32, 32, 3)), x[:12])


def test_cifar10_missing_names_url(tmp_path):
    with pytest.raises(DataUnavailable, match="cifar-10-python.tar.gz"):
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
