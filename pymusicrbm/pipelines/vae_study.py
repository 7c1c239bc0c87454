"""The VAE study: convolutional VAE latents of mel-spectrogram excerpts as genre features, and audio generation.

Per fold: mel spectrograms of the first ``seconds`` of every clip -> excerpts of ``excerpt_frames`` frames ->
ConvVAE trained on the training clips' excerpts (early stopping on held-out training clips) -> encoder means
(optionally also log-variances) -> standardised -> an RBF SVM and logistic regression (:mod:`.classifiers`) ->
excerpt predictions -> clip prediction by vote (the SVM: one-hot votes; logistic regression: mean probability), or
with ``clip_features="stats"`` the mean and std of the clip's excerpt features -> one prediction a clip.
The primary classifier (``classifier``; the RBF SVM by default, as in the DBN pipeline) is the headline.
Baselines: ``mfcc_svm`` (the baseline of every study, on the same folds, with paired differences), and with the
same excerpts, primary classifier and vote, PCA of the standardised excerpt (as many components as the VAE has
latent dimensions: is the VAE better than a linear code?) and the per-band mean and std of the excerpt.

The first fold's model also writes the generation part of the report: reconstructions of test clips beside the
originals, samples from the prior, samples around a genre's mean latent and an interpolation between two clips,
as spectrogram images and Griffin-Lim wav files.

``run(data, out_dir, **options) -> dict`` writes ``out_dir/results.json`` (the one schema of :mod:`._study`:
``models`` ``vae_svm`` and ``vae_logreg``, ``baselines`` ``mfcc_svm``, ``pca_<clf>``, ``mel_stats_<clf>``; plus
``vae`` (reconstruction MSE against the mean-spectrogram baseline, test ELBO, epochs), ``generated`` (the audio
and image files), ``figures``, ``timings``) and ``out_dir/report.md``. Here a "window" is one excerpt (one clip
with ``clip_features="stats"``). Protocol:
stratified k-fold by clip, or an official split whose validation list (if any) steers the VAE's early stopping.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import plots, reporting
from . import _study, classifiers

__all__ = ["DEFAULTS", "QUICK", "add_arguments", "run", "report_markdown"]

_HOP = 512  # mel frame hop (audio.mel_spectrogram's default)
_GAP = 8    # silent frames between spectrograms inverted together (> n_fft / hop: the pieces do not interact)

DEFAULTS = dict(
    _study.COMMON,
    n_mels=64,
    seconds="all",               # whole clips (or the first N seconds): on the real-music development set whole
                                 # clips took the CPU-sized network from 0.52 (first 10 s) to ~0.63 clip accuracy
                                 # (benchmarks/results/devset_sweep_vae.json)
    excerpt_frames=128,          # ~2.97 s at 22050 Hz, hop 512
    excerpt_hop=64,              # 50% overlap between excerpts
    latent_dim=32,
    channels=(32, 64, 128, 256),
    beta=1.0,
    kl_warmup_epochs=10,
    epochs=100,
    patience=10,
    batch_size=64,
    lr=1e-3,
    features="mean",             # or "mean+logvar"
    clip_features="vote",        # "vote": classify excerpts, vote per clip; "stats": classify each clip's mean and
                                 # std of its excerpts' features (also for the PCA / mel-stats baselines)
    classifier="svm",            # primary classifier (headline, PCA / mel-stats baselines): "svm" or "logreg"
    valid_fraction=0.1,          # training clips held out for the VAE's early stopping
    grid_search=True,            # classifier hyper-parameters by grouped CV on the training clips
    n_generate=4,
    device=None,                 # cuda when available
)
# The demo setting: a small network, short clips, 2 folds; about a minute a fold on 2 CPU cores.
# Small batches: with a few hundred excerpts, batches of 64 give too few Adam steps in 20 epochs. One torch thread:
# the small network gains little from a second one, and on a busy 2-core machine two threads ran the demo's
# training 7x slower (13 s -> 190 s, measured) as each waits for the other at every op.
QUICK = {"folds": 2, "seconds": 10.0, "excerpt_hop": 128, "channels": (16, 32, 64, 64), "latent_dim": 16,
         "epochs": 20, "patience": 4, "kl_warmup_epochs": 4, "batch_size": 16, "lr": 2e-3, "grid_search": False,
         "n_generate": 2, "num_threads": 1}
_CLASSIFIER = {"svm": "svm", "logreg": "logistic_regression"}


def add_arguments(parser) -> None:
    """Options of ``pymusicrbm vae`` (defaults None mean: the value from DEFAULTS, or QUICK with --quick)."""
    _study.add_common_arguments(parser)
    d = DEFAULTS
    g = parser.add_argument_group("VAE study")
    g.add_argument("--n-mels", type=int, choices=(64, 96), default=None, help=f"mel bands (default {d['n_mels']})")
    g.add_argument("--seconds", type=_study.seconds_arg, default=None,
                   help=f"first N seconds of each clip, or 'all' for whole clips (default {d['seconds']})")
    g.add_argument("--excerpt-frames", type=int, default=None,
                   help=f"excerpt length in frames of 512 samples (default {d['excerpt_frames']}, about 3 s)")
    g.add_argument("--excerpt-hop", type=int, default=None,
                   help=f"frames between excerpts (default {d['excerpt_hop']})")
    g.add_argument("--latent-dim", type=int, default=None, help=f"latent dimension (default {d['latent_dim']})")
    g.add_argument("--channels", type=str, default=None,
                   help="comma-separated conv channels, e.g. 32,64,128,256 (default)")
    g.add_argument("--beta", type=float, default=None, help=f"KL weight (default {d['beta']})")
    g.add_argument("--kl-warmup-epochs", type=int, default=None, help=f"default {d['kl_warmup_epochs']}")
    g.add_argument("--epochs", type=int, default=None, help=f"maximum epochs (default {d['epochs']})")
    g.add_argument("--patience", type=int, default=None, help=f"early-stopping patience (default {d['patience']})")
    g.add_argument("--batch-size", type=int, default=None, help=f"default {d['batch_size']}")
    g.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {d['lr']})")
    g.add_argument("--features", choices=("mean", "mean+logvar"), default=None,
                   help="encoder outputs used as features (default mean)")
    g.add_argument("--clip-features", choices=("vote", "stats"), default=None,
                   help="vote: classify excerpts and vote per clip (default); stats: classify each clip by the mean "
                        "and std of its excerpts' features")
    g.add_argument("--classifier", choices=("svm", "logreg"), default=None,
                   help="primary classifier for the headline and the PCA / mel-stats baselines (default svm)")
    g.add_argument("--no-grid-search", dest="grid_search", action="store_false", default=None,
                   help="fixed classifier hyper-parameters instead of a grouped CV grid search")
    g.add_argument("--n-generate", type=int, default=None, help="generated clips per kind (default 4)")


def _options(options: dict) -> dict:
    opts = _study.merge_options("vae_study", DEFAULTS, QUICK, options)
    if isinstance(opts["channels"], str):
        try:
            opts["channels"] = tuple(int(c) for c in opts["channels"].split(","))
        except ValueError:
            raise ValueError(f"channels must be comma-separated integers, got {opts['channels']!r}") from None
    opts["channels"] = tuple(opts["channels"])
    if opts["classifier"] not in _CLASSIFIER:
        raise ValueError(f"classifier must be 'svm' or 'logreg', got {opts['classifier']!r}")
    if opts["features"] not in ("mean", "mean+logvar"):
        raise ValueError(f"features must be 'mean' or 'mean+logvar', got {opts['features']!r}")
    if opts["clip_features"] not in ("vote", "stats"):
        raise ValueError(f"clip_features must be 'vote' or 'stats', got {opts['clip_features']!r}")
    if opts["seconds"] != "all" and not (isinstance(opts["seconds"], (int, float)) and opts["seconds"] > 0):
        raise ValueError(f"seconds must be > 0 or 'all' (whole clips), got {opts['seconds']!r}")
    if opts["n_mels"] not in (64, 96):
        raise ValueError(f"n_mels must be 64 or 96, got {opts['n_mels']!r}")
    return opts


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
    opts = _options(options)
    with _study.thread_scope(opts["num_threads"]):
        return _run(data, out_dir, opts)


def _run(data, out_dir, opts) -> dict:
    from .. import audio
    from ..vae import receptive_field

    t_start = time.perf_counter()
    out = reporting.prepare_out_dir(out_dir)
    ds = _study.load_dataset(data, "vae_study")
    classes, labels = list(ds.classes), np.asarray(ds.labels)
    rf = receptive_field(len(opts["channels"]))
    if opts["excerpt_frames"] < rf:
        raise ValueError(f"excerpt_frames={opts['excerpt_frames']} is shorter than the receptive field of the "
                         f"{len(opts['channels'])}-layer encoder ({rf} frames)")
    frames_per_clip = np.inf if opts["seconds"] == "all" else 1 + int(opts["seconds"] * audio.SR) // _HOP
    if frames_per_clip < opts["excerpt_frames"]:
        raise ValueError(f"seconds={opts['seconds']} gives {frames_per_clip} frames, fewer than one excerpt of "
                         f"excerpt_frames={opts['excerpt_frames']}")
    (out / "checkpoints").mkdir(exist_ok=True)
    feats, usable, skipped, t_features = _study.extract_features(
        ds, {"mel": ("mel", {"n_mels": opts["n_mels"], "seconds": _study.mel_seconds(opts["seconds"])})}, opts,
        out)
    splits, protocol = _study.make_splits(ds, usable, opts)

    def fold(k, train, test, valid, fold_dir):
        if len(valid) == 0:  # no official validation list: hold out some training clips for early stopping
            valid = _holdout(train, labels, opts["valid_fraction"], int(opts["seed"]))
        return _fold(k, train, test, valid, feats, labels, len(classes), out, opts)

    folds, first = _study.run_folds(splits, out, fold, opts["resume"], opts["verbose"])
    clf = opts["classifier"]
    vae_stats = [f["vae"] for f in folds]
    results = _study.build_results(
        "vae_study", ds, usable, skipped, {**opts, "channels": list(opts["channels"]), "cache_dir": str(
            opts["cache_dir"] or out / "cache")}, protocol, folds, ["vae_svm", "vae_logreg"],
        [_study.BASELINE, f"pca_{clf}", f"mel_stats_{clf}"], f"vae_{clf}", vae=_vae_summary(vae_stats))
    results["protocol"]["description"] += (
        f"; window = excerpt of {opts['excerpt_frames']} frames; clip label = vote over its excerpts"
        if opts["clip_features"] == "vote" else
        f"; clip features = mean and std of the features of its excerpts of {opts['excerpt_frames']} frames")
    if opts["save_model"]:
        _save_final(feats, usable, ds, out, opts)
    t0 = time.perf_counter()
    results["generated"] = _generate(first, classes, out, opts)
    results["figures"] = _figures(results, vae_stats, first, classes, out)
    results["timings"] = {"features_s": round(t_features, 2), "training_s": [s["train_seconds"] for s in vae_stats],
                          "generation_and_figures_s": round(time.perf_counter() - t0, 2),
                          "total_s": round(time.perf_counter() - t_start, 2)}
    (out / "report.md").write_text(report_markdown(results) + "\n")
    reporting.write_json(out / "results.json", results)
    return results


def _fold(k, train_clips, test_clips, valid_clips, feats, labels, n_classes, out: Path, opts) -> tuple[dict, dict]:
    """One fold: train (or reload) the VAE on the training clips' excerpts, classify latents and baselines."""
    from ..vae import ConvVAE

    mels, seed, verbose, clf = feats["mel"], int(opts["seed"]), int(opts["verbose"]), opts["classifier"]
    log = print if verbose else (lambda *a, **kw: None)
    log(f"[vae] fold {k + 1}: {len(train_clips) - len(valid_clips)} training, {len(valid_clips)} validation, "
        f"{len(test_clips)} test clips")
    X_tr, g_tr = _excerpts(mels, train_clips, opts["excerpt_frames"], opts["excerpt_hop"])
    X_te, g_te = _excerpts(mels, test_clips, opts["excerpt_frames"], opts["excerpt_hop"])
    y_tr, y_te = labels[g_tr], labels[g_te]
    in_valid = np.isin(g_tr, valid_clips)

    t0 = time.perf_counter()
    model_path = out / "checkpoints" / f"vae_fold{k}.safetensors"
    if k == 0 and verbose and not (opts["resume"] and model_path.exists()):
        log(_time_estimate(X_tr[~in_valid], opts))
    if opts["resume"] and model_path.exists():
        vae = ConvVAE.load(model_path, device=opts["device"])
        log(f"[vae] fold {k + 1}: reusing {model_path}")
    else:
        vae = _fit_vae(X_tr, in_valid, seed + k, out / "checkpoints" / f"vae_fold{k}.training.safetensors", opts)
        vae.save(model_path)
    t_train = time.perf_counter() - t0

    # The classifiers see all training clips (the validation clips only steered the VAE's early stopping).
    with_lv = opts["features"] == "mean+logvar"
    F_tr, F_te = vae.transform(X_tr, return_logvar=with_lv), vae.transform(X_te, return_logvar=with_lv)

    def rows(A, g):  # (features, labels, clip of each row): excerpts, or one row a clip with clip_features="stats"
        if opts["clip_features"] == "vote":
            return A, labels[g], g
        A, ids = classifiers.clip_statistics(A, g)
        return A, labels[ids], ids

    def classify(kind, A_tr, A_te):
        return classifiers.classify_windows(_CLASSIFIER[kind], rows(A_tr, g_tr), rows(A_te, g_te), n_classes,
                                            opts["svm_grid"] if opts["grid_search"] else "none", seed)

    rec = {"fold": k, "models": {f"vae_{kind}": classify(kind, F_tr, F_te) for kind in _CLASSIFIER},
           "baselines": {_study.BASELINE: _study.mfcc_baseline(feats["mfcc"], labels, train_clips, test_clips,
                                                               n_classes, opts)}}
    B_tr, pca = _baseline_features(X_tr, "pca", n_components=opts["latent_dim"], seed=seed)
    rec["baselines"][f"pca_{clf}"] = classify(clf, B_tr, _baseline_features(X_te, "pca", pca)[0])
    rec["baselines"][f"mel_stats_{clf}"] = classify(clf, _baseline_features(X_tr, "mel_stats")[0],
                                                    _baseline_features(X_te, "mel_stats")[0])
    rec["vae"] = {
        "recon_mse_db": float(np.mean((vae.reconstruct(X_te) - X_te) ** 2)),
        "mean_spectrogram_mse_db": float(np.mean((X_tr[~in_valid].mean(0) - X_te) ** 2)),
        "test_elbo": float(vae.score(X_te)),
        "epochs_run": int(vae.n_iter_), "best_epoch": int(vae.best_epoch_),
        "train_seconds": round(t_train, 2), "history": vae.history_,
        "clips": {"train": len(train_clips) - len(valid_clips), "valid": len(valid_clips), "test": len(test_clips)},
    }
    last = rec["models"][f"vae_{clf}"]
    log(f"[vae] fold {k + 1}: clip accuracy {np.mean(last['clip_true'] == last['clip_pred']):.3f}; "
        f"reconstruction MSE {rec['vae']['recon_mse_db']:.1f} dB^2 (mean spectrogram "
        f"{rec['vae']['mean_spectrogram_mse_db']:.1f}); {t_train:.1f} s training")
    first = {"vae": vae, "y_tr": y_tr, "F_tr": F_tr[:, :vae.latent_dim], "X_te": X_te, "y_te": y_te, "g_te": g_te,
             "F_te": F_te[:, :vae.latent_dim]}
    return rec, first


def _make_vae(opts, **override):
    """The study's ConvVAE from its options (``override``: constructor arguments to change)."""
    from ..vae import ConvVAE

    kw = dict(n_mels=opts["n_mels"], n_frames=opts["excerpt_frames"], latent_dim=opts["latent_dim"],
              channels=opts["channels"], beta=opts["beta"], kl_warmup_epochs=opts["kl_warmup_epochs"],
              learning_rate=opts["lr"], batch_size=opts["batch_size"], n_iter=opts["epochs"],
              n_iter_no_change=opts["patience"], device=opts["device"], verbose=int(opts["verbose"]))
    return ConvVAE(**{**kw, **override})


def _fit_vae(X, in_valid, seed: int, ckpt: Path, opts):
    """A ConvVAE fitted on the excerpts ``X`` (those ``in_valid`` steer early stopping), checkpointed to ``ckpt``
    (and resumed from it with ``opts["resume"]``)."""
    vae = _make_vae(opts, random_state=seed)
    return vae.fit(X[~in_valid], X_valid=X[in_valid] if in_valid.any() else None, checkpoint=ckpt,
                   resume=ckpt if opts["resume"] and ckpt.exists() else None)


def _save_final(feats, usable, ds, out: Path, opts) -> None:
    """The final pipeline (a VAE on every usable clip's excerpts, then the headline classifier) saved in
    ``opts["save_model"]``."""
    from . import saved

    labels = np.asarray(ds.labels)
    valid = _holdout(usable, labels, opts["valid_fraction"], int(opts["seed"]))
    X, g = _excerpts(feats["mel"], usable, opts["excerpt_frames"], opts["excerpt_hop"])
    vae = _fit_vae(X, np.isin(g, valid), int(opts["seed"]), out / "checkpoints" / "vae_final.training.safetensors",
                   opts)
    saved.fit_vae(vae, feats, usable, ds, opts).save(opts["save_model"])


def _time_estimate(X, opts) -> str:
    """:func:`._study.time_estimate` of training on the excerpts ``X``: an upper bound (early stopping may end
    sooner), with what to change on a CPU."""
    def fit_probe(rows, device):
        _make_vae(opts, n_iter=1, device=device, random_state=0, verbose=0).fit(X[:rows])

    return _study.time_estimate(
        "vae", fit_probe, len(X), opts, rows="excerpts", early_stopping=True,
        suggestion="--quick runs the small network in minutes; or cut --epochs (e.g. 20) and --patience, use "
                   "--channels 16,32,64,64, --excerpt-hop 128 (half the excerpts) or fewer --folds; a GPU (--device "
                   "cuda) trains the defaults in minutes. Ctrl-C keeps finished folds (--resume continues).")


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
    return str(plots.plot_spectrogram_grid(rows, titles, path).relative_to(out))


def _figures(results, vae_stats, first, classes, out: Path) -> dict:
    from .. import plots

    fdir = out / "figures"
    plots.plot_learning_curves(vae_stats[0]["history"], fdir / "learning_curves.png",
                               "ConvVAE training, fold 1 (nats per excerpt)")
    plots.plot_confusion(results["models"][results["headline"]]["confusion"], classes,
                         fdir / "confusion_matrix.png", f"{results['headline']} (clips, all folds)")
    plots.plot_tsne(first["F_te"], first["y_te"], classes, fdir / "tsne_latents.png",
                    "t-SNE of VAE latent means (test excerpts, fold 1)", seed=0, max_points=1500)
    return {"learning_curves": "figures/learning_curves.png", "confusion_matrix": "figures/confusion_matrix.png",
            "tsne": "figures/tsne_latents.png"}


def report_markdown(results: dict, prefix: str = "") -> str:
    """The VAE section of a report, as Markdown; ``prefix`` is put before the image/audio links (to embed the
    section in a report written in another folder)."""
    c, v, g, p = results["config"], results["vae"], results["generated"], prefix
    lines = [
        "## Convolutional VAE",
        "",
        f"{results['protocol']['description']}. Mel spectrograms ({c['n_mels']} bands, "
        f"{'whole clips' if c['seconds'] == 'all' else 'first %g s of each clip' % c['seconds']}), excerpts of {c['excerpt_frames']} frames ({g['excerpt_seconds']:.2f} s) every "
        f"{c['excerpt_hop']} frames. "
        f"VAE: conv channels {c['channels']}, latent dimension {c['latent_dim']}, beta {c['beta']:g} with "
        f"{c['kl_warmup_epochs']} warm-up epochs, at most {c['epochs']} epochs with early stopping on the "
        f"validation ELBO (patience {c['patience']}). Features: encoder {c['features']}"
        f"{', mean and std over each clip' if c.get('clip_features') == 'stats' else ''}, standardised.",
        "",
        _study.models_table(results),
        "",
        _study.PROTOCOL_NOTE,
        "",
        "Excerpt accuracy (mean ± std over folds): " + ", ".join(
            f"{name} {reporting.pm(r['window_accuracy'])}"
            for name, r in list(results["models"].items()) + list(results["baselines"].items())) + ".",
        "",
        f"Headline: `{results['headline']}`. Baselines: `mfcc_svm`, the MFCC + SVM of every study; with the same "
        "excerpts, classifier and vote, `pca_*` = PCA of the excerpt with as many components as the VAE has latent "
        "dimensions; `mel_stats_*` = mean and std of each mel band over the excerpt.",
        "",
        f"Per-class F1 ({results['headline']}, clips, mean over folds): "
        + ", ".join(f"{k} {x['mean']:.2f}" for k, x in results["models"][results["headline"]]["per_class_f1"].items())
        + ".",
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
