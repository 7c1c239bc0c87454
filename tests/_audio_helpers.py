"""Signals and audio files written by the audio and dataset tests (shared by test_audio_*.py, test_datasets_*.py)."""
import os

import numpy as np
import soundfile as sf

from pymusicrbm.audio import SR


def tone(freq, seconds, sr=SR, amp=0.5):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(n, seed=0, amp=0.3):
    return (amp * np.random.default_rng(seed).uniform(-1, 1, n)).astype(np.float32)


def peak_hz(y, sr=SR):
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return np.argmax(spec) * sr / y.size


def bad_file(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "missing":
        pass
    elif kind == "zero_length":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + os.urandom(200))
    elif kind == "silent":
        sf.write(path, np.zeros(SR, np.float32), SR, subtype="PCM_16")
    elif kind == "nan":
        y = noise(SR)
        y[100] = np.nan
        sf.write(path, y, SR, subtype="FLOAT")
    elif kind == "inf":
        y = noise(SR)
        y[5] = np.inf
        sf.write(path, y, SR, subtype="FLOAT")
    return path


def write_clip(path, seed=0, sr=SR, channels=1, seconds=0.3):
    path.parent.mkdir(parents=True, exist_ok=True)
    y = 0.3 * np.random.default_rng(seed).uniform(-1, 1, (int(seconds * sr), channels))
    fmt = {".au": "AU", ".flac": "FLAC", ".mp3": "MP3"}.get(path.suffix, "WAV")
    sf.write(path, y, sr, format=fmt, subtype="MPEG_LAYER_III" if fmt == "MP3" else "PCM_16")
    return path


GENRES3 = ("metal", "blues", "classical")  # deliberately not in GTZAN order


def make_layout(root, layout, genres=GENRES3, n=2):
    """GTZAN clips <genre>.000NN.{au,wav} (alternating) in the given layout; returns the folder holding them."""
    base = {"genres": root / "genres", "genres_original": root / "genres_original",
            "kaggle": root / "Data" / "genres_original", "root": root, "flat": root}[layout]
    for g in genres:
        for i in range(n):
            name = f"{g}.{i:05d}{'.au' if i % 2 else '.wav'}"
            write_clip(base / name if layout == "flat" else base / g / name, seed=i)
    return base
