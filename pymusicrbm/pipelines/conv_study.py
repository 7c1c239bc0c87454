"""The ConvRBM genre study: mel spectrograms (64 and 96 bins, the first 10 s) -> a convolutional RBM trained by
real CD with probabilistic max-pooling (or a ConvDBN of several such layers) on the training clips -> pooled-unit
feature maps summarised five ways -> Random Forest (and SVM, logistic regression) -> per-class F1 tables.

The five summaries of the top layer's pooled maps (n_filters, h, w):
  flatten          every unit (n_filters * h * w features)
  global_average   mean over the map per filter (n_filters)
  max_pooling      max over a grid of ``grid`` = (rows, cols) cells, flattened (n_filters * rows * cols)
  global_max       max over the map per filter (n_filters)
  average_pooling  mean over the same grid (2-D average pooling), flattened

Protocol: ``folds`` >= 2 -> stratified k-fold by clip, every metric from the out-of-fold predictions of all clips;
``folds=1`` -> one stratified split with ``test_fraction`` of the clips held out. The models never see test clips
(the ConvRBM is unsupervised, but it is still trained on the training clips only). With ``compare_training`` the
2024 re-implementation's shortcut (the same model trained as an autoencoder on the reconstruction error) is run
beside real CD on the same splits.

Outputs in ``out_dir``: ``results.json`` (``{"64": {"global_max": {"f1_macro", "accuracy", "per_class_f1", ...},
...}, "96": ...}`` plus settings, histories and timing), ``report.md`` (per-class F1 tables: rows classes, columns
pooling strategies, last row overall), ``loss_curves.png``, ``tsne_<bins>_<pooling>.png``, ``filters_<bins>.png``,
checkpoints under ``models/`` (``resume=True`` continues interrupted training from them) and a feature cache.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import audio, datasets, reporting

POOLINGS = ("flatten", "global_average", "max_pooling", "global_max", "average_pooling")
CLASSIFIERS = ("random_forest", "svm", "logistic_regression")

DEFAULTS = dict(
    bins=(64, 96), seconds=10.0, n_filters=(32,), filter_shapes=((7, 7),), pools=(2,), training="cd",
    compare_training=False, epochs=10, learning_rate=None, batch_size=16, momentum=0.5, weight_decay=1e-4,
    sparsity_target=0.05, sparsity_cost=1.0, k=1, grid=(4, 4), folds=1, test_fraction=0.2, n_estimators=300,
    classifiers=CLASSIFIERS, tsne=("global_max", "global_average"), seed=0, device="cpu", n_jobs=2,
    cache_dir=None, resume=False, verbose=1,
)

# The demo's settings (about a minute on 2 CPU cores on the synthetic set): fewer, smaller filters, fewer epochs.
QUICK = dict(n_filters=(12,), filter_shapes=((5, 5),), epochs=4, batch_size=8, n_estimators=100,
             tsne=("global_max",))


def add_arguments(parser) -> None:
    g = parser.add_argument_group("ConvRBM study")
    g.add_argument("--bins", type=int, nargs="+", default=list(DEFAULTS["bins"]), help="mel bin counts (64 96)")
    g.add_argument("--seconds", type=float, default=DEFAULTS["seconds"], help="first seconds of each clip (10)")
    g.add_argument("--filters", type=int, nargs="+", dest="n_filters", default=list(DEFAULTS["n_filters"]),
                   help="filters per layer; two or more values train a ConvDBN (e.g. 32 32)")
    g.add_argument("--filter-shape", nargs="+", dest="filter_shapes", default=["7x7"],
                   help="filter shape per layer, HxW or N for NxN (e.g. 7x7 3x3)")
    g.add_argument("--pool", type=int, nargs="+", dest="pools", default=list(DEFAULTS["pools"]),
                   help="probabilistic max-pooling block size per layer (1 = none)")
    g.add_argument("--training", choices=["cd", "reconstruction"], default=DEFAULTS["training"],
                   help="real CD (default) or the 2024 re-implementation's reconstruction-loss shortcut")
    g.add_argument("--compare-training", action="store_true",
                   help="also train with the other method on the same splits and report both")
    g.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    g.add_argument("--learning-rate", type=float, default=None, help="default 0.5 (cd) / 0.01 (reconstruction, Adam)")
    g.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    g.add_argument("--sparsity-target", type=float, default=DEFAULTS["sparsity_target"])
    g.add_argument("--sparsity-cost", type=float, default=DEFAULTS["sparsity_cost"])
    g.add_argument("--grid", type=int, nargs=2, default=list(DEFAULTS["grid"]), metavar=("ROWS", "COLS"),
                   help="cells of the max/average pooling summaries (4 4)")
    g.add_argument("--folds", type=int, default=DEFAULTS["folds"], help="1: one split; >= 2: stratified k-fold")
    g.add_argument("--test-fraction", type=float, default=DEFAULTS["test_fraction"])
    g.add_argument("--n-estimators", type=int, default=DEFAULTS["n_estimators"], help="Random Forest trees")
    g.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    g.add_argument("--device", default=DEFAULTS["device"], help="cpu or cuda")
    g.add_argument("--jobs", type=int, dest="n_jobs", default=DEFAULTS["n_jobs"])
    g.add_argument("--cache-dir", default=None, help="feature cache (default: OUT/cache)")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoints in OUT/models")


def _shape(s) -> tuple[int, int]:
    """'7x5' / '7' / 7 / (7, 5) -> (7, 5)."""
    if isinstance(s, str):
        parts = s.lower().split("x")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"filter shape must look like 7x5 or 7, got {s!r}") from None
        s = vals if len(vals) == 2 else vals * 2 if len(vals) == 1 else None
        if s is None:
            raise ValueError("filter shape must look like 7x5 or 7")
    if isinstance(s, (int, np.integer)):
        return int(s), int(s)
    if isinstance(s, (tuple, list)) and len(s) == 2:
        return int(s[0]), int(s[1])
    raise ValueError(f"filter shape must be HxW, an int or a pair, got {s!r}")


def _check_options(opts: dict) -> dict:
    opts["bins"] = tuple(int(b) for b in opts["bins"])
    if not opts["bins"] or min(opts["bins"]) < 8:
        raise ValueError(f"bins must be mel bin counts >= 8, got {opts['bins']}")
    opts["n_filters"] = tuple(int(n) for n in np.atleast_1d(opts["n_filters"]))
    fs = opts["filter_shapes"]
    fs = [fs] if isinstance(fs, (str, int)) else list(fs)
    if len(fs) == 2 and all(isinstance(x, (int, np.integer)) for x in fs) and len(opts["n_filters"]) == 1:
        fs = [tuple(fs)]  # (7, 5): one layer's shape, not two square layers
    opts["filter_shapes"] = tuple(_shape(s) for s in fs)
    opts["pools"] = tuple(int(p) for p in np.atleast_1d(opts["pools"]))
    n = len(opts["n_filters"])
    if len(opts["filter_shapes"]) == 1 and n > 1:
        opts["filter_shapes"] = opts["filter_shapes"] * n
    if len(opts["pools"]) == 1 and n > 1:
        opts["pools"] = opts["pools"] * n
    if not (len(opts["filter_shapes"]) == len(opts["pools"]) == n):
        raise ValueError(f"give one filter shape and one pool size per layer (or one for all): {n} layers, "
                         f"{len(opts['filter_shapes'])} shapes, {len(opts['pools'])} pools")
    if opts["training"] not in ("cd", "reconstruction"):
        raise ValueError(f"training must be 'cd' or 'reconstruction', got {opts['training']!r}")
    if not (isinstance(opts["folds"], (int, np.integer)) and opts["folds"] >= 1):
        raise ValueError(f"folds must be an integer >= 1, got {opts['folds']!r}")
    if not opts["seconds"] or opts["seconds"] <= 0:
        raise ValueError(f"seconds must be > 0, got {opts['seconds']!r}")
    opts["grid"] = tuple(int(g) for g in opts["grid"])
    if len(opts["grid"]) != 2 or min(opts["grid"]) < 1:
        raise ValueError(f"grid must be two positive ints (rows, cols), got {opts['grid']}")
    bad = set(opts["classifiers"]) - set(CLASSIFIERS)
    if bad or not opts["classifiers"]:
        raise ValueError(f"classifiers must be some of {CLASSIFIERS}, got {opts['classifiers']}")
    bad = set(opts["tsne"]) - set(POOLINGS)
    if bad:
        raise ValueError(f"tsne poolings must be some of {POOLINGS}, got {sorted(bad)}")
    return opts


# ------------------------------------------------------------------------------------------------- features

def summarize_maps(F: np.ndarray, grid=(4, 4)) -> dict[str, np.ndarray]:
    """The five summaries of pooled maps F (n, K, h, w) -> {pooling: (n, d) float32}."""
    import torch
    import torch.nn.functional as tF

    t = torch.from_numpy(np.ascontiguousarray(F, dtype=np.float32))
    g = (min(grid[0], t.shape[2]), min(grid[1], t.shape[3]))
    return {
        "flatten": t.flatten(1).numpy(),
        "global_average": t.mean((2, 3)).numpy(),
        "max_pooling": tF.adaptive_max_pool2d(t, g).flatten(1).numpy(),
        "global_max": t.amax((2, 3)).numpy(),
        "average_pooling": tF.adaptive_avg_pool2d(t, g).flatten(1).numpy(),
    }


def _features(model, X: np.ndarray, grid, chunk: int = 64) -> dict[str, np.ndarray]:
    """Summaries of the top layer's pooled maps, computed a chunk of clips at a time (the maps are large)."""
    parts = [summarize_maps(model.transform(X[i:i + chunk]), grid) for i in range(0, len(X), chunk)]
    return {p: np.concatenate([part[p] for part in parts]) for p in POOLINGS}


class _RBFSVM:
    """Standardised features -> RBF SVM (C=10, gamma = 1 / n_features, i.e. sklearn's 'scale' on unit-variance
    data) on a precomputed kernel: libsvm's own kernel evaluations are slow for the 10^5-dimensional 'flatten'
    features, one matrix product is not."""

    def __init__(self, seed: int):
        self.seed = seed

    def fit(self, X, y):
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        self.scaler_ = StandardScaler().fit(X)
        self.train_ = self.scaler_.transform(X).astype(np.float32)
        self.gamma_ = 1.0 / X.shape[1]
        self.svc_ = SVC(C=10.0, kernel="precomputed", random_state=self.seed).fit(self._kernel(self.train_), y)
        return self

    def _kernel(self, A):
        from sklearn.metrics.pairwise import rbf_kernel

        return rbf_kernel(A, self.train_, gamma=self.gamma_)

    def predict(self, X):
        return self.svc_.predict(self._kernel(self.scaler_.transform(X).astype(np.float32)))


def _classifier(name: str, seed: int, n_estimators: int, n_jobs: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "random_forest":
        return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)
    if name == "svm":
        return _RBFSVM(seed)
    # tol 1e-3: L-BFGS on 10^5-dimensional features otherwise spends most of the study polishing digits
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, tol=1e-3, max_iter=500))


# ------------------------------------------------------------------------------------------------- model

def _make_model(opts: dict, training: str, seed: int):
    from ..conv_rbm import ConvDBN, ConvRBM

    lr = opts["learning_rate"] if training == opts["training"] else None  # a compared method gets its default
    common = dict(training=training, learning_rate=lr, batch_size=opts["batch_size"],
                  n_iter=opts["epochs"],
                  k=opts["k"], momentum=opts["momentum"], weight_decay=opts["weight_decay"],
                  sparsity_target=opts["sparsity_target"], sparsity_cost=opts["sparsity_cost"],
                  validation_fraction=0.1, random_state=seed, device=opts["device"], verbose=opts["verbose"])
    if len(opts["n_filters"]) == 1:
        return ConvRBM(n_filters=opts["n_filters"][0], filter_shape=opts["filter_shapes"][0], pool=opts["pools"][0],
                       visible="gaussian", standardize="channel", **common)
    # Upper layers see probabilities (Bernoulli visible units) whose gradients are not scaled down by a Gaussian
    # input's variance: the same step size is fine there.
    return ConvDBN(n_filters=opts["n_filters"], filter_shapes=opts["filter_shapes"], pools=opts["pools"],
                   visible="gaussian", standardize="channel", **common)


def _first_layer(model):
    return model if not hasattr(model, "layers_") else model.layers_[0]


def _histories(model) -> list[dict]:
    return [model.history_] if not hasattr(model, "layers_") else list(model.history_)


# ------------------------------------------------------------------------------------------------- evaluation

def _evaluate(per_pooling_preds: dict, y: np.ndarray, classes: list[str], n_features: dict) -> dict:
    """{pooling: metrics of the Random Forest at the top level + 'by_classifier'}."""
    out = {}
    for pooling, by_clf in per_pooling_preds.items():
        entry = {"n_features": int(n_features[pooling]), "by_classifier": {}}
        for clf, pred in by_clf.items():
            m = reporting.classification_metrics(y, pred, classes)
            entry["by_classifier"][clf] = {k: m[k] for k in ("f1_macro", "accuracy", "per_class_f1", "confusion")}
        main = "random_forest" if "random_forest" in by_clf else next(iter(by_clf))
        entry.update({k: entry["by_classifier"][main][k] for k in ("f1_macro", "accuracy", "per_class_f1")})
        entry["classifier"] = main
        out[pooling] = entry
    return out


def _run_bins(bins: int, mels: list, y: np.ndarray, classes: list[str], splits, opts: dict, training: str,
              out: Path) -> tuple[dict, dict]:
    """Train, summarise and classify for one bin count; returns (results per pooling, extras for plots)."""
    X = np.stack(mels).astype(np.float32)  # (n, bins, frames)
    preds = {p: {c: np.full(len(y), -1) for c in opts["classifiers"]} for p in POOLINGS}
    extras = {"histories": [], "tsne": {}, "filters": None, "train_seconds": 0.0, "classify_seconds": 0.0}
    n_features = {}
    models = out / "models"
    models.mkdir(exist_ok=True)
    for k, (train, test) in enumerate(splits):
        seed = opts["seed"] + 101 * k
        model = _make_model(opts, training, seed)
        ckpt = models / f"{training}_{bins}_fold{k}.safetensors"
        t0 = time.perf_counter()
        model.fit(X[train], resume=ckpt if (opts["resume"] and ckpt.exists()) else None, checkpoint=ckpt)
        extras["train_seconds"] += time.perf_counter() - t0
        extras["histories"].append(_histories(model))
        if k == 0:
            extras["filters"] = _first_layer(model).filters_
        t0 = time.perf_counter()
        feats = _features(model, X, opts["grid"])
        for pooling in POOLINGS:
            F = feats[pooling]
            n_features[pooling] = F.shape[1]
            for clf in opts["classifiers"]:
                est = _classifier(clf, seed, opts["n_estimators"], opts["n_jobs"]).fit(F[train], y[train])
                preds[pooling][clf][test] = est.predict(F[test])
            if k == 0 and pooling in opts["tsne"]:
                extras["tsne"][pooling] = (F[test], y[test]) if len(splits) > 1 else (F, y)
        extras["classify_seconds"] += time.perf_counter() - t0
        del feats
    evaluated = np.concatenate([te for _, te in splits])
    res = _evaluate({p: {c: v[evaluated] for c, v in d.items()} for p, d in preds.items()}, y[evaluated],
                    classes, n_features)
    return res, extras


# ------------------------------------------------------------------------------------------------- report

def f1_table(res_bins: dict, classes: list[str], classifier: str | None = None) -> str:
    """Markdown: rows classes, columns pooling strategies, last row overall (macro F1)."""
    def get(p):
        return res_bins[p] if classifier is None else res_bins[p]["by_classifier"][classifier]
    rows = [[c] + [get(p)["per_class_f1"][c] for p in POOLINGS] for c in classes]
    rows.append(["**overall (macro F1)**"] + [get(p)["f1_macro"] for p in POOLINGS])
    rows.append(["accuracy"] + [get(p)["accuracy"] for p in POOLINGS])
    return reporting.markdown_table(["class"] + list(POOLINGS), rows)


def _plot_losses(histories: dict, path: Path) -> None:
    plt = reporting._pyplot()
    keys = list(histories)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for layer, h in enumerate(histories[key][0]):  # first fold, every layer
            ep = h.get("epoch", list(range(1, len(h.get("train_loss", [])) + 1)))
            for name, style in (("train_loss", "-"), ("valid_loss", "--")):
                if name in h:
                    ax.plot(ep, h[name], style, label=f"layer {layer + 1} {name.split('_')[0]}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean-field reconstruction MSE")
        ax.set_title(key)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_filters(W: np.ndarray, path: Path, title: str) -> None:
    plt = reporting._pyplot()
    K = W.shape[0]
    cols = int(np.ceil(np.sqrt(K * 2)))
    rows = int(np.ceil(K / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.1 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < K:
            f = W[i, 0]
            lim = np.abs(f).max() or 1.0
            ax.imshow(f, cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower", aspect="auto")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _report(results: dict, classes: list[str], opts: dict) -> str:
    lines = ["# ConvRBM genre study", ""]
    s = results["settings"]
    lines.append(f"{results['n_clips']} clips, {len(classes)} classes; first {s['seconds']} s as mel spectrograms; "
                 f"{'ConvDBN' if len(s['n_filters']) > 1 else 'ConvRBM'} with filters {s['n_filters']} of "
                 f"{[f'{h}x{w}' for h, w in s['filter_shapes']]}, probabilistic max-pooling {s['pools']}, "
                 f"{s['epochs']} epochs of {s['training']} training; "
                 f"{'one stratified split' if s['folds'] == 1 else str(s['folds']) + '-fold CV'}.")
    lines.append("")
    lines.append("Per-class F1 of the Random Forest; columns: how the pooled feature maps are summarised; last rows: "
                 "overall macro F1 and accuracy. (The 2024 re-implementation's best overall F1 was 0.52: global "
                 "max pooling, 96 bins, Random Forest, real GTZAN.)")
    for bins in s["bins"]:
        key = str(bins)
        lines += ["", f"## {bins} mel bins ({s['training']})", "", f1_table(results[key], classes)]
        for clf in s["classifiers"]:
            if clf == "random_forest":
                continue
            row = [results[key][p]["by_classifier"][clf]["f1_macro"] for p in POOLINGS]
            lines += ["", f"{clf} macro F1: " + ", ".join(f"{p} {v:.3f}" for p, v in zip(POOLINGS, row))]
    if "reconstruction_training" in results or "cd_training" in results:
        other = "reconstruction_training" if "reconstruction_training" in results else "cd_training"
        lines += ["", f"## Comparison: {other.replace('_', ' ')} (same splits)", ""]
        rows = []
        for bins in s["bins"]:
            for p in POOLINGS:
                rows.append([bins, p, results[str(bins)][p]["f1_macro"], results[other][str(bins)][p]["f1_macro"]])
        lines.append(reporting.markdown_table(["bins", "pooling", f"{s['training']} F1", f"{other} F1"], rows))
    b = results["best"]
    lines += ["", f"Best: {b['f1_macro']:.3f} macro F1 ({b['bins']} bins, {b['pooling']}, Random Forest).", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- run

def run(data=None, out_dir="conv_study_out", **options) -> dict:
    """Run the study on ``data`` (a dataset folder, a CSV manifest or an :class:`AudioDataset`); writes
    ``results.json``, ``report.md`` and plots into ``out_dir`` and returns the results dict. ``quick=True``
    applies the demo's smaller settings (:data:`QUICK`); any option of :data:`DEFAULTS` may be given."""
    quick = options.pop("quick", False)
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"conv_study.run: unknown option(s) {sorted(unknown)}; expected some of {sorted(DEFAULTS)}")
    opts = _check_options({**DEFAULTS, **(QUICK if quick else {}), **options})
    if data is None:
        raise ValueError("conv_study.run: data is required (a dataset folder, a CSV manifest or an AudioDataset)")
    out = reporting.prepare_out_dir(out_dir)
    ds = data if isinstance(data, datasets.AudioDataset) else datasets.load_dataset(data)
    classes = list(ds.classes)
    t_start = time.perf_counter()
    cache = opts["cache_dir"] or out / "cache"

    mels, ok = {}, np.ones(len(ds), bool)
    errors = {}
    t0 = time.perf_counter()
    for bins in opts["bins"]:
        feats, errs = audio.extract(ds, "mel", {"n_mels": bins, "seconds": opts["seconds"]}, cache_dir=cache,
                                    n_jobs=opts["n_jobs"], verbose=opts["verbose"], return_errors=True)
        mels[bins] = feats
        ok &= np.array([f is not None for f in feats])
        errors.update(dict(errs))
    feature_seconds = time.perf_counter() - t0
    if not ok.any():
        raise ValueError(f"no usable clips in {ds.root}: every clip failed ({list(errors.items())[:3]} ...)")
    keep = np.flatnonzero(ok)
    y = np.asarray(ds.labels)[keep]
    if opts["folds"] >= 2:
        splits = datasets.stratified_folds(y, opts["folds"], seed=opts["seed"])
    else:
        tr, _, te = datasets.train_valid_test_split(y, valid=0.0, test=opts["test_fraction"], seed=opts["seed"])
        splits = [(tr, te)]

    trainings = [opts["training"]]
    if opts["compare_training"]:
        trainings.append("reconstruction" if opts["training"] == "cd" else "cd")
    results = {"n_clips": int(len(keep)), "classes": classes, "skipped": sorted(errors.items())}
    histories, timing = {}, {"features_seconds": feature_seconds}
    for training in trainings:
        section = results if training == opts["training"] else results.setdefault(f"{training}_training", {})
        for bins in opts["bins"]:
            res, extras = _run_bins(bins, [mels[bins][i] for i in keep], y, classes, splits, opts, training, out)
            section[str(bins)] = res
            histories[f"{bins} bins, {training}"] = extras["histories"]
            timing[f"train_seconds_{bins}_{training}"] = extras["train_seconds"]
            timing[f"classify_seconds_{bins}_{training}"] = extras["classify_seconds"]
            if training == opts["training"]:
                _plot_filters(extras["filters"], out / f"filters_{bins}.png",
                              f"first-layer filters, {bins} mel bins (rows: frequency, cols: time)")
                for pooling, (F, yy) in extras["tsne"].items():
                    reporting.plot_tsne(F, yy, classes, out / f"tsne_{bins}_{pooling}.png",
                                        title=f"t-SNE, {bins} bins, {pooling}", seed=opts["seed"])
    best = max(((b, p, results[str(b)][p]["f1_macro"]) for b in opts["bins"] for p in POOLINGS),
               key=lambda t: t[2])
    results["best"] = {"bins": str(best[0]), "pooling": best[1], "f1_macro": best[2]}
    results["histories"] = histories
    _plot_losses(histories, out / "loss_curves.png")
    timing["total_seconds"] = time.perf_counter() - t_start
    results["timing"] = timing
    results["settings"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()
                           if k not in ("cache_dir",)}
    results["settings"]["filter_shapes"] = [list(s) for s in opts["filter_shapes"]]
    (out / "report.md").write_text(_report(results, classes, opts))
    reporting.write_json(out / "results.json", results)
    return results
