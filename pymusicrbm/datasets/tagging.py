"""Autotagging datasets as :class:`TaggedDataset`: MagnaTagATune (top-50 tags, the split of Won et al. 2020) and
MTG-Jamendo (its five tag subsets and five splits).

Both read their own annotation files as published, check every row (a malformed file is a ValueError naming the
file, the line and what was expected) and report clips whose audio is missing or unreadable in ``skipped`` (with
an :class:`~pymusicrbm.audio.AudioWarning`) instead of failing later.
"""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

from .core import TaggedDataset
from .loaders import _check_files
from .splits import _shipped

__all__ = ["load_magnatagatune", "load_mtg_jamendo", "MTG_JAMENDO_SUBSETS"]

MTAT_URL = "https://mirg.city.ac.uk/codeapps/the-magnatagatune-dataset"
JAMENDO_URL = "https://github.com/MTG/mtg-jamendo-dataset"
# subset name -> the file stem MTG-Jamendo uses for it
MTG_JAMENDO_SUBSETS = {"top50tags": "autotagging_top50tags", "genre": "autotagging_genre",
                       "instrument": "autotagging_instrument", "moodtheme": "autotagging_moodtheme",
                       "all": "autotagging"}


def _build_tagged(paths, targets, tags, root: Path, fn: str, check: bool, splits=None, what="audio"):
    """A TaggedDataset of the usable clips (missing/unreadable ones skipped and reported), splits re-indexed."""
    keep, skipped = _check_files(paths, root, fn, check)
    if not keep.any():
        raise ValueError(f"{fn}: none of the {len(paths)} {what} files the annotations list can be read under "
                         f"{str(root)!r} (e.g. {skipped[0][0]}: {skipped[0][1]}); is the audio folder right?")
    new = np.cumsum(keep) - 1
    splits = {name: new[idx[keep[idx]]] for name, idx in (splits or {}).items()}
    return TaggedDataset([p for p, k in zip(paths, keep) if k], np.asarray(targets)[keep], tags, root, skipped,
                         splits)


def _read_tsv(path: Path, fn: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty row of a tab-separated file (quotes as csv reads them)."""
    if not path.is_file():
        raise ValueError(f"{fn}: annotation file {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        return [(n, row) for n, row in enumerate(csv.reader(f, delimiter="\t"), start=1) if any(row)]


# --------------------------------------------------------------------------------------------- MagnaTagATune
def _mtat_audio_dir(root: Path, audio_dir, fn: str) -> Path:
    folders = [f"{i:x}" for i in range(16)]
    cands = [Path(audio_dir)] if audio_dir is not None else [root, root / "mp3", root / "audio"]
    for cand in cands:
        if any((cand / d).is_dir() for d in folders):
            return cand
    raise ValueError(f"{fn}: no MagnaTagATune audio folders 0-f in {[str(c) for c in cands]}; unpack "
                     f"mp3.zip.001-003 ({MTAT_URL}) there or pass audio_dir")


def load_magnatagatune(root, *, top_k: int | None = 50, split: str | None = "won2020", audio_dir=None,
                       check: bool = True) -> TaggedDataset:
    """MagnaTagATune from ``root/annotations_final.csv`` and its mp3 clips in folders ``0``-``f``.

    ``annotations_final.csv`` is the tab-separated file of the dataset's site (quoted fields): ``clip_id``, the
    188 binary tag columns, ``mp3_path`` (e.g. ``f/american_bach_soloists-...-30-59.mp3``). Audio is looked for in
    ``audio_dir``, else ``root``, ``root/mp3`` or ``root/audio`` (the folder holding ``0``-``f``); clip names are
    the ``mp3_path`` values. ``clip_info_final.csv`` is not needed.

    ``top_k``: keep the ``top_k`` most frequent tags over all annotated clips (50: the benchmark's tag set, as Lee
    et al. 2017 and Won et al. 2020 choose it); None keeps all. ``split='won2020'``: only the 21,105 clips of the
    train/valid/test split of Won et al. 2020 (shipped with the package, see ``splits_data/SOURCES.md``; clips with
    at least one top-50 tag and more than 29.1 s of audio), in ``dataset.splits`` as ``'train'`` (15,244),
    ``'valid'`` (1,529) and ``'test'`` (4,332); None: every annotated clip, no split.
    """
    fn = "load_magnatagatune"
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{fn}: folder {str(root)!r} does not exist")
    if split not in ("won2020", None):
        raise ValueError(f"{fn}: split must be 'won2020' or None, got {split!r}")
    if top_k is not None and not (isinstance(top_k, (int, np.integer)) and top_k >= 1):
        raise ValueError(f"{fn}: top_k must be None or an integer >= 1, got {top_k!r}")
    ann = root / "annotations_final.csv"
    if not ann.is_file():
        raise ValueError(f"{fn}: {str(ann)!r} does not exist; MagnaTagATune's annotations_final.csv comes from "
                         f"{MTAT_URL}")
    rows = _read_tsv(ann, fn)
    if not rows:
        raise ValueError(f"{fn}: {ann} is empty")
    _, header = rows[0]
    header = [h.strip() for h in header]
    if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
        raise ValueError(f"{fn}: {ann}:{rows[0][0]}: expected a tab-separated header 'clip_id', <tags>, "
                         f"'mp3_path', got {header[:3]} ... {header[-1:]}")
    tags = header[1:-1]
    if len(set(tags)) != len(tags):
        raise ValueError(f"{fn}: {ann}:{rows[0][0]}: tag columns must be unique")
    names, targets = [], []
    for lineno, row in rows[1:]:
        if len(row) != len(header):
            raise ValueError(f"{fn}: {ann}:{lineno}: expected {len(header)} tab-separated fields (clip_id, "
                             f"{len(tags)} tags, mp3_path), got {len(row)}")
        values = row[1:-1]
        bad = next((j for j, v in enumerate(values) if v not in ("0", "1")), None)
        if bad is not None:
            raise ValueError(f"{fn}: {ann}:{lineno}: tag {tags[bad]!r} must be 0 or 1, got {values[bad]!r}")
        if not row[-1].strip():
            raise ValueError(f"{fn}: {ann}:{lineno}: empty mp3_path")
        names.append(row[-1].strip())
        targets.append([v == "1" for v in values])
    if not names:
        raise ValueError(f"{fn}: {ann} lists no clips")
    targets = np.array(targets, dtype=bool).reshape(len(names), len(tags))
    if top_k is not None:  # by frequency over all annotated clips; ties by column order
        order = np.argsort(-targets.sum(axis=0), kind="stable")[:top_k]
        tags, targets = [tags[j] for j in order], targets[:, order]
    index = {n: i for i, n in enumerate(names)}
    if len(index) != len(names):
        raise ValueError(f"{fn}: {ann}: some mp3_path values are listed twice")
    splits = {}
    if split == "won2020":
        order, parts = [], {}
        for part in ("train", "valid", "test"):
            with gzip.open(_shipped(f"mtat_won2020_{part}.txt.gz"), "rt", encoding="utf-8") as f:
                listed = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
            unknown = [n for n in listed if n not in index]
            if unknown:
                raise ValueError(f"{fn}: {len(unknown)} clips of the won2020 {part} list are not in {ann} (e.g. "
                                 f"{unknown[:3]}); is it MagnaTagATune's annotations_final.csv?")
            parts[part] = np.arange(len(order), len(order) + len(listed))
            order += [index[n] for n in listed]
        names, targets, splits = [names[i] for i in order], targets[order], parts
    audio = _mtat_audio_dir(root, audio_dir, fn)
    return _build_tagged([audio / n for n in names], targets, tags, audio, fn, check, splits, "mp3")


# ---------------------------------------------------------------------------------------------- MTG-Jamendo
_JAMENDO_HEADER = ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS"]


def _read_jamendo_tsv(path: Path, fn: str) -> list[tuple[str, list[str]]]:
    """[(PATH, tags)] of an MTG-Jamendo TSV (header TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS, then one track
    a line with its tags, ``category---tag``, in the trailing tab-separated fields)."""
    rows = _read_tsv(path, fn)
    if not rows or [h.strip() for h in rows[0][1]] != _JAMENDO_HEADER:
        got = rows[0][1] if rows else "an empty file"
        raise ValueError(f"{fn}: {path}:1: expected the header {' '.join(_JAMENDO_HEADER)} (tab-separated), "
                         f"got {got}")
    out = []
    for lineno, row in rows[1:]:
        if len(row) < 6 or not row[3].strip():
            raise ValueError(f"{fn}: {path}:{lineno}: expected TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION and "
                             f"at least one tag, got {row}")
        tags = [t.strip() for t in row[5:] if t.strip()]
        bad = [t for t in tags if "---" not in t]
        if bad or not tags:
            raise ValueError(f"{fn}: {path}:{lineno}: tags must look like 'genre---rock', got {bad or row[5:]}")
        out.append((row[3].strip(), tags))
    return out


def load_mtg_jamendo(root, *, subset: str = "top50tags", split: int | None = 0, audio_dir=None,
                     check: bool = True) -> TaggedDataset:
    """MTG-Jamendo from a clone of its repository (``root`` holding ``data/``, or ``data/`` itself).

    ``subset``: ``'top50tags'``, ``'genre'``, ``'instrument'``, ``'moodtheme'`` or ``'all'`` (``autotagging.tsv``,
    every tag). ``split``: which of the published splits ``data/splits/split-<k>/<subset file>-{train,validation,
    test}.tsv`` to read (0-4), in ``dataset.splits`` as ``'train'``, ``'valid'``, ``'test'``; None reads
    ``data/<subset file>.tsv`` whole, without a split. Tags keep their ``category---tag`` names, sorted. Audio is
    ``<audio_dir>/<PATH>`` (e.g. ``14/1234.mp3``; the low-quality download's ``14/1234.low.mp3`` is found too);
    ``audio_dir`` defaults to ``root``.
    """
    fn = "load_mtg_jamendo"
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{fn}: folder {str(root)!r} does not exist")
    if subset not in MTG_JAMENDO_SUBSETS:
        raise ValueError(f"{fn}: subset must be one of {list(MTG_JAMENDO_SUBSETS)}, got {subset!r}")
    if split is not None and not (isinstance(split, (int, np.integer)) and split >= 0):
        raise ValueError(f"{fn}: split must be None or a split number (0-4), got {split!r}")
    data = root / "data" if (root / "data").is_dir() else root
    stem = MTG_JAMENDO_SUBSETS[subset]
    if split is None:
        files = {None: data / f"{stem}.tsv"}
    else:
        folder = data / "splits" / f"split-{split}"
        if not folder.is_dir():
            raise ValueError(f"{fn}: split folder {str(folder)!r} does not exist; MTG-Jamendo's metadata (with "
                             f"data/splits/split-0 ... split-4) comes from {JAMENDO_URL}")
        files = {part: folder / f"{stem}-{name}.tsv"
                 for part, name in (("train", "train"), ("valid", "validation"), ("test", "test"))}
    rows, splits, seen = [], {}, {}
    for part, path in files.items():
        if not path.is_file():
            raise ValueError(f"{fn}: annotation file {str(path)!r} does not exist (expected MTG-Jamendo's layout, "
                             f"{JAMENDO_URL})")
        part_rows = _read_jamendo_tsv(path, fn)
        for p, _ in part_rows:
            if p in seen:
                raise ValueError(f"{fn}: {p} is listed in both {seen[p].name} and {path.name}")
            seen[p] = path
        if part is not None:
            splits[part] = np.arange(len(rows), len(rows) + len(part_rows))
        rows += part_rows
    if not rows:
        raise ValueError(f"{fn}: {[str(f) for f in files.values()]} list no tracks")
    tags = sorted({t for _, ts in rows for t in ts})
    col = {t: j for j, t in enumerate(tags)}
    targets = np.zeros((len(rows), len(tags)), bool)
    for i, (_, ts) in enumerate(rows):
        targets[i, [col[t] for t in ts]] = True
    audio = Path(audio_dir) if audio_dir is not None else root
    if not audio.is_dir():
        raise ValueError(f"{fn}: audio_dir {str(audio)!r} does not exist")
    paths = []
    for p, _ in rows:
        path = audio / p
        low = path.with_suffix(".low" + path.suffix)
        paths.append(low if not path.exists() and low.exists() else path)
    return _build_tagged(paths, targets, tags, audio, fn, check, splits)
