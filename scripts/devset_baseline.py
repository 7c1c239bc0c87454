#!/usr/bin/env python
"""Save a study's results.json on the development set as a small baseline record in benchmarks/results/.

  python scripts/devset_baseline.py RUN_DIR/results.json benchmarks/results/devset_baseline_<study>.json \
      --command "pymusicrbm dbn --data ... --folds 5 --seed 0" [--note TEXT]

Keeps every number (means, stds, per-fold values, per-class scores, confusion matrices, timings, config) and
drops long arrays (predictions, t-SNE points, training histories, filters); adds the command, the manifest's
sha256 and the git commit the run used.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
from pathlib import Path

DROP_KEYS = {"tsne", "tsne_features", "tsne_labels", "histories", "history", "filters", "first_layer",
             "generated", "clip_pred", "clip_true", "window_pred", "window_true", "clip_ids"}
MAX_LIST = 64  # lists longer than this are per-sample data, not summary numbers


def slim(obj):
    """``obj`` without the keys in DROP_KEYS and without lists longer than MAX_LIST."""
    if isinstance(obj, dict):
        return {k: slim(v) for k, v in obj.items()
                if k not in DROP_KEYS and not (isinstance(v, list) and len(v) > MAX_LIST)}
    if isinstance(obj, list):
        return [slim(v) for v in obj]
    return obj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--command", required=True, help="the command line that produced the results")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    manifest = root / "scripts" / "devset_manifest.csv"
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    record = {
        "command": args.command,
        "note": args.note,
        "devset_manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "git_commit": commit.stdout.strip(),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "results": slim(json.loads(args.results.read_text())),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
