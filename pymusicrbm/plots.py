"""Every figure pymusicrbm draws: learning curves from ``history_``, first-layer weights and filters, confusion
matrices, t-SNE maps, loss curves and spectrogram grids (matplotlib, Agg backend, selected inside the functions so
that importing pymusicrbm never touches the plotting backend). Each function writes one file and returns its
path."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["plot_learning_curves", "plot_filters", "plot_confusion", "plot_tsne", "plot_spectral_weights",
           "plot_loss_curves", "plot_conv_filters", "plot_spectrogram_grid", "plot_tag_scores"]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _curves(history: Mapping) -> dict[str, list[float]]:
    skip = {"epoch", "time"}
    out = {}
    for key, values in history.items():
        if key in skip or not isinstance(values, (list, tuple, np.ndarray)) or len(values) == 0:
            continue
        try:
            out[key] = [float(v) for v in values]
        except (TypeError, ValueError):
            continue
    return out


def plot_learning_curves(history: Mapping | Sequence[Mapping], path: str | os.PathLike, title: str | None = None
                         ) -> Path:
    """One panel per monitored quantity (reconstruction error, pseudo-likelihood, free energies, losses...) against
    the epoch. ``history`` is an estimator's ``history_``: a dict of per-epoch lists (RBM, DBNClassifier) or a list
    of them (DBN, one line per layer). Writes ``path`` (format from its suffix) and returns it."""
    histories = [history] if isinstance(history, Mapping) else list(history)
    if not histories or not all(isinstance(h, Mapping) for h in histories):
        raise ValueError("history must be a dict of per-epoch lists (an estimator's history_) or a list of them")
    curves = [_curves(h) for h in histories]
    # train and held-out versions of a quantity share a panel (pseudo_likelihood / _valid, loss / val_loss)
    panels: dict[str, list[str]] = {}
    for key in sorted({k for c in curves for k in c}):
        base = key.removesuffix("_valid").removesuffix("_train").removeprefix("val_")
        panels.setdefault(base, []).append(key)
    if not panels:
        raise ValueError("history has no numeric per-epoch curves to plot")
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (base, keys) in zip(axes.flat, panels.items()):
        for i, c in enumerate(curves):
            for key in keys:
                if key in c:
                    label = [f"layer {i + 1}"] if len(curves) > 1 else []
                    label += [key.replace("_", " ")] if len(keys) > 1 else []
                    ax.plot(np.arange(1, len(c[key]) + 1), c[key], marker=".", label=", ".join(label) or None)
        ax.set_title(base.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(curves) > 1 or len(keys) > 1:
            ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=100)


def plot_filters(W, path: str | os.PathLike, shape: tuple[int, int] | None = None, n_max: int = 100,
                 title: str | None = None) -> Path:
    """First-layer weights as a grid of images, one per hidden unit.

    W: (n_filters, n_features), e.g. ``rbm.components_`` (a torch tensor is accepted too). ``shape``: the image
    shape of one filter, e.g. (8, 8) for load_digits; default: square if n_features is a perfect square,
    otherwise each filter is drawn as a curve over the feature index (spectral filters). At most ``n_max``
    filters. Each image uses a colour scale symmetric about 0."""
    W = np.asarray(W.detach().cpu() if hasattr(W, "detach") else W, dtype=np.float64)
    if W.ndim != 2 or W.size == 0:
        raise ValueError(f"W must be a non-empty 2-D array (n_filters, n_features), got shape {W.shape}")
    n, d = W.shape
    if shape is None:
        side = math.isqrt(d)
        shape = (side, side) if side * side == d else None
    elif int(np.prod(shape)) != d:
        raise ValueError(f"shape {tuple(shape)} does not hold {d} features")
    W = W[:n_max]
    n = len(W)
    plt = _pyplot()
    if shape is None:
        fig, ax = plt.subplots(figsize=(8, 4))
        lim = np.abs(W).max() or 1.0
        for i, w in enumerate(W):
            ax.plot(w / lim + 2 * i, lw=0.8)
        ax.set_xlabel("feature")
        ax.set_yticks([])
        ax.set_ylabel("filter")
    else:
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.1 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, w in zip(axes.flat, W):
            lim = np.abs(w).max() or 1.0
            ax.imshow(w.reshape(shape), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=100)


def _save(fig, path, dpi: int = 110) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_confusion(confusion, classes: Sequence[str], path, title: str = "confusion matrix") -> Path:
    """Row-normalised confusion matrix (rows: true class) with the counts written in the cells."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_tsne(X, y, classes: Sequence[str], path, title: str = "t-SNE", seed: int = 0, max_points: int = 2000
              ) -> Path:
    """2-D t-SNE of feature rows coloured by class (subsampled to ``max_points``)."""
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    plt = _pyplot()
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    rng = np.random.default_rng(seed)
    if len(X) > max_points:
        keep = rng.choice(len(X), max_points, replace=False)
        X, y = X[keep], y[keep]
    X = StandardScaler().fit_transform(X)
    emb = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (len(X) - 1) / 3)), init="pca",
               random_state=seed).fit_transform(X)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, name in enumerate(classes):
        m = y == k
        if m.any():
            ax.scatter(emb[m, 0], emb[m, 1], s=8, color=cmap(k % cmap.N), label=name)
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


def plot_spectral_weights(W, max_hz: float, path, title: str = "First-layer weights in DFT space") -> Path:
    """Weights over frequency bins (n_units, n_bins) as an image, frequency 0..``max_hz`` along x."""
    plt = _pyplot()
    W = np.asarray(W, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(8, 4))
    lim = np.abs(W).max() or 1.0
    ax.imshow(W, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower",
              extent=[0, max_hz, 0.5, len(W) + 0.5])
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("hidden unit")
    ax.set_title(title)
    return _save(fig, path)


def plot_loss_curves(histories: Mapping[str, Sequence[Mapping]], path,
                     ylabel: str = "mean-field reconstruction MSE") -> Path:
    """One panel per entry of ``histories`` ({title: per-layer history dicts}), train (solid) and valid (dashed)
    loss of every layer against the epoch."""
    plt = _pyplot()
    keys = list(histories)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for layer, h in enumerate(histories[key]):
            ep = h.get("epoch", list(range(1, len(h.get("train_loss", [])) + 1)))
            for name, style in (("train_loss", "-"), ("valid_loss", "--")):
                if name in h:
                    ax.plot(ep, h[name], style, label=f"layer {layer + 1} {name.split('_')[0]}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(key)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_conv_filters(W, path, title: str = "first-layer filters") -> Path:
    """Convolution filters (K, channels, h, w): the first channel of each, a grid of images with a colour scale
    symmetric about 0 per filter."""
    plt = _pyplot()
    W = np.asarray(W)
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
    return _save(fig, path)


def plot_spectrogram_grid(rows: Sequence[Sequence], titles: Sequence[Sequence[str]], path, vmin: float = -80,
                          vmax: float = 0) -> Path:
    """Spectrograms (dB) in a grid, one row per list in ``rows``; a single long spectrogram gets a wide panel."""
    plt = _pyplot()
    n_r, n_c = len(rows), max(len(r) for r in rows)
    width = 2.6 * n_c if n_c > 1 else min(12.0, 2.6 * rows[0][0].shape[1] / 128)
    fig, axes = plt.subplots(n_r, n_c, figsize=(width, 2.2 * n_r), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_c):
            ax = axes[i][j]
            if j < len(row):
                ax.imshow(row[j], origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax)
                ax.set_title(titles[i][j], fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path, dpi=90)


def plot_tag_scores(scores: Mapping[str, Mapping], tags: Sequence[str], path, title: str = "score per tag",
                    chance: float | None = 0.5) -> Path:
    """Horizontal bars of a per-tag score for each model (``{model: {tag: {"mean", "std"}}}``, as the tagging
    study's ``per_tag_roc_auc``), tags sorted by the first model's mean; undefined (None) scores are left blank."""
    plt = _pyplot()
    first = next(iter(scores.values()))
    order = sorted(tags, key=lambda t: -(first[t]["mean"] if first[t]["mean"] is not None else -1))
    n, m = len(order), len(scores)
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.28 * n * max(1, m / 2)))
    height = 0.8 / m
    for j, (name, s) in enumerate(scores.items()):
        mean = [s[t]["mean"] if s[t]["mean"] is not None else np.nan for t in order]
        std = [s[t]["std"] if s[t]["std"] is not None else 0.0 for t in order]
        ax.barh(np.arange(n) + j * height, mean, height, xerr=std, label=name, capsize=2)
    if chance is not None:
        ax.axvline(chance, color="grey", lw=0.8, ls="--")
    ax.set_yticks(np.arange(n) + 0.4 - height / 2, order)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
