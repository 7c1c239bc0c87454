"""What the development-set sweeps of the ConvRBM and VAE studies share (issue 11 item 3).

Protocol: every candidate (a set of study options that needs retraining) runs on a tuning protocol (``--sweep-folds``
folds of fold assignment ``--sweep-seed``, default 3 and 1), never the reported one; the candidate with the best mean
of the study's headline metric there is then run once on the reported protocol (``--eval-folds`` / ``--eval-seed``,
default 5 and 0) beside MFCC + SVM on the same folds (the study's paired differences and McNemar test). Both protocols
split the same clips, so the selection is not fully independent of the final estimate (the JSON's ``protocol_note``
says so). Choices that are cheap to evaluate stay inside each run (the study's own inner CV or grid search).

The record is saved after every candidate; a rerun skips the candidates already in ``--result`` (a sweep stopped for
time continues), ``--only-evaluate NAME`` runs just the evaluation of a candidate chosen before.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOTE = ("Candidates were compared on the sweep protocol (other folds, other seed) of the same clips as the reported "
        "evaluation, so the winner's evaluation numbers are not a fully independent estimate; cheap choices (pooling, "
        "classifier, SVM C/gamma) are made inside each run on training clips only.")


def summary(res: dict, name: str, options: dict, seconds: float, metric: str) -> dict:
    """The numbers of one study run kept in the sweep record: every model and baseline's clip accuracy and macro
    F1 (mean, std, folds), the headline's paired block, and what the run chose on its folds."""
    keep = ("clip_accuracy", "f1_macro")
    out = {"name": name, "options": options, "seconds": round(seconds, 1), "metric": metric,
           "headline": res["headline"],
           "models": {m: {k: r[k] for k in keep} for m, r in res["models"].items()},
           "baselines": {m: {k: r[k] for k in keep} for m, r in res["baselines"].items()},
           "paired": res["models"][res["headline"]]["paired"]}
    if "selection" in res:
        out["selection"] = res["selection"]
    return out


def score(candidate: dict) -> float:
    return candidate["models"][candidate["headline"]][candidate["metric"]]["mean"]


def main(study: str, candidates: dict, metric: str, result: Path, doc: str, argv=None) -> dict:
    """Run the sweep of ``study`` (``"conv_study"`` or ``"vae_study"``) over ``candidates`` (name -> options),
    choose by the headline's ``metric`` and evaluate the winner; the record is written to ``result``."""
    import importlib

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", required=True, help="folder for the runs' own outputs")
    p.add_argument("--candidates", nargs="+", default=list(candidates), choices=list(candidates))
    p.add_argument("--sweep-folds", type=int, default=3)
    p.add_argument("--sweep-seed", type=int, default=1)
    p.add_argument("--eval-folds", type=int, default=5)
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads and classifier jobs of each run")
    p.add_argument("--result", default=str(result))
    p.add_argument("--no-eval", action="store_true", help="stop after the sweep (evaluate later)")
    p.add_argument("--only-evaluate", metavar="NAME", default=None,
                   help="skip the sweep: evaluate this candidate (the one the saved sweep chose)")
    a = p.parse_args(argv)
    mod = importlib.import_module(f"pymusicrbm.pipelines.{study}")
    out, t0, path = Path(a.out), time.perf_counter(), Path(a.result)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    record = {"study": study, "command": " ".join(sys.argv), "git_commit": commit.stdout.strip(),
              "protocol_note": NOTE, "selection_metric": metric,
              "sweep": {"folds": a.sweep_folds, "seed": a.sweep_seed,
                        "candidates": old.get("sweep", {}).get("candidates", [])},
              "chosen": old.get("chosen"), "evaluation": old.get("evaluation")}

    def save():
        record["sweep_seconds_total"] = sum(c["seconds"] for c in record["sweep"]["candidates"])
        path.write_text(json.dumps(record, indent=1, default=float) + "\n")

    def run(name, folds, seed):
        opts = {k: list(v) if isinstance(v, tuple) else v for k, v in candidates[name].items()}
        t = time.perf_counter()
        res = mod.run(a.data, out / f"{name}_seed{seed}_{folds}folds", folds=folds, seed=seed,
                      cache_dir=a.cache_dir, num_threads=a.threads, n_jobs=a.threads, verbose=0, **candidates[name])
        s = summary(res, name, opts, time.perf_counter() - t, metric)
        print(f"{name} (seed {seed}, {folds} folds): {metric} {score(s):.4f}, {s['seconds']:.0f} s", flush=True)
        return s

    if a.only_evaluate is None:
        done = {c["name"] for c in record["sweep"]["candidates"]}
        for name in a.candidates:
            if name not in done:
                record["sweep"]["candidates"].append(run(name, a.sweep_folds, a.sweep_seed))
                save()
        best = max(record["sweep"]["candidates"], key=score)
        record["chosen"] = best["name"]
        print("sweep:", {c["name"]: round(score(c), 4) for c in record["sweep"]["candidates"]}, "->", best["name"],
              flush=True)
        save()
    else:
        record["chosen"] = a.only_evaluate
    if not a.no_eval:
        record["evaluation"] = {"folds": a.eval_folds, "seed": a.eval_seed,
                                **run(record["chosen"], a.eval_folds, a.eval_seed)}
        save()
    return record
