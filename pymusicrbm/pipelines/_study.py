"""What every study shares: options, thread scope, dataset and cached features, folds, the fold loop with resume
files, the MFCC + SVM baseline and the one results schema.

Protocol: stratified k-fold by clip (``folds``, default 5), or a dataset's official split (``split_files``: train and
test lists, optionally valid; or ``split_name``: a split shipped with the package or read by the dataset's loader,
see :func:`pymusicrbm.datasets.named_split`) which gives one split and bootstrap intervals over its test clips. Every model is
reported as mean ± std over folds beside ``baselines.mfcc_svm`` (:func:`mfcc_baseline`, the same function and
folds in every study), with per-fold paired differences and McNemar's test over all test clips.

The results schema (``results.json``; metric names are open, a study may add more the same way)::

    {"study", "headline": <model name>, "protocol": {...}, "dataset": {...}, "config": {...},
     "models":    {name: {"clip_accuracy": {"mean", "std", "folds"[, "ci95"]}, "f1_macro": {...},
                          "per_class_f1": {class: {"mean", "std", "folds"}}, ["window_accuracy"], ["frame_accuracy"],
                          "confusion", "paired": {"baseline", "clip_accuracy": {"mean", "std", "folds"}, "f1_macro":
                          {...}, "mcnemar": {"b", "c", "p_value"}}}},
     "baselines": {"mfcc_svm": {... same keys, no "paired"}, ...}}
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from .. import audio, datasets, distributed, reporting
from . import classifiers

# The options every study takes (its own DEFAULTS add to these).
COMMON = dict(folds=5, split_files=None, split_name=None, seed=0, device="cpu", n_jobs=2, cache_dir=None,
              resume=False, verbose=1, num_threads=None, mfcc_window_seconds=5.0, svm_grid="small", save_model=None)
PAIRED_METRICS = ("clip_accuracy", "f1_macro")
BASELINE = "mfcc_svm"


def add_common_arguments(parser) -> None:
    """The command-line flags of :data:`COMMON` (defaults None: the study's own default applies)."""
    g = parser.add_argument_group("protocol and run")
    g.add_argument("--folds", type=int, default=None, help="stratified folds by clip (default 5)")
    g.add_argument("--split", nargs="+", metavar="FILE", dest="split_files", default=None,
                   help="the dataset's official split: train and test list files (and optionally valid); one split "
                        "with bootstrap intervals over its test clips instead of --folds")
    g.add_argument("--split-name", dest="split_name", default=None, choices=datasets.SPLIT_NAMES,
                   help="a named split instead of --split files: fault-filtered (GTZAN's, shipped) or official "
                        "(the one the dataset's loader read, e.g. FMA's)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    g.add_argument("--device", default=None, help="cpu or cuda")
    g.add_argument("--jobs", type=int, dest="n_jobs", default=None,
                   help="threads for feature extraction and the classifiers' grid searches (2)")
    g.add_argument("--cache-dir", default=None, help="feature cache (default: OUT/cache)")
    g.add_argument("--resume", action="store_true", default=None, help="reuse finished folds and checkpoints in OUT")
    g.add_argument("--threads", type=int, dest="num_threads", default=None,
                   help="torch intra-op threads during the run (default: the study's: 1 for dbn, "
                        "torch's setting for the others)")
    g.add_argument("--quick", action="store_true", default=None, help="small, fast settings (the demo's)")
    g.add_argument("--save-model", metavar="DIR", default=None,
                   help="also train the final pipeline on all the data and save it in DIR (for `pymusicrbm predict` "
                        "and `embed`, or pymusicrbm.pipelines.load_pipeline)")


def seconds_arg(s: str):
    """``--seconds``: a number, or ``all`` for whole clips."""
    return "all" if s == "all" else float(s)


def mel_seconds(seconds):
    """A study's ``seconds`` option as the mel spectrogram's: a number, or None for whole clips (``'all'``)."""
    return None if seconds == "all" else seconds


def merge_options(study: str, defaults: dict, quick: dict, options: dict) -> dict:
    """``defaults``, then ``quick`` (with ``quick=True``), then the given options (None: the default). Unknown
    option names and a bad protocol are ValueErrors naming the option."""
    options = dict(options)
    use_quick = bool(options.pop("quick", False))
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{study}.run: unknown option(s) {unknown}; expected some of {sorted(defaults)}")
    opts = {**defaults, **(quick if use_quick else {}), **{k: v for k, v in options.items() if v is not None}}
    if opts["split_name"] is not None:
        if opts["split_files"]:
            raise ValueError("split_name and split_files: give one of them, not both")
        if opts["split_name"] not in datasets.SPLIT_NAMES:
            raise ValueError(f"split_name must be one of {list(datasets.SPLIT_NAMES)}, got {opts['split_name']!r}")
    elif opts["split_files"]:
        opts["split_files"] = [str(f) for f in np.atleast_1d(opts["split_files"])]
        if len(opts["split_files"]) not in (2, 3):
            raise ValueError(f"split_files: give train and test (and optionally valid) list files, got "
                             f"{opts['split_files']}")
    elif not (isinstance(opts["folds"], (int, np.integer)) and opts["folds"] >= 2):
        raise ValueError(f"folds must be an integer >= 2 (or give split_files), got {opts['folds']!r}")
    if opts["num_threads"] is not None and int(opts["num_threads"]) < 1:
        raise ValueError(f"num_threads must be None or >= 1, got {opts['num_threads']}")
    return opts


@contextlib.contextmanager
def thread_scope(n_threads):
    """Torch intra-op threads set to ``n_threads`` inside the block (None: unchanged), restored after."""
    import torch

    before = torch.get_num_threads()
    try:
        if n_threads is not None:
            torch.set_num_threads(int(n_threads))
        yield
    finally:
        torch.set_num_threads(before)


def load_dataset(data, study: str):
    if data is None:
        raise ValueError(f"{study}.run: data is required (a dataset folder, a CSV manifest or an AudioDataset)")
    ds = data if isinstance(data, datasets.AudioDataset) else datasets.load_dataset(data)
    if isinstance(ds, datasets.TaggedDataset):
        raise ValueError(f"{study}.run: {data} is a multi-label (tagging) dataset; this study needs one class a clip "
                         f"(tagging: pymusicrbm tags, pymusicrbm.pipelines.tagging)")
    if len(ds.classes) < 2:
        raise ValueError(f"the dataset has {len(ds.classes)} class(es); genre classification needs at least 2")
    return ds


def extract_features(ds, kinds: dict, opts: dict, out: Path) -> tuple[dict, np.ndarray, list, float]:
    """Cached features of every clip for each ``name: (kind, params)`` of ``kinds``, plus the MFCCs of the
    baseline. Returns ({name: per-clip arrays}, indices of the clips every kind could use, skipped clips as
    [name, reason] pairs, seconds)."""
    t0 = time.perf_counter()
    cache = opts["cache_dir"] or out / "cache"
    feats, errors = {}, dict(ds.skipped)
    for name, (kind, params) in {**kinds, "mfcc": ("mfcc", {})}.items():
        feats[name], errs = audio.extract(ds, kind, params, cache_dir=cache, n_jobs=opts["n_jobs"],
                                          verbose=opts["verbose"], return_errors=True)
        errors.update(dict(errs))
    ok = np.ones(len(ds), bool)
    for f in feats.values():
        ok &= np.array([x is not None for x in f])
    if not ok.any():
        raise ValueError(f"no usable clips in {ds.root}: every clip failed ({list(errors.items())[:3]} ...)")
    return feats, np.flatnonzero(ok), [list(e) for e in errors.items()], time.perf_counter() - t0


def make_splits(ds, usable: np.ndarray, opts: dict) -> tuple[list, dict]:
    """[(train, test, valid)] dataset indices of usable clips and the protocol description. ``valid`` is a part
    of ``train`` a study may hold out for early stopping: the official split's validation list (joined to its
    training list), else empty."""
    labels = np.asarray(ds.labels)
    if opts["split_files"] or opts.get("split_name"):
        if opts.get("split_name"):
            tr, va, te = datasets.named_split(ds, opts["split_name"])
            source = {"name": opts["split_name"]}
        else:
            tr, te, va = datasets.read_split_lists(ds, *opts["split_files"])
            source = {"files": opts["split_files"]}
        keep = set(usable.tolist())
        tr, te, va = (np.asarray([i for i in s if i in keep], dtype=np.int64) for s in (tr, te, va))
        splits = [(np.concatenate([tr, va]), te, va)]
        protocol = {"kind": "official_split", "folds": 1, **source,
                    "description": "the official split (one fold); intervals: 95% bootstrap over test clips"}
    else:
        k = int(opts["folds"])
        splits = [(usable[a], usable[b], np.zeros(0, np.int64))
                  for a, b in datasets.stratified_folds(labels[usable], k, opts["seed"])]
        protocol = {"kind": "stratified_kfold", "folds": k, "seed": opts["seed"],
                    "description": f"{k}-fold stratified by clip; mean ± std over folds"}
    return splits, protocol


def run_folds(splits, out: Path, fold_fn, resume: bool, verbose: int = 1) -> tuple[list, dict]:
    """``fold_fn(k, train, test, valid, fold_dir) -> (record, extras)`` for every split. Each record is written to
    ``out/folds/fold<k>/fold_results.json``; with ``resume`` a finished fold is read back instead of run, except
    fold 0, whose in-memory extras (for the figures) come from rerunning it on its checkpoints. Returns (records,
    fold 0's extras)."""
    from tqdm.auto import tqdm

    records, extras = [], {}
    for k, (train, test, valid) in enumerate(tqdm(splits, desc="folds", disable=not verbose)):
        fold_dir = out / "folds" / f"fold{k}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        done = fold_dir / "fold_results.json"
        # under torchrun rank 0 decides, and hands its record over, so that every rank runs the same folds
        if distributed.broadcast_object(bool(resume and done.exists() and k > 0), what="agreeing on the folds"):
            records.append(distributed.broadcast_object(reporting.read_json(done) if distributed.is_main() else None,
                                                        what="sharing a finished fold"))
            continue
        t0 = time.perf_counter()
        record, fold_extras = fold_fn(k, train, test, valid, fold_dir)
        record["seconds"] = time.perf_counter() - t0
        if k == 0:
            extras = fold_extras
        reporting.write_json(done, record)
        records.append(reporting.read_json(done))  # the same form as a resumed fold
    return records, extras


def time_estimate(study: str, fit_probe, n_rows: int, opts: dict, *, rows: str = "rows", models: int = 1,
                  early_stopping: bool = False, extra: str = "", suggestion: str = "", probe_batches: int = 3,
                  clock=time.perf_counter) -> str:
    """One line before a study's first model trains: ``fit_probe(n, device)`` (one epoch on the first ``n`` of the
    ``n_rows`` training rows: ``probe_batches`` batches of ``opts["batch_size"]``, after an untimed one on one batch:
    the first convolutions of a process pay a one-time set-up of several seconds) timed, scaled to an epoch
    over every row and to every one of ``opts["epochs"]`` epochs of ``models`` models a fold in every fold; on a CPU,
    when that comes to an hour or more, ``suggestion`` on a second line. The defaults stay the published-size
    models (which a GPU trains in minutes): a CPU user is told, before the hours start, what to change.
    ``early_stopping``: the total is an upper bound."""
    from .._utils import resolve_device

    device = resolve_device(opts["device"])
    probe_rows = min(n_rows, probe_batches * int(opts["batch_size"]))
    fit_probe(min(n_rows, int(opts["batch_size"])), device)
    t0 = clock()
    fit_probe(probe_rows, device)
    epoch = (clock() - t0) / probe_rows * n_rows
    epochs, folds = int(opts["epochs"]), 1 if opts["split_files"] or opts.get("split_name") else int(opts["folds"])
    total = epoch * epochs * folds * models
    up_to = "up to " if early_stopping else ""
    runs = f"{epochs} epochs x {folds} fold{'s' * (folds > 1)}" + (f" x {models} models" if models > 1 else "")
    line = (f"[{study}] on {device.type}: about {epoch:.0f} s an epoch over {n_rows} {rows}; {up_to}{runs} = "
            f"{up_to}{_duration(total)} of training{' (early stopping may end sooner)' if early_stopping else ''}"
            f"{extra}")
    if device.type == "cpu" and total >= 3600 and suggestion:
        line += f"\n[{study}] that is long for a CPU: {suggestion}"
    return line


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def window_frames(seconds: float, hop_length: int, overlap: float = 0.5) -> tuple[int, int]:
    """(window size, window hop) in frames of ``hop_length`` samples for windows of ``seconds``."""
    size = max(1, int(round(seconds * audio.SR / hop_length)))
    return size, max(1, int(round(size * (1 - overlap))))


def mfcc_baseline(mfcc, labels, train, test, n_classes: int, opts: dict) -> dict:
    """The baseline of every study: MFCCs (hop 512) -> mean and variance over windows of
    ``mfcc_window_seconds`` (50% overlap) -> grid-searched RBF SVM -> vote per clip. A fold record."""
    size, hop = window_frames(opts["mfcc_window_seconds"], 512)
    return classifiers.classify_windows("svm", classifiers.window_set(mfcc, train, size, hop, labels),
                                        classifiers.window_set(mfcc, test, size, hop, labels), n_classes,
                                        opts["svm_grid"], opts["seed"], opts["n_jobs"])


# ------------------------------------------------------------------------------------------------ the schema
def fold_scores(record: dict, classes) -> dict:
    """The per-fold metrics of one fold record (clip predictions, optional windows / frame accuracy)."""
    t, p = np.asarray(record["clip_true"]), np.asarray(record["clip_pred"])
    m = reporting.classification_metrics(t, p, classes)
    s = {"clip_accuracy": m["accuracy"], "f1_macro": m["f1_macro"], "per_class_f1": m["per_class_f1"]}
    if "window_true" in record:
        s["window_accuracy"] = float(np.mean(np.asarray(record["window_true"]) == np.asarray(record["window_pred"])))
    if "frame_accuracy" in record:
        s["frame_accuracy"] = float(record["frame_accuracy"])
    return s


def summarize_model(records: list, classes, bootstrap: bool = False, seed: int = 0) -> dict:
    """One model's entry of the schema from its fold records: every metric as ``{"mean", "std", "folds"}``
    (``per_class_f1`` per class), the confusion matrix of all test clips, and with ``bootstrap`` (one official
    split) a 95% interval over clips for clip accuracy and macro F1."""
    scores = [fold_scores(r, classes) for r in records]
    out = {name: reporting.summarize([s[name] for s in scores]) for name in scores[0] if name != "per_class_f1"}
    out["per_class_f1"] = {c: reporting.summarize([s["per_class_f1"][c] for s in scores]) for c in classes}
    t = np.concatenate([np.asarray(r["clip_true"]) for r in records])
    p = np.concatenate([np.asarray(r["clip_pred"]) for r in records])
    out["confusion"] = reporting.classification_metrics(t, p, classes)["confusion"]
    if bootstrap:
        n = len(classes)
        out["clip_accuracy"]["ci95"] = reporting.bootstrap_ci(lambda i: float(np.mean(t[i] == p[i])), len(t),
                                                              seed=seed)
        out["f1_macro"]["ci95"] = reporting.bootstrap_ci(lambda i: reporting.macro_f1(t[i], p[i], n), len(t),
                                                         seed=seed)
    params = [r["params"] for r in records if r.get("params")]
    if params:
        out["classifier_params"] = params
    return out


def paired(records: list, base_records: list, classes, bootstrap: bool = False, seed: int = 0) -> dict:
    """The ``paired`` block of a model against :data:`BASELINE` on the same folds."""
    def with_scores(rs):
        return [{**r, "scores": fold_scores(r, classes)} for r in rs]
    return {"baseline": BASELINE, **reporting.paired_comparison(with_scores(records), with_scores(base_records),
                                                                PAIRED_METRICS, len(classes), bootstrap, seed)}


def entry(records, base_records, classes, bootstrap: bool, seed: int) -> dict:
    """A model's full entry: :func:`summarize_model` plus its ``paired`` block against the baseline."""
    return {**summarize_model(records, classes, bootstrap, seed),
            "paired": paired(records, base_records, classes, bootstrap, seed)}


def build_results(study: str, ds, usable, skipped, opts: dict, protocol: dict, folds: list, model_names,
                  baseline_names, headline: str, **extra) -> dict:
    """The results dict every study writes; ``folds`` are fold records holding ``models`` and ``baselines``
    (name -> fold record); ``extra`` adds study-specific keys."""
    classes = list(ds.classes)
    boot, seed = protocol["kind"] == "official_split", int(opts["seed"])
    base = [f["baselines"][BASELINE] for f in folds]
    models = {name: entry([f["models"][name] for f in folds], base, classes, boot, seed) for name in model_names}
    baselines = {name: summarize_model([f["baselines"][name] for f in folds], classes, boot, seed)
                 for name in baseline_names}
    return {
        "study": study, "headline": headline, "protocol": protocol,
        "dataset": {"root": str(ds.root), "n_clips": int(len(usable)), "classes": classes, "skipped": skipped},
        "config": {k: v for k, v in opts.items() if k != "verbose"},
        "models": models, "baselines": baselines, **extra,
    }


def models_table(results: dict, labels: dict | None = None) -> str:
    """Markdown: every model and baseline, clip accuracy and macro F1 (mean ± std over folds, or with the
    bootstrap interval of an official split), the paired difference against the MFCC baseline and McNemar's p."""
    labels = labels or {}
    rows = []
    for name, r in list(results["models"].items()) + list(results["baselines"].items()):
        p = r.get("paired")
        rows.append([labels.get(name, name), reporting.pm(r["clip_accuracy"]), reporting.pm(r["f1_macro"]),
                     reporting.signed(p["clip_accuracy"]) if p else "-",
                     ", ".join(f"{d:+.2f}" for d in p["clip_accuracy"]["folds"]) if p else "-",
                     reporting.signed(p["f1_macro"]) if p else "-",
                     f"{p['mcnemar']['b']}/{p['mcnemar']['c']}, p={p['mcnemar']['p_value']:.3g}" if p else "-"])
    return reporting.markdown_table(["model", "clip accuracy", "macro F1", "Δ accuracy vs MFCC+SVM", "Δ per fold",
                                     "Δ macro F1 vs MFCC+SVM", "McNemar (only model/only MFCC right)"], rows)


PROTOCOL_NOTE = ("Δ: the model's score minus the MFCC + SVM baseline's on the same fold, mean ± std over folds "
                 "(paired). McNemar: exact binomial test over all test clips of the clips only one of the two got "
                 "right; a small p says the difference is unlikely to be chance.")


def headline_line(results: dict) -> str:
    """One line for terminals and the demo: the headline model's clip accuracy and its difference to MFCC."""
    h = results["models"][results["headline"]]
    p = h["paired"]
    return (f"{results['headline']}: clip accuracy {reporting.pm(h['clip_accuracy'])}, macro F1 "
            f"{reporting.pm(h['f1_macro'])}; vs MFCC+SVM {reporting.signed(p['clip_accuracy'])} "
            f"(McNemar p={p['mcnemar']['p_value']:.3g}, {results['protocol']['description']})")
