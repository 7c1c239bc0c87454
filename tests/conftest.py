"""Shared pytest fixtures (generic: any test file may use them).

- ``tiny_gtzan`` (session): a Path ``root`` holding a GTZAN-shaped folder ``root/genres/<genre>/<genre>.000NN.<ext>``
  of generated audio: 3 genres (blues, jazz, rock) x 4 clips of 2 s, every clip readable, but with mixed formats
  (.wav and .au), sample rates (22050, 44100, 16000 Hz) and channel counts (mono, stereo). Each genre has its own
  tone frequency (blues 220 Hz, jazz 330 Hz, rock 440 Hz). Read-only: copy it before changing anything.
- ``synthetic_small`` (session): ``datasets.make_synthetic_genres(<tmp>, n_per_class=8, seconds=5.0, seed=0)``,
  an ``AudioDataset`` of 80 clips of the built-in synthetic genre set (all 10 GTZAN genre names).
"""
import numpy as np
import pytest
import soundfile as sf

TINY_GENRES = {"blues": 220.0, "jazz": 330.0, "rock": 440.0}
# (extension, sample rate, channels) cycled over the clips of each genre
TINY_VARIANTS = [(".wav", 22050, 1), (".au", 22050, 1), (".wav", 44100, 2), (".au", 16000, 2)]


def tiny_clip(freq: float, sr: int, channels: int, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A decaying tone plus a little noise, shape (n,) or (n, channels), float in [-1, 1]."""
    t = np.arange(int(seconds * sr)) / sr
    y = 0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return y if channels == 1 else np.stack([y, 0.5 * y], axis=1)


@pytest.fixture(scope="session")
def tiny_gtzan(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_gtzan")
    for genre, freq in TINY_GENRES.items():
        (root / "genres" / genre).mkdir(parents=True)
        for i, (ext, sr, ch) in enumerate(TINY_VARIANTS):
            fmt = "AU" if ext == ".au" else "WAV"
            sf.write(root / "genres" / genre / f"{genre}.{i:05d}{ext}", tiny_clip(freq, sr, ch, seed=i), sr,
                     format=fmt, subtype="PCM_16")
    return root


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    from pymusicrbm import datasets

    return datasets.make_synthetic_genres(tmp_path_factory.mktemp("synthetic_small"), n_per_class=8, seconds=5.0,
                                          seed=0)
