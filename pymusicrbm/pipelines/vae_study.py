"""The VAE study: convolutional VAE latents of mel-spectrogram excerpts as genre features, and audio generation.

Per fold: mel spectrograms of the first ``seconds`` of every clip -> excerpts of ``excerpt_frames`` frames ->
ConvVAE trained on the training clips' excerpts (early stopping on held-out training clips) -> encoder means
(optionally also log-variances) -> standardised -> an RBF SVM and logistic regression -> excerpt predictions ->
clip prediction by vote (the SVM: majority of its excerpt predictions; logistic regression: mean probability).
The primary classifier (``classifier``; the RBF SVM by default, as in the DBN pipeline) gives the top-level
metrics. Baselines with the same excerpts, primary classifier and vote: PCA of the standardised
excerpt (as many components as the VAE has latent dimensions: is the VAE better than a linear code?) and the
per-band mean and std of the excerpt.

The first fold's model also writes the generation part of the report: reconstructions of test clips beside the
originals, samples from the prior, samples around a genre's mean latent and an interpolation between two clips,
as spectrogram images and Griffin-Lim wav files.

``run(data, out_dir, **options) -> dict`` writes ``out_dir/results.json`` and ``out_dir/report.md``. Keys shared
with the other studies: ``clip_accuracy`` / ``window_accuracy`` / ``f1_macro`` ({mean, std, folds}) and
``per_class_f1`` of the primary model, ``models`` (``vae_svm``, ``vae_logreg``) and ``baselines`` (``pca_<clf>``,
``mel_stats_<clf>``), each with those keys plus per-class precision/recall and the clip ``confusion`` matrix;
then ``vae`` (reconstruction MSE against the mean-spectrogram baseline, test ELBO, epochs), ``generated`` (the
audio and image files), ``figures``, ``timings``, ``config``. Here a "window" is one excerpt.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import reporting

__all__ = ["DEFAULTS", "QUICK", "add_arguments", "run", "report_markdown"]

_HOP = 512  # mel frame hop (audio.mel_spectrogram's default)
_GAP = 8    # silent frames between spectrograms inverted together (> n_fft / hop: the pieces do not interact)

DEFAULTS = {
    "n_mels": 64,
    "seconds": 30.0,             # first N seconds of each clip
    "excerpt_frames": 128,       # ~2.97 s at 22050 Hz, hop 512
    "excerpt_hop": 64,           # 50% overlap between excerpts
    "latent_dim": 32,
    "channels": (32, 64, 128, 256),
    "beta": 1.0,
    "kl_warmup_epochs": 10,
    "epochs": 100,
    "patience": 10,
    "batch_size": 64,
    "lr": 1e-3,
    "features": "mean",          # or "mean+logvar"
    "classifier": "svm",         # primary classifier (top-level metrics, baselines): "svm" or "logreg"
    "folds": 5,
    "single_split": False,       # one seeded train/valid/test split instead of k folds
    "valid_fraction": 0.1,       # training clips held out for the VAE's early stopping
    "test_fraction": 0.2,        # single_split only
    "grid_search": True,         # C of the classifiers by grouped 3-fold CV on the training clips
    "n_generate": 4,
    "device": None,
    "seed": 0,
    "cache_dir": None,
    "resume": False,
    "n_jobs": 2,
    "num_threads": None,         # torch intra-op threads during the run (None: leave torch's setting)
    "verbose": 1,
    "quick": False,
}
# The demo setting: a small network, short clips, one split; the VAE part runs in about a minute on 2 CPU cores.
# Small batches: with a few hundred excerpts, batches of 64 give too few Adam steps in 20 epochs. One torch thread:
# the small network gains little from a second one, and on a busy 2-core machine two threads ran the demo's
# training 7x slower (13 s -> 190 s, measured) as each waits for the other at every op.
QUICK = {"seconds": 10.0, "excerpt_hop": 128, "channels": (16, 32, 64, 64), "latent_dim": 16, "epochs": 20,
         "patience": 4, "kl_warmup_epochs": 4, "batch_size": 16, "lr": 2e-3, "single_split": True,
         "grid_search": False, "n_generate": 2, "num_threads": 1}


def _add(parser, *flags, **kw):
    # The CLI may already define the common options (--device, --seed, --folds, --resume, ...): keep its own.
    if not any(f in parser._option_string_actions for f in flags):
        parser.add_argument(*flags, **kw)


def add_arguments(parser) -> None:
    """Options of ``pymusicrbm vae`` (defaults None mean: the value from DEFAULTS, or QUICK with --quick)."""
    d = DEFAULTS
    _add(parser, "--n-mels", type=int, choices=(64, 96), default=None, help=f"mel bands (default {d['n_mels']})")
    _add(parser, "--seconds", type=float, default=None, help=f"first N seconds of each clip (default {d['seconds']})")
    _add(parser, "--excerpt-frames", type=int, default=None,
         help=f"excerpt length in frames of 512 samples (default {d['excerpt_frames']}, about 3 s)")
    _add(parser, "--excerpt-hop", type=int, default=None, help=f"frames between excerpts (default {d['excerpt_hop']})")
    _add(parser, "--latent-dim", type=int, default=None, help=f"latent dimension (default {d['latent_dim']})")
    _add(parser, "--channels", type=str, default=None,
         help="comma-separated conv channels, e.g. 32,64,128,256 (default)")
    _add(parser, "--beta", type=float, default=None, help=f"KL weight (default {d['beta']})")
    _add(parser, "--kl-warmup-epochs", type=int, default=None, help=f"default {d['kl_warmup_epochs']}")
    _add(parser, "--epochs", type=int, default=None, help=f"maximum epochs (default {d['epochs']})")
    _add(parser, "--patience", type=int, default=None, help=f"early-stopping patience (default {d['patience']})")
    _add(parser, "--batch-size", type=int, default=None, help=f"default {d['batch_size']}")
    _add(parser, "--lr", type=float, default=None, help=f"Adam learning rate (default {d['lr']})")
    _add(parser, "--features", choices=("mean", "mean+logvar"), default=None,
         help="encoder outputs used as features (default mean)")
    _add(parser, "--classifier", choices=("svm", "logreg"), default=None,
         help="primary classifier for the top-level metrics and the baselines (default svm)")
    _add(parser, "--folds", type=int, default=None, help=f"stratified folds by clip (default {d['folds']})")
    _add(parser, "--single-split", action="store_true", default=None,
         help="one seeded train/valid/test split instead of folds")
    _add(parser, "--no-grid-search", dest="grid_search", action="store_false", default=None,
         help="fixed classifier C instead of a grouped CV grid search")
    _add(parser, "--n-generate", type=int, default=None, help="generated clips per kind (default 4)")
    _add(parser, "--device", default=None, help="cpu or cuda (default: cuda when available)")
    _add(parser, "--seed", type=int, default=None, help="random seed (default 0)")
    _add(parser, "--threads", dest="num_threads", type=int, default=None,
         help="torch threads during the run (default: torch's own; 1 with --quick)")
    _add(parser, "--cache-dir", default=None, help="feature cache folder (default OUT/cache)")
    _add(parser, "--resume", action="store_true", default=None,
         help="reuse finished fold models and continue interrupted training from its checkpoint")
    _add(parser, "--quick", action="store_true", default=None, help="small, fast settings (the demo's)")


def _options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"vae_study.run: unknown option(s) {unknown}; expected some of {sorted(DEFAULTS)}")
    given = {k: v for k, v in options.items() if v is not None}  # None: the default (as from the CLI)
    opts = {**DEFAULTS, **(QUICK if given.get("quick") else {}), **given}
    if isinstance(opts["channels"], str):
        try:
            opts["channels"] = tuple(int(c) for c in opts["channels"].split(","))
        except ValueError:
            raise ValueError(f"channels must be comma-separated integers, got {opts['channels']!r}") from None
    opts["channels"] = tuple(opts["channels"])
    if opts["classifier"] not in ("svm", "logreg"):
        raise ValueError(f"classifier must be 'svm' or 'logreg', got {opts['classifier']!r}")
    if opts["features"] not in ("mean", "mean+logvar"):
        raise ValueError(f"features must be 'mean' or 'mean+logvar', got {opts['features']!r}")
    if opts["n_mels"] not in (64, 96):
        raise ValueError(f"n_mels must be 64 or 96, got {opts['n_mels']!r}")
    if opts["num_threads"] is not None and int(opts["num_threads"]) < 1:
        raise ValueError(f"num_threads must be None or >= 1, got {opts['num_threads']}")
    if not opts["single_split"] and int(opts["folds"]) < 2:
        raise ValueError(f"folds must be >= 2 (or use single_split), got {opts['folds']}")
    return opts


# ------------------------------------------------------------------------------------------------ classifiers
def _classifier(kind: str, grid: bool, n_groups: int, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    # Standardised features; without the grid search, C=1 (logistic) and C=10 (SVM) are middle-of-grid values.
    if kind == "logreg":
        est, key, values = LogisticRegression(C=1.0, max_iter=2000), "logisticregression__C", [0.01, 0.1, 1.0, 10.0]
    else:
        est, key, values = SVC(C=10.0, kernel="rbf", gamma="scale", random_state=seed), "svc__C", [1.0, 10.0, 100.0]
    pipe = make_pipeline(StandardScaler(), est)
    if not grid or n_groups < 3:
        return pipe
    # Grouped by clip: excerpts of one clip never sit on both sides of a CV split.
    return GridSearchCV(pipe, {key: values}, cv=GroupKFold(n_splits=3), n_jobs=1)


def _evaluate(kind, F_train, y_train, g_train, F_test, y_test, g_test, n_classes, grid, seed) -> dict:
    """Fit on training excerpts, predict test excerpts, vote per clip: logistic regression by mean probability,
    the SVM by majority of its excerpt predictions (reporting.vote on one-hot votes)."""
    from sklearn.model_selection import GridSearchCV

    clf = _classifier(kind, grid, len(np.unique(g_train)), seed)
    clf.fit(F_train, y_train, **({"groups": g_train} if isinstance(clf, GridSearchCV) else {}))
    pred = clf.predict(F_test)
    scores = clf.predict_proba(F_test) if hasattr(clf, "predict_proba") else np.eye(n_classes)[pred]
    if scores.shape[1] < n_classes:  # a class absent from training: give it no probability
        full = np.zeros((len(pred), n_classes))
        full[:, clf.classes_] = scores
        scores = full
    clip_ids, clip_pred = reporting.vote(g_test, scores)
    clip_true = np.array([y_test[g_test == c][0] for c in clip_ids])
    return {"window_true": y_test, "window_pred": pred, "clip_ids": clip_ids, "clip_true": clip_true,
            "clip_pred": clip_pred, "params": {k: float(v) for k, v in getattr(clf, "best_params_", {}).items()}}


def _summary(rows: list[dict], classes) -> dict:
    """Mean +- std over folds of clip and window (= excerpt) accuracy and macro F1; per-class scores and the
    confusion matrix of the clips of all folds together (same fields as the DBN pipeline's models)."""
    clip_true = np.concatenate([r["clip_true"] for r in rows])
    clip_pred = np.concatenate([r["clip_pred"] for r in rows])
    m = reporting.classification_metrics(clip_true, clip_pred, classes)
    return {
        "clip_accuracy": reporting.summarize([np.mean(r["clip_true"] == r["clip_pred"]) for r in rows]),
        "window_accuracy": reporting.summarize([np.mean(r["window_true"] == r["window_pred"]) for r in rows]),
        "f1_macro": reporting.summarize([reporting.classification_metrics(r["clip_true"], r["clip_pred"],
                                                                          classes)["f1_macro"] for r in rows]),
        "per_class_f1": m["per_class_f1"], "per_class_precision": m["per_class_precision"],
        "per_class_recall": m["per_class_recall"], "confusion": m["confusion"],
        "classifier_params": [r["params"] for r in rows],
    }


# ------------------------------------------------------------------------------------------------ data
def _excerpts(mels, clip_idx, n_frames, hop):
    from ..vae import cut_excerpts

    X, owner = [], []
    for i in clip_idx:
        e = cut_excerpts(mels[i], n_frames, hop)
        X.append(e)
        owner.append(np.full(len(e), i))
    return np.concatenate(X).astype(np.float32, copy=False), np.concatenate(owner)


def _baseline_features(X, kind, fitted=None, n_components=32, seed=0):
    """Features for the baselines: 'mel_stats' (per-band mean and std over the excerpt) or 'pca'."""
    if kind == "mel_stats":
        return np.hstack([X.mean(2), X.std(2)]), None
    flat = X.reshape(len(X), -1)
    if fitted is None:
        from sklearn.decomposition import PCA
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        fitted = make_pipeline(StandardScaler(), PCA(n_components=min(n_components, *flat.shape),
                                                    random_state=seed)).fit(flat)
    return fitted.transform(flat), fitted


# ------------------------------------------------------------------------------------------------ main
def run(data, out_dir, **options) -> dict:
    """Run the VAE study on ``data`` (a dataset folder / manifest path or an ``AudioDataset``); see the module doc.

    Returns the results dict, also written to ``out_dir/results.json``; ``out_dir/report.md`` holds the report
    section with its images (``out_dir/figures``) and audio (``out_dir/audio``). Trained models are kept in
    ``out_dir/checkpoints``; ``resume=True`` reuses them and continues an interrupted training.
    """
    import torch

    opts = _options(options)
    before = torch.get_num_threads()
    if opts["num_threads"] is not None:
        torch.set_num_threads(int(opts["num_threads"]))
    try:
        return _run(data, out_dir, opts)
    finally:
        torch.set_num_threads(before)


def _run(data, out_dir, opts) -> dict:
    from .. import audio, datasets
    from ..vae import ConvVAE, receptive_field

    t_start = time.perf_counter()
    out = reporting.prepare_out_dir(out_dir)
    verbose = int(opts["verbose"])
    log = print if verbose else (lambda *a, **k: None)
    ds = data if isinstance(data, datasets.AudioDataset) else datasets.load_dataset(data)
    classes = list(ds.classes)
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"the dataset has {n_classes} class(es); genre classification needs at least 2")
    rf = receptive_field(len(opts["channels"]))
    if opts["excerpt_frames"] < rf:
        raise ValueError(f"excerpt_frames={opts['excerpt_frames']} is shorter than the receptive field of the "
                         f"{len(opts['channels'])}-layer encoder ({rf} frames)")
    frames_per_clip = 1 + int(opts["seconds"] * audio.SR) // _HOP
    if frames_per_clip < opts["excerpt_frames"]:
        raise ValueError(f"seconds={opts['seconds']} gives {frames_per_clip} frames, fewer than one excerpt of "
                         f"excerpt_frames={opts['excerpt_frames']}")

    # ---- mel spectrograms (cached), then the usable clips
    t0 = time.perf_counter()
    cache_dir = opts["cache_dir"] if opts["cache_dir"] is not None else out / "cache"
    mels, errors = audio.extract(ds, "mel", {"n_mels": opts["n_mels"], "seconds": opts["seconds"]},
                                 cache_dir=cache_dir, n_jobs=opts["n_jobs"], verbose=verbose, return_errors=True)
    t_features = time.perf_counter() - t0
    labels = np.asarray(ds.labels)
    usable = np.flatnonzero([m is not None for m in mels])
    if len(usable) == 0:
        raise ValueError(f"no usable clips in {ds.root}: every clip failed ({errors[:3]} ...)")

    # ---- splits by clip: (training clips, test clips, the training clips held out for early stopping)
    seed = int(opts["seed"])
    y_use = labels[usable]
    if opts["single_split"]:
        # Small sets: each part must hold at least one clip per class (the split stratifies by class).
        floor = n_classes / len(y_use)
        valid = max(opts["valid_fraction"], floor) if opts["valid_fraction"] > 0 else 0.0
        tr, va, te = datasets.train_valid_test_split(y_use, valid=valid, test=max(opts["test_fraction"], floor),
                                                     seed=seed)
        splits = [(np.concatenate([tr, va]), te, va)]
    else:
        splits = [(tr, te, _holdout(tr, y_use, opts["valid_fraction"], seed))
                  for tr, te in datasets.stratified_folds(y_use, n_folds=int(opts["folds"]), seed=seed)]

    clf = opts["classifier"]
    rows = {name: [] for name in ("vae_svm", "vae_logreg", f"pca_{clf}", f"mel_stats_{clf}")}
    vae_stats, first = [], None
    for k, (train_c, test_c, valid_c) in enumerate(splits):
        train_clips, test_clips, valid_clips = usable[train_c], usable[test_c], usable[valid_c]
        log(f"[vae] fold {k + 1}/{len(splits)}: {len(train_clips) - len(valid_clips)} training, "
            f"{len(valid_clips)} validation, {len(test_clips)} test clips")
        X_tr, g_tr = _excerpts(mels, train_clips, opts["excerpt_frames"], opts["excerpt_hop"])
        X_te, g_te = _excerpts(mels, test_clips, opts["excerpt_frames"], opts["excerpt_hop"])
        y_tr, y_te = labels[g_tr], labels[g_te]
        in_valid = np.isin(g_tr, valid_clips)

        t0 = time.perf_counter()
        model_path = out / "checkpoints" / f"vae_fold{k}.safetensors"
        if opts["resume"] and model_path.exists():
            vae = ConvVAE.load(model_path, device=opts["device"])
            log(f"[vae] fold {k + 1}: reusing {model_path}")
        else:
            vae = ConvVAE(n_mels=opts["n_mels"], n_frames=opts["excerpt_frames"], latent_dim=opts["latent_dim"],
                          channels=opts["channels"], beta=opts["beta"], kl_warmup_epochs=opts["kl_warmup_epochs"],
                          lr=opts["lr"], batch_size=opts["batch_size"], n_epochs=opts["epochs"],
                          patience=opts["patience"], device=opts["device"], random_state=seed + k, verbose=verbose)
            vae.fit(X_tr[~in_valid], X_valid=X_tr[in_valid] if in_valid.any() else None,
                    checkpoint=out / "checkpoints" / f"vae_fold{k}.training.safetensors",
                    resume=bool(opts["resume"]))
            vae.save(model_path)
        t_train = time.perf_counter() - t0

        # The classifiers see all training clips (the validation clips only steered the VAE's early stopping).
        with_lv = opts["features"] == "mean+logvar"
        F_tr, F_te = vae.transform(X_tr, return_logvar=with_lv), vae.transform(X_te, return_logvar=with_lv)
        common = (n_classes, opts["grid_search"], seed)
        for kind in ("svm", "logreg"):
            rows[f"vae_{kind}"].append(_evaluate(kind, F_tr, y_tr, g_tr, F_te, y_te, g_te, *common))
        B_tr, pca = _baseline_features(X_tr, "pca", n_components=opts["latent_dim"], seed=seed)
        B_te, _ = _baseline_features(X_te, "pca", pca)
        rows[f"pca_{clf}"].append(_evaluate(clf, B_tr, y_tr, g_tr, B_te, y_te, g_te, *common))
        B_tr, _ = _baseline_features(X_tr, "mel_stats")
        B_te, _ = _baseline_features(X_te, "mel_stats")
        rows[f"mel_stats_{clf}"].append(_evaluate(clf, B_tr, y_tr, g_tr, B_te, y_te, g_te, *common))

        vae_stats.append({
            "recon_mse_db": float(np.mean((vae.reconstruct(X_te) - X_te) ** 2)),
            "mean_spectrogram_mse_db": float(np.mean((X_tr[~in_valid].mean(0) - X_te) ** 2)),
            "test_elbo": float(vae.score(X_te)),
            "epochs_run": int(vae.n_epochs_), "best_epoch": int(vae.best_epoch_),
            "train_seconds": round(t_train, 2), "history": vae.history_,
            "clips": {"train": len(train_clips) - len(valid_clips), "valid": len(valid_clips),
                      "test": len(test_clips)},
        })
        last = rows[f"vae_{clf}"][-1]
        log(f"[vae] fold {k + 1}: clip accuracy {np.mean(last['clip_true'] == last['clip_pred']):.3f}; "
            f"reconstruction MSE {vae_stats[-1]['recon_mse_db']:.1f} dB^2 (mean spectrogram "
            f"{vae_stats[-1]['mean_spectrogram_mse_db']:.1f}); {t_train:.1f} s training")
        if first is None:
            first = {"vae": vae, "y_tr": y_tr, "F_tr": F_tr[:, :vae.latent_dim], "X_te": X_te, "y_te": y_te,
                     "g_te": g_te, "F_te": F_te[:, :vae.latent_dim]}

    summaries = {name: _summary(r, classes) for name, r in rows.items()}
    head = summaries[f"vae_{clf}"]
    results = {
        "study": "vae",
        "dataset": {"root": str(ds.root), "n_clips": int(len(usable)), "classes": classes,
                    "skipped": [list(e) for e in list(ds.skipped) + list(errors)]},
        "config": {**opts, "channels": list(opts["channels"]), "cache_dir": str(cache_dir)},
        "protocol": ("one stratified train/valid/test split" if opts["single_split"] else
                     f"{len(splits)}-fold stratified by clip") + "; window = excerpt of "
                    f"{opts['excerpt_frames']} frames; clip label = vote over its excerpts",
        "clip_accuracy": head["clip_accuracy"], "window_accuracy": head["window_accuracy"],
        "per_class_f1": head["per_class_f1"], "f1_macro": head["f1_macro"],
        "primary": f"vae_{clf}",
        "models": {name: summaries[name] for name in ("vae_svm", "vae_logreg")},
        "baselines": {name: summaries[name] for name in (f"pca_{clf}", f"mel_stats_{clf}")},
        "vae": _vae_summary(vae_stats),
    }
    t0 = time.perf_counter()
    results["generated"] = _generate(first, classes, out, opts)
    results["figures"] = _figures(results, vae_stats, first, classes, out)
    results["timings"] = {"features_s": round(t_features, 2), "training_s": [s["train_seconds"] for s in vae_stats],
                          "generation_and_figures_s": round(time.perf_counter() - t0, 2),
                          "total_s": round(time.perf_counter() - t_start, 2)}
    (out / "report.md").write_text(report_markdown(results) + "\n")
    reporting.write_json(out / "results.json", results)
    return results


def _holdout(train_idx, y, fraction, seed):
    """Stratified subset of the training clips for the VAE's early stopping (none when fraction is 0 or the
    training set is too small to spare one clip per class)."""
    if fraction <= 0:
        return np.zeros(0, np.int64)
    from sklearn.model_selection import train_test_split
    n_val = max(int(round(fraction * len(train_idx))), len(np.unique(y[train_idx])))
    if n_val >= len(train_idx) - len(np.unique(y[train_idx])):
        return np.zeros(0, np.int64)
    _, va = train_test_split(train_idx, test_size=n_val, stratify=y[train_idx], random_state=seed)
    return np.sort(va)


def _vae_summary(stats) -> dict:
    return {"recon_mse_db": reporting.summarize([s["recon_mse_db"] for s in stats]),
            "mean_spectrogram_mse_db": reporting.summarize([s["mean_spectrogram_mse_db"] for s in stats]),
            "test_elbo": reporting.summarize([s["test_elbo"] for s in stats]),
            "epochs_run": [s["epochs_run"] for s in stats], "best_epoch": [s["best_epoch"] for s in stats],
            "clips_per_fold": [s["clips"] for s in stats]}


# ------------------------------------------------------------------------------------------------ generation
def _write_wavs(items, sr):
    """Invert [(path, mel_db), ...] with one Griffin-Lim call (librosa's mel inversion has a large fixed cost per
    call) on the spectrograms joined by silent gaps, cut the audio back apart and write each piece, peak 0.9."""
    import soundfile as sf

    from ..audio import mel_to_audio

    if not items:
        return []
    mels = [m for _, m in items]
    floor = min(float(m.min()) for m in mels)
    gap = np.full((mels[0].shape[0], _GAP), floor, np.float32)
    joined = np.concatenate([x for m in mels for x in (m, gap)][:-1], axis=1)
    y = mel_to_audio(joined, sr=sr, hop_length=_HOP, normalize=False)
    start = 0
    for path, m in items:
        piece = y[start * _HOP:(start + m.shape[1] - 1) * _HOP]  # the length mel_to_audio gives for m alone
        peak = float(np.abs(piece).max())
        sf.write(str(path), piece * (0.9 / peak) if peak > 0 else piece, sr, subtype="PCM_16")
        start += m.shape[1] + _GAP
    return [p for p, _ in items]


def _generate(first, classes, out: Path, opts) -> dict:
    """Reconstructions, prior samples, genre-centred samples and an interpolation from the first fold's VAE."""
    from ..audio import SR

    vae, n = first["vae"], int(opts["n_generate"])
    adir, fdir = out / "audio", out / "figures"
    adir.mkdir(exist_ok=True)
    fdir.mkdir(exist_ok=True)
    seed = int(opts["seed"])
    wavs = []  # (path, mel): all inverted together at the end

    def wav(name, mel):
        wavs.append((adir / name, mel))
        return f"audio/{name}"

    gen = {"sample_rate": SR, "excerpt_seconds": (opts["excerpt_frames"] - 1) * _HOP / SR}

    # Reconstructions: the middle excerpt of one test clip per class, for the first n classes.
    X_te, y_te, g_te = first["X_te"], first["y_te"], first["g_te"]
    picks = []
    for c in np.unique(y_te)[:n]:
        rows = np.flatnonzero(g_te == g_te[y_te == c][0])
        picks.append(rows[len(rows) // 2])
    orig, rec = X_te[picks], vae.reconstruct(X_te[picks])
    gen["reconstructions"] = [
        {"class": classes[y_te[r]], "original": wav(f"recon_{i}_{classes[y_te[r]]}_original.wav", orig[i]),
         "reconstruction": wav(f"recon_{i}_{classes[y_te[r]]}_vae.wav", rec[i])} for i, r in enumerate(picks)]
    gen["reconstructions_figure"] = _spec_grid(
        fdir / "reconstructions.png", [[o, r] for o, r in zip(orig, rec)],
        [[f"{it['class']}: original", "VAE reconstruction"] for it in gen["reconstructions"]], out)

    # Prior samples.
    S, _ = vae.sample(n, random_state=seed)
    gen["prior"] = [wav(f"prior_{i}.wav", s) for i, s in enumerate(S)]
    gen["prior_figure"] = _spec_grid(fdir / "prior_samples.png", [list(S)], [[f"prior {i}" for i in range(n)]], out)

    # Around genre means: centre = mean posterior mean of the genre's training excerpts, spread = half their std.
    F, y = first["F_tr"], first["y_tr"]
    rows, titles, gen["genre"] = [], [], {}
    for c in np.unique(y)[:3]:
        Fc = F[y == c]
        S, _ = vae.sample(n, center=Fc.mean(0), scale=0.5 * Fc.std(0), random_state=seed + 1 + int(c))
        gen["genre"][classes[c]] = [wav(f"genre_{classes[c]}_{i}.wav", s) for i, s in enumerate(S)]
        rows.append(list(S))
        titles.append([f"around {classes[c]} {i}" for i in range(n)])
    gen["genre_figure"] = _spec_grid(fdir / "genre_samples.png", rows, titles, out)

    # Interpolation between test clips of two classes, decoded and joined along time into one clip.
    a, b = picks[0], picks[min(1, len(picks) - 1)]
    joined = np.concatenate(list(vae.interpolate(X_te[a], X_te[b], n_steps=6)), axis=1)
    gen["interpolation"] = {"from": classes[y_te[a]], "to": classes[y_te[b]], "steps": 6,
                            "audio": wav("interpolation.wav", joined)}
    gen["interpolation_figure"] = _spec_grid(fdir / "interpolation.png", [[joined]],
                                             [[f"{classes[y_te[a]]} -> {classes[y_te[b]]}"]], out)
    _write_wavs(wavs, SR)
    return gen


# ------------------------------------------------------------------------------------------------ figures/report
def _spec_grid(path, rows, titles, out: Path) -> str:
    """Spectrogram images in a grid (dB, same colour scale as the data); returns the path relative to out."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_r, n_c = len(rows), max(len(r) for r in rows)
    # One panel per excerpt; a single long spectrogram (the interpolation) gets a wide panel.
    width = 2.6 * n_c if n_c > 1 else min(12.0, 2.6 * rows[0][0].shape[1] / 128)
    fig, axes = plt.subplots(n_r, n_c, figsize=(width, 2.2 * n_r), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_c):
            ax = axes[i][j]
            if j < len(row):
                ax.imshow(row[j], origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0)
                ax.set_title(titles[i][j], fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path.relative_to(out))


def _figures(results, vae_stats, first, classes, out: Path) -> dict:
    from .. import plots

    fdir = out / "figures"
    plots.plot_learning_curves(vae_stats[0]["history"], fdir / "learning_curves.png",
                               "ConvVAE training, fold 1 (nats per excerpt)")
    reporting.plot_confusion(results["models"][results["primary"]]["confusion"], classes,
                             fdir / "confusion_matrix.png", f"{results['primary']} (clips, all folds)")
    reporting.plot_tsne(first["F_te"], first["y_te"], classes, fdir / "tsne_latents.png",
                        "t-SNE of VAE latent means (test excerpts, fold 1)", seed=0, max_points=1500)
    return {"learning_curves": "figures/learning_curves.png", "confusion_matrix": "figures/confusion_matrix.png",
            "tsne": "figures/tsne_latents.png"}


def _pm(d):
    return f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}%"


def report_markdown(results: dict, prefix: str = "") -> str:
    """The VAE section of a report, as Markdown; ``prefix`` is put before the image/audio links (to embed the
    section in a report written in another folder)."""
    c, v, g, p = results["config"], results["vae"], results["generated"], prefix
    lines = [
        "## Convolutional VAE",
        "",
        f"{results['protocol']}. Mel spectrograms ({c['n_mels']} bands, first {c['seconds']:g} s of each clip), "
        f"excerpts of {c['excerpt_frames']} frames ({g['excerpt_seconds']:.2f} s) every {c['excerpt_hop']} frames. "
        f"VAE: conv channels {c['channels']}, latent dimension {c['latent_dim']}, beta {c['beta']:g} with "
        f"{c['kl_warmup_epochs']} warm-up epochs, at most {c['epochs']} epochs with early stopping on the "
        f"validation ELBO (patience {c['patience']}). Features: encoder {c['features']}, standardised.",
        "",
        reporting.markdown_table(
            ["features + classifier", "clip accuracy", "excerpt accuracy", "clip macro F1"],
            [[name, _pm(r["clip_accuracy"]), _pm(r["window_accuracy"]), f"{r['f1_macro']['mean']:.3f}"]
             for name, r in list(results["models"].items()) + list(results["baselines"].items())]),
        "",
        f"Primary: `{results['primary']}`. Baselines use the same excerpts, classifier and vote: `pca_*` = PCA "
        "of the excerpt with as many components as the VAE has latent dimensions; `mel_stats_*` = mean and std "
        "of each mel band over the excerpt.",
        "",
        f"Per-class F1 ({results['primary']}, clips): "
        + ", ".join(f"{k} {x:.2f}" for k, x in results["per_class_f1"].items()) + ".",
        "",
        f"Reconstruction of test excerpts: MSE {v['recon_mse_db']['mean']:.1f} dB² against "
        f"{v['mean_spectrogram_mse_db']['mean']:.1f} dB² for predicting the mean training spectrogram; test ELBO "
        f"{v['test_elbo']['mean']:.0f} nats per excerpt; epochs run {v['epochs_run']} (best {v['best_epoch']}).",
        "",
        f"![learning curves]({p}{results['figures']['learning_curves']}) "
        f"![confusion matrix]({p}{results['figures']['confusion_matrix']}) "
        f"![t-SNE of the latents]({p}{results['figures']['tsne']})",
        "",
        "### Reconstructions of test clips",
        "",
        f"![reconstructions]({p}{g['reconstructions_figure']})",
        "",
    ]
    lines += [f"- {it['class']}: [original]({p}{it['original']}), [VAE]({p}{it['reconstruction']})"
              for it in g["reconstructions"]]
    lines += ["", "### Generated audio (decoded mel spectrograms, Griffin-Lim)", "",
              "Both the originals and the reconstructions above go through the same mel inversion, so they "
              "compare like with like.", "",
              "From the prior N(0, I): " + ", ".join(f"[{i + 1}]({p}{f})" for i, f in enumerate(g["prior"])), "",
              f"![prior samples]({p}{g['prior_figure']})", ""]
    lines += [f"- around the {name} mean: " + ", ".join(f"[{i + 1}]({p}{f})" for i, f in enumerate(files))
              for name, files in g["genre"].items()]
    it = g["interpolation"]
    lines += ["", f"![samples around genre means]({p}{g['genre_figure']})", "",
              f"Interpolation between a {it['from']} and a {it['to']} test excerpt in {it['steps']} steps: "
              f"[audio]({p}{it['audio']})", "", f"![interpolation]({p}{g['interpolation_figure']})"]
    return "\n".join(lines)
