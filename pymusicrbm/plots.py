"""Figures for trained models: learning curves from ``history_`` and first-layer weights as images (matplotlib,
Agg backend, selected inside the functions so that importing pymusicrbm never touches the plotting backend)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["plot_learning_curves", "plot_filters"]


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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
