#!/usr/bin/env python
"""Rebuild the real-music development set (not GTZAN) from public git repositories, outside this repository.

The committed manifest ``scripts/devset_manifest.csv`` pins every clip: source repository, commit, path in that
repository, label, output name, sha256, size and duration. The audio itself is never committed here.

  python scripts/devset.py build --mirror DIR [--mirror DIR ...] [--out ~/.cache/pymusicrbm/devset]
  python scripts/devset.py build --download [--out ...]        # raw.githubusercontent.com, needs network access
  python scripts/devset.py check [--out ...]                   # verify an existing folder against the manifest
  python scripts/devset.py manifest --mirror DIR --repo OWNER/NAME --under PATH --prefix TAG >> rows.csv

``--mirror`` is any git directory (a bare mirror or a clone) that holds the pinned commit; for example
``git clone --filter=blob:none --no-checkout https://github.com/sergi-andreu/ProjectMusicInformatics``. The set is
written as ``<out>/<label>/<name>`` (the layout :func:`pymusicrbm.datasets.load_folder` reads); files already there
with the right checksum are kept. See scripts/README.md.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

FIELDS = ("repo", "commit", "path", "blob", "label", "name", "sha256", "bytes", "duration")
DEFAULT_MANIFEST = Path(__file__).with_name("devset_manifest.csv")
DEFAULT_OUT = Path("~/.cache/pymusicrbm/devset").expanduser()
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".au")


@dataclass(frozen=True)
class Entry:
    repo: str
    commit: str
    path: str
    blob: str  # git object id: finds the same bytes in any repository (a fork, a copy)
    label: str
    name: str
    sha256: str
    bytes: int
    duration: float

    @property
    def rel(self) -> PurePosixPath:
        return PurePosixPath(self.label, self.name)


def read_manifest(path=DEFAULT_MANIFEST) -> list[Entry]:
    """The manifest's rows (``#`` lines are comments). Raises ValueError on a malformed row or a duplicate
    output file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"read_manifest: manifest {str(path)!r} does not exist")
    entries, seen = [], set()
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        if tuple(rows.fieldnames or ()) != FIELDS:
            raise ValueError(f"read_manifest: {path}: header must be {','.join(FIELDS)}, got {rows.fieldnames}")
        for i, row in enumerate(rows, start=2):
            try:
                e = Entry(**{**row, "bytes": int(row["bytes"]), "duration": float(row["duration"])})
            except (TypeError, ValueError) as err:
                raise ValueError(f"read_manifest: {path} row {i}: {err}") from None
            if len(e.commit) != 40 or len(e.blob) != 40 or len(e.sha256) != 64 or not e.label or "/" in e.name or not e.name:
                raise ValueError(f"read_manifest: {path} row {i}: expected a 40-hex commit and blob, a 64-hex sha256, a "
                                 f"label and a plain file name, got {row}")
            if e.rel in seen:
                raise ValueError(f"read_manifest: {path} row {i}: {e.rel} is listed twice")
            seen.add(e.rel)
            entries.append(e)
    return entries


def write_manifest(entries, file) -> None:
    w = csv.writer(file, lineterminator="\n")
    w.writerow(FIELDS)
    for e in entries:
        w.writerow([e.repo, e.commit, e.path, e.blob, e.label, e.name, e.sha256, e.bytes, f"{e.duration:.3f}"])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git(git_dir: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], input=stdin, capture_output=True)


def git_dir(path) -> Path:
    """The git directory of a bare mirror or of a clone's work tree."""
    path = Path(path).expanduser()
    r = subprocess.run(["git", "-C", str(path), "rev-parse", "--absolute-git-dir"], capture_output=True, text=True)
    if not path.is_dir() or r.returncode != 0:
        raise ValueError(f"--mirror: {str(path)!r} is not a git repository (bare mirror or clone)")
    return Path(r.stdout.strip())


def read_from_mirrors(entry: Entry, mirrors: list[Path]) -> bytes | None:
    """The file's bytes from the first mirror holding the pinned commit, else from any mirror holding the same
    blob (another repository with a byte-identical copy), or None."""
    for ref in (f"{entry.commit}:{entry.path}", entry.blob):
        for m in mirrors:
            r = _git(m, "cat-file", "blob", ref)
            if r.returncode == 0:
                return r.stdout
    return None


def read_from_url(entry: Entry, url: str = RAW_URL, timeout: float = 60.0) -> bytes | None:
    src = url.format(repo=entry.repo, commit=entry.commit, path=urllib.parse.quote(entry.path))
    try:
        with urllib.request.urlopen(src, timeout=timeout) as resp:
            return resp.read()
    except OSError:
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _file_ok(path: Path, entry: Entry) -> bool:
    return path.is_file() and path.stat().st_size == entry.bytes and sha256(path.read_bytes()) == entry.sha256


def build(entries, out, mirrors=(), url: str | None = None) -> dict[str, list[str]]:
    """Write each entry to ``out/<label>/<name>`` from the mirrors (then ``url``, a ``RAW_URL``-style template,
    if given), verifying its sha256. Returns ``{"written", "kept", "missing", "bad_checksum"}`` lists of
    ``label/name``; files that fail the checksum are not written."""
    out = Path(out).expanduser()
    mirrors = [git_dir(m) for m in mirrors]
    report = {"written": [], "kept": [], "missing": [], "bad_checksum": []}
    for e in entries:
        dest = out / e.rel
        if _file_ok(dest, e):
            report["kept"].append(str(e.rel))
            continue
        data = read_from_mirrors(e, mirrors)
        if data is None and url:
            data = read_from_url(e, url)
        if data is None:
            report["missing"].append(str(e.rel))
        elif sha256(data) != e.sha256:
            report["bad_checksum"].append(str(e.rel))
        else:
            _atomic_write(dest, data)
            report["written"].append(str(e.rel))
    return report


def check(entries, out) -> dict[str, list[str]]:
    """Compare ``out`` with the manifest: ``{"ok", "missing", "bad_checksum", "extra"}`` lists of ``label/name``
    (``extra``: audio files under ``out`` that the manifest does not list)."""
    out = Path(out).expanduser()
    report = {"ok": [], "missing": [], "bad_checksum": [], "extra": []}
    listed = set()
    for e in entries:
        listed.add(str(e.rel))
        dest = out / e.rel
        key = "ok" if _file_ok(dest, e) else "bad_checksum" if dest.is_file() else "missing"
        report[key].append(str(e.rel))
    if out.is_dir():
        for p in sorted(out.rglob("*")):
            rel = p.relative_to(out).as_posix()
            if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and rel not in listed:
                report["extra"].append(rel)
    return report


def _duration(data: bytes, suffix: str) -> float:
    import soundfile as sf  # only needed to write a manifest

    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        return sf.info(f.name).duration


def manifest_rows(mirror, repo: str, under: str, prefix: str, commit: str = "HEAD",
                  labels: dict[str, str] | None = None) -> list[Entry]:
    """Entries for every audio file below ``under`` at ``commit`` of ``mirror``, labelled by the name of the
    folder holding it (renamed through ``labels``, whose value ``""`` drops the folder) and named
    ``<prefix>-<file name>``. Git LFS pointers (text, not audio) raise ValueError."""
    gd = git_dir(mirror)
    r = _git(gd, "rev-parse", f"{commit}^{{commit}}")
    if r.returncode != 0:
        raise ValueError(f"manifest_rows: commit {commit!r} not found in {gd}")
    sha = r.stdout.decode().strip()
    r = _git(gd, "ls-tree", "-r", "-z", sha, "--", under)
    entries = []
    listed = sorted((path, meta.split()[2]) for meta, path in
                    (line.split("\t", 1) for line in r.stdout.decode().split("\0") if line))
    for path, blob in listed:
        pp = PurePosixPath(path)
        if pp.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        label = (labels or {}).get(pp.parent.name, pp.parent.name)
        if not label:
            continue
        data = _git(gd, "cat-file", "blob", f"{sha}:{path}").stdout
        if data.startswith(b"version https://git-lfs"):
            raise ValueError(f"manifest_rows: {path} is a Git LFS pointer, not audio")
        entries.append(Entry(repo, sha, path, blob, label, f"{prefix}-{pp.name}", sha256(data), len(data),
                             _duration(data, pp.suffix)))
    return entries


def _print_report(report: dict[str, list[str]], total: int) -> None:
    print(", ".join(f"{k}: {len(v)}" for k, v in report.items()) + f" (manifest: {total} files)")
    for key in ("missing", "bad_checksum", "extra"):
        for rel in report.get(key, [])[:20]:
            print(f"  {key}: {rel}")
        if len(report.get(key, [])) > 20:
            print(f"  ... {len(report[key]) - 20} more {key}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("build", "check"):
        p = sub.add_parser(name)
        p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
        p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    b = sub.choices["build"]
    b.add_argument("--mirror", action="append", default=[], help="git dir holding a source (repeatable)")
    b.add_argument("--download", action="store_true", help="fetch what the mirrors lack from --url")
    b.add_argument("--url", default=RAW_URL, help="URL template with {repo}, {commit}, {path}")
    m = sub.add_parser("manifest", help="print manifest rows for the audio under a folder of a mirror")
    m.add_argument("--mirror", required=True)
    m.add_argument("--repo", required=True, help="owner/name, as recorded in the manifest")
    m.add_argument("--under", required=True, help="folder in the repository; a file's label is its folder name")
    m.add_argument("--prefix", required=True, help="output names are <prefix>-<file name>")
    m.add_argument("--commit", default="HEAD")
    m.add_argument("--label", action="append", default=[], metavar="FOLDER=LABEL",
                   help="rename a label folder (empty LABEL drops it)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "manifest":
            labels = dict(s.split("=", 1) for s in args.label)
            write_manifest(manifest_rows(args.mirror, args.repo, args.under, args.prefix, args.commit, labels),
                           sys.stdout)
            return 0
        entries = read_manifest(args.manifest)
        if args.cmd == "build":
            if not args.mirror and not args.download:
                ap.error("build: give --mirror DIR (a git clone or mirror of the sources) and/or --download")
            report = build(entries, args.out, args.mirror, args.url if args.download else None)
        else:
            report = check(entries, args.out)
    except ValueError as err:
        print(f"devset: {err}", file=sys.stderr)
        return 2
    _print_report(report, len(entries))
    print(f"set folder: {args.out}")
    return 0 if not report["missing"] and not report["bad_checksum"] else 1


if __name__ == "__main__":
    sys.exit(main())
