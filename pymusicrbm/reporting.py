"""Shared pieces of every study's output: the output folder, ``results.json`` (written atomically), metric
summaries over folds, Markdown tables and the plots people would rather see than read."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np


def prepare_out_dir(path) -> Path:
    """Create ``path`` if needed and check that it is a writable folder (clear ValueError otherwise)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"out_dir {str(out)!r} is not a writable folder: {err}") from None
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path, obj) -> None:
    """Write JSON atomically (temp file + rename): an interrupted run never leaves a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(obj), f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path):
    with open(path) as f:
        return json.load(f)


def summarize(values: Sequence[float]) -> dict:
    """``{"mean", "std", "folds"}`` of one metric over folds."""
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std()), "folds": v.tolist()}


def classification_metrics(y_true, y_pred, classes: Sequence[str]) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix (rows: true class)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = np.arange(len(classes))
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class_precision": dict(zip(classes, p.tolist())),
        "per_class_recall": dict(zip(classes, r.tolist())),
        "per_class_f1": dict(zip(classes, f.tolist())),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def vote(groups, scores) -> tuple[np.ndarray, np.ndarray]:
    """Clip-level decision from window/frame scores: mean of the scores (probabilities or votes) of each clip.

    groups: (n,) clip index of each row; scores: (n, n_classes). Returns (clip ids, argmax class per clip)."""
    groups = np.asarray(groups)
    ids, inv = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(ids), scores.shape[1]))
    np.add.at(sums, inv, scores)
    return ids, sums.argmax(1)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    def fmt(x):
        return f"{x:.3f}" if isinstance(x, (float, np.floating)) else str(x)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion, classes: Sequence[str], path, title: str = "confusion matrix") -> None:
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tsne(X, y, classes: Sequence[str], path, title: str = "t-SNE", seed: int = 0, max_points: int = 2000) -> None:
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
