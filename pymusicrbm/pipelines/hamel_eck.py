"""The Hamel & Eck (ISMIR 2010) genre pipeline.

|DFT| of 1024-sample frames (log-compressed) -> PCA whitening fitted on the training clips -> DBN (3 x 50 by
default, Gaussian first layer) pre-trained greedily by CD, then fine-tuned on the frames' genre labels with a
softmax layer -> activations of every layer, aggregated over 5 s windows (mean and variance) -> RBF SVM (C and
gamma grid-searched on the training folds, grouped by clip) -> clip label by vote over its windows
(``models.dbn_svm``, the headline). Beside it, on the same folds: the same windows of the pre-trained-only DBN
(``dbn_pretrained_svm``), the fine-tuned network's own softmax (``dbn_finetuned``: frame, window and clip
accuracy, as the 2024 re-implementation), and MFCC + SVM (``baselines.mfcc_svm``).

Every fold writes its results (and model checkpoints) under ``out_dir/folds/``; an interrupted run resumed with
``resume=True`` skips finished folds and continues interrupted DBN training from its checkpoint.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from .. import audio, datasets, reporting

DEFAULTS = dict(
    folds=5, seed=0, device="cpu", frame_length=1024, hop_length=None, log=True, pca_components=80,
    hidden=(50, 50, 50), pretrain_epochs=5, first_layer_lr=0.01, learning_rate=0.05, sparsity_target=None,
    weight_decay=2e-4, pretrain_frames=200_000, finetune=True, finetune_epochs=50, finetune_lr=3e-3,
    window_seconds=5.0, window_overlap=0.5, svm_grid="small", mfcc=True, n_jobs=2, cache_dir=None,
    resume=False, verbose=1, split_files=None, num_threads=None,
)

# The demo's settings: the same pipeline, smaller (finishes in about a minute on 2 CPU cores).
# One torch thread: these layers are small, and on a busy machine waiting for a second thread costs more.
QUICK = dict(folds=3, pretrain_epochs=5, pretrain_frames=30_000, finetune_epochs=50, finetune_lr=0.01, num_threads=1)


def add_arguments(parser) -> None:
    g = parser.add_argument_group("Hamel & Eck DBN pipeline")
    g.add_argument("--folds", type=int, default=DEFAULTS["folds"], help="stratified folds by clip (default 5)")
    g.add_argument("--split", nargs="+", metavar="FILE", dest="split_files",
                   help="train and test list files (and optionally valid), e.g. the fault-filtered GTZAN split; "
                        "replaces --folds")
    g.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    g.add_argument("--device", default=DEFAULTS["device"], help="cpu or cuda")
    g.add_argument("--hidden", type=int, nargs="+", default=list(DEFAULTS["hidden"]), help="DBN layer sizes")
    g.add_argument("--pca-components", type=int, default=DEFAULTS["pca_components"])
    g.add_argument("--pretrain-epochs", type=int, default=DEFAULTS["pretrain_epochs"], help="CD epochs a layer")
    g.add_argument("--pretrain-frames", type=int, default=DEFAULTS["pretrain_frames"],
                   help="at most this many training frames (a random subset) for pre-training")
    g.add_argument("--finetune-epochs", type=int, default=DEFAULTS["finetune_epochs"])
    g.add_argument("--no-finetune", dest="finetune", action="store_false", help="skip the fine-tuned DBNClassifier")
    g.add_argument("--no-mfcc", dest="mfcc", action="store_false", help="skip the MFCC + SVM baseline")
    g.add_argument("--window-seconds", type=float, default=DEFAULTS["window_seconds"])
    g.add_argument("--cache-dir", default=None, help="feature cache (default: OUT/cache)")
    g.add_argument("--jobs", type=int, dest="n_jobs", default=DEFAULTS["n_jobs"], help="processes for features")
    g.add_argument("--resume", action="store_true", help="reuse finished folds and checkpoints in OUT")
    g.add_argument("--threads", type=int, dest="num_threads", default=None,
                   help="torch intra-op threads during the run (default: torch's setting)")


# ---------------------------------------------------------------------------------------------- windows
def windows(frames: np.ndarray, size: int, hop: int) -> np.ndarray:
    """Mean and variance of ``frames`` (n, d) over windows of ``size`` rows every ``hop`` rows -> (n_win, 2d).
    A clip shorter than one window gives one window of all its frames."""
    n = len(frames)
    starts = range(0, max(n - size, 0) + 1, hop)
    out = [np.concatenate([frames[s:s + size].mean(0), frames[s:s + size].var(0)]) for s in starts]
    return np.asarray(out, dtype=np.float32)


def window_index(lengths, size: int, hop: int) -> list[tuple[int, int]]:
    """(start, stop) frame range of each window of each clip, in the order :func:`windows` makes them."""
    return [[(s, min(s + size, n)) for s in range(0, max(n - size, 0) + 1, hop)] for n in lengths]


def _svm(grid: str, seed: int):
    """Standardise -> RBF SVC, with C and gamma searched by grouped 3-fold CV (windows of a clip stay together)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    model = make_pipeline(StandardScaler(), SVC(kernel="rbf", decision_function_shape="ovr"))
    if grid == "none":
        return model, None
    # gamma as multiples of 1 / n_features ('scale' on standardised data): sound whatever the feature size
    grid = {"svc__C": [1.0, 10.0, 100.0], "svc__gamma_factor": [0.1, 0.3, 1.0]} if grid == "small" else \
        {"svc__C": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0], "svc__gamma_factor": [0.1, 0.3, 1.0, 3.0]}
    return model, grid


def fit_svm(X, y, groups, grid: str, seed: int):
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

    model, param_grid = _svm(grid, seed)
    if param_grid is None:
        return model.fit(X, y), {}
    d = X.shape[1]
    grid = {"svc__C": param_grid["svc__C"], "svc__gamma": [f / d for f in param_grid["svc__gamma_factor"]]}
    n_splits = min(3, int(np.bincount(y).min()), len(np.unique(groups)))
    if n_splits < 2:
        return model.fit(X, y), {}
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    search = GridSearchCV(model, grid, cv=cv, n_jobs=1).fit(X, y, groups=groups)
    return search.best_estimator_, {k.replace("svc__", ""): v for k, v in search.best_params_.items()}


def _scores(model, X) -> np.ndarray:
    """Per-class scores for voting: a one-hot vote per window, plus a small share of the decision values to
    break ties."""
    dec = model.decision_function(X)
    if dec.ndim == 1:
        dec = np.stack([-dec, dec], 1)
    vote = np.eye(dec.shape[1])[dec.argmax(1)]
    return vote + 1e-3 * dec


# ------------------------------------------------------------------------------------------------- folds
def _frames_of(feats, idx):
    return np.concatenate([feats[i] for i in idx]).astype(np.float32)


def _window_sets(per_clip, idx, size, hop, labels):
    W = [windows(per_clip[i], size, hop) for i in idx]
    X = np.concatenate(W)
    g = np.concatenate([np.full(len(w), i) for i, w in zip(idx, W)])
    return X, labels[g], g


def _eval_windows(model, X, y, g, labels):
    scores = _scores(model, X)
    clips, clip_pred = reporting.vote(g, scores)
    return {"window_true": y, "window_pred": scores.argmax(1), "clip_ids": clips, "clip_true": labels[clips],
            "clip_pred": clip_pred}


def run_fold(k, train, test, dft, mfcc, labels, classes, fold_dir: Path, opts) -> dict:
    from ..dbn import DBNClassifier

    t0 = time.perf_counter()
    rng = np.random.default_rng(opts["seed"] + k)
    size = max(1, int(round(opts["window_seconds"] * audio.SR / opts["hop"])))
    hop = max(1, int(round(size * (1 - opts["window_overlap"]))))
    res = {"fold": k, "n_train_clips": len(train), "n_test_clips": len(test)}

    # Whitening and pre-training on (a random subset of) the training frames only.
    train_frames = _frames_of(dft, train)
    if len(train_frames) > opts["pretrain_frames"]:
        train_frames = train_frames[rng.choice(len(train_frames), opts["pretrain_frames"], replace=False)]
    whitener = audio.PCAWhitener(n_components=min(opts["pca_components"], train_frames.shape[1]),
                                 seed=opts["seed"]).fit(train_frames)
    Z = whitener.transform(train_frames)
    hidden = tuple(opts["hidden"])
    # Gaussian first layer on whitened (unit-variance) input wants a smaller step than the Bernoulli layers.
    layer_params = [{"learning_rate": opts["first_layer_lr"]}] + [{}] * (len(hidden) - 1)
    pretrain = dict(hidden_layer_sizes=hidden, visible="gaussian", pretrain_epochs=opts["pretrain_epochs"],
                    pretrain_learning_rate=opts["learning_rate"], pretrain_batch_size=128,
                    weight_decay=opts["weight_decay"], sparsity_target=opts["sparsity_target"],
                    layer_params=layer_params, random_state=opts["seed"] + k, device=opts["device"],
                    verbose=opts["verbose"])
    # One DBNClassifier per fold: its pre-trained stack (dbn_) gives the unsupervised features, its fine-tuned
    # network the supervised ones and the frame-level softmax predictions. Without fine-tuning: max_iter=0.
    clf = DBNClassifier(**pretrain, batch_size=512, max_iter=opts["finetune_epochs"] if opts["finetune"] else 0,
                        learning_rate_init=opts["finetune_lr"], early_stopping=True, validation_fraction=0.1,
                        n_iter_no_change=10)
    ckpt = fold_dir / "dbn_classifier.safetensors"
    ytr_f = np.concatenate([np.full(len(dft[i]), labels[i]) for i in train])
    keep = np.sort(rng.choice(len(ytr_f), min(len(ytr_f), opts["pretrain_frames"]), replace=False))
    clf.fit(whitener.transform(_frames_of(dft, train)[keep]), ytr_f[keep],
            resume=ckpt if (opts["resume"] and ckpt.exists()) else None, checkpoint=ckpt)
    res["dbn_history"] = clf.dbn_.history_
    del Z, train_frames

    clips = np.concatenate([train, test])
    white = {i: whitener.transform(dft[i].astype(np.float32)) for i in clips}
    feature_sets = {"dbn_pretrained_svm": {i: clf.dbn_.transform(white[i], layers="all") for i in clips}}
    if opts["finetune"]:
        feature_sets["dbn_svm"] = {i: finetuned_activations(clf, white[i]) for i in clips}
    else:
        feature_sets["dbn_svm"] = feature_sets.pop("dbn_pretrained_svm")
    for name, act in feature_sets.items():
        Xtr, ytr, gtr = _window_sets(act, train, size, hop, labels)
        Xte, yte, gte = _window_sets(act, test, size, hop, labels)
        svm, best = fit_svm(Xtr, ytr, gtr, opts["svm_grid"], opts["seed"])
        res[name] = {**_eval_windows(svm, Xte, yte, gte, labels), "svm_params": best}
        if k == 0 and name == "dbn_svm":
            res["tsne_features"], res["tsne_labels"] = Xte, yte
    if k == 0:
        res["first_layer"] = _first_layer_in_dft_space(clf.dbn_, whitener)
    del feature_sets

    if opts["finetune"]:
        probs = {i: clf.predict_proba(white[i]) for i in test}
        frame_true = np.concatenate([np.full(len(probs[i]), labels[i]) for i in test])
        frame_pred = np.concatenate([probs[i].argmax(1) for i in test])
        # windows and clips: mean of the frame probabilities
        wp = {i: np.asarray([probs[i][s:e].mean(0) for s, e in
                             window_index([len(probs[i])], size, hop)[0]]) for i in test}
        w_true = np.concatenate([np.full(len(wp[i]), labels[i]) for i in test])
        w_pred = np.concatenate([wp[i].argmax(1) for i in test])
        clip_pred = np.asarray([probs[i].mean(0).argmax() for i in test])
        res["dbn_finetuned"] = {"frame_accuracy": float((frame_true == frame_pred).mean()), "window_true": w_true,
                                "window_pred": w_pred, "clip_ids": np.asarray(test), "clip_true": labels[test],
                                "clip_pred": clip_pred, "history": clf.history_}
    del white

    if mfcc is not None:
        msize = max(1, int(round(opts["window_seconds"] * audio.SR / 512)))
        mhop = max(1, int(round(msize * (1 - opts["window_overlap"]))))
        Xtr, ytr, gtr = _window_sets(mfcc, train, msize, mhop, labels)
        Xte, yte, gte = _window_sets(mfcc, test, msize, mhop, labels)
        svm, best = fit_svm(Xtr, ytr, gtr, opts["svm_grid"], opts["seed"])
        res["mfcc_svm"] = {**_eval_windows(svm, Xte, yte, gte, labels), "svm_params": best}
    res["seconds"] = time.perf_counter() - t0
    return res


def finetuned_activations(clf, X) -> np.ndarray:
    """Hidden activations of every layer of a fitted DBNClassifier's fine-tuned network, side by side."""
    import torch

    outs = []
    with torch.no_grad():
        h = clf._input(X)
        for layer in clf.network_:
            h = layer(h)
            if isinstance(layer, torch.nn.Sigmoid):
                outs.append(h)
    return torch.cat(outs, 1).cpu().numpy()


def _first_layer_in_dft_space(dbn, whitener) -> np.ndarray:
    """First-layer weights mapped back from the whitened space to the 513 DFT bins: (n_hidden, 513)."""
    W = dbn.rbms_[0].components_.astype(np.float64)        # (n_hidden, n_components)
    scale = getattr(dbn.rbms_[0], "scale_", None)
    if scale is not None:                                  # the RBM standardised its input: undo on the weights
        W = W / np.asarray(scale)[None, :]
    zero = whitener.inverse_transform(np.zeros((1, W.shape[1])))
    return whitener.inverse_transform(W) - zero


# ----------------------------------------------------------------------------------------------- report
def _model_summary(folds, key, classes, labels) -> dict:
    rows = [f[key] for f in folds if key in f]
    if not rows:
        return {}
    out = {
        "clip_accuracy": reporting.summarize([(r["clip_true"] == r["clip_pred"]).mean() for r in rows]),
        "window_accuracy": reporting.summarize([(np.asarray(r["window_true"]) == np.asarray(r["window_pred"])).mean()
                                                for r in rows]),
    }
    if "frame_accuracy" in rows[0]:
        out["frame_accuracy"] = reporting.summarize([r["frame_accuracy"] for r in rows])
    clip_true = np.concatenate([r["clip_true"] for r in rows])
    clip_pred = np.concatenate([r["clip_pred"] for r in rows])
    m = reporting.classification_metrics(clip_true, clip_pred, classes)
    per_fold_f1 = [reporting.classification_metrics(r["clip_true"], r["clip_pred"], classes)["f1_macro"] for r in rows]
    out.update({"f1_macro": reporting.summarize(per_fold_f1), "per_class_f1": m["per_class_f1"],
                "per_class_precision": m["per_class_precision"], "per_class_recall": m["per_class_recall"],
                "confusion": m["confusion"]})
    return out


def _fold_record(res: dict) -> dict:
    """What a finished fold keeps on disk (the resume point): predictions and small metadata, no arrays of
    features."""
    return {k: v for k, v in res.items() if k not in ("tsne_features", "tsne_labels", "first_layer")}


def _load_fold(path: Path) -> dict:
    res = reporting.read_json(path)
    for key in ("dbn_svm", "dbn_pretrained_svm", "dbn_finetuned", "mfcc_svm"):
        if key in res:
            for a in ("window_true", "window_pred", "clip_ids", "clip_true", "clip_pred"):
                res[key][a] = np.asarray(res[key][a])
    return res


def run(data=None, out_dir="hamel_eck_out", **options) -> dict:
    """Run the pipeline on ``data`` (a folder / CSV manifest path, or an :class:`AudioDataset`) and write
    ``results.json``, ``report.md`` and plots into ``out_dir``. Returns the results dict."""
    import torch

    threads = options.get("num_threads", QUICK["num_threads"] if options.get("quick") else None)
    if threads is not None and int(threads) < 1:
        raise ValueError(f"num_threads must be None or >= 1, got {threads}")
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        return _run(data, out_dir, **options)
    finally:
        torch.set_num_threads(before)


def _run(data, out_dir, **options) -> dict:
    quick = options.pop("quick", False)
    opts = {**DEFAULTS, **(QUICK if quick else {}), **options}
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"hamel_eck.run: unknown option(s) {sorted(unknown)}; expected some of {sorted(DEFAULTS)}")
    if data is None:
        raise ValueError("hamel_eck.run: data is required (a dataset folder, a CSV manifest or an AudioDataset)")
    if int(opts["folds"]) < 2 and not opts["split_files"]:
        raise ValueError(f"folds must be >= 2, got {opts['folds']}")
    out = reporting.prepare_out_dir(out_dir)
    (out / "folds").mkdir(exist_ok=True)
    ds = data if isinstance(data, datasets.AudioDataset) else datasets.load_dataset(data)
    classes = list(ds.classes)
    t0 = time.perf_counter()
    cache = opts["cache_dir"] or out / "cache"
    dft_params = {"frame_length": opts["frame_length"], "hop_length": opts["hop_length"], "log": opts["log"]}
    dft, errors = audio.extract(ds, "dft", dft_params, cache_dir=cache, n_jobs=opts["n_jobs"],
                                verbose=opts["verbose"], return_errors=True)
    mfcc = None
    if opts["mfcc"]:
        mfcc, errors_m = audio.extract(ds, "mfcc", {}, cache_dir=cache, n_jobs=opts["n_jobs"],
                                       verbose=opts["verbose"], return_errors=True)
        errors = list(dict(errors + errors_m).items())
    feature_seconds = time.perf_counter() - t0
    ok = np.array([f is not None and (mfcc is None or mfcc[i] is not None) for i, f in enumerate(dft)])
    labels = np.asarray(ds.labels)
    if ok.sum() == 0:
        raise ValueError(f"no usable clips in {ds.root}: every clip failed ({errors[:3]} ...)")
    opts["hop"] = audio.feature_params("dft", dft_params)["hop_length"]

    if opts["split_files"]:
        files = list(opts["split_files"])
        if len(files) not in (2, 3):
            raise ValueError(f"split_files: give train and test (and optionally valid) list files, got {files}")
        tr, te = datasets.read_split_lists(ds, files[0], files[1])[:2]
        splits = [(np.asarray(tr), np.asarray(te))]
    else:
        valid_idx = np.flatnonzero(ok)
        splits = [(valid_idx[a], valid_idx[b]) for a, b in
                  datasets.stratified_folds(labels[valid_idx], int(opts["folds"]), opts["seed"])]
    splits = [(a[ok[a]], b[ok[b]]) for a, b in splits]

    from tqdm.auto import tqdm

    folds, extras = [], {}
    for k, (train, test) in enumerate(tqdm(splits, desc="folds", disable=not opts["verbose"])):
        fold_dir = out / "folds" / f"fold{k}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        done = fold_dir / "fold_results.json"
        if opts["resume"] and done.exists() and k > 0:
            folds.append(_load_fold(done))
            continue
        res = run_fold(k, train, test, dft, mfcc, labels, classes, fold_dir, opts)
        if k == 0:
            extras = {key: res[key] for key in ("tsne_features", "tsne_labels", "first_layer")}
        reporting.write_json(done, _fold_record(res))
        folds.append(res)

    results = {
        "study": "hamel_eck",
        "dataset": {"root": str(ds.root), "n_clips": int(ok.sum()), "classes": classes,
                    "skipped": [list(e) for e in list(ds.skipped) + list(errors)]},
        "config": {k: v for k, v in opts.items() if k not in ("verbose",)},
        "feature_seconds": feature_seconds,
        "fold_seconds": [f["seconds"] for f in folds],
        "models": {name: _model_summary(folds, name, classes, labels) for name in
                   ("dbn_svm", "dbn_pretrained_svm", "dbn_finetuned")},
        "baselines": {"mfcc_svm": _model_summary(folds, "mfcc_svm", classes, labels)},
    }
    head = results["models"]["dbn_svm"]
    results.update({"clip_accuracy": head["clip_accuracy"], "window_accuracy": head["window_accuracy"],
                    "per_class_f1": head["per_class_f1"], "f1_macro": head["f1_macro"]})
    if results["models"]["dbn_finetuned"]:
        results["frame_accuracy"] = results["models"]["dbn_finetuned"]["frame_accuracy"]
    results["total_seconds"] = time.perf_counter() - t0
    _write_report(out, results, folds, extras, classes)
    reporting.write_json(out / "results.json", results)
    return results


def _write_report(out: Path, results: dict, folds, extras, classes) -> None:
    head = results["models"]["dbn_svm"]
    reporting.plot_confusion(head["confusion"], classes, out / "confusion_dbn_svm.png",
                             "DBN features + SVM (clips, all folds)")
    figures = ["confusion_dbn_svm.png"]
    if "dbn_history" in folds[0]:
        try:
            from .. import plots

            for i, h in enumerate(folds[0]["dbn_history"]):
                plots.plot_learning_curves(h, out / f"learning_curve_layer{i + 1}.png")
                figures.append(f"learning_curve_layer{i + 1}.png")
        except Exception as err:  # a plot must never cost the results
            warnings.warn(f"learning-curve plot failed: {err}")
    if "first_layer" in extras:
        _plot_first_layer(extras["first_layer"], out / "first_layer_weights.png")
        figures.append("first_layer_weights.png")
        reporting.plot_tsne(extras["tsne_features"], extras["tsne_labels"], classes, out / "tsne_dbn_windows.png",
                            "t-SNE of DBN window features (test clips, fold 0)")
        figures.append("tsne_dbn_windows.png")

    def line(name, r):
        if not r:
            return None
        acc = r["clip_accuracy"]
        w = r["window_accuracy"]
        f = r.get("frame_accuracy")
        return [name, f"{acc['mean']:.3f} ± {acc['std']:.3f}", f"{w['mean']:.3f} ± {w['std']:.3f}",
                f"{f['mean']:.3f} ± {f['std']:.3f}" if f else "-", f"{r['f1_macro']['mean']:.3f}"]

    rows = [r for r in (line("fine-tuned DBN (all layers, 5 s windows) + RBF SVM", head),
                        line("pre-trained DBN (all layers, 5 s windows) + RBF SVM",
                             results["models"]["dbn_pretrained_svm"]),
                        line("fine-tuned DBN (softmax)", results["models"]["dbn_finetuned"]),
                        line("MFCC (5 s windows) + RBF SVM", results["baselines"]["mfcc_svm"])) if r]
    per_class = [[c] + [m["per_class_f1"][c] for m in (head, results["models"]["dbn_finetuned"],
                                                       results["baselines"]["mfcc_svm"]) if m] for c in classes]
    names = [n for n, m in (("DBN+SVM", head), ("fine-tuned DBN", results["models"]["dbn_finetuned"]),
                            ("MFCC+SVM", results["baselines"]["mfcc_svm"])) if m]
    ds = results["dataset"]
    md = [
        "# Hamel & Eck DBN genre pipeline",
        "",
        f"Data: `{ds['root']}`, {ds['n_clips']} clips, {len(classes)} classes; "
        f"{len(results['fold_seconds'])} fold(s); features {results['feature_seconds']:.1f} s, "
        f"total {results['total_seconds']:.1f} s.",
        "" if not ds["skipped"] else f"Skipped clips: {', '.join(s[0] for s in ds['skipped'])}",
        "",
        "## Accuracy (mean ± std over folds)",
        "",
        reporting.markdown_table(["model", "clip", "window", "frame", "macro F1"], rows),
        "",
        "Published on real GTZAN: Hamel & Eck 2010, 84.3% clip accuracy (DBN features + SVM); the 2024 student "
        "re-implementation, 59% (fine-tuned DBN).",
        "",
        "## Per-class F1 (clips)",
        "",
        reporting.markdown_table(["class"] + names, per_class),
        "",
        "## Figures",
        "",
    ] + [f"![{f}]({f})" for f in figures]
    (out / "report.md").write_text("\n".join(md) + "\n")


def _plot_first_layer(W_dft: np.ndarray, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    lim = np.abs(W_dft).max() or 1.0
    ax.imshow(W_dft, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower",
              extent=[0, audio.SR / 2, 0.5, len(W_dft) + 0.5])
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("hidden unit")
    ax.set_title("First-layer DBN weights in DFT space")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
