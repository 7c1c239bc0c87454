"""The labelled clip list every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["AudioDataset"]


@dataclass
class AudioDataset:
    """Clips with integer labels. ``labels[i]`` indexes ``classes``; ``root`` is the folder the clip names are
    relative to (for GTZAN the folder holding the genre folders); ``skipped`` lists ``(name, reason)`` of clips
    left out because they could not be read."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)

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
        """The clips at ``indices`` (same classes, root and skipped list)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ValueError(f"AudioDataset.subset: indices out of range for {len(self)} clips")
        return AudioDataset([self.paths[i] for i in idx], self.labels[idx], list(self.classes), self.root,
                            list(self.skipped))


def _rel_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
