"""Wall time and peak resident memory of a whole study, stage by stage, as a user runs it: ``pymusicrbm dbn
--folds 5`` (or ``convrbm`` / ``vae``) on the synthetic genre set (``make_synthetic_genres``, 30 s clips).

    python benchmarks/bench_pipeline.py                          # 1000 clips, dbn, 5 folds (GTZAN scale)
    python benchmarks/bench_pipeline.py --clips 100              # a quick try
    python benchmarks/bench_pipeline.py --study vae --clips 100 -- --epochs 2
    python benchmarks/bench_pipeline.py --clips 200 --profile prof.txt   # cProfile, top functions by own time
    python benchmarks/bench_pipeline.py --study convrbm --max-folds 1     # the first of 5 folds only
    python benchmarks/bench_pipeline.py --study vae --device cuda       # the study on a GPU

The study runs in this process through ``pymusicrbm.cli.main``, with its own defaults; the arguments after ``--`` go
to the command as they are. Stages are measured by wrapping the functions that do them (exclusive time: a stage
inside another is not counted twice; ``other`` is everything not wrapped), and a sampler thread records the peak
resident memory seen during each stage. ``--max-folds N`` runs only the first N of the folds (a long study's
per-fold cost without running it all; the JSON then also holds an estimate of the whole run). The line a study
prints before its first model trains (``_study.time_estimate``) is kept in the JSON. The generated clips are kept in ``--data-dir`` and reused; the feature cache
is fresh in every run (``--keep-cache`` reuses it), so ``features`` is the first-run cost. JSON to
``benchmarks/results/`` (``--json``).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import platform
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (module, attribute, stage): the functions each stage's time is spent in. A class attribute is "Class.method".
STAGES = {
    "common": [
        ("pymusicrbm.pipelines._study", "extract_features", "features"),
        ("pymusicrbm.pipelines.classifiers", "window_set", "windows"),
        ("pymusicrbm.pipelines.classifiers", "fit_svm", "svm_grid_search"),
        ("pymusicrbm.pipelines.classifiers", "fit_logistic_regression", "logreg_grid_search"),
        ("pymusicrbm.pipelines.classifiers", "window_scores", "classifier_predict"),
        ("pymusicrbm.pipelines._study", "build_results", "report"),
        ("pymusicrbm.pipelines._study", "time_estimate", "time_estimate"),
        ("pymusicrbm.reporting", "write_json", "report"),
    ],
    "dbn": [
        ("pymusicrbm.audio.features", "PCAWhitener.fit", "whitening"),
        ("pymusicrbm.audio.features", "PCAWhitener.transform", "whitening"),
        ("pymusicrbm.dbn", "DBN._fit_layers", "pretraining"),
        ("pymusicrbm.dbn", "DBNClassifier._run_epochs", "finetuning"),
        ("pymusicrbm.dbn", "DBN.transform", "dbn_transform"),
        ("pymusicrbm.dbn", "DBNClassifier.predict_proba", "dbn_transform"),
        ("pymusicrbm.pipelines.hamel_eck", "finetuned_activations", "dbn_transform"),
        ("pymusicrbm.pipelines.hamel_eck", "_write_report", "report"),
    ],
    "convrbm": [
        ("pymusicrbm.conv_rbm", "ConvRBM.fit", "training"),
        ("pymusicrbm.conv_rbm", "ConvDBN.fit", "training"),
        ("pymusicrbm.pipelines.conv_study", "_features", "conv_features"),
        ("pymusicrbm.pipelines.conv_study", "_fit_predict", "classifiers"),
        ("pymusicrbm.pipelines.conv_study", "_inner_score", "classifiers"),
        ("pymusicrbm.pipelines.conv_study", "_report", "report"),
    ],
    "vae": [
        ("pymusicrbm.vae", "ConvVAE.fit", "training"),
        ("pymusicrbm.pipelines.vae_study", "_generate", "generation"),
        ("pymusicrbm.pipelines.vae_study", "_figures", "report"),
    ],
}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class StageClock:
    """Exclusive wall time and peak RSS per stage; ``other`` holds what no wrapped function covers."""

    def __init__(self, interval: float = 0.02):
        self.stack = ["other"]
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self._t = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, args=(interval,), daemon=True)

    def _switch(self):
        now = time.perf_counter()
        top = self.stack[-1]
        self.seconds[top] = self.seconds.get(top, 0.0) + now - self._t
        self._t = now

    def _sample(self, interval):
        while not self._stop.wait(interval):
            self._note()

    def _note(self):
        rss = _rss()
        with self._lock:
            top = self.stack[-1]
            self.peak[top] = max(self.peak.get(top, 0), rss)

    def wrap(self, fn, stage):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self._lock:
                self._switch()
                self.stack.append(stage)
                self.calls[stage] = self.calls.get(stage, 0) + 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._note()
                with self._lock:
                    self._switch()
                    self.stack.pop()
        return timed

    def install(self, study: str) -> list:
        undo = []
        for module, attr, stage in STAGES["common"] + STAGES[study]:
            owner = importlib.import_module(module)
            *path, name = attr.split(".")
            for part in path:
                owner = getattr(owner, part)
            original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name)
            if original is None:  # inherited method: wrap what the class resolves to
                original = getattr(owner, name)
                undo.append((owner, name, None))
            else:
                undo.append((owner, name, original))
            setattr(owner, name, self.wrap(original, stage))
        return undo

    def __enter__(self):
        self._t = time.perf_counter()
        self._sampler.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._sampler.join()
        with self._lock:
            self._switch()


def _spy(module, name, wrapper) -> tuple:
    """Replace ``module.name`` by ``wrapper(original)``; returns the undo entry."""
    original = getattr(module, name)
    setattr(module, name, wrapper(original))
    return module, name, original


def _uninstall(undo):
    for owner, name, original in reversed(undo):
        if original is None:
            delattr(owner, name)
        else:
            setattr(owner, name, original)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--study", choices=("dbn", "convrbm", "vae"), default="dbn")
    p.add_argument("--clips", type=int, default=1000, help="clips in all, a multiple of 10 (default 1000, GTZAN's size)")
    p.add_argument("--seconds", type=float, default=30.0, help="clip length (default 30, as GTZAN)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--max-folds", type=int, default=None,
                   help="run only the first N of the --folds folds (the JSON adds an estimate of the whole run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="the study's --device (cpu or cuda; default: the study's own)")
    p.add_argument("--data-dir", default=None,
                   help="where the generated clips are kept and reused (default /tmp/pymusicrbm-bench-<clips>x<s>s)")
    p.add_argument("--out", default=None, help="the study's output folder (default: a temporary folder, removed)")
    p.add_argument("--keep-cache", action="store_true", help="reuse the feature cache of an earlier run in --out")
    p.add_argument("--profile", default=None, help="also run under cProfile and write the top functions here")
    p.add_argument("--json", default=None, help="default benchmarks/results/bench_pipeline_<study>_<clips>.json")
    p.add_argument("extra", nargs="*", help="after --: more arguments for the study command")
    args = p.parse_args(argv)
    if args.clips < 10 or args.clips % 10:
        p.error(f"--clips must be a multiple of 10 (ten genres), got {args.clips}")

    from pymusicrbm import cli  # before torch: the command's OpenMP policy applies, as for a user
    from pymusicrbm.datasets import make_synthetic_genres

    data_dir = Path(args.data_dir or f"/tmp/pymusicrbm-bench-{args.clips}x{args.seconds:g}s")
    t0 = time.perf_counter()
    ds = make_synthetic_genres(data_dir, n_per_class=args.clips // 10, seconds=args.seconds, seed=args.seed,
                               n_jobs=2, verbose=1)
    generate_seconds = time.perf_counter() - t0
    print(f"data: {len(ds)} clips of {args.seconds:g} s in {data_dir} ({generate_seconds:.0f} s)")

    out = Path(args.out) if args.out else Path(f"/tmp/pymusicrbm-bench-out-{os.getpid()}")
    if out.exists() and not args.keep_cache:
        shutil.rmtree(out)
    command = [args.study, "--data", str(data_dir), "--out", str(out), "--folds", str(args.folds),
               "--seed", str(args.seed), *(["--device", args.device] if args.device else []), *args.extra]
    print("running: pymusicrbm " + " ".join(command))

    clock = StageClock()
    undo = clock.install(args.study)
    from pymusicrbm.pipelines import _study
    estimates, fold_seconds = [], []

    def keep_estimate(fn):
        def spied(*a, **kw):
            estimates.append(fn(*a, **kw))
            return estimates[-1]
        return spied

    def first_folds(fn):
        def spied(splits, *a, **kw):
            records, extras = fn(splits[:args.max_folds] if args.max_folds else splits, *a, **kw)
            fold_seconds.extend(r["seconds"] for r in records)
            return records, extras
        return spied

    undo += [_spy(_study, "time_estimate", keep_estimate), _spy(_study, "run_folds", first_folds)]
    rss_before = _rss()
    profiler = None
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
    try:
        with clock, (profiler or contextlib.nullcontext()):
            t0 = time.perf_counter()
            rc = cli.main(command)
            total = time.perf_counter() - t0
    finally:
        _uninstall(undo)
    if rc != 0:
        print(f"the study failed (exit status {rc})", file=sys.stderr)
        return rc
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results = json.loads((out / "results.json").read_text())
    if profiler is not None:
        import io
        import pstats
        s = io.StringIO()
        pstats.Stats(profiler, stream=s).sort_stats("tottime").print_stats(40)
        Path(args.profile).write_text(s.getvalue())
        print(f"profile: {args.profile}")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)

    import torch
    stages = {name: {"seconds": round(clock.seconds.get(name, 0.0), 2), "calls": clock.calls.get(name, 0),
                     "peak_rss_mb": round(clock.peak.get(name, 0) / 2**20)}
              for name in sorted(clock.seconds, key=lambda n: -clock.seconds[n])}
    head = results["models"][results["headline"]]["clip_accuracy"]
    record = {
        "benchmark": "bench_pipeline", "study": args.study, "clips": len(ds), "seconds_per_clip": args.seconds,
        "folds": args.folds, "command": "pymusicrbm " + " ".join(command),
        "total_seconds": round(total, 1), "peak_rss_mb": round(peak / 2**20), "rss_before_mb": round(rss_before / 2**20),
        "stages": stages, "fold_seconds": [round(s, 1) for s in fold_seconds],
        "headline": {results["headline"]: head["mean"]},
        "baseline_mfcc_svm": results["baselines"]["mfcc_svm"]["clip_accuracy"]["mean"],
        "generate_seconds": round(generate_seconds, 1), "time_estimate_printed": estimates,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_average": os.getloadavg()},
    }
    if args.max_folds and args.max_folds < args.folds:  # the folds not run, at the mean cost of those run
        record["folds_run"] = len(fold_seconds)
        record["estimated_total_seconds"] = round(
            total + (args.folds - len(fold_seconds)) * sum(fold_seconds) / len(fold_seconds), 1)
        print(f"only {len(fold_seconds)} of {args.folds} folds run: all of them would take about "
              f"{record['estimated_total_seconds'] / 60:.0f} min")
    print(f"\n{args.study}: {len(ds)} clips x {args.seconds:g} s, {args.folds} folds: {total:.0f} s "
          f"({total / 60:.1f} min), peak RSS {peak / 2**30:.2f} GB; {results['headline']} clip accuracy "
          f"{head['mean']:.3f}")
    print(f"{'stage':<22}{'seconds':>10}{'share':>8}{'calls':>8}{'peak MB':>10}")
    for name, s in stages.items():
        print(f"{name:<22}{s['seconds']:>10.1f}{s['seconds'] / total:>8.0%}{s['calls']:>8}{s['peak_rss_mb']:>10}")
    suffix = f"_{args.device.split(':')[0]}" if args.device and not args.device.startswith("cpu") else ""
    path = Path(args.json or HERE / "results" / f"bench_pipeline_{args.study}_{len(ds)}clips{suffix}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"json: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
