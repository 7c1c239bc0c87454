"""Loaders: GTZAN in its common layouts, one folder per class, CSV manifests, and auto-detection between them.

Clips whose header cannot be read (e.g. the corrupt ``jazz.00054.wav`` of the Kaggle GTZAN copy) or that are empty
are skipped and reported by name (an :class:`~pymusicrbm.audio.AudioWarning` and ``dataset.skipped``).
"""
from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import AUDIO_EXTENSIONS, AudioError, AudioWarning, load_audio
from .core import AudioDataset, _rel_name

__all__ = ["GTZAN_GENRES", "load_gtzan", "load_folder", "load_manifest", "load_dataset"]

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
_GTZAN_STEM = re.compile(r"^(" + "|".join(GTZAN_GENRES) + r")\.\d+$", re.IGNORECASE)


def _is_audio(p: Path) -> bool:
    # Hidden files include macOS "._blues.00000.wav" resource forks, which are not audio.
    return p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".") and p.is_file()


def _audio_files(folder: Path, recursive: bool) -> list[Path]:
    if recursive:
        files = [p for p in folder.rglob("*")
                 if _is_audio(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    else:
        files = [p for p in folder.iterdir() if _is_audio(p)]
    return sorted(files)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_dir(root, fn: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise ValueError(f"{fn}: folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise ValueError(f"{fn}: {str(root)!r} is not a folder")
    if not any(root.iterdir()):
        raise ValueError(f"{fn}: folder {str(root)!r} is empty")
    return root


def _probe(path: Path) -> str | None:
    """Why ``path`` cannot be used, from its header (cheap), or None. Full decoding problems surface in extract."""
    try:
        if not path.exists():
            return "file not found"
        if path.stat().st_size == 0:
            return "zero-length file (0 bytes)"
        info = sf.info(str(path))
        return None if info.frames > 0 else "no audio samples"
    except OSError as err:
        return f"cannot read file: {err.strerror or err}"
    except Exception:
        pass
    try:  # not a libsndfile format: let librosa/audioread decode a little of it
        load_audio(path, duration=1.0)
        return None
    except AudioError as err:
        return err.reason


def _check_files(paths: list[Path], root: Path, fn: str, check: bool,
                 skipped: list[tuple[str, str]] | None = None) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Mask of the usable ``paths`` and ``skipped`` plus ``(name, reason)`` of the others, reported in one
    warning: missing files always, unreadable ones (header) with ``check``."""
    skipped = list(skipped or [])
    keep = np.ones(len(paths), bool)
    for i, path in enumerate(paths):
        reason = _probe(path) if check else (None if path.is_file() else "file not found")
        if reason is not None:
            keep[i] = False
            skipped.append((_rel_name(path, root), reason))
    if skipped:
        lines = "\n".join(f"  {name}: {reason}" for name, reason in skipped[:50])
        more = f"\n  ... and {len(skipped) - 50} more" if len(skipped) > 50 else ""
        warnings.warn(f"{fn}: skipped {len(skipped)} unreadable clips:\n{lines}{more}", AudioWarning, stacklevel=4)
    return keep, skipped


def _build(items: list[tuple[Path, str]], classes: list[str], root: Path, fn: str, check: bool,
           skipped: list[tuple[str, str]] | None = None) -> AudioDataset:
    keep, skipped = _check_files([p for p, _ in items], root, fn, check, skipped)
    kept = [item for item, k in zip(items, keep) if k]
    present = [c for c in classes if any(lab == c for _, lab in kept)]
    if not kept:
        raise ValueError(f"{fn}: no readable audio clips under {str(root)!r}")
    if len(present) < 2:
        raise ValueError(f"{fn}: only one class ({present[0]!r}) with readable clips under {str(root)!r}; "
                         f"classification needs at least two")
    index = {c: i for i, c in enumerate(present)}
    return AudioDataset([p for p, _ in kept], np.array([index[lab] for _, lab in kept], dtype=np.int64),
                        present, root, skipped)


def _find_gtzan(root: Path, strict: bool = False) -> tuple[Path, list[tuple[Path, str]]] | None:
    """(folder, [(path, genre)]) for the first GTZAN layout found under ``root``, or None.

    Tried in order: ``root/genres``, ``root/genres_original``, ``root/Data/genres_original``, ``root`` itself;
    in each, genre folders (``blues/``, ...) else flat files named ``<genre>.000NN.<ext>``. ``strict`` (for
    auto-detection) also requires that no other subfolder or file in that folder holds audio.
    """
    for cand in (root / "genres", root / "genres_original", root / "Data" / "genres_original", root):
        if not cand.is_dir():
            continue
        items, other_audio = [], False
        for sub in _subdirs(cand):
            genre = sub.name.lower()
            files = _audio_files(sub, recursive=True)
            if genre in GTZAN_GENRES:
                items += [(p, genre) for p in files]
            elif files:
                other_audio = True
        if items:
            if strict and other_audio:
                return None
            return cand, items
        flat = _audio_files(cand, recursive=False)
        items = [(p, _GTZAN_STEM.match(p.stem).group(1).lower()) for p in flat if _GTZAN_STEM.match(p.stem)]
        if items:
            if strict and (len(items) != len(flat) or other_audio):
                return None
            return cand, items
    return None


def load_gtzan(root, *, check: bool = True) -> AudioDataset:
    """GTZAN (or any subset of its genres) under ``root``, in any common layout.

    Layouts: ``genres/<genre>/<genre>.000NN.au|.wav`` (the original tarball), ``genres_original/`` and
    ``Data/genres_original/`` (Kaggle), ``<root>/<genre>/...``, or a flat folder of ``<genre>.000NN.*`` files.
    Classes are the genres present, in :data:`GTZAN_GENRES` order (all ten for the full set). With ``check``, each
    clip's header is read and unreadable or empty clips are skipped and reported instead of failing later.
    """
    fn = "load_gtzan"
    root = _check_dir(root, fn)
    found = _find_gtzan(root)
    if found is None:
        raise ValueError(f"{fn}: no GTZAN clips under {str(root)!r}: expected genre folders "
                         f"(genres/<genre>/<genre>.000NN.wav|.au, genres_original/, Data/genres_original/ or "
                         f"<root>/<genre>/) or files named <genre>.000NN.<ext>, genres from {list(GTZAN_GENRES)}")
    data_dir, items = found
    return _build(items, list(GTZAN_GENRES), data_dir, fn, check)


def load_folder(root, *, check: bool = True) -> AudioDataset:
    """One subfolder per class (class names sorted), audio files anywhere inside each; ``root`` as in
    :func:`load_gtzan`. Class folders without audio are left out with a warning."""
    fn = "load_folder"
    root = _check_dir(root, fn)
    items, empty = [], []
    for sub in _subdirs(root):
        files = _audio_files(sub, recursive=True)
        if files:
            items += [(p, sub.name) for p in files]
        else:
            empty.append(sub.name)
    if not items:
        if _audio_files(root, recursive=False):
            raise ValueError(f"{fn}: {str(root)!r} holds audio files but no class subfolders; expected one "
                             f"subfolder per class (<root>/<class>/<clip>)")
        raise ValueError(f"{fn}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) in the subfolders of "
                         f"{str(root)!r}")
    if empty:
        warnings.warn(f"{fn}: class folders without audio left out: {empty}", AudioWarning, stacklevel=2)
    return _build(items, sorted({lab for _, lab in items}), root, fn, check)


def load_manifest(csv_path, *, check: bool = True) -> AudioDataset:
    """A CSV file of ``path,label`` rows (an optional header ``path,label``; ``#`` comment lines); relative
    paths are resolved against the CSV's folder, classes are the sorted label names."""
    fn = "load_manifest"
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(f"{fn}: manifest {str(csv_path)!r} does not exist or is not a file")
    root = csv_path.parent
    items, missing, seen = [], [], set()
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not any(row) or row[0].startswith("#"):
                continue
            if lineno == 1 and row[0].lower() in ("path", "file", "filename") and len(row) >= 2:
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                raise ValueError(f"{fn}: {csv_path}:{lineno}: expected 'path,label', got {row}")
            path = Path(row[0]) if Path(row[0]).is_absolute() else root / row[0]
            if path in seen:
                raise ValueError(f"{fn}: {csv_path}:{lineno}: {row[0]!r} is listed twice")
            seen.add(path)
            if not path.is_file():
                missing.append(row[0])
            items.append((path, row[1]))
    if missing:
        raise ValueError(f"{fn}: {len(missing)} files listed in {csv_path} do not exist (relative paths are "
                         f"resolved against {str(root)!r}): {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if not items:
        raise ValueError(f"{fn}: manifest {str(csv_path)!r} lists no clips")
    return _build(items, sorted({lab for _, lab in items}), root, fn, check)


def load_dataset(path, *, check: bool = True):
    """Auto-detect: a file -> :func:`load_manifest` (CSV); a folder holding ``annotations_final.csv`` ->
    :func:`~pymusicrbm.datasets.load_magnatagatune` (a :class:`~pymusicrbm.datasets.TaggedDataset`, top-50 tags,
    the split of Won et al. 2020); a folder holding ``fma_metadata/tracks.csv`` and exactly one audio folder
    ``fma_<subset>`` -> :func:`~pymusicrbm.datasets.load_fma` (that subset, ``genre_top``); a folder whose class
    folders (or file names) are all GTZAN genres -> :func:`load_gtzan`; any other folder -> :func:`load_folder`.
    MTG-Jamendo, whose audio lies apart from its metadata, is not guessed: call
    :func:`~pymusicrbm.datasets.load_mtg_jamendo`."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"load_dataset: {str(path)!r} does not exist")
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".txt", ".tsv"):
            raise ValueError(f"load_dataset: {str(path)!r} is a file but not a CSV manifest (path,label); "
                             f"pass a .csv manifest or a folder")
        return load_manifest(path, check=check)
    _check_dir(path, "load_dataset")
    if (path / "annotations_final.csv").is_file():
        from .tagging import load_magnatagatune
        return load_magnatagatune(path, check=check)
    from .fma import _detect_fma, load_fma
    fma_subset = _detect_fma(path)
    if fma_subset is not None:
        return load_fma(path, subset=fma_subset, check=check)
    if _find_gtzan(path, strict=True) is not None:
        return load_gtzan(path, check=check)
    return load_folder(path, check=check)
