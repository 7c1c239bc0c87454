"""The Hamel & Eck (ISMIR 2010) genre pipeline.

|DFT| of 1024-sample frames (log-compressed) -> PCA whitening fitted on the training clips -> DBN (3 x 50 by
default, Gaussian first layer) pre-trained greedily by CD, then fine-tuned on the frames' genre labels with a
softmax layer -> activations of every layer, aggregated over 5 s windows (mean and variance) -> RBF SVM (C and
gamma grid-searched on the training folds, grouped by clip) -> clip label by vote over its windows
(``models.dbn_svm``, the headline). Beside it, on the same folds: the same windows of the pre-trained-only DBN
(``dbn_pretrained_svm``), the fine-tuned network's own softmax (``dbn_finetuned``: frame, window and clip
accuracy, as the 2024 re-implementation), and MFCC + SVM (``baselines.mfcc_svm``).

Protocol, options shared with the other studies, the results schema and resume: :mod:`._study`. Every fold writes
its results (and model checkpoints) under ``out_dir/folds/``; an interrupted run resumed with ``resume=True`` skips
finished folds and continues interrupted DBN training from its checkpoint.
"""
from __future__ import annotations

import functools
import time
import warnings
from pathlib import Path

import numpy as np

from .. import audio, plots, reporting
from .._utils import release_memory
from . import _study, classifiers
from .classifiers import window_index, windows  # noqa: F401  (public here before classifiers.py existed)

DEFAULTS = dict(
    _study.COMMON, frame_length=1024, hop_length=None, log="log", pca_components=80,
    hidden=(50, 50, 50), pretrain_epochs=5, first_layer_lr=0.01, learning_rate=0.05, sparsity_target=None,
    weight_decay=2e-4, pretrain_frames=200_000, finetune=True, finetune_epochs=50, finetune_lr=3e-3,
    window_seconds=5.0, window_overlap=0.5, input_svm=True,
    # One torch thread: every op of these 50-unit layers is tiny, and a second thread only adds a wake-up at each
    # op (fine-tuning measured 10x faster with one thread on a busy 2-core machine: 0.17 s against 1-3.5 s an epoch
    # of 47k frames). --threads N overrides; the SVM grid searches use --jobs threads of their own.
    num_threads=1,
)

# The demo's settings: the same pipeline, smaller (finishes in about a minute on 2 CPU cores).
QUICK = dict(folds=3, pretrain_epochs=5, pretrain_frames=30_000, finetune_epochs=50, finetune_lr=0.01)


def add_front_end_arguments(g) -> None:
    """The flags of the DBN front end (shared with the tagging study) in the argument group ``g``."""
    g.add_argument("--hidden", type=int, nargs="+", default=None, help="DBN layer sizes (50 50 50)")
    g.add_argument("--pca-components", type=int, default=None, help=f"default {DEFAULTS['pca_components']}")
    g.add_argument("--pretrain-epochs", type=int, default=None, help="CD epochs a layer")
    g.add_argument("--pretrain-frames", type=int, default=None,
                   help="at most this many training frames (a random subset) for pre-training")
    g.add_argument("--window-seconds", type=float, default=None, help="default 5")


def add_arguments(parser) -> None:
    _study.add_common_arguments(parser)
    g = parser.add_argument_group("Hamel & Eck DBN pipeline")
    add_front_end_arguments(g)
    g.add_argument("--finetune-epochs", type=int, default=None)
    g.add_argument("--no-finetune", dest="finetune", action="store_false", default=None,
                   help="skip the fine-tuned DBNClassifier")


# ------------------------------------------------------------------------------------------------- folds
class FrameFile:
    """Per-clip frame matrices (None for a clip that failed) kept in one float32 file and read back clip by clip.

    Every fold reads every clip's raw frames again (whitening and the DBN are fitted per fold), and at GTZAN scale
    those are 1.3 GB (1000 clips x 646 frames x 513 bins): read from the file (the page cache, not this process's
    resident memory, holds them) they cost one clip at a time. Reading gives back the same float32 values."""

    def __init__(self, path, per_clip):
        self.path = Path(path)
        self.lengths = np.array([0 if x is None else len(x) for x in per_clip], np.int64)
        widths = {x.shape[1] for x in per_clip if x is not None}
        self.width = widths.pop() if widths else 0
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]) * self.width * 4
        self._none = {i for i, x in enumerate(per_clip) if x is None}
        with open(self.path, "wb") as f:
            for x in per_clip:
                if x is not None:
                    f.write(np.ascontiguousarray(x, np.float32).tobytes())

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i):
        if i in self._none:
            return None
        n = int(self.lengths[i])
        return np.fromfile(self.path, np.float32, n * self.width, offset=int(self.offsets[i])).reshape(n, self.width)


def _lengths(per_clip, idx) -> np.ndarray:
    lengths = getattr(per_clip, "lengths", None)
    return lengths[np.asarray(idx)] if lengths is not None else np.array([len(per_clip[i]) for i in idx], np.int64)


def frame_rows(per_clip, idx, rows=None) -> np.ndarray:
    """Rows ``rows`` (indices into the concatenation of the frames of the clips ``idx``, in that order; None: all
    of them) as one float32 matrix, gathered clip by clip: a random subset of the training frames costs its own
    size, not a copy of every training frame first (1 GB at GTZAN scale)."""
    if rows is None:
        return np.concatenate([per_clip[i] for i in idx], dtype=np.float32)
    rows = np.asarray(rows)
    starts = np.concatenate([[0], np.cumsum(_lengths(per_clip, idx))])
    clip = np.searchsorted(starts, rows, side="right") - 1
    order = np.argsort(clip, kind="stable")
    bounds = np.searchsorted(clip[order], np.arange(len(idx) + 1))
    out = None
    for j, i in enumerate(idx):
        sel = order[bounds[j]:bounds[j + 1]]
        if len(sel):
            frames = per_clip[i]
            if out is None:
                out = np.empty((len(rows), frames.shape[1]), np.float32)
            out[sel] = frames[rows[sel] - starts[j]]
    return out


class _PerClip:
    """``per_clip[i]`` computed on demand: the windows of one clip's activations are all the classifiers keep, so
    the activations of every clip (2 x 400 MB at GTZAN scale) are never held at once."""

    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, i):
        return self.fn(i)


def run_fold(k, train, test, feats, labels, classes, fold_dir: Path, opts) -> tuple[dict, dict]:
    """One fold: (the fold record with ``models`` and ``baselines``, extras for fold 0's figures)."""
    dft = feats["dft"]
    size, hop = _study.window_frames(opts["window_seconds"], opts["hop"], opts["window_overlap"])
    res = {"fold": k, "n_train_clips": len(train), "n_test_clips": len(test), "models": {}, "baselines": {}}
    models, extras = res["models"], {}
    ckpt = fold_dir / "dbn_classifier.safetensors"
    whitener, clf = fit_front_end(dft, train, opts, opts["seed"] + k, labels=labels, checkpoint=ckpt)
    res["dbn_history"] = clf.dbn_.history_

    # Whitened frames of every clip once (80 columns: 0.2 GB at GTZAN scale); the activations clip by clip, straight
    # into their windows.
    white = {i: whitener.transform(dft[i]) for i in np.concatenate([train, test])}
    layers = {"dbn_pretrained_svm": lambda X: clf.dbn_.transform(X, layers="all")}
    if opts["input_svm"]:  # the DBN's own input, summarised and classified the same way: what do its layers add?
        layers["input_svm"] = lambda X: X
    if opts["finetune"]:
        layers["dbn_svm"] = functools.partial(finetuned_activations, clf)
    else:
        layers["dbn_svm"] = layers.pop("dbn_pretrained_svm")
    for name, fn in layers.items():
        act = _PerClip(lambda i, f=fn: f(white[i]))
        tr = classifiers.window_set(act, train, size, hop, labels)
        te = classifiers.window_set(act, test, size, hop, labels)
        models[name] = classifiers.classify_windows("svm", tr, te, len(classes), opts["svm_grid"], opts["seed"],
                                                    opts["n_jobs"])
        if name == "dbn_svm":
            extras["tsne"] = te[:2]
    extras["first_layer"] = _first_layer_in_dft_space(clf.dbn_, whitener)

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
        models["dbn_finetuned"] = {"frame_accuracy": float((frame_true == frame_pred).mean()),
                                   "window_true": w_true, "window_pred": w_pred, "clip_ids": np.asarray(test),
                                   "clip_true": labels[test], "clip_pred": clip_pred}
        res["finetune_history"] = clf.history_
    del white
    res["baselines"][_study.BASELINE] = _study.mfcc_baseline(feats["mfcc"], labels, train, test, len(classes), opts)
    return res, extras


def fit_front_end(dft, train, opts, seed: int, labels=None, checkpoint=None):
    """Whitening and the DBN of the pipeline, fitted on (a random subset of ``pretrain_frames``) frames of the
    clips ``train`` of ``dft`` (per-clip |DFT| frame arrays). With ``labels`` (one class a clip): a
    :class:`DBNClassifier` pre-trained and, with ``opts["finetune"]``, fine-tuned on the frames' labels; without
    (multi-label data, the tagging study): the pre-trained :class:`DBN` only. ``checkpoint``: its checkpoint file
    (resumed from with ``opts["resume"]``). Returns (whitener, model)."""
    from ..dbn import DBN, DBNClassifier

    rng = np.random.default_rng(seed)
    lengths = _lengths(dft, train)
    n_frames = int(lengths.sum())
    subset = rng.choice(n_frames, opts["pretrain_frames"], replace=False) if n_frames > opts["pretrain_frames"] \
        else None
    train_frames = frame_rows(dft, train, subset)
    whitener = audio.PCAWhitener(n_components=min(opts["pca_components"], train_frames.shape[1]),
                                 random_state=opts["seed"]).fit(train_frames)
    del train_frames
    hidden = tuple(opts["hidden"])
    # Gaussian first layer on whitened (unit-variance) input wants a smaller step than the Bernoulli layers.
    layer_params = [{"learning_rate": opts["first_layer_lr"]}] + [{}] * (len(hidden) - 1)
    pretrain = dict(hidden_layer_sizes=hidden, visible="gaussian", n_iter=opts["pretrain_epochs"],
                    learning_rate=opts["learning_rate"], weight_decay=opts["weight_decay"],
                    sparsity_target=opts["sparsity_target"], layer_params=layer_params, random_state=seed,
                    device=opts["device"], verbose=opts["verbose"])
    resume = checkpoint if (opts["resume"] and checkpoint is not None and Path(checkpoint).exists()) else None
    keep = np.sort(rng.choice(n_frames, min(n_frames, opts["pretrain_frames"]), replace=False))
    X = whitener.transform(frame_rows(dft, train, keep))
    if labels is None:
        return whitener, DBN(**pretrain, batch_size=128).fit(X, resume=resume, checkpoint=checkpoint)
    # One DBNClassifier: its pre-trained stack (dbn_) gives the unsupervised features, its fine-tuned network the
    # supervised ones and the frame-level softmax predictions. Without fine-tuning: max_iter=0.
    model = DBNClassifier(**pretrain, pretrain_batch_size=128, batch_size=512,
                          max_iter=opts["finetune_epochs"] if opts["finetune"] else 0,
                          learning_rate_init=opts["finetune_lr"], early_stopping=True, validation_fraction=0.1,
                          n_iter_no_change=10)
    model.fit(X, np.repeat(labels[train], lengths)[keep], resume=resume, checkpoint=checkpoint)
    return whitener, model


def activations(model, whitener, frames, finetuned: bool) -> np.ndarray:
    """The pipeline's frame features of one clip: whitened |DFT| frames -> hidden activations of every layer of
    ``model`` (a DBN, or a DBNClassifier's pre-trained stack, or with ``finetuned`` its fine-tuned network)."""
    white = whitener.transform(np.asarray(frames, dtype=np.float32))
    if finetuned:
        return finetuned_activations(model, white)
    return getattr(model, "dbn_", model).transform(white, layers="all")


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


# ----------------------------------------------------------------------------------------------- run
MODEL_LABELS = {"dbn_svm": "fine-tuned DBN (all layers, 5 s windows) + RBF SVM",
                "dbn_pretrained_svm": "pre-trained DBN (all layers, 5 s windows) + RBF SVM",
                "dbn_finetuned": "fine-tuned DBN (softmax)",
                "input_svm": "the DBN's input: PCA-whitened log DFT magnitudes (5 s windows) + RBF SVM",
                "mfcc_svm": "MFCC (5 s windows) + RBF SVM"}


def run(data=None, out_dir="hamel_eck_out", **options) -> dict:
    """Run the pipeline on ``data`` (a folder / CSV manifest path, or an :class:`AudioDataset`) and write
    ``results.json``, ``report.md`` and plots into ``out_dir``. Returns the results dict."""
    opts = _study.merge_options("hamel_eck", DEFAULTS, QUICK, options)
    with _study.thread_scope(opts["num_threads"]):
        return _run(data, out_dir, opts)


def _run(data, out_dir, opts) -> dict:
    t0 = time.perf_counter()
    out = reporting.prepare_out_dir(out_dir)
    ds = _study.load_dataset(data, "hamel_eck")
    classes, labels = list(ds.classes), np.asarray(ds.labels)
    dft_params = {"frame_length": opts["frame_length"], "hop_length": opts["hop_length"], "log": opts["log"]}
    feats, usable, skipped, feature_seconds = _study.extract_features(ds, {"dft": ("dft", dft_params)}, opts, out)
    feats["dft"] = FrameFile(out / "frames_dft.f32", feats["dft"])  # the in-memory list goes
    release_memory()  # and its pages go back to the system (glibc keeps freed heap pages otherwise)
    opts["hop"] = audio.feature_params("dft", dft_params)["hop_length"]
    splits, protocol = _study.make_splits(ds, usable, opts)

    def fold(k, train, test, valid, fold_dir):
        try:
            return run_fold(k, train, test, feats, labels, classes, fold_dir, opts)
        finally:
            release_memory()  # a fold's frame matrices and activations, before the next fold's

    try:
        folds, extras = _study.run_folds(splits, out, fold, opts["resume"], opts["verbose"])
        if opts["save_model"]:  # the final pipeline, trained on every usable clip (before the frames go)
            from . import saved

            saved.fit_hamel_eck(feats, usable, ds, opts).save(opts["save_model"])
    finally:
        feats["dft"].path.unlink(missing_ok=True)
    names = [n for n in ("dbn_svm", "dbn_pretrained_svm", "dbn_finetuned", "input_svm") if n in folds[0]["models"]]
    results = _study.build_results("hamel_eck", ds, usable, skipped, opts, protocol, folds, names,
                                   [_study.BASELINE], "dbn_svm", feature_seconds=feature_seconds,
                                   fold_seconds=[f["seconds"] for f in folds])
    results["total_seconds"] = time.perf_counter() - t0
    _write_report(out, results, folds, extras, classes)
    reporting.write_json(out / "results.json", results)
    return results


def _write_report(out: Path, results: dict, folds, extras, classes) -> None:
    head = results["models"]["dbn_svm"]
    plots.plot_confusion(head["confusion"], classes, out / "confusion_dbn_svm.png",
                         "DBN features + SVM (clips, all folds)")
    figures = ["confusion_dbn_svm.png"]
    try:
        for i, h in enumerate(folds[0]["dbn_history"]):
            plots.plot_learning_curves(h, out / f"learning_curve_layer{i + 1}.png")
            figures.append(f"learning_curve_layer{i + 1}.png")
    except Exception as err:  # a plot must never cost the results
        warnings.warn(f"learning-curve plot failed: {err}")
    plots.plot_spectral_weights(extras["first_layer"], audio.SR / 2, out / "first_layer_weights.png",
                                "First-layer DBN weights in DFT space")
    plots.plot_tsne(*extras["tsne"], classes, out / "tsne_dbn_windows.png",
                    "t-SNE of DBN window features (test clips, fold 0)")
    figures += ["first_layer_weights.png", "tsne_dbn_windows.png"]

    rows = []
    for name, r in list(results["models"].items()) + list(results["baselines"].items()):
        rows.append([MODEL_LABELS.get(name, name)] + [reporting.pm(r[m]) if m in r else "-" for m in
                                                      ("window_accuracy", "frame_accuracy")])
    entries = {n: m for n, m in list(results["models"].items()) + list(results["baselines"].items())
               if n != "dbn_pretrained_svm"}
    per_class = [[c] + [reporting.pm(m["per_class_f1"][c]) for m in entries.values()] for c in classes]
    ds = results["dataset"]
    md = [
        "# Hamel & Eck DBN genre pipeline",
        "",
        f"Data: `{ds['root']}`, {ds['n_clips']} clips, {len(classes)} classes; {results['protocol']['description']}; "
        f"features {results['feature_seconds']:.1f} s, total {results['total_seconds']:.1f} s.",
        "" if not ds["skipped"] else f"Skipped clips: {', '.join(s[0] for s in ds['skipped'])}",
        "",
        "## Clip accuracy and macro F1 against the MFCC baseline",
        "",
        _study.models_table(results, MODEL_LABELS),
        "",
        _study.PROTOCOL_NOTE,
        "",
        "## Window and frame accuracy (mean ± std over folds)",
        "",
        reporting.markdown_table(["model", "window", "frame"], rows),
        "",
        "Published on real GTZAN: Hamel & Eck 2010, 84.3% clip accuracy (DBN features + SVM); the 2024 student "
        "re-implementation, 59% (fine-tuned DBN).",
        "",
        "## Per-class F1 (clips, mean ± std over folds)",
        "",
        reporting.markdown_table(["class"] + list(entries), per_class),
        "",
        "## Figures",
        "",
    ] + [f"![{f}]({f})" for f in figures]
    (out / "report.md").write_text("\n".join(md) + "\n")
