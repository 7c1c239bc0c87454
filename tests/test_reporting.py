"""reporting: metrics against scikit-learn, McNemar's exact test against a hand computation, bootstrap intervals,
paired per-fold differences (clips matched by id), JSON and Markdown helpers."""
import json
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pymusicrbm import reporting


def _mcnemar_by_hand(b, c):
    """Two-sided exact McNemar: twice the smaller binomial tail of Binomial(b + c, 1/2), at most 1."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def test_mcnemar_counts_discordant_clips_and_matches_the_exact_binomial():
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0], bool)   # A right
    b = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], bool)   # B right
    r = reporting.mcnemar(a, b)
    assert (r["b"], r["c"]) == (5, 1)                    # 5 clips only A got right, 1 only B
    assert r["p_value"] == pytest.approx(_mcnemar_by_hand(5, 1)) == pytest.approx(2 * 7 / 64)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.random(60) < 0.7, rng.random(60) < 0.5
        r = reporting.mcnemar(x, y)
        assert r["p_value"] == pytest.approx(_mcnemar_by_hand(r["b"], r["c"]), rel=1e-9)
    assert reporting.mcnemar(a, a) == {"b": 0, "c": 0, "p_value": 1.0}
    with pytest.raises(ValueError, match="one length"):
        reporting.mcnemar(a, b[:5])


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(10):
        t, p = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
        p[:3] = 6 % 5
        ref = f1_score(t, p, labels=np.arange(6), average="macro", zero_division=0)
        assert reporting.macro_f1(t, p, 6) == pytest.approx(ref)


def test_classification_metrics_and_summarize():
    m = reporting.classification_metrics([0, 0, 1, 2], [0, 1, 1, 2], ["a", "b", "c"])
    assert m["accuracy"] == 0.75
    assert m["per_class_f1"] == pytest.approx({"a": 2 / 3, "b": 2 / 3, "c": 1.0})
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    s = reporting.summarize([0.5, 0.7, 0.9])
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    assert s["folds"] == [0.5, 0.7, 0.9]
    with pytest.raises(ValueError, match="non-empty"):
        reporting.summarize([])


def test_bootstrap_interval_covers_the_estimate_and_narrows_with_more_clips():
    rng = np.random.default_rng(2)
    widths = []
    for n in (20, 500):
        correct = rng.random(n) < 0.7
        lo, hi = reporting.bootstrap_ci(lambda i: correct[i].mean(), n, seed=0)
        assert lo <= correct.mean() <= hi
        widths.append(hi - lo)
    # the normal approximation's width is 2 * 1.96 * sqrt(p (1 - p) / n)
    assert widths[1] == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 500), rel=0.25)
    assert widths[0] > 3 * widths[1]


def _fold(ids, true, pred):
    t, p = np.asarray(true), np.asarray(pred)
    return {"clip_ids": np.asarray(ids), "clip_true": t, "clip_pred": p,
            "scores": {"clip_accuracy": float(np.mean(t == p))}}


def test_paired_comparison_matches_clips_by_id_and_differences_folds():
    # fold 0: clips 0-3, fold 1: clips 4-7; the baseline lists its clips in another order
    model = [_fold([0, 1, 2, 3], [0, 1, 0, 1], [0, 1, 0, 0]), _fold([4, 5, 6, 7], [1, 1, 0, 0], [1, 1, 0, 0])]
    base = [_fold([3, 2, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0]), _fold([7, 6, 5, 4], [0, 0, 1, 1], [1, 1, 1, 0])]
    r = reporting.paired_comparison(model, base, ["clip_accuracy"], n_classes=2)
    np.testing.assert_allclose(r["clip_accuracy"]["folds"], [0.75 - 0.75, 1.0 - 0.25])
    assert r["clip_accuracy"]["mean"] == pytest.approx(0.375)
    # by clip: model right on 0,1,2,4,5,6,7; baseline right on 0,1,3,5 -> only model: 2,4,6,7; only baseline: 3
    assert (r["mcnemar"]["b"], r["mcnemar"]["c"]) == (4, 1)
    assert r["mcnemar"]["p_value"] == pytest.approx(_mcnemar_by_hand(4, 1))
    with pytest.raises(ValueError, match="different clips"):
        reporting.paired_comparison(model, [base[1], base[0]], ["clip_accuracy"], n_classes=2)
    boot = reporting.paired_comparison(model[:1], base[:1], ["clip_accuracy"], n_classes=2, bootstrap=True)
    lo, hi = boot["clip_accuracy"]["ci95"]
    assert lo <= 0.0 <= hi


def test_write_json_is_plain_json(tmp_path):
    path = tmp_path / "r.json"
    reporting.write_json(path, {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan"), 4: tmp_path})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": None, "4": str(tmp_path)}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_markdown_helpers():
    assert reporting.markdown_table(["x", "y"], [[1, 0.5]]) == "| x | y |\n|---|---|\n| 1 | 0.500 |"
    assert reporting.pm({"mean": 0.5, "std": 0.25}) == "0.500 ± 0.250"
    assert reporting.signed({"mean": -0.1, "std": 0.05, "ci95": [-0.2, 0.0]}) == "-0.100 ± 0.050 [-0.200, +0.000]"
