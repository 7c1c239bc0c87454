"""A synthetic multi-label set for autotagging: clips of the synthetic genre renderer with controlled properties.

Each clip draws, from its own seeded generator, a genre (one of :data:`TAG_GENRES`), a lead instrument, a tempo
class, a mood (major or minor harmony) and whether drums play, and is rendered by the genre set's renderer with
those choices fixed. Its tags name them, as the tag vocabularies of MagnaTagATune or MTG-Jamendo mix genre,
instrument, tempo and mood tags::

    genre   classical jazz pop rock hiphop          (one a clip)
    lead    piano strings sax guitar synth          (one a clip)
    tempo   slow (60-80 BPM), fast (140-180 BPM)    (neither for 95-120 BPM)
    mood    happy (major), sad (minor)              (one a clip)
    drums   drums                                   (never with classical, 70% otherwise)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..audio import SR
from .core import TaggedDataset
from .synthetic import _GENRES, _synth_files
from .tag_manifest import TAG_MANIFEST, load_tag_manifest, write_tag_manifest

__all__ = ["make_synthetic_tags", "TAG_GENRES"]

TAG_GENRES = ("classical", "jazz", "pop", "rock", "hiphop")
_LEADS = {"piano": ("piano",), "strings": ("strings",), "sax": ("sax",), "guitar": ("el_guitar", "dist_guitar"),
          "synth": ("synth_lead",)}
_TEMPI = {"slow": (60, 80), "medium": (95, 120), "fast": (140, 180)}
_MOODS = {"happy": ("major", ("major", "major_pent")), "sad": ("minor", ("minor", "minor_pent"))}
_VERSION = 1
_STAMP = "synthetic_tags.json"


def _clip_design(seed: int, i: int) -> tuple[dict, list[str]]:
    """(the renderer's genre dict for clip ``i``, its tags)."""
    rng = np.random.default_rng([seed, i, 7])
    genre = TAG_GENRES[rng.integers(len(TAG_GENRES))]
    lead = list(_LEADS)[rng.integers(len(_LEADS))]
    tempo = list(_TEMPI)[rng.integers(len(_TEMPI))]
    mood = list(_MOODS)[rng.integers(len(_MOODS))]
    drums = _GENRES[genre]["kick"] is not None and rng.random() < 0.7
    harmony, scales = _MOODS[mood]
    inst = _LEADS[lead][rng.integers(len(_LEADS[lead]))]
    g = dict(_GENRES[genre], tempo=_TEMPI[tempo], lead=((inst, 1),), harmony=harmony, scales=scales,
             drum_prob=1.0 if drums else 0.0)
    tags = [genre, lead, mood] + ([tempo] if tempo != "medium" else []) + (["drums"] if drums else [])
    return g, tags


def make_synthetic_tags(root, n_clips: int = 60, seconds: float = 10.0, seed: int = 0, sr: int = SR, *,
                        n_jobs: int = 1, verbose: int = 0) -> TaggedDataset:
    """Generate (or reuse) ``n_clips`` tagged clips ``root/tagged/clip.NNNNN.wav`` and their manifest
    ``root/tagged/tags.tsv`` (:func:`load_tag_manifest` reads it back), and return the :class:`TaggedDataset`.

    Clip ``i`` depends only on ``(seed, i, seconds, sr)``; a stamp records the parameters, and asking again for the
    same ones reuses the files. Refuses (ValueError) to write into a ``tagged`` folder it did not create.
    """
    fn = "make_synthetic_tags"
    if not (isinstance(n_clips, (int, np.integer)) and 2 <= n_clips <= 99999):
        raise ValueError(f"{fn}: n_clips must be an integer in [2, 99999], got {n_clips!r}")
    if not (isinstance(seconds, (int, float)) and 1.0 <= seconds <= 600):
        raise ValueError(f"{fn}: seconds must be in [1, 600], got {seconds!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"{fn}: seed must be a non-negative integer, got {seed!r}")
    folder = Path(root) / "tagged"
    stamp_path = folder / _STAMP
    want = {"generator": f"pymusicrbm.datasets.{fn}", "version": _VERSION, "n_clips": int(n_clips),
            "seconds": float(seconds), "seed": int(seed), "sr": int(sr)}
    if stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text()) == want:
                return load_tag_manifest(folder)
        except (OSError, ValueError):
            pass
    elif folder.is_dir() and any(folder.iterdir()):
        raise ValueError(f"{fn}: {str(folder)!r} is not empty and was not written by {fn}; choose another root")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stamp_path.unlink(missing_ok=True)
        for p in folder.glob("clip.*.wav"):
            p.unlink()
    except OSError as err:
        raise ValueError(f"{fn}: cannot write under {str(root)!r}: {err}") from None
    designs = [_clip_design(int(seed), i) for i in range(n_clips)]
    paths = [folder / f"clip.{i:05d}.wav" for i in range(n_clips)]
    # class index 1000: clip i's renderer seed differs from every clip of the genre set
    _synth_files([(str(p), g, int(seed), 1000, i, float(seconds), int(sr)) for i, (p, (g, _)) in
                  enumerate(zip(paths, designs))], "synthetic tags", n_jobs, verbose)
    tags = sorted({t for _, ts in designs for t in ts})
    targets = np.array([[t in ts for t in tags] for _, ts in designs], dtype=bool)
    write_tag_manifest(TaggedDataset(paths, targets, tags, folder), folder / TAG_MANIFEST)
    tmp = stamp_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(want, indent=1))
    os.replace(tmp, stamp_path)
    return load_tag_manifest(folder)
