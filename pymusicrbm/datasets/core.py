"""The clip lists loaders return: :class:`AudioDataset` (one class a clip) and :class:`TaggedDataset` (a set of
tags a clip)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["AudioDataset", "TaggedDataset"]


@dataclass
class AudioDataset:
    """Clips with integer labels. ``labels[i]`` indexes ``classes``; ``root`` is the folder the clip names are
    relative to (for GTZAN the folder holding the genre folders); ``skipped`` lists ``(name, reason)`` of clips
    left out because they could not be read; ``splits`` maps a split name (``'train'``, ``'valid'``, ``'test'``)
    to clip indices when the dataset ships one (e.g. FMA's)."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    splits: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.paths = [Path(p) for p in self.paths]
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.classes = list(self.classes)
        self.root = Path(self.root)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"AudioDataset: {len(self.paths)} paths but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"AudioDataset: labels must lie in [0, {len(self.classes)}), got "
                             f"[{self.labels.min()}, {self.labels.max()}]")
        self.splits = _check_splits(self.splits, len(self), "AudioDataset")

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"AudioDataset({len(self)} clips, classes={self.classes}, root={str(self.root)!r}, "
                f"skipped={len(self.skipped)})")

    @property
    def names(self) -> list[str]:
        """Clip names: POSIX paths relative to ``root`` (e.g. ``blues/blues.00012.wav``), used in reports/splits."""
        return [_rel_name(p, self.root) for p in self.paths]

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))

    def subset(self, indices) -> "AudioDataset":
        """The clips at ``indices`` (same classes, root and skipped list); splits are dropped (they index the whole)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ValueError(f"AudioDataset.subset: indices out of range for {len(self)} clips")
        return AudioDataset([self.paths[i] for i in idx], self.labels[idx], list(self.classes), self.root,
                            list(self.skipped))


@dataclass
class TaggedDataset:
    """Clips with sets of tags (multi-label), e.g. MagnaTagATune or MTG-Jamendo.

    ``targets`` is a ``(n_clips, n_tags)`` bool matrix: ``targets[i, j]`` says clip ``i`` carries ``tags[j]``.
    ``splits`` maps a split name (``'train'``, ``'valid'``, ``'test'``) to clip indices when the dataset ships
    one; ``root`` and ``skipped`` mean what they mean in :class:`AudioDataset`.
    """

    paths: list[Path]
    targets: np.ndarray
    tags: list[str]
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    splits: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.paths = [Path(p) for p in self.paths]
        self.tags = list(self.tags)
        self.root = Path(self.root)
        t = np.asarray(self.targets)
        if t.ndim != 2 or t.shape != (len(self.paths), len(self.tags)):
            raise ValueError(f"TaggedDataset: targets must have shape (n_clips, n_tags) = "
                             f"({len(self.paths)}, {len(self.tags)}), got {t.shape}")
        if t.dtype != bool and t.size and not np.isin(t, (0, 1)).all():
            raise ValueError("TaggedDataset: targets must be 0/1 or bool")
        self.targets = t.astype(bool)
        if len(set(self.tags)) != len(self.tags):
            raise ValueError(f"TaggedDataset: tags must be unique, got duplicates in {self.tags}")
        self.splits = _check_splits(self.splits, len(self), "TaggedDataset")

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"TaggedDataset({len(self)} clips, {len(self.tags)} tags, splits={sorted(self.splits)}, "
                f"root={str(self.root)!r}, skipped={len(self.skipped)})")

    @property
    def names(self) -> list[str]:
        """Clip names: POSIX paths relative to ``root``."""
        return [_rel_name(p, self.root) for p in self.paths]

    def tag_counts(self) -> np.ndarray:
        """Clips per tag."""
        return self.targets.sum(axis=0).astype(np.int64)

    def subset(self, indices) -> "TaggedDataset":
        """The clips at ``indices`` (same tags, root and skipped list); splits are dropped (they index the whole)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ValueError(f"TaggedDataset.subset: indices out of range for {len(self)} clips")
        return TaggedDataset([self.paths[i] for i in idx], self.targets[idx], list(self.tags), self.root,
                             list(self.skipped))

    def select_tags(self, tags) -> "TaggedDataset":
        """Only the named tags (in that order); clips and splits unchanged. ValueError naming unknown tags."""
        tags = list(tags)
        unknown = [t for t in tags if t not in self.tags]
        if unknown:
            raise ValueError(f"TaggedDataset.select_tags: unknown tags {unknown[:5]}")
        cols = [self.tags.index(t) for t in tags]
        return TaggedDataset(list(self.paths), self.targets[:, cols], tags, self.root, list(self.skipped),
                             dict(self.splits))

    def top_tags(self, k: int) -> "TaggedDataset":
        """The ``k`` most frequent tags (ties broken by tag order), most frequent first."""
        if k < 1:
            raise ValueError(f"TaggedDataset.top_tags: k must be >= 1, got {k}")
        order = np.argsort(-self.tag_counts(), kind="stable")[:k]
        return self.select_tags([self.tags[j] for j in order])


def _check_splits(splits, n: int, cls: str) -> dict[str, np.ndarray]:
    out = {}
    for name, idx in dict(splits).items():
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{cls}: split {name!r} has indices outside [0, {n})")
        out[name] = idx
    return out


def _rel_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
