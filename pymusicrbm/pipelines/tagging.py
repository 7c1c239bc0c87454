"""The autotagging study: Hamel & Eck's DBN features on a multi-label dataset (MagnaTagATune, MTG-Jamendo, ...).

Features as in the genre pipeline (:mod:`.hamel_eck`, imported, not repeated): |DFT| frames -> PCA whitening ->
DBN pre-trained greedily by CD on the training clips -> activations of every layer, mean and variance over 5 s
windows. Tags are multi-label, and the DBNClassifier's fine-tuning fits one softmax label per frame, so the study
uses the pre-trained (unsupervised) DBN. Every window gets one logistic regression per tag (one-vs-rest,
:class:`~.classifiers.TagClassifier`), and a clip's tag scores are the mean of its windows' probabilities
(``models.dbn_logreg``, the headline). Beside it, on the same split, MFCCs (mean and variance over 5 s windows)
with the same classifier (``baselines.mfcc_logreg``).

Metrics, on each fold's test clips (as the tagging literature reports them, e.g. Won et al. 2020): macro ROC-AUC
and macro PR-AUC (average precision) over tags (``sklearn.metrics.roc_auc_score`` / ``average_precision_score``,
one tag at a time); a tag without positives or without negatives among the test clips has no defined score and is
left out of that fold's means and listed under ``skipped_tags``. Precision at k: the share of true tags among each
clip's k highest-scored tags, mean over clips. Per-tag ROC-AUC and PR-AUC, and the best and worst tags.

Protocol: the dataset's shipped split when it has one (``TaggedDataset.splits``: ``train`` (+ ``valid``) and
``test``, e.g. MagnaTagATune's of Won et al. 2020; or ``split_files`` / ``split_name``), one fold with 95% bootstrap intervals over test clips; else ``folds`` folds by clip,
stratified for multi-label data by iterative stratification (Sechidis et al. 2011, :func:`multilabel_folds`;
scikit-learn has none): tags are placed rarest first, each clip into the fold that still lacks most of that tag.

The results schema is the one of :mod:`._study`, with tagging metrics in place of accuracy::

    {"study": "tagging", "headline": "dbn_logreg", "protocol", "dataset": {"root", "n_clips", "tags",
     "tag_counts", "skipped"}, "config",
     "models": {name: {"roc_auc_macro": {"mean", "std", "folds"[, "ci95"]}, "pr_auc_macro": {...},
                       "precision_at_1": {...}, ..., "per_tag_roc_auc": {tag: {"mean", "std", "folds"}},
                       "per_tag_pr_auc": {...}, "skipped_tags": [[tag, ...] per fold],
                       "paired": {"baseline", "roc_auc_macro": {...}, "pr_auc_macro": {...}}}},
     "baselines": {"mfcc_logreg": {...}}, "best_tags", "worst_tags"}

Data: a :class:`~pymusicrbm.datasets.TaggedDataset`, or a path read by the first of :data:`LOADERS` that
recognises it (a tag manifest ``path<TAB>tag1,tag2``, a folder holding ``tags.tsv``, else what
:func:`pymusicrbm.datasets.load_dataset` detects: a MagnaTagATune or FMA folder, or a genre dataset whose classes
become one tag a clip).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from .. import audio, datasets, plots, reporting
from . import _study, classifiers, hamel_eck

_FRONT_END = {k: v for k, v in hamel_eck.DEFAULTS.items() if not k.startswith("finetune") and k != "input_svm"}
DEFAULTS = dict(_FRONT_END, top_tags=50, C=1.0, precision_at=(1, 3, 5))
QUICK = {k: v for k, v in hamel_eck.QUICK.items() if not k.startswith("finetune")}
HEADLINE, BASELINE = "dbn_logreg", "mfcc_logreg"
METRICS = ("roc_auc_macro", "pr_auc_macro")
MODEL_LABELS = {HEADLINE: "pre-trained DBN (all layers, 5 s windows) + logistic regression per tag",
                BASELINE: "MFCC (5 s windows) + logistic regression per tag"}


def add_arguments(parser) -> None:
    _study.add_common_arguments(parser)
    g = parser.add_argument_group("autotagging (DBN features of the Hamel & Eck pipeline)")
    hamel_eck.add_front_end_arguments(g)
    g.add_argument("--top-tags", type=int, default=None, help="keep the most frequent tags (50)")
    g.add_argument("--C", type=float, dest="C", default=None, help="inverse L2 strength of the logistic regressions")


# ------------------------------------------------------------------------------------------------- data
def _load_manifest(path: Path):
    if path.is_file() or (path / datasets.tag_manifest.TAG_MANIFEST).is_file():
        return datasets.load_tag_manifest(path)
    return None


def _load_dataset(path: Path):
    if not path.is_dir():
        return None
    try:  # what load_dataset detects: MagnaTagATune, FMA; GTZAN or class folders (the class is the clip's tag)
        return load_tagged(datasets.load_dataset(path))
    except ValueError as err:
        raise ValueError(f"tagging.run: {str(path)!r} holds no {datasets.tag_manifest.TAG_MANIFEST} (lines "
                         f"'path<TAB>tag1,tag2'), and load_dataset cannot read it: {err}") from None


# Tried in order on a path: each returns a TaggedDataset, or None when the path is not its layout. (MTG-Jamendo,
# which needs a subset and split number, is loaded from Python: tagging.run(datasets.load_mtg_jamendo(...)).)
LOADERS = [_load_manifest, _load_dataset]


def load_tagged(data):
    """A :class:`TaggedDataset` from ``data``: one, an :class:`AudioDataset` (its class as the clip's one tag),
    or a path one of :data:`LOADERS` recognises."""
    if data is None:
        raise ValueError("tagging.run: data is required (a TaggedDataset, a tag manifest or a folder holding "
                         f"{datasets.tag_manifest.TAG_MANIFEST})")
    if isinstance(data, datasets.TaggedDataset):
        return data
    if isinstance(data, datasets.AudioDataset):  # one class a clip: its one tag
        return datasets.TaggedDataset(data.paths, np.eye(len(data.classes), dtype=bool)[data.labels], data.classes,
                                      data.root, list(data.skipped), dict(data.splits))
    path = Path(data)
    if not path.exists():
        raise ValueError(f"tagging.run: data {str(path)!r} does not exist")
    for loader in LOADERS:
        ds = loader(path)
        if ds is not None:
            return ds
    raise ValueError(f"tagging.run: {str(path)!r} is no tagged dataset this version reads: expected a tag manifest "
                     f"(lines 'path<TAB>tag1,tag2') or a folder holding {datasets.tag_manifest.TAG_MANIFEST}")


def multilabel_folds(Y, n_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_folds`` (train, test) index pairs, every row in one test fold, by iterative stratification (Sechidis,
    Tsoumakas & Vlahavas 2011): the rarest remaining tag's rows go one by one to the fold that wants most of that
    tag (then most rows; then at random), so every tag is spread over the folds about evenly. Rows without tags
    fill the folds that want most rows."""
    Y = np.asarray(Y, bool)
    n = len(Y)
    if not (isinstance(n_folds, (int, np.integer)) and 2 <= n_folds <= n):
        raise ValueError(f"multilabel_folds: n_folds must be an integer in [2, n_rows={n}], got {n_folds!r}")
    rng = np.random.default_rng(seed)
    want_rows = np.full(n_folds, n / n_folds)
    want_tag = np.tile(Y.sum(0) / n_folds, (n_folds, 1)).astype(float)
    fold = np.full(n, -1)
    left = Y.copy()
    while left.any():
        counts = left.sum(0)
        tag = int(np.flatnonzero(counts == counts[counts > 0].min())[0])
        for i in rng.permutation(np.flatnonzero(left[:, tag])):
            best = np.flatnonzero(want_tag[:, tag] == want_tag[:, tag].max())
            best = best[want_rows[best] == want_rows[best].max()]
            f = int(rng.choice(best))
            fold[i] = f
            want_tag[f] -= Y[i]
            want_rows[f] -= 1
            left[i] = False
    for i in rng.permutation(np.flatnonzero(fold < 0)):
        best = np.flatnonzero(want_rows == want_rows.max())
        f = int(rng.choice(best))
        fold[i] = f
        want_rows[f] -= 1
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(n_folds)]


def make_splits(ds, usable: np.ndarray, opts: dict) -> tuple[list, dict]:
    """[(train, test, valid)] of usable clips: the split files, else the dataset's shipped split, else folds."""
    keep = set(usable.tolist())

    def usable_of(idx):
        return np.asarray([i for i in idx if i in keep], dtype=np.int64)

    if opts["split_files"] or opts.get("split_name") or {"train", "test"} <= set(ds.splits):
        if opts.get("split_name"):
            tr, va, te = datasets.named_split(ds, opts["split_name"])
            source = {"name": opts["split_name"]}
        elif opts["split_files"]:
            tr, te, va = datasets.read_split_lists(ds, *opts["split_files"])
            source = {"files": opts["split_files"]}
        else:
            tr, te, va = ds.splits["train"], ds.splits["test"], ds.splits.get("valid", np.zeros(0, np.int64))
            source = {"shipped": sorted(ds.splits)}
        tr, te, va = usable_of(tr), usable_of(te), usable_of(va)
        return [(np.concatenate([tr, va]), te, va)], {
            "kind": "official_split", "folds": 1, **source,
            "description": "the dataset's split (one fold); intervals: 95% bootstrap over test clips"}
    k = int(opts["folds"])
    folds = multilabel_folds(ds.targets[usable], k, opts["seed"])
    return [(usable[a], usable[b], np.zeros(0, np.int64)) for a, b in folds], {
        "kind": "multilabel_kfold", "folds": k, "seed": opts["seed"],
        "description": f"{k} folds by clip (iterative multi-label stratification); mean ± std over folds"}


# ------------------------------------------------------------------------------------------------- metrics
def tag_metrics(Y, S, tags, ks=(1, 3, 5)) -> dict:
    """Tagging metrics of clip tag scores ``S`` against the true tags ``Y`` (both (n_clips, n_tags)): per-tag
    ROC-AUC and PR-AUC (None for a tag without positives or without negatives here), their macro means over the
    tags that have one, precision at k, and the tags left out."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    Y, S = np.asarray(Y, bool), np.asarray(S, float)
    if Y.shape != S.shape or Y.ndim != 2 or Y.shape[1] != len(tags):
        raise ValueError(f"tag_metrics: Y and S must both be (n_clips, {len(tags)}), got {Y.shape} and {S.shape}")
    pos = Y.sum(0)
    defined = (pos > 0) & (pos < len(Y))
    roc = {t: float(roc_auc_score(Y[:, j], S[:, j])) if defined[j] else None for j, t in enumerate(tags)}
    pr = {t: float(average_precision_score(Y[:, j], S[:, j])) if defined[j] else None for j, t in enumerate(tags)}
    out = {"roc_auc_macro": float(np.mean([v for v in roc.values() if v is not None])) if defined.any() else None,
           "pr_auc_macro": float(np.mean([v for v in pr.values() if v is not None])) if defined.any() else None}
    top = np.argsort(-S, axis=1, kind="stable")
    for k in ks:
        k_ = min(int(k), len(tags))
        out[f"precision_at_{k}"] = float(np.take_along_axis(Y, top[:, :k_], 1).mean())
    out["per_tag_roc_auc"], out["per_tag_pr_auc"] = roc, pr
    out["skipped_tags"] = [t for j, t in enumerate(tags) if not defined[j]]
    return out


def _summary(values) -> dict:
    """``{"mean", "std", "folds"}`` over the folds where the value is defined (None elsewhere)."""
    v = [x for x in values if x is not None]
    s = reporting.summarize(v) if v else {"mean": None, "std": None}
    return {**s, "folds": list(values)}


def summarize_model(records, tags, ks, bootstrap=False, seed=0) -> dict:
    """One model's entry from its fold records (``clip_ids``, ``clip_true``, ``clip_scores``)."""
    scores = [tag_metrics(r["clip_true"], r["clip_scores"], tags, ks) for r in records]
    out = {m: _summary([s[m] for s in scores]) for m in scores[0] if not m.startswith(("per_tag", "skipped"))}
    for m in ("per_tag_roc_auc", "per_tag_pr_auc"):
        out[m] = {t: _summary([s[m][t] for s in scores]) for t in tags}
    out["skipped_tags"] = [s["skipped_tags"] for s in scores]
    if bootstrap:
        Y, S = np.asarray(records[0]["clip_true"], bool), np.asarray(records[0]["clip_scores"], float)
        for m in METRICS:
            out[m]["ci95"] = _bootstrap(lambda i: _macro(m, Y[i], S[i]), len(Y), seed)
    return out


def _macro(metric: str, Y, S) -> float:
    from sklearn.metrics import average_precision_score, roc_auc_score

    f = roc_auc_score if metric == "roc_auc_macro" else average_precision_score
    pos = Y.sum(0)
    return float(np.mean([f(Y[:, j], S[:, j]) for j in np.flatnonzero((pos > 0) & (pos < len(Y)))]))


def _bootstrap(statistic, n: int, seed: int) -> list[float]:
    # 200 resamples (not 1000): each one is a ROC or PR curve per tag
    return reporting.bootstrap_ci(statistic, n, n_boot=200, seed=seed)


def paired(records, base_records, bootstrap=False, seed=0) -> dict:
    """Per-fold differences model - baseline of the macro metrics (same folds, same clips)."""
    out = {"baseline": BASELINE}
    for m in METRICS:
        diffs = []
        for r, b in zip(records, base_records):
            a = _macro(m, np.asarray(r["clip_true"], bool), np.asarray(r["clip_scores"]))
            order = {c: j for j, c in enumerate(b["clip_ids"])}
            bs = np.asarray(b["clip_scores"])[[order[c] for c in r["clip_ids"]]]
            diffs.append(a - _macro(m, np.asarray(r["clip_true"], bool), bs))
        out[m] = reporting.summarize(diffs)
        if bootstrap:
            Y, S = np.asarray(records[0]["clip_true"], bool), np.asarray(records[0]["clip_scores"])
            order = {c: j for j, c in enumerate(base_records[0]["clip_ids"])}
            B = np.asarray(base_records[0]["clip_scores"])[[order[c] for c in records[0]["clip_ids"]]]
            out[m]["ci95"] = _bootstrap(lambda i: _macro(m, Y[i], S[i]) - _macro(m, Y[i], B[i]), len(Y), seed)
    return out


# ------------------------------------------------------------------------------------------------- folds
def tag_windows(per_clip, train, test, Y, size: int, hop: int, opts) -> tuple[dict, classifiers.TagClassifier]:
    """Fit one logistic regression per tag on the training clips' windows, score the test clips (mean window
    probability). Returns (the fold record, the fitted classifier)."""
    Xtr, Ytr, _ = classifiers.window_set(per_clip, train, size, hop, Y)
    model = classifiers.TagClassifier(C=opts["C"], n_jobs=opts["n_jobs"]).fit(Xtr, Ytr)
    return {"clip_ids": np.asarray(test), "clip_true": Y[test],
            "clip_scores": clip_scores(model, [per_clip[i] for i in test], size, hop)}, model


def clip_scores(model, clips, size: int, hop: int) -> np.ndarray:
    """(n_clips, n_tags) tag probabilities of each clip: the mean over its windows (frames -> windows -> model)."""
    return np.stack([model.predict_proba(classifiers.windows(c, size, hop)).mean(0) for c in clips])


def run_fold(k, train, test, feats, Y, fold_dir: Path, opts) -> tuple[dict, dict]:
    dft = feats["dft"]
    size, hop = _study.window_frames(opts["window_seconds"], opts["hop"], opts["window_overlap"])
    whitener, dbn = hamel_eck.fit_front_end(dft, train, opts, opts["seed"] + k,
                                            checkpoint=fold_dir / "dbn.safetensors")
    act = {i: hamel_eck.activations(dbn, whitener, dft[i], finetuned=False) for i in np.r_[train, test]}
    rec = {"fold": k, "n_train_clips": len(train), "n_test_clips": len(test), "dbn_history": dbn.history_,
           "models": {HEADLINE: tag_windows(act, train, test, Y, size, hop, opts)[0]}}
    msize, mhop = _study.window_frames(opts["mfcc_window_seconds"], 512)
    rec["baselines"] = {BASELINE: tag_windows(feats["mfcc"], train, test, Y, msize, mhop, opts)[0]}
    return rec, {}


# ----------------------------------------------------------------------------------------------- run
def run(data=None, out_dir="tags_out", **options) -> dict:
    """Run the tagging study on ``data`` (a TaggedDataset, a tag manifest, a folder holding ``tags.tsv``) and
    write ``results.json``, ``report.md`` and figures into ``out_dir``. Returns the results dict."""
    opts = _study.merge_options("tagging", DEFAULTS, QUICK, options)
    if not (isinstance(opts["top_tags"], (int, np.integer)) and opts["top_tags"] >= 1):
        raise ValueError(f"top_tags must be an integer >= 1, got {opts['top_tags']!r}")
    opts["precision_at"] = [int(k) for k in np.atleast_1d(opts["precision_at"])]
    with _study.thread_scope(opts["num_threads"]):
        return _run(data, out_dir, opts)


def _run(data, out_dir, opts) -> dict:
    t0 = time.perf_counter()
    out = reporting.prepare_out_dir(out_dir)
    ds = load_tagged(data)
    if len(ds.tags) > opts["top_tags"]:
        ds = ds.top_tags(opts["top_tags"])
    tags, Y = list(ds.tags), ds.targets
    dft_params = {"frame_length": opts["frame_length"], "hop_length": opts["hop_length"], "log": opts["log"]}
    feats, usable, skipped, feature_seconds = _study.extract_features(ds, {"dft": ("dft", dft_params)}, opts, out)
    opts["hop"] = audio.feature_params("dft", dft_params)["hop_length"]
    splits, protocol = make_splits(ds, usable, opts)

    def fold(k, train, test, valid, fold_dir):
        return run_fold(k, train, test, feats, Y, fold_dir, opts)

    folds, _ = _study.run_folds(splits, out, fold, opts["resume"], opts["verbose"])
    boot, seed, ks = protocol["kind"] == "official_split", int(opts["seed"]), opts["precision_at"]
    base = [f["baselines"][BASELINE] for f in folds]
    head = [f["models"][HEADLINE] for f in folds]
    models = {HEADLINE: {**summarize_model(head, tags, ks, boot, seed), "paired": paired(head, base, boot, seed)}}
    per_tag = models[HEADLINE]["per_tag_roc_auc"]
    ranked = sorted((t for t in tags if per_tag[t]["mean"] is not None), key=lambda t: -per_tag[t]["mean"])
    n_show = min(5, len(ranked) // 2)
    results = {
        "study": "tagging", "headline": HEADLINE, "protocol": protocol,
        "dataset": {"root": str(ds.root), "n_clips": int(len(usable)), "tags": tags,
                    "tag_counts": dict(zip(tags, Y[usable].sum(0).tolist())), "skipped": skipped},
        "config": {k: v for k, v in opts.items() if k != "verbose"},
        "models": models, "baselines": {BASELINE: summarize_model(base, tags, ks, boot, seed)},
        "best_tags": ranked[:n_show], "worst_tags": ranked[::-1][:n_show],
        "feature_seconds": feature_seconds, "fold_seconds": [f["seconds"] for f in folds],
    }
    if opts["save_model"]:
        from . import saved

        t1 = time.perf_counter()
        saved.fit_tagging(feats, usable, ds, opts).save(opts["save_model"])
        results["save_model_seconds"] = time.perf_counter() - t1
    results["total_seconds"] = time.perf_counter() - t0
    _write_report(out, results, folds)
    reporting.write_json(out / "results.json", results)
    return results


# ----------------------------------------------------------------------------------------------- report
def headline_line(results: dict) -> str:
    """One line: the headline's macro ROC-AUC and PR-AUC and their differences to the MFCC baseline."""
    h = results["models"][results["headline"]]
    p = h["paired"]
    return (f"{results['headline']}: macro ROC-AUC {reporting.pm(h['roc_auc_macro'])}, macro PR-AUC "
            f"{reporting.pm(h['pr_auc_macro'])}; vs MFCC {reporting.signed(p['roc_auc_macro'])} ROC-AUC, "
            f"{reporting.signed(p['pr_auc_macro'])} PR-AUC ({results['protocol']['description']})")


def _pm(d: dict) -> str:
    return "-" if d.get("mean") is None else reporting.pm(d)


def models_table(results: dict) -> str:
    ks = results["config"]["precision_at"]
    rows = []
    for name, r in list(results["models"].items()) + list(results["baselines"].items()):
        p = r.get("paired")
        rows.append([MODEL_LABELS.get(name, name), _pm(r["roc_auc_macro"]), _pm(r["pr_auc_macro"])]
                    + [_pm(r[f"precision_at_{k}"]) for k in ks]
                    + [reporting.signed(p["roc_auc_macro"]) if p else "-",
                       reporting.signed(p["pr_auc_macro"]) if p else "-"])
    return reporting.markdown_table(["model", "macro ROC-AUC", "macro PR-AUC"] + [f"P@{k}" for k in ks]
                                    + ["Δ ROC-AUC vs MFCC", "Δ PR-AUC vs MFCC"], rows)


def _write_report(out: Path, results: dict, folds) -> None:
    tags = results["dataset"]["tags"]
    head, base = results["models"][HEADLINE], results["baselines"][BASELINE]
    figures = []
    try:
        plots.plot_tag_scores({"DBN": head["per_tag_roc_auc"], "MFCC": base["per_tag_roc_auc"]}, tags,
                              out / "per_tag_roc_auc.png", "ROC-AUC per tag (mean over folds)")
        figures.append("per_tag_roc_auc.png")
        for i, h in enumerate(folds[0]["dbn_history"]):
            plots.plot_learning_curves(h, out / f"learning_curve_layer{i + 1}.png")
            figures.append(f"learning_curve_layer{i + 1}.png")
    except Exception as err:  # a plot must never cost the results
        warnings.warn(f"tagging plot failed: {err}")
    counts = results["dataset"]["tag_counts"]
    per_tag = [[t, counts[t]] + [_pm(m[key][t]) for key in ("per_tag_roc_auc", "per_tag_pr_auc")
                                 for m in (head, base)] for t in tags]
    skipped = sorted({t for fold in head["skipped_tags"] for t in fold})
    ds = results["dataset"]
    md = [
        "# Autotagging with DBN features",
        "",
        f"Data: `{ds['root']}`, {ds['n_clips']} clips, {len(tags)} tags; {results['protocol']['description']}; "
        f"features {results['feature_seconds']:.1f} s, total {results['total_seconds']:.1f} s.",
        "" if not ds["skipped"] else f"Skipped clips: {', '.join(s[0] for s in ds['skipped'])}",
        "",
        "## Macro ROC-AUC, PR-AUC and precision at k against the MFCC baseline",
        "",
        models_table(results),
        "",
        "Δ: the model's score minus the MFCC baseline's on the same fold, mean ± std over folds (paired). Macro: "
        "mean over tags of the per-tag score; P@k: share of true tags among each clip's k best-scored tags.",
        "" if not skipped else f"Tags without positives (or negatives) in some test fold, left out of that fold's "
        f"means: {', '.join(skipped)}.",
        "",
        f"Best tags (DBN, ROC-AUC): {', '.join(results['best_tags'])}; worst: {', '.join(results['worst_tags'])}.",
        "",
        "## Per tag (mean ± std over folds)",
        "",
        reporting.markdown_table(["tag", "clips", "ROC-AUC DBN", "ROC-AUC MFCC", "PR-AUC DBN", "PR-AUC MFCC"],
                                 per_tag),
        "",
        "## Figures",
        "",
    ] + [f"![{f}]({f})" for f in figures]
    (out / "report.md").write_text("\n".join(md) + "\n")
