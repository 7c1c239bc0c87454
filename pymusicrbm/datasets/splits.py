"""Splits by clip, so frames or windows of one clip never straddle train and test: seeded stratified folds, a
train/valid/test split, published split files, and the split lists shipped in ``splits_data/`` (the
"fault-filtered" GTZAN split of Kereliuk, Sturm & Larsen; sources, licences and checksums in
``splits_data/SOURCES.md``)."""
from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np

from ..audio import AUDIO_EXTENSIONS, AudioWarning
from .core import AudioDataset

__all__ = ["stratified_folds", "train_valid_test_split", "read_split_lists", "gtzan_split", "named_split",
           "SPLIT_NAMES"]

# Names accepted by named_split (and the CLI's --split-name).
SPLIT_NAMES = ("fault-filtered", "official")


def _check_labels(labels, fn: str) -> np.ndarray:
    y = np.asarray(labels).reshape(-1)
    if y.size == 0:
        raise ValueError(f"{fn}: labels is empty")
    return y


def stratified_folds(labels, n_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_folds`` (train_idx, test_idx) pairs of clip indices (shuffled ``StratifiedKFold``, seeded): every clip
    is in exactly one test fold, and each fold holds each class in proportion (counts differ by at most one)."""
    from sklearn.model_selection import StratifiedKFold

    fn = "stratified_folds"
    y = _check_labels(labels, fn)
    if not (isinstance(n_folds, (int, np.integer)) and n_folds >= 2):
        raise ValueError(f"{fn}: n_folds must be an integer >= 2, got {n_folds!r}")
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < n_folds:
        raise ValueError(f"{fn}: class {classes[counts.argmin()]!r} has {counts.min()} clips, fewer than "
                         f"n_folds={n_folds}; every class needs at least one clip per fold")
    skf = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(te)) for tr, te in skf.split(np.zeros(len(y)), y)]


def train_valid_test_split(labels, valid: float = 0.1, test: float = 0.2, seed: int = 0):
    """Seeded stratified split of clip indices -> (train_idx, valid_idx, test_idx); ``valid=0`` gives an empty
    validation set."""
    from sklearn.model_selection import train_test_split

    fn = "train_valid_test_split"
    y = _check_labels(labels, fn)
    for name, v in (("valid", valid), ("test", test)):
        if not (0 <= v < 1):
            raise ValueError(f"{fn}: {name} must be a fraction in [0, 1), got {v!r}")
    if not test > 0 or valid + test >= 1:
        raise ValueError(f"{fn}: need test > 0 and valid + test < 1, got valid={valid}, test={test}")
    idx = np.arange(len(y))
    n_classes = len(np.unique(y))
    try:
        rest, te = train_test_split(idx, test_size=test, stratify=y, random_state=seed)
        if valid > 0:
            tr, va = train_test_split(rest, test_size=valid / (1 - test), stratify=y[rest], random_state=seed)
        else:
            tr, va = rest, np.zeros(0, np.int64)
    except ValueError as err:
        raise ValueError(f"{fn}: cannot stratify {len(y)} clips of {n_classes} classes into valid={valid}, "
                         f"test={test} (each part needs at least one clip per class): {err}") from None
    return np.sort(tr), np.sort(va).astype(np.int64), np.sort(te)


def _split_key(name: str) -> tuple[str, ...]:
    """Lower-case path parts without the audio extension: 'blues/blues.00012.au' -> ('blues', 'blues.00012')."""
    p = PurePosixPath(name.strip().replace("\\", "/"))
    if p.suffix.lower() in AUDIO_EXTENSIONS:
        p = p.with_suffix("")
    return tuple(part.lower() for part in p.parts if part not in ("", ".", "/"))


def _suffix_match(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    n = min(len(a), len(b))
    return a[-n:] == b[-n:]


def read_split_lists(dataset: AudioDataset, train_file, test_file, valid_file=None, *, missing: str = "raise"):
    """Clip indices named by split files -> (train_idx, test_idx, valid_idx), in the order of the arguments
    (``valid_idx`` is empty without ``valid_file``), each in file order.

    Each non-empty, non-``#`` line names one clip by relative path or file name, e.g. ``blues/blues.00012.au`` or
    ``blues.00012.au``; the extension is ignored (the .au lists of the original GTZAN match the Kaggle .wav
    copy) and a line matches the clip whose path ends with it. ValueError for a missing file, an empty list, a
    line that matches no clip (or several), or a clip in two lists; lines naming clips the loader skipped as
    unreadable are dropped with a warning. ``missing='warn'`` drops lines naming clips absent from the dataset
    with a warning instead of the ValueError (for a copy that lacks some clips).
    """
    fn = "read_split_lists"
    if missing not in ("raise", "warn"):
        raise ValueError(f"{fn}: missing must be 'raise' or 'warn', got {missing!r}")
    names = dataset.names
    by_stem: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    for i, name in enumerate(names):
        key = _split_key(name)
        by_stem.setdefault(key[-1], []).append((i, key))
    skipped_keys = [_split_key(name) for name, _ in dataset.skipped]

    def read(file, what: str) -> np.ndarray:
        file = Path(file)
        if not file.is_file():
            raise ValueError(f"{fn}: {what} {str(file)!r} does not exist")
        out, absent, dropped, seen = [], [], [], set()
        for lineno, line in enumerate(file.read_text(encoding="utf-8-sig").splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key = _split_key(line)
            hits = [i for i, k in by_stem.get(key[-1], []) if _suffix_match(k, key)]
            if len(hits) > 1:
                raise ValueError(f"{fn}: {file}:{lineno}: {line!r} matches {len(hits)} clips "
                                 f"({[names[i] for i in hits[:3]]}); give more of the path")
            if not hits:
                if any(_suffix_match(k, key) for k in skipped_keys):
                    dropped.append(line)
                else:
                    absent.append(line)
                continue
            if hits[0] not in seen:
                seen.add(hits[0])
                out.append(hits[0])
        if absent:
            msg = (f"{what} {str(file)!r} names {len(absent)} clips that are not in the dataset under "
                   f"{str(dataset.root)!r}: {absent[:5]}{' ...' if len(absent) > 5 else ''}")
            if missing == "raise":
                raise ValueError(f"{fn}: {msg}")
            warnings.warn(f"{fn}: dropped, {msg}", AudioWarning, stacklevel=3)
        if dropped:
            warnings.warn(f"{fn}: {what} {file}: dropped {len(dropped)} clips skipped as unreadable: {dropped}",
                          AudioWarning, stacklevel=3)
        if not out:
            raise ValueError(f"{fn}: {what} {str(file)!r} lists no usable clips")
        return np.asarray(out, dtype=np.int64)

    train = read(train_file, "train_file")
    test = read(test_file, "test_file")
    valid = read(valid_file, "valid_file") if valid_file is not None else np.zeros(0, np.int64)
    for (a, na), (b, nb) in (((train, "train"), (test, "test")), ((train, "train"), (valid, "valid")),
                             ((valid, "valid"), (test, "test"))):
        both = np.intersect1d(a, b)
        if both.size:
            raise ValueError(f"{fn}: {both.size} clips are in both the {na} and {nb} lists, e.g. "
                             f"{[names[i] for i in both[:3]]}")
    return train, test, valid


def _shipped(name: str) -> Path:
    with resources.as_file(resources.files(__package__).joinpath("splits_data", name)) as path:
        return Path(path)


def gtzan_split(dataset: AudioDataset, name: str = "fault-filtered"):
    """The shipped GTZAN split ``name`` as clip indices of ``dataset`` -> (train_idx, valid_idx, test_idx).

    ``'fault-filtered'``: the fault- and artist-filtered split of Kereliuk, Sturm & Larsen (2015), 443 / 197 / 290
    clips, the one torchaudio ships (it leaves out 70 clips with faults: repetitions, distortions, mislabels).
    Matching follows :func:`read_split_lists` (any GTZAN layout, .wav or .au). Listed clips the dataset lacks,
    e.g. a copy without the corrupt ``jazz.00054.wav`` or with only some genres, are dropped with an
    :class:`~pymusicrbm.audio.AudioWarning` naming them; a ValueError if a list keeps no clip.
    """
    if name != "fault-filtered":
        raise ValueError(f"gtzan_split: name must be 'fault-filtered', got {name!r}")
    files = [_shipped(f"gtzan_fault_filtered_{part}.txt") for part in ("train", "test", "valid")]
    train, test, valid = read_split_lists(dataset, *files, missing="warn")
    return train, valid, test


def named_split(dataset, name: str):
    """A split selected by name -> (train_idx, valid_idx, test_idx): ``'fault-filtered'`` (:func:`gtzan_split`)
    or ``'official'``, the split the dataset's loader read with it (``dataset.splits``: e.g. FMA's, MTG-Jamendo's,
    MagnaTagATune's of Won et al. 2020)."""
    if name == "fault-filtered":
        return gtzan_split(dataset, name)
    if name == "official":
        splits = getattr(dataset, "splits", {}) or {}
        if not {"train", "test"} <= set(splits):
            raise ValueError(f"named_split: the dataset under {str(dataset.root)!r} has no official split (its loader "
                             f"read none: splits={sorted(splits)}); load it with its split or pass split files")
        return splits["train"], splits.get("valid", np.zeros(0, np.int64)), splits["test"]
    raise ValueError(f"named_split: name must be one of {list(SPLIT_NAMES)}, got {name!r}")
