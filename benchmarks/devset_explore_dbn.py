"""What the Hamel & Eck DBN's features add over its own input and over MFCCs, on the real-music development set
(issue 11): a screening run on a tuning protocol (default: seed 1, 3 folds; the study's reported protocol is seed 0,
5 folds).

One DBN (whitening + pre-training + fine-tuning: the study's ``fit_front_end``) is trained per fold; then each
feature set of every clip (the whitened input, the pre-trained layers, the fine-tuned layers, the input beside
either, MFCCs) is summarised (mean and variance over 5 s windows, or other statistics / the whole clip) and
classified by the study's grid-searched RBF SVM with window voting. Compression of the |DFT| frames is derived from
the cached log1p(|X|) frames (``expm1`` inverts them), so variants need no new extraction; ``hann`` reads frames
extracted with a Hann window (extracted on first use).

    nice python benchmarks/devset_explore_dbn.py --data /work/devset --cache-dir /work/devset_cache \\
        --compression log --options '{"hidden": [100, 100, 100]}' --out /work/devset_runs/explore/h100.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STATS = {"mean": lambda f: f.mean(0), "var": lambda f: f.var(0), "std": lambda f: f.std(0),
         "max": lambda f: f.max(0), "min": lambda f: f.min(0)}
SUMMARIES = {  # name -> (statistics, level)
    "win_mean_var": (("mean", "var"), "window"),
    "win_mean_std_max": (("mean", "std", "max"), "window"),
    "clip_mean_var": (("mean", "var"), "clip"),
    "clip_mean_std_max_min": (("mean", "std", "max", "min"), "clip"),
}
SETS = ("input", "pre_all", "ft_all", "input+pre", "input+ft", "mfcc")


def summarise(frames: np.ndarray, size: int, hop: int, stats) -> dict:
    """{level: {stat: (n_rows, d)}}: the statistics ``stats`` over windows and over the whole clip."""
    starts = range(0, max(len(frames) - size, 0) + 1, hop)
    return {"window": {s: np.stack([STATS[s](frames[a:a + size]) for a in starts]).astype(np.float32) for s in stats},
            "clip": {s: STATS[s](frames)[None].astype(np.float32) for s in stats}}


def rows(summ: dict, idx, labels, stats, level):
    """(X, y, groups) of the clips ``idx`` for one summary."""
    X = [np.concatenate([summ[i][level][s] for s in stats], 1) for i in idx]
    g = np.concatenate([np.full(len(x), i) for i, x in zip(idx, X)])
    return np.concatenate(X), np.asarray(labels)[g], g


def compressed(dft, mode: str):
    """The cached log1p(|X|) frames recompressed: ``log1p`` (as cached), ``log`` (log(1e-3 + |X|), the study's
    ``log='log'``) or ``log1pS`` (log1p(S |X|))."""
    if mode == "log1p":
        return dft
    out = []
    for x in dft:
        mag = np.expm1(x)
        out.append((np.log(1e-3 + mag) if mode == "log" else np.log1p(float(mode[5:]) * mag)).astype(np.float32))
    return out


def main(argv=None) -> int:
    import torch

    from pymusicrbm import audio, datasets
    from pymusicrbm.pipelines import _study, classifiers, hamel_eck

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compression", default="log", help="log1p, log, log1p<S> or hann (log with a Hann window)")
    ap.add_argument("--options", default="{}", help="study options as JSON, e.g. '{\"hidden\": [100, 100, 100]}'")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--summaries", nargs="+", default=["win_mean_var"], choices=sorted(SUMMARIES))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    ds = datasets.load_dataset(args.data)
    labels = np.asarray(ds.labels)
    params = {"frame_length": 1024, "hop_length": None, "log": True}
    if args.compression == "hann":
        dft = audio.extract(ds, "dft", {**params, "log": "log", "window": "hann"}, cache_dir=args.cache_dir,
                            n_jobs=1, verbose=0)
    else:
        dft = compressed(audio.extract(ds, "dft", params, cache_dir=args.cache_dir, n_jobs=1, verbose=0),
                         args.compression)
    mfcc = audio.extract(ds, "mfcc", {}, cache_dir=args.cache_dir, n_jobs=1, verbose=0)
    usable = np.flatnonzero([d is not None and m is not None for d, m in zip(dft, mfcc)])
    extra = json.loads(args.options)
    opts = dict(hamel_eck.DEFAULTS, **extra, seed=args.seed, resume=False, verbose=0)
    stats = sorted({s for name in args.summaries for s in SUMMARIES[name][0]})
    size, hop = _study.window_frames(5.0, 1024)
    msize, mhop = _study.window_frames(5.0, 512)
    result = {"compression": args.compression, "options": extra, "summaries": args.summaries,
              "protocol": {"folds": args.folds, "seed": args.seed}, "folds": []}
    for k, (a, b) in enumerate(datasets.stratified_folds(labels[usable], args.folds, args.seed)):
        train, test = usable[a], usable[b]
        t0 = time.perf_counter()
        whitener, clf = hamel_eck.fit_front_end(dft, train, opts, args.seed + k, labels=labels)
        fold = {"fold": k, "fit_seconds": time.perf_counter() - t0, "clip_accuracy": {}}
        pre = lambda w: clf.dbn_.transform(w, layers="all")  # noqa: E731
        ft = lambda w: hamel_eck.finetuned_activations(clf, w)  # noqa: E731
        make = {"input": lambda w: w, "pre_all": pre, "ft_all": ft,
                "input+pre": lambda w: np.concatenate([w, pre(w)], 1),
                "input+ft": lambda w: np.concatenate([w, ft(w)], 1)}
        sets = [s for s in args.sets if s != "mfcc" and (opts["finetune"] or "ft" not in s)]
        summ = {s: {} for s in sets}
        for i in usable:
            white = whitener.transform(dft[i])
            for s in sets:
                summ[s][i] = summarise(make[s](white), size, hop, stats)
        if "mfcc" in args.sets:
            summ["mfcc"] = {i: summarise(mfcc[i], msize, mhop, stats) for i in usable}
        for s, per_clip in summ.items():
            for name in args.summaries:
                st, level = SUMMARIES[name]
                rec = classifiers.classify_windows("svm", rows(per_clip, train, labels, st, level),
                                                   rows(per_clip, test, labels, st, level), len(ds.classes),
                                                   "small", args.seed, 1)
                acc = float(np.mean(np.asarray(rec["clip_true"]) == np.asarray(rec["clip_pred"])))
                fold["clip_accuracy"][f"{s}/{name}"] = acc
                print(f"fold {k} {s}/{name}: {acc:.3f}", flush=True)
        fold["seconds"] = time.perf_counter() - t0
        result["folds"].append(fold)
        keys = fold["clip_accuracy"]
        result["mean"] = {key: float(np.mean([f["clip_accuracy"][key] for f in result["folds"]])) for key in keys}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    for key, v in sorted(result["mean"].items(), key=lambda kv: -kv[1]):
        print(f"{v:.3f}  {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
