"""Audio as bytes: mu-law, resampling, a folder cut into sequences, the rendered Bach corpus."""
import shutil

import numpy as np
import pytest

from sparse_transformer.data import load_dataset
from sparse_transformer.data.audio import (audio_splits, mu_law_decode, mu_law_encode, read_audio,
                                           resample, write_wav)
from sparse_transformer.data.downloads import DataUnavailable
from sparse_transformer.models import DataConfig


def test_mu_law_round_trip_and_range():
    x = np.linspace(-1, 1, 10001)
    q = mu_law_encode(x)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(mu_law_encode(mu_law_decode(codes)), codes)  # 256 distinct symbols
    err = np.abs(mu_law_decode(q) - x)
    assert err.max() < 0.025 and err[np.abs(x) < 0.01].max() < 3e-4  # fine steps near zero
    assert mu_law_encode(np.array([0.0]))[0] in (127, 128)


def test_resample_keeps_a_tone():
    t = np.arange(16000) / 16000
    x = np.sin(2 * np.pi * 440 * t)
    y = resample(x, 16000, 8000)
    assert len(y) == 8000
    f = np.abs(np.fft.rfft(y)).argmax()  # 1 Hz bins over one second
    assert f == 440


def test_folder_cut_into_sequences(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        write_wav(tmp_path / f"piece{i}.wav", 0.5 * np.sin(np.arange(4000 + 500 * i) * 0.05 * (i + 1)), 8000)
    x, sr = read_audio(tmp_path / "piece0.wav")
    assert sr == 8000 and len(x) == 4000
    s = audio_splits(tmp_path, rate=4000, length=256)
    assert all(v.dtype == np.uint8 and v.shape[1] == 256 and len(v) for v in s.values())
    total = sum(len(v) for v in s.values())
    assert total == sum((2000 + 250 * i) // 256 for i in range(6))
    with pytest.raises(ValueError, match="data.length"):
        audio_splits(tmp_path, rate=4000, length=1)
    with pytest.raises(DataUnavailable, match="does not exist"):
        audio_splits(tmp_path / "missing", 4000, 256)


def test_bach_rendered_by_fluidsynth(tmp_path):
    pytest.importorskip("music21")
    if shutil.which("fluidsynth") is None:
        pytest.skip("fluidsynth is not installed (scripts/get_offline_data.sh)")
    cfg = DataConfig(kind="audio", source="bach", rate=8000, length=4096, pieces=3,
                     root=str(tmp_path))
    s = load_dataset(cfg)
    wavs = sorted((tmp_path / "bach-16000").glob("*.wav"))
    assert len(wavs) == 3
    x, sr = read_audio(wavs[0])
    assert sr == 16000 and len(x) > 16000 * 5 and np.abs(x).max() > 0.05  # real music, not silence
    assert s["train"].shape[1] == 4096 and len(s["train"]) > 10
    assert len(np.unique(s["train"])) > 100
    mtime = wavs[0].stat().st_mtime
    load_dataset(cfg)  # cached: not rendered again
    assert wavs[0].stat().st_mtime == mtime
