"""RBM estimator: exact small worlds (log Z by enumeration), AIS, likelihood gains from training, features on
load_digits against raw pixels and scikit-learn's BernoulliRBM, scikit-learn estimator checks, bad input."""
import math
import pickle

import numpy as np
import pytest
import torch
from scipy.ndimage import convolve
from scipy.special import expit, logsumexp
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import BernoulliRBM
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from pymusicrbm.rbm import RBM, TrainingDivergedError


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def binary_digits(digits):
    return (digits[0] > 7).astype(np.float64)


# ---- independent references (numpy, float64) ------------------------------------------------------------------

def all_binary_states(n):
    return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.float64)


def ref_log_z_bernoulli(W, b, c):
    """log Z = logsumexp_h [c.h + sum_i softplus(b_i + (W h)_i)], W (n_visible, n_hidden)."""
    h = all_binary_states(W.shape[1])
    return logsumexp(h @ c + np.logaddexp(0, h @ W.T + b).sum(1))


def ref_log_z_gaussian(W, b, c, sigma):
    """Gaussian visible units integrated out: sum_i [b_i a_i / s_i + a_i^2 / 2 + log(s_i sqrt(2 pi))], a = W h."""
    h = all_binary_states(W.shape[1])
    a = h @ W.T
    return logsumexp(h @ c + (b / sigma * a + 0.5 * a**2).sum(1) + np.log(sigma * np.sqrt(2 * np.pi)).sum())


def ref_free_energy(V, W, b, c):
    return -V @ b - np.logaddexp(0, V @ W + c).sum(1)


def params(rbm):
    return rbm.components_.T.astype(np.float64), rbm.intercept_visible_.astype(np.float64), \
        rbm.intercept_hidden_.astype(np.float64)


def exact_mean_log_likelihood(rbm, X):
    W, b, c = params(rbm)
    return float(np.mean(-ref_free_energy(X, W, b, c)) - ref_log_z_bernoulli(W, b, c))


# ---- exact world --------------------------------------------------------------------------------------------

def test_reference_log_z_agrees_with_visible_enumeration():
    # the test's own reference, checked once against brute force over visible states
    rng = np.random.default_rng(0)
    W, b, c = rng.normal(0, 1, (6, 4)), rng.normal(0, 1, 6), rng.normal(0, 1, 4)
    v = all_binary_states(6)
    assert ref_log_z_bernoulli(W, b, c) == pytest.approx(logsumexp(-ref_free_energy(v, W, b, c)), abs=1e-10)


def test_exact_log_partition_method(binary_digits):
    rbm = RBM(n_components=10, n_iter=2, random_state=0).fit(binary_digits[:300])
    assert rbm.exact_log_partition() == pytest.approx(ref_log_z_bernoulli(*params(rbm)), abs=1e-6)


@pytest.mark.parametrize("persistent", [False, True, "fast"])
def test_ais_matches_exact_and_training_raises_likelihood(binary_digits, persistent):
    X = binary_digits
    untrained = RBM(n_components=10, n_iter=0, random_state=0, persistent=persistent).fit(X)
    rbm = RBM(n_components=10, n_iter=4, learning_rate=0.05, random_state=0, persistent=persistent).fit(X)
    ll0, ll1 = exact_mean_log_likelihood(untrained, X), exact_mean_log_likelihood(rbm, X)
    # gains at this seed: 3.8 (CD), 2.9 (PCD), 3.2 (fast PCD) nats
    assert ll1 > ll0 + 2.5, (ll0, ll1)

    exact = ref_log_z_bernoulli(*params(rbm))
    est = rbm.ais_log_partition(n_chains=100, n_betas=3000)
    # float32 parameters vs the float64 reference: 1e-3 on log Z ~ 50 is the parameters' rounding
    assert abs(est.log_z - exact) < max(4 * est.std, 0.05) + 1e-3, (est.log_z, est.std, exact)
    assert est.lower - 0.05 < exact < est.upper + 0.05
    assert rbm.log_likelihood(X, log_z=exact) == pytest.approx(ll1, abs=1e-3)
    assert rbm.log_likelihood(X, n_betas=3000) == pytest.approx(ll1, abs=max(4 * est.std, 0.05) + 2e-3)


def test_ais_gaussian_with_learned_sigma_matches_exact(digits):
    rbm = RBM(n_components=8, visible="gaussian", learning_rate=0.01, learn_sigma=True, n_iter=3,
              random_state=0).fit(digits[0])
    W, b, c = params(rbm)
    exact = ref_log_z_gaussian(W, b, c, rbm.sigma_.astype(np.float64))
    assert rbm.exact_log_partition() == pytest.approx(exact, abs=1e-3)
    est = rbm.ais_log_partition(n_betas=3000)
    assert abs(est.log_z - exact) < max(4 * est.std, 0.05) + 1e-3, (est.log_z, exact)


def test_pseudo_likelihood_matches_reference(binary_digits):
    X = binary_digits[:50]
    rbm = RBM(n_components=16, n_iter=2, random_state=0).fit(binary_digits)
    W, b, c = params(rbm)
    F = ref_free_energy(X, W, b, c)
    ref = np.zeros(len(X))
    for i in range(X.shape[1]):
        Xf = X.copy()
        Xf[:, i] = 1 - Xf[:, i]
        ref += -np.logaddexp(0, -(ref_free_energy(Xf, W, b, c) - F))  # log sigmoid(F(flipped) - F)
    np.testing.assert_allclose(rbm.score_samples(X), ref, rtol=1e-4, atol=1e-3)
    # scikit-learn's stochastic estimate (n_features * one random feature) has the same mean
    sk = BernoulliRBM(n_components=16, random_state=0)
    sk.components_, sk.intercept_hidden_, sk.intercept_visible_ = W.T, c, b
    sk.n_features_in_ = 64
    est = np.mean([sk.set_params(random_state=s).score_samples(X).mean() for s in range(200)])
    assert est == pytest.approx(ref.mean(), rel=0.05)


def test_transform_is_hidden_probability(digits, binary_digits):
    rbm = RBM(n_components=12, n_iter=1, random_state=0).fit(binary_digits)
    W, b, c = params(rbm)
    np.testing.assert_allclose(rbm.transform(binary_digits[:20]), expit(binary_digits[:20] @ W + c), rtol=1e-5,
                               atol=1e-6)
    g = RBM(n_components=12, visible="gaussian", learning_rate=0.01, learn_sigma=True, n_iter=1,
            random_state=0).fit(digits[0])
    Z = (digits[0][:20] - g.mean_) / g.scale_ / g.sigma_
    np.testing.assert_allclose(g.transform(digits[0][:20]), expit(Z @ g.components_.T + g.intercept_hidden_),
                               rtol=1e-4, atol=1e-5)
    assert g.transform(digits[0][:3].astype(np.float32)).dtype == np.float32


def test_gaussian_standardises_inputs(digits):
    X = digits[0]
    a = RBM(n_components=10, visible="gaussian", learning_rate=0.01, n_iter=2, random_state=0).fit(X)
    b = RBM(n_components=10, visible="gaussian", learning_rate=0.01, n_iter=2, random_state=0).fit(
        1000.0 * X + 5000.0)
    np.testing.assert_allclose(a.mean_, X.mean(0))
    np.testing.assert_allclose(b.scale_[X.std(0) > 0], 1000.0 * X.std(0)[X.std(0) > 0])
    np.testing.assert_allclose(a.history_["recon_error"], b.history_["recon_error"], rtol=1e-3)


def test_learned_sigma_tracks_noise_and_stays_bounded():
    # three copies of a binary latent with noise 0.2 (std 0.2/1.02 after standardising), plus pure noise
    rng = np.random.default_rng(0)
    n = 3000
    z = rng.integers(0, 2, n)
    X = np.column_stack([2.0 * z - 1 + 0.2 * rng.normal(size=n) for _ in range(3)] + [rng.normal(size=n)])
    rbm = RBM(n_components=4, visible="gaussian", learn_sigma=True, learning_rate=0.01, sigma_learning_rate=0.01,
              batch_size=20, n_iter=10, random_state=0).fit(X)
    s = rbm.sigma_
    assert 0.1 <= s.min() and s.max() <= 10
    np.testing.assert_allclose(s[:3], 0.2 / 1.02, rtol=0.4)
    assert 0.8 < s[3] < 1.2, s


def test_divergence_raises_clear_error(digits):
    with pytest.raises(TrainingDivergedError, match="learning_rate"):
        RBM(n_components=20, visible="gaussian", standardize=False, learning_rate=5.0, momentum=0.9,
            n_iter=20, random_state=0).fit(digits[0] * 100)


def test_history_and_validation_monitors(binary_digits):
    rbm = RBM(n_components=16, n_iter=3, random_state=0, validation_fraction=0.2).fit(binary_digits)
    h = rbm.history_
    for key in ("recon_error", "pseudo_likelihood", "free_energy_train", "free_energy_valid", "free_energy_gap",
                "pseudo_likelihood_valid", "learning_rate", "time"):
        assert len(h[key]) == 3, key
    assert h["recon_error"][-1] < h["recon_error"][0]
    assert h["pseudo_likelihood"][-1] > h["pseudo_likelihood"][0]
    np.testing.assert_allclose(h["free_energy_gap"], np.subtract(h["free_energy_valid"], h["free_energy_train"]))


def test_default_monitor_is_an_unbiased_one_flip_estimate(binary_digits):
    """monitor=True records scikit-learn's one-flip pseudo-likelihood estimate (cheap), monitor='exact' the exact
    value: training is the same either way, and the estimate agrees with the exact one within its sampling error."""
    kw = dict(n_components=16, n_iter=3, random_state=0)
    cheap, exact = RBM(**kw).fit(binary_digits), RBM(monitor="exact", **kw).fit(binary_digits)
    np.testing.assert_array_equal(cheap.components_, exact.components_)
    assert cheap.history_["recon_error"] == exact.history_["recon_error"]
    X = binary_digits[:1000]                               # the monitor's rows
    W, b, c = params(exact)
    F = ref_free_energy(X, W, b, c)
    log_p = np.stack([-np.logaddexp(0, -(ref_free_energy(np.where(np.arange(64) == i, 1 - X, X), W, b, c) - F))
                      for i in range(64)], 1)              # log p(x_i | x_-i), (rows, features)
    assert exact.history_["pseudo_likelihood"][-1] == pytest.approx(log_p.sum(1).mean(), rel=1e-4)
    se = 64 * log_p.std() / np.sqrt(len(X))                # one random feature per row, scaled by n_features
    assert abs(cheap.history_["pseudo_likelihood"][-1] - log_p.sum(1).mean()) < 4 * se
    assert cheap.history_["pseudo_likelihood"][-1] > cheap.history_["pseudo_likelihood"][0]


def test_learning_rate_decay_schedule(binary_digits):
    rbm = RBM(n_components=4, n_iter=3, learning_rate=0.1, learning_rate_decay=1.0, random_state=0,
              monitor=False).fit(binary_digits[:100])
    np.testing.assert_allclose(rbm.history_["learning_rate"], [0.1, 0.05, 0.1 / 3])


def test_seeded_and_partial_fit(binary_digits):
    X = binary_digits[:400]
    a = RBM(n_components=8, n_iter=1, random_state=3).fit(X)
    b = RBM(n_components=8, n_iter=1, random_state=3).partial_fit(X)
    c = RBM(n_components=8, n_iter=1, random_state=4).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert not np.array_equal(a.components_, c.components_)
    b.partial_fit(X)
    assert b.n_iter_ == 2 and len(b.history_["recon_error"]) == 2


@pytest.mark.parametrize("kw", [dict(), dict(persistent=True, k=2, sparsity_target=0.1),
                                dict(visible="gaussian", learning_rate=0.01, weight_decay=1e-3)])
def test_epoch_in_one_call_equals_step_by_step(digits, binary_digits, kw, monkeypatch):
    """fit runs an epoch's CD steps in one ops.cd_steps_ call; the batch-by-batch loop (what verbose=2 or a process
    group runs) gives the same model and history, bit for bit."""
    from pymusicrbm import ops

    X = digits[0][:300] if kw.get("visible") == "gaussian" else binary_digits[:300]
    real, calls = ops.cd_steps_, []

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "cd_steps_", spy)
    fused = RBM(n_components=8, n_iter=2, batch_size=32, random_state=0, **kw).fit(X)
    assert len(calls) == 2  # one call per epoch
    monkeypatch.setattr(RBM, "_epoch_update", lambda self, *a: None)
    looped = RBM(n_components=8, n_iter=2, batch_size=32, random_state=0, **kw).fit(X)
    for name in ("components_", "intercept_visible_", "intercept_hidden_"):
        np.testing.assert_array_equal(getattr(fused, name), getattr(looped, name))
    assert fused.history_["recon_error"] == looped.history_["recon_error"]


def test_gibbs_and_pickle(binary_digits):
    rbm = RBM(n_components=8, n_iter=1, random_state=0, persistent=True).fit(binary_digits[:200])
    v = rbm.gibbs(binary_digits[:5])
    assert v.shape == (5, 64) and set(np.unique(v)) <= {0.0, 1.0}
    clone = pickle.loads(pickle.dumps(rbm))
    np.testing.assert_array_equal(clone.transform(binary_digits[:5]), rbm.transform(binary_digits[:5]))
    np.testing.assert_array_equal(clone.gibbs(binary_digits[:5]), rbm.gibbs(binary_digits[:5]))


def test_float64_model(binary_digits):
    rbm = RBM(n_components=8, n_iter=1, random_state=0, dtype=torch.float64).fit(binary_digits[:200])
    assert rbm.components_.dtype == np.float64
    assert rbm.exact_log_partition() == pytest.approx(ref_log_z_bernoulli(*params(rbm)), abs=1e-9)


# ---- features on load_digits (scikit-learn's BernoulliRBM example) ------------------------------------------------

def nudge(X, y):
    shifts = [[[0, 1, 0], [0, 0, 0], [0, 0, 0]], [[0, 0, 0], [1, 0, 0], [0, 0, 0]],
              [[0, 0, 0], [0, 0, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 0], [0, 1, 0]]]
    moved = [np.apply_along_axis(lambda x: convolve(x.reshape(8, 8), w, mode="constant").ravel(), 1, X)
             for w in shifts]
    return np.concatenate([X] + moved), np.concatenate([y] * 5)


def test_features_beat_raw_pixels_and_match_sklearn(digits):
    X, y = nudge(digits[0] / 16.0, digits[1])
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0)

    def accuracy(Ftr, Fte):
        # one BLAS thread: on a shared 2-core machine competing thread pools make lbfgs 50x slower
        with threadpool_limits(1):
            return LogisticRegression(C=10, max_iter=300).fit(Ftr, ytr).score(Fte, yte)

    settings = dict(n_components=100, learning_rate=0.06, n_iter=10, batch_size=10, random_state=0)
    ours = RBM(monitor=False, **settings).fit(Xtr)
    with threadpool_limits(1):
        theirs = BernoulliRBM(**settings).fit(Xtr)
    raw = accuracy(Xtr, Xte)
    acc_ours = accuracy(ours.transform(Xtr), ours.transform(Xte))
    acc_sk = accuracy(theirs.transform(Xtr), theirs.transform(Xte))
    print(f"raw pixels {raw:.4f}, pymusicrbm RBM {acc_ours:.4f}, sklearn BernoulliRBM {acc_sk:.4f}")
    assert acc_ours > raw + 0.05
    # match or beat: within two standard errors of a difference of accuracies on this test set
    assert acc_ours >= acc_sk - 2 * math.sqrt(2 * 0.1 * 0.9 / len(yte))


def test_pipeline_and_grid_search(binary_digits, digits):
    pipe = Pipeline([("rbm", RBM(n_iter=2, random_state=0, monitor=False)),
                     ("clf", LogisticRegression(max_iter=200))])
    with threadpool_limits(1):
        gs = GridSearchCV(pipe, {"rbm__n_components": [4, 16]}, cv=2).fit(binary_digits[:400], digits[1][:400])
    assert gs.best_params_ == {"rbm__n_components": 16}


# ---- scikit-learn estimator checks ----------------------------------------------------------------------------

@parametrize_with_checks([RBM(n_components=3, n_iter=2, random_state=0),
                          RBM(n_components=3, n_iter=2, random_state=0, visible="gaussian", learning_rate=0.01,
                              persistent=True, learn_sigma=True),
                          RBM(n_components=3, n_iter=2, random_state=0, persistent="fast")])
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ---- bad input --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted(binary_digits):
    return RBM(n_components=4, n_iter=1, random_state=0).fit(binary_digits[:100])


def test_wrong_feature_count(fitted):
    with pytest.raises(ValueError, match="X has 10 features, but RBM is expecting 64 features"):
        fitted.transform(np.zeros((3, 10)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input(binary_digits, bad):
    X = binary_digits[:20].copy()
    X[3, 5] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        RBM(n_components=2, n_iter=1).fit(X)


def test_empty_input():
    with pytest.raises(ValueError, match="0 sample"):
        RBM(n_components=2).fit(np.zeros((0, 5)))


def test_unknown_visible(binary_digits):
    # scikit-learn's InvalidParameterError (a ValueError) names the parameter and the allowed values
    with pytest.raises(ValueError, match="'visible' parameter of RBM must be a str among .*'bernoulli'.*"
                                         "Got 'poisson'"):
        RBM(visible="poisson").fit(binary_digits[:10])


@pytest.mark.parametrize("kw, msg", [({"persistent": "slow"}, "'persistent' parameter of RBM must be"),
                                     ({"learn_sigma": True}, "learn_sigma=True needs visible='gaussian'"),
                                     ({"k": 0}, "'k' parameter of RBM must be an int in the range \\[1, inf\\)"),
                                     ({"dtype": "float16"}, "'dtype' parameter of RBM must be"),
                                     ({"momentum": 1.5}, "'momentum' parameter of RBM must be a float in the "
                                                         "range \\[0.0, 0.999999\\]")])
def test_bad_parameters(binary_digits, kw, msg):
    with pytest.raises(ValueError, match=msg):
        RBM(**kw).fit(binary_digits[:10])


# ---- plots ------------------------------------------------------------------------------------------------------

def test_plots(tmp_path, binary_digits):
    import matplotlib.image as mpimg

    from pymusicrbm.plots import plot_filters, plot_learning_curves
    rbm = RBM(n_components=16, n_iter=2, random_state=0, validation_fraction=0.2).fit(binary_digits[:300])
    for path in (plot_learning_curves(rbm.history_, tmp_path / "curves.png"),
                 plot_filters(rbm.components_, tmp_path / "filters.png"),
                 plot_filters(rbm.components_[:, :60], tmp_path / "spectral.png")):
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 100 and img[..., :3].std() > 0.01  # a real, non-blank image
    with pytest.raises(ValueError, match="does not hold 64 features"):
        plot_filters(rbm.components_, tmp_path / "x.png", shape=(7, 7))
    with pytest.raises(ValueError, match="no numeric per-epoch curves"):
        plot_learning_curves({"epoch": [1, 2]}, tmp_path / "x.png")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_input_keeps_its_dtype(dtype):
    # scikit-learn sees no numpy dtype on a tensor and would make float32 tensors float64 (half the speed)
    from pymusicrbm.dbn import DBN

    X = (torch.rand(200, 12, generator=torch.Generator().manual_seed(0)) < 0.4).to(dtype)
    rbm = RBM(n_components=4, n_iter=1, random_state=0).fit(X)
    assert rbm._W.dtype == dtype and rbm.transform(X).dtype == np.dtype(str(dtype).split(".")[1])
    assert DBN((4, 3), n_iter=1, random_state=0).fit(X).rbms_[1]._W.dtype == dtype
