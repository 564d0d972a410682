"""Raw audio as bytes: mono, resampled to a chosen rate, 8-bit mu-law (256 symbols), cut into
sequences of a chosen length.

A folder of WAV / OGG / FLAC files (searched recursively) becomes a dict of splits, each a uint8
array (N, length): one row per sequence, cut without overlap from each file (the tail shorter than
``length`` is dropped). Files are split by piece, by a hash of the file's name (90 / 5 / 5), so no
piece is in two splits. Reading OGG and FLAC needs ``soundfile`` (``pip install soundfile``); PCM
WAV is read with the standard library when it is absent.

``bach``: the Bach works of PyPI ``music21``'s corpus, rendered to WAV by ``fluidsynth`` with the
FluidR3 General MIDI soundfont (``scripts/get_offline_data.sh`` installs them). Rendering is slow
(music21 parses each score), so it is cached under ``ROOT/bach-<rate>``; duplicate encodings of
one work (``.krn`` beside ``.mxl``, ``-inst`` variants) are rendered once.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

from .downloads import DataUnavailable, default_root
from .files import data_files

AUDIO_SUFFIXES = (".wav", ".ogg", ".flac")
MU = 255
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def mu_law_encode(x: np.ndarray, mu: int = MU) -> np.ndarray:
    """Float samples in [-1, 1] -> uint8 codes 0..mu (mu + 1 symbols)."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    f = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.floor((f + 1) / 2 * mu + 0.5).astype(np.uint8)


def mu_law_decode(q: np.ndarray, mu: int = MU) -> np.ndarray:
    """uint8 codes -> float32 samples in [-1, 1]."""
    f = 2 * np.asarray(q, dtype=np.float64) / mu - 1
    return (np.sign(f) * np.expm1(np.abs(f) * np.log1p(mu)) / mu).astype(np.float32)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal (FFT: frequencies above the new Nyquist are cut)."""
    if rate_in == rate_out or len(x) == 0:
        return np.asarray(x, dtype=np.float32)
    n_out = int(round(len(x) * rate_out / rate_in))
    spec = np.fft.rfft(x)
    keep = min(len(spec), n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, dtype=complex)
    out_spec[:keep] = spec[:keep]
    return (np.fft.irfft(out_spec, n_out) * (n_out / len(x))).astype(np.float32)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Any WAV / OGG / FLAC -> (mono float32 samples in [-1, 1], sample rate)."""
    path = Path(path)
    try:
        import soundfile as sf
    except ImportError:
        sf = None
    if sf is not None:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return x.mean(axis=1), int(sr)
    if path.suffix.lower() != ".wav":
        raise ImportError(f"reading {path.suffix} files needs soundfile: pip install soundfile")
    with wave.open(str(path), "rb") as w:
        width, ch, sr = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2**31
    else:
        raise ValueError(f"{path}: {8 * width}-bit WAV needs soundfile (pip install soundfile)")
    return x.reshape(-1, ch).mean(axis=1), sr


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """Mono float samples in [-1, 1] -> 16-bit PCM WAV (standard library only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    return path


def encode_file(path: str | Path, rate: int) -> np.ndarray:
    x, sr = read_audio(path)
    return mu_law_encode(resample(x, sr, rate))


def _split_of(name: str) -> str:
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100
    return "valid" if h < 5 else "test" if h < 10 else "train"


def audio_splits(folder: str | Path, rate: int, length: int, limit: int = 0) -> dict:
    """Folder of audio files -> {split: uint8 (N, length)} (see the module doc)."""
    folder = Path(folder)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise ValueError(f"data.rate must be a positive int (samples per second), got {rate!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"data.length must be an int >= 2 (bytes per sequence), got {length!r}")
    if not folder.is_dir():
        raise DataUnavailable(f"audio folder {str(folder)!r} does not exist")
    files = data_files(folder, AUDIO_SUFFIXES)  # links inside are skipped (see data.files)
    if not files:
        raise DataUnavailable(f"audio folder {str(folder)!r} holds no {'/'.join(AUDIO_SUFFIXES)} files")
    by_split: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for p in files:
        by_split[_split_of(str(p.relative_to(folder)))].append(p)
    if len(files) >= 3:  # every split gets at least one piece
        for need in ("valid", "test"):
            if not by_split[need]:
                donor = max(by_split, key=lambda k: len(by_split[k]))
                by_split[need].append(by_split[donor].pop())
    out = {}
    for split, paths in by_split.items():
        rows = []
        for p in paths:
            codes = encode_file(p, rate)
            n = len(codes) // length
            if n:
                rows.append(codes[:n * length].reshape(n, length))
            if limit and sum(len(r) for r in rows) >= limit:
                break
        arr = np.concatenate(rows) if rows else np.zeros((0, length), np.uint8)
        out[split] = arr[:limit] if limit else arr
    if not len(out["train"]):
        raise DataUnavailable(f"audio folder {str(folder)!r}: no file in the train split is as "
                              f"long as one sequence ({length} samples at {rate} Hz)")
    for split in ("valid", "test"):
        if not len(out[split]):
            out[split] = out["train"][-1:]
    return out


# -- Bach from music21, rendered by fluidsynth -------------------------------------------------
def _work_id(path: Path) -> str:
    stem = re.sub(r"-inst$", "", path.stem)
    return stem


def render_music21(composer: str = "bach", out_dir: str | Path | None = None, rate: int = 16000,
                   max_pieces: int = 0, soundfont: str | Path = SOUNDFONT) -> Path:
    """Render ``composer``'s works in the music21 corpus to WAV (cached; returns the folder)."""
    try:
        from music21 import corpus
    except ImportError:
        raise DataUnavailable("the music21 corpus is not installed: run scripts/get_offline_data.sh "
                              "(pip install music21==10.5.1)") from None
    if shutil.which("fluidsynth") is None or not Path(soundfont).exists():
        raise DataUnavailable("rendering needs fluidsynth and the FluidR3 soundfont: run "
                              "scripts/get_offline_data.sh (apt-get install fluidsynth "
                              "fluid-soundfont-gm)")
    out = Path(out_dir) if out_dir else default_root() / f"{composer}-{rate}"
    out.mkdir(parents=True, exist_ok=True)
    seen, pieces = set(), []
    for p in sorted(Path(x) for x in corpus.getComposer(composer)):
        wid = _work_id(p)
        if wid not in seen:
            seen.add(wid)
            pieces.append(p)
    if max_pieces:
        pieces = pieces[:max_pieces]
    for p in pieces:
        wav = out / f"{_work_id(p)}.wav"
        failed = out / f"{_work_id(p)}.failed"
        if wav.exists() or failed.exists():
            continue
        mid = out / f".{_work_id(p)}.mid"
        tmp = out / f".{_work_id(p)}.wav.part"
        try:
            corpus.parse(str(p)).write("midi", fp=str(mid))
            subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.8", "-r", str(rate), "-T", "wav",
                            "-F", str(tmp), str(soundfont), str(mid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            tmp.replace(wav)
        except Exception:  # a badly formed score: remember it, render the rest
            failed.touch()
        finally:
            for f in (mid, tmp):
                if f.exists():
                    f.unlink()
    return out


def load_audio(source: str, rate: int, length: int, root: str | Path | None = None,
               limit: int = 0, max_pieces: int = 0) -> dict:
    if source == "bach":
        folder = render_music21("bach", (Path(root) / f"bach-16000") if root else None,
                                rate=16000, max_pieces=max_pieces)
        return audio_splits(folder, rate, length, limit)
    return audio_splits(source, rate, length, limit)
