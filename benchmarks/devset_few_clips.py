"""The DBN study with few labelled clips (issue 11: "also with as few as ~10 training clips a class"): ``--draws``
random draws of ``--per-class`` training clips a class from the development set, each tested on every other clip
(the study's official-split protocol: one split, bootstrap intervals), the MFCC baseline on the same clips.

    nice python benchmarks/devset_few_clips.py --data /work/devset --cache-dir /work/devset_cache \\
        --out /work/devset_runs/few --json benchmarks/results/devset_few_clips_dbn.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from pymusicrbm import datasets, reporting
    from pymusicrbm.pipelines import hamel_eck

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--out", type=Path, required=True, help="run folders (outside the repository)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--draws", type=int, default=5)
    args = ap.parse_args(argv)
    ds = datasets.load_dataset(args.data)
    labels = np.asarray(ds.labels)
    rows = []
    for r in range(args.draws):
        rng = np.random.default_rng(100 + r)
        train = np.concatenate([rng.choice(np.flatnonzero(labels == c), args.per_class, replace=False)
                                for c in range(len(ds.classes))])
        test = np.setdiff1d(np.arange(len(ds)), train)
        d = args.out / f"draw{r}"
        d.mkdir(parents=True, exist_ok=True)
        for name, idx in (("train", train), ("test", test)):
            (d / f"{name}.txt").write_text("\n".join(ds.names[i] for i in idx) + "\n")
        res = hamel_eck.run(ds, d / "out", split_files=[d / "train.txt", d / "test.txt"], cache_dir=args.cache_dir,
                            n_jobs=1, verbose=0)
        row = {k: v["clip_accuracy"]["mean"] for k, v in list(res["models"].items()) + list(res["baselines"].items())}
        row["mcnemar_dbn_svm"] = res["models"]["dbn_svm"]["paired"]["mcnemar"]
        rows.append(row)
        print(r, json.dumps(row), flush=True)
    summary = {k: {"clip_accuracy": reporting.summarize([r[k] for r in rows]),
                   "minus_mfcc": reporting.summarize([r[k] - r["mfcc_svm"] for r in rows])}
               for k in rows[0] if k != "mcnemar_dbn_svm"}
    args.json.write_text(json.dumps({"per_class": args.per_class, "draws": rows, "summary": summary,
                                     "note": "each draw: train on per_class clips a class, test on every other clip"},
                                    indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
