"""The ConvRBM genre study: mel spectrograms (``bins``; the first ``seconds`` of each clip, or whole clips with
``seconds='all'``) -> a convolutional RBM trained by real CD with probabilistic max-pooling (or a ConvDBN of several
such layers) on the training clips (on the middle ``train_seconds`` of each: training costs in proportion to the
frames it sees) -> pooled-unit feature maps of every second used (transformed in pieces of the training width,
joined along time) summarised up to six ways (``poolings``) -> Random Forest, SVM (C and gamma by CV on the
training clips up to 20000 features), logistic regression -> per-class F1 tables.

The summaries of the top layer's pooled maps (n_filters, h, w):
  flatten          every unit (n_filters * h * w features)
  global_average   mean over the map per filter (n_filters)
  max_pooling      max over a grid of ``grid`` = (rows, cols) cells, flattened (n_filters * rows * cols)
  global_max       max over the map per filter (n_filters)
  average_pooling  mean over the same grid (2-D average pooling), flattened
  time_stats       mean, std and max over time per filter and (pooled) frequency row (n_filters * h * 3): the
                   clip-level statistics of each filter in each band, the same size whatever the clip's length

Protocol (:mod:`._study`): stratified k-fold by clip (default 5), or the dataset's official split. Per outer fold and
bin count, one ConvRBM is trained on the training clips only; every (pooling, classifier) is then fitted on the
training clips and scored on the test clips, giving the tables of mean ± std over folds. The study's own figure
(``models.convrbm``) is the configuration (bins, pooling, classifier) chosen on each fold by an inner stratified
``inner_folds``-fold CV over that fold's training clips (macro F1), scored on that fold's test clips: the test
clips never pick the configuration. Beside it, ``baselines.mfcc_svm`` on the same folds, with paired differences.
With ``compare_training`` the 2024 re-implementation's shortcut (the same model trained as an autoencoder on the
reconstruction error) is run beside real CD on the same folds.

Outputs in ``out_dir``: ``results.json`` (the one schema, plus ``tables`` ``{"64": {"<pooling>": {"<classifier>":
{...}}}}`` with the models' inner keys, ``selection`` per fold, ``feature_sizes``, histories and timing),
``report.md``, ``loss_curves.png``, ``tsne_<bins>_<pooling>.png``, ``filters_<bins>.png``, checkpoints under
``models/`` (``resume=True`` continues interrupted training from them) and a feature cache.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import plots, reporting
from . import _study, classifiers

POOLINGS = ("flatten", "global_average", "max_pooling", "global_max", "average_pooling", "time_stats")
CLASSIFIERS = classifiers.CLASSIFIERS

# Chosen on the real-music development set (benchmarks/results/devset_sweep_convrbm.json): whole clips (mel statistics
# over whole clips beat the first 30 s by 0.08 clip accuracy there), the ConvRBM trained on the middle 10 s of each
# clip for 5 epochs, and the summaries without flatten (whose size would differ by clip); 64 bins, Random Forest
# and SVM (the inner CV chose time_stats, with one or the other, on every fold of the sweep and the evaluation).
DEFAULTS = dict(
    _study.COMMON, bins=(64,), seconds="all", train_seconds=10.0, n_filters=(32,), filter_shapes=((7, 7),),
    pools=(2,), training="cd", compare_training=False, epochs=5, learning_rate=None, batch_size=16, momentum=0.5,
    weight_decay=1e-4, sparsity_target=0.05, sparsity_cost=1.0, k=1, grid=(4, 4), inner_folds=3, n_estimators=300,
    classifiers=("random_forest", "svm"), poolings=("global_average", "max_pooling", "average_pooling", "time_stats"),
    tsne=("time_stats", "global_average"),
)

# The demo's settings (a minute or two on 2 CPU cores on the synthetic set): fewer, smaller filters, fewer epochs,
# 3 outer and 2 inner folds, and no logistic regression (L-BFGS on wide summaries, fitted 3 times a fold for every
# summary, would take most of the demo).
QUICK = dict(folds=3, inner_folds=2, n_filters=(12,), filter_shapes=((5, 5),), epochs=4, batch_size=8,
             n_estimators=100, tsne=("time_stats",), classifiers=("random_forest", "svm"))


def add_arguments(parser) -> None:
    _study.add_common_arguments(parser)
    g = parser.add_argument_group("ConvRBM study")
    g.add_argument("--bins", type=int, nargs="+", default=None, help="mel bin counts (64; e.g. 64 96)")
    g.add_argument("--seconds", type=_study.seconds_arg, default=None,
                   help="first seconds of each clip, or 'all' for whole clips (all)")
    g.add_argument("--train-seconds", type=float, default=None,
                   help="train the ConvRBM on the middle N seconds of each clip (10; N >= --seconds: all of them); "
                        "features still come from every second")
    g.add_argument("--filters", type=int, nargs="+", dest="n_filters", default=None,
                   help="filters per layer (32); two or more values train a ConvDBN (e.g. 32 32)")
    g.add_argument("--filter-shape", nargs="+", dest="filter_shapes", default=None,
                   help="filter shape per layer, HxW or N for NxN (7x7; e.g. 7x7 3x3)")
    g.add_argument("--pool", type=int, nargs="+", dest="pools", default=None,
                   help="probabilistic max-pooling block size per layer (2; 1 = none)")
    g.add_argument("--training", choices=["cd", "reconstruction"], default=None,
                   help="real CD (default) or the 2024 re-implementation's reconstruction-loss shortcut")
    g.add_argument("--compare-training", action="store_true", default=None,
                   help="also train with the other method on the same folds and report both")
    g.add_argument("--epochs", type=int, default=None, help=f"default {DEFAULTS['epochs']}")
    g.add_argument("--learning-rate", type=float, default=None, help="default 0.5 (cd) / 0.01 (reconstruction, Adam)")
    g.add_argument("--batch-size", type=int, default=None, help=f"default {DEFAULTS['batch_size']}")
    g.add_argument("--sparsity-target", type=float, default=None, help=f"default {DEFAULTS['sparsity_target']}")
    g.add_argument("--sparsity-cost", type=float, default=None, help=f"default {DEFAULTS['sparsity_cost']}")
    g.add_argument("--grid", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"),
                   help="cells of the max/average pooling summaries (4 4)")
    g.add_argument("--inner-folds", type=int, default=None,
                   help="inner CV folds on each training fold that choose the reported configuration (3)")
    g.add_argument("--classifiers", nargs="+", choices=CLASSIFIERS, default=None,
                   help="default: random_forest svm")
    g.add_argument("--poolings", nargs="+", choices=POOLINGS, default=None,
                   help="summaries of the feature maps to score and choose among (default: all but flatten)")
    g.add_argument("--n-estimators", type=int, default=None, help="Random Forest trees (300)")


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
    if not (isinstance(opts["inner_folds"], (int, np.integer)) and opts["inner_folds"] >= 2):
        raise ValueError(f"inner_folds must be an integer >= 2, got {opts['inner_folds']!r}")
    if opts["seconds"] != "all" and not (isinstance(opts["seconds"], (int, float)) and opts["seconds"] > 0):
        raise ValueError(f"seconds must be > 0 or 'all' (whole clips), got {opts['seconds']!r}")
    if opts["seconds"] == "all" and opts["train_seconds"] is None:
        raise ValueError("seconds='all' (whole clips, of different lengths) needs train_seconds (the length the "
                         "ConvRBM trains on)")
    if opts["train_seconds"] is not None and not opts["train_seconds"] > 0:
        raise ValueError(f"train_seconds must be None or > 0, got {opts['train_seconds']!r}")
    opts["grid"] = tuple(int(g) for g in opts["grid"])
    if len(opts["grid"]) != 2 or min(opts["grid"]) < 1:
        raise ValueError(f"grid must be two positive ints (rows, cols), got {opts['grid']}")
    bad = set(opts["classifiers"]) - set(CLASSIFIERS)
    if bad or not opts["classifiers"]:
        raise ValueError(f"classifiers must be some of {CLASSIFIERS}, got {opts['classifiers']}")
    poolings = [opts["poolings"]] if isinstance(opts["poolings"], str) else list(opts["poolings"])
    bad = set(poolings) - set(POOLINGS)
    if bad or not poolings:
        raise ValueError(f"poolings must be some of {POOLINGS}, got {poolings}")
    opts["poolings"] = tuple(p for p in POOLINGS if p in poolings)  # the tables' order
    if opts["seconds"] == "all" and "flatten" in opts["poolings"]:
        raise ValueError("poolings: 'flatten' needs clips of one length (its size grows with the clip's); with "
                         "seconds='all' choose among the other summaries")
    bad = set(opts["tsne"]) - set(opts["poolings"])
    if bad:
        raise ValueError(f"tsne poolings must be some of the poolings {opts['poolings']}, got {sorted(bad)}")
    return opts


# ------------------------------------------------------------------------------------------------- features

def summarize_maps(F: np.ndarray, grid=(4, 4), poolings=POOLINGS) -> dict[str, np.ndarray]:
    """The summaries ``poolings`` (default all six) of pooled maps F (n, K, h, w) -> {pooling: (n, d) float32}."""
    import torch
    import torch.nn.functional as tF

    t = torch.from_numpy(np.ascontiguousarray(F, dtype=np.float32))
    g = (min(grid[0], t.shape[2]), min(grid[1], t.shape[3]))
    make = {
        "flatten": lambda: t.flatten(1),
        "global_average": lambda: t.mean((2, 3)),
        "max_pooling": lambda: tF.adaptive_max_pool2d(t, g).flatten(1),
        "global_max": lambda: t.amax((2, 3)),
        "average_pooling": lambda: tF.adaptive_avg_pool2d(t, g).flatten(1),
        "time_stats": lambda: torch.cat([t.mean(3), t.std(3, correction=0), t.amax(3)], 2).flatten(1),
    }
    return {p: make[p]().numpy() for p in poolings}


def clip_maps(model, X: np.ndarray) -> np.ndarray:
    """Pooled maps of the top layer over the whole length of mel spectrograms X (n, bins, frames). A model only
    takes inputs of its training width (``train_seconds``), so longer ones are cut into consecutive pieces of that
    width (the last one aligned to the end; a shorter input is padded with its minimum) whose maps are joined
    along time: (n, n_filters, h, pieces * w)."""
    width = _first_layer(model).crop_shape_[1]
    X = np.asarray(X, np.float32)
    if X.shape[-1] < width:
        X = np.pad(X, ((0, 0), (0, 0), (0, width - X.shape[-1])), constant_values=float(X.min()))
    T = X.shape[-1]
    starts = list(range(0, T - width + 1, width))
    if starts[-1] + width < T:
        starts.append(T - width)
    if len(starts) == 1:
        return model.transform(X)
    pieces = np.stack([X[..., s:s + width] for s in starts], 1)  # (n, pieces, bins, width)
    F = model.transform(pieces.reshape(-1, *pieces.shape[2:]))
    F = F.reshape(len(X), len(starts), *F.shape[1:])  # (n, pieces, K, h, w)
    return np.concatenate(list(F.transpose(1, 0, 2, 3, 4)), axis=-1)


def _features(model, X, grid, poolings=POOLINGS, chunk: int = 16) -> dict[str, np.ndarray]:
    """Summaries of the top layer's pooled maps over each whole clip, a chunk of clips at a time (the maps are
    large); clips of different lengths (``seconds='all'``: an object array of spectrograms) one at a time."""
    if X.dtype == object:
        parts = [summarize_maps(clip_maps(model, x[None]), grid, poolings) for x in X]
    else:
        parts = [summarize_maps(clip_maps(model, X[i:i + chunk]), grid, poolings) for i in range(0, len(X), chunk)]
    return {p: np.concatenate([part[p] for part in parts]) for p in poolings}


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


def training_maps(X: np.ndarray, train_seconds) -> np.ndarray:
    """The middle ``train_seconds`` of mel spectrograms X (n, bins, frames) (hop 512 at audio.SR), all of X for
    None or when X is shorter: a ConvRBM's training costs in proportion to the frames it sees, its features do not need the whole clip
    to learn from. Clips of different lengths (an object array) give pieces of the shortest one's length if that
    is shorter."""
    from .. import audio

    if train_seconds is None:
        return X
    n = 1 + int(train_seconds * audio.SR) // 512
    if X.dtype == object:
        n = min(n, min(x.shape[-1] for x in X))
        return np.stack([x[..., (x.shape[-1] - n) // 2:(x.shape[-1] - n) // 2 + n] for x in X])
    n = min(X.shape[-1], n)
    start = (X.shape[-1] - n) // 2
    return X[..., start:start + n]


def _first_layer(model):
    return model if not hasattr(model, "layers_") else model.layers_[0]


def _histories(model) -> list[dict]:
    return [model.history_] if not hasattr(model, "layers_") else list(model.history_)


# ------------------------------------------------------------------------------------------------- folds

# Up to this many features the SVM's C and gamma are searched (``svm_grid``, by CV on the training rows: +0.06 clip
# accuracy for time_stats on a dev-set fold); wider summaries (flatten: 10^5 columns) keep the precomputed-kernel
# SVM with C=10, whose kernel is one matrix product.
SVM_GRID_MAX_FEATURES = 20000


def make_classifier(name: str, n_features: int, opts, seed: int):
    """The study's classifier ``name`` for ``n_features`` columns (an unfitted estimator with ``fit``/``predict``)."""
    if name == "svm" and n_features <= SVM_GRID_MAX_FEATURES and opts["svm_grid"] != "none":
        return _GridSVM(opts["svm_grid"], seed, opts["n_jobs"])
    return classifiers.make(name, seed, opts["n_estimators"], opts["n_jobs"], wide=True)


class _GridSVM:
    """:func:`classifiers.fit_svm` (standardise -> RBF SVM, C and gamma by CV over the rows it is fitted on) as an
    estimator."""

    def __init__(self, grid: str, seed: int, n_jobs: int):
        self.grid, self.seed, self.n_jobs = grid, seed, n_jobs

    def fit(self, X, y):
        self.model_, self.params_ = classifiers.fit_svm(X, y, np.arange(len(y)), self.grid, self.seed, self.n_jobs)
        return self

    def predict(self, X):
        return self.model_.predict(X)


def _fit_predict(name: str, F, y, train, test, opts, seed: int) -> np.ndarray:
    est = make_classifier(name, F.shape[1], opts, seed)
    return est.fit(F[train], y[train]).predict(F[test])


def _inner_score(name: str, F, y, train, opts, seed: int) -> float:
    """Mean macro F1 of ``name`` over a stratified inner k-fold of the training rows (never the test rows)."""
    from sklearn.model_selection import StratifiedKFold

    n_splits = min(int(opts["inner_folds"]), int(np.bincount(y[train]).min()))
    if n_splits < 2:
        return float("nan")
    n_classes = int(y.max()) + 1
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return float(np.mean([reporting.macro_f1(y[train][b], _fit_predict(name, F, y, train[a], train[b], opts, seed),
                                             n_classes) for a, b in cv.split(train, y[train])]))


def _fold(k, train, test, X, y, training_kinds, fold_dir: Path, opts) -> tuple[dict, dict]:
    """One outer fold: a model per training kind and bin count, every (pooling, classifier) scored on the test
    rows, the inner-CV choice among them, and the MFCC baseline. ``train``/``test`` are rows of ``X[bins]``."""
    seed = opts["seed"] + 101 * k
    rec = {"fold": k, "tables": {}, "inner_f1": {}, "histories": {}, "feature_sizes": {}, "timing": {}}
    extras = {"filters": {}, "tsne": {}}
    models_dir = fold_dir.parent.parent / "models"
    models_dir.mkdir(exist_ok=True)
    record = {"clip_ids": test, "clip_true": y[test]}
    for training in training_kinds:
        main = training == opts["training"]
        tables = rec["tables"] if main else rec.setdefault("comparison_tables", {})
        for bins in opts["bins"]:
            key = str(bins)
            model = _make_model(opts, training, seed)
            ckpt = models_dir / f"{training}_{bins}_fold{k}.safetensors"
            first = k == 0 and main and bins == opts["bins"][0]
            if first and opts["verbose"] and not (opts["resume"] and ckpt.exists()):
                print(_time_estimate(X[bins][train], len(training_kinds), opts))
            t0 = time.perf_counter()
            model.fit(training_maps(X[bins][train], opts["train_seconds"]),
                      resume=ckpt if (opts["resume"] and ckpt.exists()) else None, checkpoint=ckpt)
            rec["timing"][f"train_seconds_{bins}_{training}"] = time.perf_counter() - t0
            rec["histories"][f"{bins} bins, {training}"] = _histories(model)
            t0 = time.perf_counter()
            feats = _features(model, X[bins], opts["grid"], opts["poolings"])
            tables[key] = {}
            if main:
                rec["inner_f1"][key] = {}
                rec["feature_sizes"][key] = {p: int(feats[p].shape[1]) for p in opts["poolings"]}
                extras["filters"][bins] = _first_layer(model).filters_
                extras["tsne"][bins] = {p: (feats[p][test], y[test]) for p in opts["tsne"]}
            for pooling in opts["poolings"]:
                tables[key][pooling] = {c: {**record, "clip_pred": _fit_predict(c, feats[pooling], y, train, test,
                                                                               opts, seed)}
                                        for c in opts["classifiers"]}
                if main:
                    rec["inner_f1"][key][pooling] = {c: _inner_score(c, feats[pooling], y, train, opts, seed)
                                                     for c in opts["classifiers"]}
            rec["timing"][f"classify_seconds_{bins}_{training}"] = time.perf_counter() - t0
            del feats
    # The configuration this fold reports: the best inner-CV macro F1 on the training clips (first on ties).
    candidates = [(b, p, c) for b in rec["inner_f1"] for p in opts["poolings"] for c in opts["classifiers"]]
    b, p, c = max(candidates, key=lambda t: np.nan_to_num(rec["inner_f1"][t[0]][t[1]][t[2]], nan=-1.0))
    rec["selected"] = {"bins": b, "pooling": p, "classifier": c, "inner_f1": rec["inner_f1"][b][p][c]}
    rec["models"] = {"convrbm": rec["tables"][b][p][c]}
    return rec, extras


def _time_estimate(X, n_kinds: int, opts) -> str:
    """:func:`._study.time_estimate` of training on the training clips' spectrograms ``X`` (the first bin count's;
    other bin counts and training kinds counted at its cost), with what to change on a CPU. Features and
    classifiers come on top."""
    seconds = min(s for s in (opts["seconds"], opts["train_seconds"]) if s not in (None, "all"))

    def fit_probe(rows, device):
        _make_model(opts, opts["training"], 0).set_params(n_iter=1, verbose=0, device=device).fit(
            training_maps(X[:rows], opts["train_seconds"]))

    return _study.time_estimate(
        "convrbm", fit_probe, len(X), opts, rows=f"clips ({seconds:g} s each)", models=len(opts["bins"]) * n_kinds,
        extra="; each fold's features and classifiers come on top",
        suggestion="--quick runs a small model in minutes; or cut --epochs, --train-seconds (e.g. 5) or --filters "
                   "(e.g. 16), or use fewer --folds; a GPU (--device cuda) trains the defaults in minutes. Ctrl-C "
                   "keeps finished folds (--resume continues).")


# ------------------------------------------------------------------------------------------------- run

def run(data=None, out_dir="conv_study_out", **options) -> dict:
    """Run the study on ``data`` (a dataset folder, a CSV manifest or an :class:`AudioDataset`); writes
    ``results.json``, ``report.md`` and plots into ``out_dir`` and returns the results dict. ``quick=True``
    applies the demo's smaller settings (:data:`QUICK`); any option of :data:`DEFAULTS` may be given."""
    opts = _check_options(_study.merge_options("conv_study", DEFAULTS, QUICK, options))
    with _study.thread_scope(opts["num_threads"]):
        return _run(data, out_dir, opts)


def _stack(mels: list) -> np.ndarray:
    """Spectrograms as one float32 array (n, bins, frames), or an object array of them when their lengths differ
    (whole clips)."""
    if len({m.shape for m in mels}) == 1:
        return np.stack(mels).astype(np.float32)
    out = np.empty(len(mels), object)
    out[:] = [np.asarray(m, np.float32) for m in mels]
    return out


def _run(data, out_dir, opts) -> dict:
    t_start = time.perf_counter()
    out = reporting.prepare_out_dir(out_dir)
    ds = _study.load_dataset(data, "conv_study")
    classes, labels = list(ds.classes), np.asarray(ds.labels)
    kinds = {f"mel{b}": ("mel", {"n_mels": b, "seconds": _study.mel_seconds(opts["seconds"])}) for b in opts["bins"]}
    feats, usable, skipped, feature_seconds = _study.extract_features(ds, kinds, opts, out)
    splits, protocol = _study.make_splits(ds, usable, opts)
    # Rows of X are the usable clips; clip ids in the records stay dataset indices (as in the baseline's).
    X = {b: _stack([feats[f"mel{b}"][i] for i in usable]) for b in opts["bins"]}
    y_rows = np.full(len(ds), -1)
    y_rows[usable] = labels[usable]
    row = np.full(len(ds), -1)
    row[usable] = np.arange(len(usable))
    training_kinds = [opts["training"]] + ([{"cd": "reconstruction", "reconstruction": "cd"}[opts["training"]]]
                                           if opts["compare_training"] else [])

    def fold(k, train, test, valid, fold_dir):
        rec, extras = _fold(k, row[train], row[test], X, labels[usable], training_kinds, fold_dir, opts)
        for table in [rec["tables"]] + ([rec["comparison_tables"]] if "comparison_tables" in rec else []):
            for by_pool in table.values():
                for by_clf in by_pool.values():
                    for r in by_clf.values():
                        r["clip_ids"] = usable[r["clip_ids"]]
        rec["baselines"] = {_study.BASELINE: _study.mfcc_baseline(feats["mfcc"], labels, train, test, len(classes),
                                                                  opts)}
        return rec, extras

    folds, extras = _study.run_folds(splits, out, fold, opts["resume"], opts["verbose"])
    boot, seed = protocol["kind"] == "official_split", int(opts["seed"])
    base = [f["baselines"][_study.BASELINE] for f in folds]

    def tables(key):
        return {b: {p: {c: _study.entry([f[key][b][p][c] for f in folds], base, classes, boot, seed)
                        for c in opts["classifiers"]} for p in opts["poolings"]} for b in folds[0][key]}

    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
    config["filter_shapes"] = [list(s) for s in opts["filter_shapes"]]
    results = _study.build_results(
        "conv_study", ds, usable, skipped, {**config}, protocol, folds, ["convrbm"], [_study.BASELINE], "convrbm",
        tables=tables("tables"),
        selection=[{**f["selected"], "fold": f["fold"]} for f in folds],
        feature_sizes=folds[0]["feature_sizes"],
        histories={name: [f["histories"][name] for f in folds] for name in folds[0]["histories"]},
        timing={"features_seconds": feature_seconds, "fold_seconds": [f["seconds"] for f in folds]})
    if opts["compare_training"]:
        results["comparison"] = {"training": training_kinds[1], "tables": tables("comparison_tables")}
    for bins in opts["bins"]:
        plots.plot_conv_filters(extras["filters"][bins], out / f"filters_{bins}.png",
                                f"first-layer filters, {bins} mel bins (rows: frequency, cols: time)")
        for pooling, (F, yy) in extras["tsne"][bins].items():
            plots.plot_tsne(F, yy, classes, out / f"tsne_{bins}_{pooling}.png",
                            title=f"t-SNE, {bins} bins, {pooling} (test clips, fold 0)", seed=seed)
    plots.plot_loss_curves({name: h[0] for name, h in results["histories"].items()}, out / "loss_curves.png")
    plots.plot_confusion(results["models"]["convrbm"]["confusion"], classes, out / "confusion_convrbm.png",
                         "ConvRBM, inner-CV-chosen configuration (clips, all folds)")
    if opts["save_model"]:  # the configuration chosen on most folds, trained on every usable clip
        from collections import Counter

        from . import saved

        chosen = Counter((s["bins"], s["pooling"], s["classifier"]) for s in results["selection"])
        (b, p, c), _ = chosen.most_common(1)[0]
        saved.fit_conv(X[int(b)], usable, ds, int(b), p, c, opts).save(opts["save_model"])
    results["timing"]["total_seconds"] = time.perf_counter() - t_start
    (out / "report.md").write_text(_report(results, classes))
    reporting.write_json(out / "results.json", results)
    return results


# ------------------------------------------------------------------------------------------------- report

def f1_table(res_bins: dict, classes: list[str], classifier: str = "random_forest") -> str:
    """Markdown: rows classes, columns pooling strategies (mean F1 over folds), last rows overall macro F1 and
    clip accuracy (mean ± std)."""
    cells = {p: res_bins[p][classifier] for p in POOLINGS if p in res_bins}
    rows = [[c] + [cell["per_class_f1"][c]["mean"] for cell in cells.values()] for c in classes]
    rows.append(["**overall (macro F1)**"] + [reporting.pm(cell["f1_macro"]) for cell in cells.values()])
    rows.append(["accuracy"] + [reporting.pm(cell["clip_accuracy"]) for cell in cells.values()])
    return reporting.markdown_table(["class"] + list(cells), rows)


def _all_configs_table(tables: dict) -> str:
    rows = []
    for bins, by_pool in tables.items():
        for pooling, by_clf in by_pool.items():
            for clf, r in by_clf.items():
                rows.append([bins, pooling, clf, reporting.pm(r["f1_macro"]), reporting.pm(r["clip_accuracy"]),
                             reporting.signed(r["paired"]["f1_macro"]),
                             f"{r['paired']['mcnemar']['p_value']:.3g}"])
    return reporting.markdown_table(["bins", "pooling", "classifier", "macro F1", "clip accuracy",
                                     "Δ macro F1 vs MFCC+SVM", "McNemar p"], rows)


def _report(results: dict, classes: list[str]) -> str:
    c, d = results["config"], results["dataset"]
    lines = ["# ConvRBM genre study", "",
             f"{d['n_clips']} clips, {len(classes)} classes; "
             f"{'whole clips' if c['seconds'] == 'all' else 'first %s s' % c['seconds']} as mel spectrograms"
             f"{'' if c.get('train_seconds') is None else ' (training on the middle %s s)' % c['train_seconds']}; "
             f"{'ConvDBN' if len(c['n_filters']) > 1 else 'ConvRBM'} with filters {c['n_filters']} of "
             f"{[f'{h}x{w}' for h, w in c['filter_shapes']]}, probabilistic max-pooling {c['pools']}, "
             f"{c['epochs']} epochs of {c['training']} training; {results['protocol']['description']}.", "",
             "## The study's figure against the MFCC baseline", "",
             "`convrbm`: on each fold, the (bins, pooling, classifier) with the best macro F1 in an inner "
             f"{c['inner_folds']}-fold CV on that fold's training clips, scored on its test clips.", "",
             _study.models_table(results), "", _study.PROTOCOL_NOTE, "",
             reporting.markdown_table(["fold", "bins", "pooling", "classifier", "inner-CV macro F1"],
                                      [[s["fold"], s["bins"], s["pooling"], s["classifier"], s["inner_f1"]]
                                       for s in results["selection"]]), "",
             "## Every configuration (mean ± std over folds)", "",
             "For reference: picking the highest of these would pick it on test clips; the inner CV above does "
             "the picking.", "",
             "Per-class F1 of the Random Forest; columns: how the pooled feature maps are summarised; last rows: "
             "overall macro F1 and clip accuracy. (The 2024 re-implementation's best overall F1 was 0.52: global "
             "max pooling, 96 bins, Random Forest, real GTZAN, one split.)"]
    for bins, by_pool in results["tables"].items():
        if "random_forest" in next(iter(by_pool.values())):
            lines += ["", f"### {bins} mel bins ({c['training']})", "", f1_table(by_pool, classes)]
    lines += ["", "### All configurations", "", _all_configs_table(results["tables"])]
    if "comparison" in results:
        other = results["comparison"]["training"]
        lines += ["", f"## Comparison: {other} training (same folds)", "",
                  _all_configs_table(results["comparison"]["tables"])]
    lines += ["", "## Figures", "", "![confusion](confusion_convrbm.png) ![loss curves](loss_curves.png)", ""]
    lines += [f"![filters {b}](filters_{b}.png)" for b in c["bins"]]
    return "\n".join(lines) + "\n"
