"""The Free Music Archive dataset (FMA, Defferrard et al. 2017) from ``fma_metadata/tracks.csv`` and its
``fma_<subset>/NNN/NNNNNN.mp3`` audio: ``genre_top`` as one class a clip, or ``genres_all`` as tags."""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np

from ..audio import AudioWarning
from .loaders import _build
from .tagging import _build_tagged

__all__ = ["load_fma", "FMA_SUBSETS"]

FMA_URL = "https://github.com/mdeff/fma"
# Nested: small is part of medium, medium of large; full holds the same tracks as large, untrimmed.
FMA_SUBSETS = ("small", "medium", "large", "full")
_SPLITS = {"training": "train", "validation": "valid", "test": "test"}
_COLUMNS = {("set", "subset"): "subset", ("set", "split"): "split", ("track", "genre_top"): "genre_top",
            ("track", "genres_all"): "genres_all"}


def _read_tracks(path: Path, fn: str) -> list[dict]:
    """One dict (track_id, subset, split, genre_top, genres_all, line) per row of ``tracks.csv``: two header rows
    (column groups such as ``set``/``track``, then names such as ``subset``/``genre_top``), the ``track_id`` row
    pandas writes, then one track a row (fields may span lines)."""
    if not path.is_file():
        raise ValueError(f"{fn}: {str(path)!r} does not exist; FMA's metadata (fma_metadata.zip) comes from {FMA_URL}")
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            top, names = next(reader), next(reader)
        except StopIteration:
            raise ValueError(f"{fn}: {path}: expected two header rows (e.g. 'set','track' then 'subset','genre_top')"
                             ) from None
        cols = {}
        for j, key in enumerate(zip(top, names)):
            if key in _COLUMNS:
                cols[_COLUMNS[key]] = j
        missing = [f"{a}.{b}" for (a, b), k in _COLUMNS.items() if k not in cols]
        if missing or len(top) != len(names):
            raise ValueError(f"{fn}: {path}:1-2: expected the two-row header of FMA's tracks.csv with columns "
                             f"set.subset, set.split, track.genre_top, track.genres_all; missing {missing}")
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1  # the record's first line (fields such as bios span lines)
            if not any(row) or (row[0] == "track_id" and not any(row[1:])):
                continue
            if len(row) != len(top):
                raise ValueError(f"{fn}: {path}:{line}: expected {len(top)} comma-separated fields, got {len(row)}")
            try:
                track_id = int(row[0])
                genres_all = json.loads(row[cols["genres_all"]] or "[]")
                if not (isinstance(genres_all, list) and all(isinstance(g, int) for g in genres_all)):
                    raise ValueError
            except ValueError:
                raise ValueError(f"{fn}: {path}:{line}: expected an integer track_id and genres_all like "
                                 f"'[21, 38]', got {row[0]!r} and {row[cols['genres_all']]!r}") from None
            subset, split = row[cols["subset"]], row[cols["split"]]
            if subset not in FMA_SUBSETS[:3] or split not in _SPLITS:
                raise ValueError(f"{fn}: {path}:{line}: expected set.subset in {list(FMA_SUBSETS[:3])} and set.split "
                                 f"in {list(_SPLITS)}, got {subset!r} and {split!r}")
            out.append(dict(track_id=track_id, subset=subset, split=split, genre_top=row[cols["genre_top"]].strip(),
                            genres_all=genres_all, line=line))
    if not out:
        raise ValueError(f"{fn}: {path} lists no tracks")
    return out


def _read_genres(path: Path, fn: str) -> dict[int, str]:
    """genre_id -> title from ``genres.csv`` (columns genre_id, #tracks, parent, title, top_level)."""
    if not path.is_file():
        raise ValueError(f"{fn}: {str(path)!r} does not exist (multilabel needs FMA's genres.csv, {FMA_URL})")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"genre_id", "title"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{fn}: {path}:1: expected columns genre_id and title, got {reader.fieldnames}")
        titles = {}
        for row in reader:
            try:
                titles[int(row["genre_id"])] = row["title"].strip()
            except (TypeError, ValueError):
                raise ValueError(f"{fn}: {path}:{reader.line_num}: expected an integer genre_id, got "
                                 f"{row['genre_id']!r}") from None
    return titles


def load_fma(root, *, metadata=None, subset: str = "small", split: str | None = None, multilabel: bool = False,
             check: bool = True):
    """FMA clips of ``subset`` under ``root/fma_<subset>/NNN/NNNNNN.mp3``, labelled from ``tracks.csv``.

    ``metadata``: the folder of ``tracks.csv`` (and ``genres.csv``), by default ``root/fma_metadata``.
    ``subset``: ``'small'`` (8,000 tracks, 8 balanced genres), ``'medium'`` (25,000, 16 genres), ``'large'`` or
    ``'full'`` (106,574); subsets are nested, as ``tracks['set', 'subset'] <= subset`` selects them in FMA's
    ``utils.py``. ``split``: ``'training'``, ``'validation'`` or ``'test'`` keeps that part of FMA's split; None
    keeps all and puts the split in ``dataset.splits`` (``'train'``, ``'valid'``, ``'test'``).

    Returns an :class:`AudioDataset` with ``track.genre_top`` as the class (tracks without one, common in
    ``large``, are skipped and reported), or with ``multilabel=True`` a :class:`TaggedDataset` of each track's
    ``track.genres_all`` (every genre and its parents), named by ``genres.csv`` titles. Missing or unreadable mp3s
    (FMA has a few empty or truncated ones) are skipped and reported.
    """
    fn = "load_fma"
    root = Path(root)
    if subset not in FMA_SUBSETS:
        raise ValueError(f"{fn}: subset must be one of {list(FMA_SUBSETS)}, got {subset!r}")
    if split is not None and split not in _SPLITS:
        raise ValueError(f"{fn}: split must be None or one of {list(_SPLITS)}, got {split!r}")
    meta = Path(metadata) if metadata is not None else root / "fma_metadata"
    audio = root / f"fma_{subset}"
    if not audio.is_dir():
        raise ValueError(f"{fn}: audio folder {str(audio)!r} does not exist; unpack fma_{subset}.zip ({FMA_URL}) "
                         f"into {str(root)!r}")
    rank = {s: k for k, s in enumerate(FMA_SUBSETS[:3])}
    cap = rank.get(subset, 2)
    tracks = [t for t in _read_tracks(meta / "tracks.csv", fn)
              if rank[t["subset"]] <= cap and (split is None or t["split"] == split)]
    if not tracks:
        raise ValueError(f"{fn}: {meta / 'tracks.csv'} has no tracks in subset {subset!r}"
                         + (f", split {split!r}" if split else ""))

    def path_of(t):
        return audio / f"{t['track_id']:06d}"[:3] / f"{t['track_id']:06d}.mp3"

    key = "genres_all" if multilabel else "genre_top"
    unlabelled = [(f"{t['track_id']:06d}"[:3] + f"/{t['track_id']:06d}.mp3", f"no track.{key} in tracks.csv")
                  for t in tracks if not t[key]]
    tracks = [t for t in tracks if t[key]]
    if unlabelled:
        warnings.warn(f"{fn}: left out {len(unlabelled)} tracks without track.{key} (e.g. {unlabelled[0][0]})",
                      AudioWarning, stacklevel=2)
    if not tracks:
        raise ValueError(f"{fn}: no track of subset {subset!r} has a track.{key}")
    parts = {name: np.array([k for k, t in enumerate(tracks) if t["split"] == part], dtype=np.int64)
             for part, name in _SPLITS.items()} if split is None else {}
    if multilabel:
        titles = _read_genres(meta / "genres.csv", fn)
        ids = sorted({g for t in tracks for g in t["genres_all"]})
        unknown = [g for g in ids if g not in titles]
        if unknown:
            line = next(t["line"] for t in tracks if unknown[0] in t["genres_all"])
            raise ValueError(f"{fn}: {meta / 'tracks.csv'}:{line}: genre id {unknown[0]} is not in genres.csv")
        names = [titles[g] for g in ids]
        names = [n if names.count(n) == 1 else f"{n} ({g})" for n, g in zip(names, ids)]
        col = {g: j for j, g in enumerate(ids)}
        targets = np.zeros((len(tracks), len(ids)), bool)
        for i, t in enumerate(tracks):
            targets[i, [col[g] for g in t["genres_all"]]] = True
        ds = _build_tagged([path_of(t) for t in tracks], targets, names, audio, fn, check, parts)
        ds.skipped = unlabelled + ds.skipped
        return ds
    ds = _build([(path_of(t), t["genre_top"]) for t in tracks], sorted({t["genre_top"] for t in tracks}), audio, fn,
                check)
    part_of = {path_of(t): t["split"] for t in tracks}
    ds.splits = {name: np.array([i for i, p in enumerate(ds.paths) if part_of[p] == part], dtype=np.int64)
                 for part, name in _SPLITS.items()} if split is None else {}
    ds.skipped = unlabelled + ds.skipped
    return ds


def _detect_fma(root: Path) -> str | None:
    """The subset of an FMA folder (``fma_metadata/tracks.csv`` and one ``fma_<subset>`` folder), else None;
    ValueError when several audio folders make it ambiguous."""
    if not (root / "fma_metadata" / "tracks.csv").is_file():
        return None
    found = [s for s in FMA_SUBSETS if (root / f"fma_{s}").is_dir()]
    if len(found) > 1:
        raise ValueError(f"load_dataset: {str(root)!r} holds FMA audio folders of several subsets {found}; call "
                         f"load_fma(root, subset=...) to choose one")
    return found[0] if found else None
