"""A tag manifest: a plain-text list of clips and their tags, read into (and written from) a :class:`TaggedDataset`.

Format (TSV; a ``.csv`` file may use commas between columns, with the tag list quoted)::

    path<TAB>tags[<TAB>split]
    rock/clip1.wav<TAB>guitar,fast,rock<TAB>train
    rock/clip2.wav<TAB><TAB>test          (no tags)

An optional header line starts with ``path``; ``#`` lines are comments; relative paths are resolved against the
manifest's folder; tags are comma-separated (surrounding spaces dropped); the optional third column names the
clip's split (``train``, ``valid``, ``test``), which becomes :attr:`TaggedDataset.splits`.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .core import TaggedDataset

__all__ = ["load_tag_manifest", "write_tag_manifest", "TAG_MANIFEST"]

TAG_MANIFEST = "tags.tsv"  # the file name load_tag_manifest looks for in a folder
_SPLITS = ("train", "valid", "test")


def load_tag_manifest(path) -> TaggedDataset:
    """Read a tag manifest (a file, or a folder holding :data:`TAG_MANIFEST`). Tags are the sorted tag names.
    ValueError naming the line for a malformed row, a clip listed twice or an unknown split; listing the files
    that do not exist."""
    fn = "load_tag_manifest"
    path = Path(path)
    if path.is_dir():
        path = path / TAG_MANIFEST
    if not path.is_file():
        raise ValueError(f"{fn}: manifest {str(path)!r} does not exist (expected a file of 'path<TAB>tag1,tag2' "
                         f"lines, or a folder holding {TAG_MANIFEST})")
    root = path.parent
    text = path.read_text(encoding="utf-8-sig")
    delimiter = "," if path.suffix.lower() == ".csv" and "\t" not in text else "\t"
    paths, tag_sets, split_of, missing, seen = [], [], {}, [], set()
    for lineno, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), start=1):
        row = [c.strip() for c in row]
        if not any(row) or row[0].startswith("#"):
            continue
        if not paths and row[0].lower() in ("path", "file", "filename"):
            continue
        if len(row) < 2 or len(row) > 3 or not row[0]:
            raise ValueError(f"{fn}: {path}:{lineno}: expected 'path<TAB>tag1,tag2[<TAB>split]', got {row}")
        clip = Path(row[0]) if Path(row[0]).is_absolute() else root / row[0]
        if clip in seen:
            raise ValueError(f"{fn}: {path}:{lineno}: {row[0]!r} is listed twice")
        seen.add(clip)
        if len(row) == 3 and row[2]:
            if row[2].lower() not in _SPLITS:
                raise ValueError(f"{fn}: {path}:{lineno}: split must be one of {_SPLITS}, got {row[2]!r}")
            split_of.setdefault(row[2].lower(), []).append(len(paths))
        if not clip.is_file():
            missing.append(row[0])
        paths.append(clip)
        tag_sets.append({t.strip() for t in row[1].split(",") if t.strip()})
    if missing:
        raise ValueError(f"{fn}: {len(missing)} files listed in {path} do not exist (relative paths are resolved "
                         f"against {str(root)!r}): {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if not paths:
        raise ValueError(f"{fn}: manifest {str(path)!r} lists no clips")
    tags = sorted(set().union(*tag_sets))
    if not tags:
        raise ValueError(f"{fn}: manifest {str(path)!r} names no tags")
    col = {t: j for j, t in enumerate(tags)}
    targets = np.zeros((len(paths), len(tags)), bool)
    for i, ts in enumerate(tag_sets):
        targets[i, [col[t] for t in ts]] = True
    return TaggedDataset(paths, targets, tags, root, splits=split_of)


def write_tag_manifest(dataset: TaggedDataset, path) -> Path:
    """Write ``dataset`` as a tag manifest at ``path`` (paths relative to the manifest's folder where possible)."""
    path = Path(path)
    split_of = {int(i): name for name, idx in dataset.splits.items() for i in idx}
    lines = ["path\ttags" + ("\tsplit" if split_of else "")]
    for i, clip in enumerate(dataset.paths):
        try:
            name = clip.resolve().relative_to(path.parent.resolve()).as_posix()
        except ValueError:
            name = str(clip)
        tags = ",".join(t for t, on in zip(dataset.tags, dataset.targets[i]) if on)
        lines.append(f"{name}\t{tags}" + (f"\t{split_of.get(i, '')}" if split_of else ""))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
