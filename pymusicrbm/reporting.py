"""Shared pieces of every study's output: the output folder, ``results.json`` (written atomically), metrics and
their summaries over folds, paired comparisons against a baseline (per-fold differences, McNemar's exact test,
bootstrap intervals over clips) and Markdown tables. Figures live in :mod:`pymusicrbm.plots`."""
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
    """``{"mean", "std", "folds"}`` of one metric over folds (std: population std over the folds; 0 for one)."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"summarize: values must be a non-empty 1-D sequence, got shape {v.shape}")
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


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """Macro F1 over ``n_classes`` labels (a class with no true and no predicted clip scores 0, as sklearn's
    ``zero_division=0``); numpy only, so the bootstrap can call it a thousand times."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    tp = np.bincount(y_true[y_true == y_pred], minlength=n_classes)[:n_classes]
    denom = np.bincount(y_true, minlength=n_classes)[:n_classes] + np.bincount(y_pred, minlength=n_classes)[:n_classes]
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


# ------------------------------------------------------------------------------------------ paired comparisons
def mcnemar(correct_a, correct_b) -> dict:
    """McNemar's exact test of two classifiers on the same clips: ``b`` clips only A got right, ``c`` clips only B
    got right; under "equally accurate" b ~ Binomial(b + c, 1/2). Returns ``{"b", "c", "p_value"}`` (two-sided;
    1.0 when the two never disagree)."""
    from scipy.stats import binomtest

    a, bb = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != bb.shape or a.ndim != 1:
        raise ValueError(f"mcnemar: correct_a and correct_b must be 1-D and of one length, got {a.shape} and "
                         f"{bb.shape}")
    b, c = int(np.sum(a & ~bb)), int(np.sum(~a & bb))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"b": b, "c": c, "p_value": p}


def bootstrap_ci(statistic, n: int, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of ``statistic(idx)`` over ``n`` clips resampled with replacement."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, n)) for _ in range(n_boot)]
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def paired_comparison(model_folds: Sequence[dict], base_folds: Sequence[dict], metrics: Sequence[str],
                      n_classes: int, bootstrap: bool = False, seed: int = 0) -> dict:
    """Model against baseline on the same folds and clips.

    Each fold is a dict with ``clip_ids``, ``clip_true``, ``clip_pred`` (and the per-fold ``metrics`` values
    under ``"scores"``). Returns, per metric, the per-fold differences model - baseline as ``{"mean", "std",
    "folds"}`` (with a bootstrap ``ci95`` over the clips when ``bootstrap``: one official split), and
    ``mcnemar`` over every test clip of every fold."""
    if len(model_folds) != len(base_folds):
        raise ValueError(f"paired_comparison: {len(model_folds)} model folds but {len(base_folds)} baseline folds")
    out, a_all, b_all, t_all, pa_all, pb_all = {}, [], [], [], [], []
    for m, b in zip(model_folds, base_folds):
        ids_m, ids_b = np.asarray(m["clip_ids"]), np.asarray(b["clip_ids"])
        if set(ids_m.tolist()) != set(ids_b.tolist()):
            raise ValueError("paired_comparison: model and baseline were tested on different clips")
        order = np.argsort(ids_b)[np.searchsorted(np.sort(ids_b), ids_m)]  # baseline rows in the model's order
        t = np.asarray(m["clip_true"])
        pa, pb = np.asarray(m["clip_pred"]), np.asarray(b["clip_pred"])[order]
        t_all.append(t), pa_all.append(pa), pb_all.append(pb)
        a_all.append(pa == t), b_all.append(pb == t)
    for metric in metrics:
        out[metric] = summarize([m["scores"][metric] - b["scores"][metric] for m, b in zip(model_folds, base_folds)])
    t, pa, pb = np.concatenate(t_all), np.concatenate(pa_all), np.concatenate(pb_all)
    if bootstrap:
        stats = {"clip_accuracy": lambda i: float(np.mean(pa[i] == t[i]) - np.mean(pb[i] == t[i])),
                 "f1_macro": lambda i: macro_f1(t[i], pa[i], n_classes) - macro_f1(t[i], pb[i], n_classes)}
        for metric in metrics:
            if metric in stats:
                out[metric]["ci95"] = bootstrap_ci(stats[metric], len(t), seed=seed)
    out["mcnemar"] = mcnemar(np.concatenate(a_all), np.concatenate(b_all))
    return out


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    def fmt(x):
        return f"{x:.3f}" if isinstance(x, (float, np.floating)) else str(x)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)




def pm(d: dict, digits: int = 3) -> str:
    """``{"mean", "std"[, "ci95"]}`` -> "0.712 ± 0.031" (plus the interval when there is one)."""
    s = f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"
    if "ci95" in d:
        s += f" [{d['ci95'][0]:.{digits}f}, {d['ci95'][1]:.{digits}f}]"
    return s


def signed(d: dict, digits: int = 3) -> str:
    """A difference ``{"mean", "std"[, "ci95"]}`` -> "+0.040 ± 0.020"."""
    s = f"{d['mean']:+.{digits}f} ± {d['std']:.{digits}f}"
    if "ci95" in d:
        s += f" [{d['ci95'][0]:+.{digits}f}, {d['ci95'][1]:+.{digits}f}]"
    return s
