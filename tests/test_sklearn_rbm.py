"""scikit-learn's own BernoulliRBM tests (sklearn/neural_network/tests/test_rbm.py, 1.9), ported to
``pymusicrbm.RBM`` with the same constructor arguments, plus ``check_estimator`` with default parameters for every
estimator that takes 2-D X, and dtype checks.

What is adapted, and only that: scikit-learn's private helpers (``_mean_hiddens``, ``_sample_hiddens``) become the
public ``transform`` and ``sample_hidden``; numbers that come from scikit-learn's exact random stream (the -21.0
score, the hard-coded weights of ``test_fit_gibbs``) become a comparison with a ``BernoulliRBM`` fitted the same way
in the same test; the class name in verbose lines and feature names is ours. Where the defaults differ on purpose
(CD-1 with momentum 0.5 here, PCD-1 without momentum there) the test says so.
"""
import re
import sys
from io import StringIO

import numpy as np
import pytest
import torch
from scipy.special import expit
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.neural_network import BernoulliRBM
from sklearn.utils.estimator_checks import check_estimator
from sklearn.utils.fixes import CSC_CONTAINERS, CSR_CONTAINERS, LIL_CONTAINERS
from sklearn.utils.validation import assert_all_finite
from threadpoolctl import threadpool_limits

from pymusicrbm.dbn import DBN, DBNClassifier
from pymusicrbm.rbm import RBM

Xdigits, _ = load_digits(return_X_y=True)
Xdigits -= Xdigits.min()
Xdigits /= Xdigits.max()

# scikit-learn asserts its scores with assert_almost_equal(..., decimal=0), i.e. |score - expected| < 1.5
SCORE_TOL = 1.5


def test_fit():
    X = Xdigits.copy()
    settings = dict(n_components=64, learning_rate=0.1, batch_size=10, n_iter=7, random_state=9)
    rbm = RBM(**settings).fit(X)
    with threadpool_limits(1):  # a shared machine: competing BLAS pools slow scikit-learn's small GEMMs badly
        sk = BernoulliRBM(**settings).fit(X)
        sk_score = sk.score_samples(X).mean()  # about -21.0 (scikit-learn's own test)
    untrained = RBM(**{**settings, "n_iter": 0}).fit(X).score_samples(X).mean()

    # our score is the exact pseudo-likelihood (all features), scikit-learn's an unbiased one-feature estimate of
    # it; CD-1 with momentum trains at least as well as scikit-learn's PCD-1 in 7 epochs (about 2 nats better)
    score = rbm.score_samples(X).mean()
    assert score > sk_score - SCORE_TOL, (score, sk_score)
    assert untrained < sk_score - SCORE_TOL  # the comparison can fail: an untrained model does
    # in-place tricks shouldn't have modified X
    np.testing.assert_array_equal(X, Xdigits)


def test_partial_fit():
    X = Xdigits.copy()
    settings = dict(n_components=64, learning_rate=0.1, batch_size=20, random_state=9)
    rbm = RBM(**settings)
    sk = BernoulliRBM(**settings)
    n_samples = X.shape[0]
    n_batches = int(np.ceil(float(n_samples) / rbm.batch_size))
    batch_slices = np.array_split(X, n_batches)

    with threadpool_limits(1):
        for i in range(7):
            for batch in batch_slices:
                rbm.partial_fit(batch)
                sk.partial_fit(batch)
        sk_score = sk.score_samples(X).mean()

    assert rbm.score_samples(X).mean() > sk_score - SCORE_TOL
    np.testing.assert_array_equal(X, Xdigits)


def test_transform():
    X = Xdigits[:100]
    rbm1 = RBM(n_components=16, batch_size=5, n_iter=5, random_state=42)
    rbm1.fit(X)

    Xt1 = rbm1.transform(X)
    Xt2 = expit(X @ rbm1.components_.T + rbm1.intercept_hidden_)  # what _mean_hiddens computes

    np.testing.assert_allclose(Xt1, Xt2, rtol=1e-12)


@pytest.mark.parametrize("csr_container", CSR_CONTAINERS)
def test_small_sparse(csr_container):
    # RBM should work on small sparse matrices.
    X = csr_container(Xdigits[:4])
    RBM().fit(X)  # no exception


@pytest.mark.parametrize("sparse_container", CSC_CONTAINERS + CSR_CONTAINERS)
def test_small_sparse_partial_fit(sparse_container):
    X_sparse = sparse_container(Xdigits[:100])
    X = Xdigits[:100].copy()

    rbm1 = RBM(n_components=64, learning_rate=0.1, batch_size=10, random_state=9)
    rbm2 = RBM(n_components=64, learning_rate=0.1, batch_size=10, random_state=9)

    rbm1.partial_fit(X_sparse)
    rbm2.partial_fit(X)

    # scikit-learn allows decimal=0 here; densifying changes nothing, so ours agree exactly
    np.testing.assert_array_equal(rbm1.score_samples(X), rbm2.score_samples(X))
    np.testing.assert_array_equal(rbm1.components_, rbm2.components_)


def test_sample_hiddens():
    X = Xdigits[:100]
    rbm1 = RBM(n_components=2, batch_size=5, n_iter=5, random_state=42)
    rbm1.fit(X)

    h = rbm1.transform(X[:1])[0]
    hs = np.mean([rbm1.sample_hidden(X[:1])[0] for i in range(100)], 0)

    # decimal=1 (|diff| < 0.15) is three standard errors of a mean of 100 Bernoulli samples (<= 0.05)
    np.testing.assert_almost_equal(h, hs, decimal=1)


def gibbs_keep_probability(rbm, X):
    """P(gibbs(x) == x) for each row of X, exact (numpy, float64): sum over the hidden states h of
    p(h | x) p(x | h), for a model with few hidden units."""
    W, b, c = rbm.components_.T.astype(np.float64), rbm.intercept_visible_, rbm.intercept_hidden_
    H = W.shape[1]
    hs = ((np.arange(2**H)[:, None] >> np.arange(H)) & 1).astype(np.float64)
    ph = expit(X @ W + c)                                               # (n, H)
    p_h = np.prod(np.where(hs[None], ph[:, None], 1 - ph[:, None]), 2)  # (n, 2^H)
    pv = expit(hs @ W.T + b)                                            # (2^H, V)
    p_x = np.prod(np.where(X[:, None] > 0.5, pv[None], 1 - pv[None]), 2)
    return (p_h * p_x).sum(1)


@pytest.mark.parametrize("csc_container", CSC_CONTAINERS)
def test_fit_gibbs(csc_container):
    # scikit-learn's version hard-codes weights and gibbs(X) == X from its random stream ("very seed-dependent"):
    # the data (one unit, 0 or 1 with equal odds) are fitted by the biases alone, so the weights stay at their
    # initial scale and one Gibbs step recreates X only by chance. Here: the weights stay as small as
    # scikit-learn's, gibbs reproduces X as often as the model says it should, and sparse X changes nothing.
    X = np.array([[0.0], [1.0]])
    rbm1 = RBM(n_components=2, batch_size=2, n_iter=42, random_state=np.random.RandomState(42))
    # you need that much iters
    rbm1.fit(X)
    sk = BernoulliRBM(n_components=2, batch_size=2, n_iter=42, random_state=np.random.RandomState(42)).fit(X)
    # 0.01 N(0, 1) initial weights, plus what 42 updates at 0.1 of a gradient that is zero on average leave
    assert np.abs(rbm1.components_).max() < 0.1 and np.abs(sk.components_).max() < 0.1
    keep = gibbs_keep_probability(rbm1, X)
    n = 2000
    freq = np.mean([rbm1.gibbs(X) == X for _ in range(n)], 0)[:, 0]
    np.testing.assert_allclose(freq, keep, atol=4 * np.sqrt(0.25 / n))

    X = csc_container([[0.0], [1.0]])
    rbm2 = RBM(n_components=2, batch_size=2, n_iter=42, random_state=np.random.RandomState(42))
    rbm2.fit(X)
    np.testing.assert_array_equal(rbm1.components_, rbm2.components_)
    # the same generator state gives the same Gibbs step from sparse and dense input
    rbm3 = RBM(n_components=2, batch_size=2, n_iter=42, random_state=np.random.RandomState(42)).fit(X.toarray())
    np.testing.assert_array_equal(rbm2.gibbs(X), rbm3.gibbs(X.toarray()))


def test_gibbs_smoke():
    # Check if we don't get NaNs sampling the full digits dataset.
    # Also check that sampling again will yield different results.
    X = Xdigits
    rbm1 = RBM(n_components=42, batch_size=40, n_iter=20, random_state=42)
    rbm1.fit(X)
    X_sampled = rbm1.gibbs(X)
    assert_all_finite(X_sampled)
    X_sampled2 = rbm1.gibbs(X)
    assert np.all((X_sampled != X_sampled2).max(axis=1))


@pytest.mark.parametrize("lil_containers", LIL_CONTAINERS)
def test_score_samples(lil_containers):
    # Test score_samples (pseudo-likelihood) method.
    # Assert that pseudo-likelihood is computed without clipping.
    # See Fabian's blog, http://bit.ly/1iYefRk
    rng = np.random.RandomState(42)
    X = np.vstack([np.zeros(1000), np.ones(1000)])
    rbm1 = RBM(n_components=10, batch_size=2, n_iter=10, random_state=rng)
    rbm1.fit(X)
    assert (rbm1.score_samples(X) < -300).all()

    # Sparse vs. dense should not affect the output. Also test sparse input
    # validation.
    d_score = rbm1.score_samples(X)
    s_score = rbm1.score_samples(lil_containers(X))
    np.testing.assert_array_equal(d_score, s_score)

    # Test numerical stability (#2785): would previously generate infinities
    # and crash with an exception. Values outside [0, 1] are clipped into it, with a warning.
    with np.errstate(under="ignore"), pytest.warns(UserWarning, match=r"outside \[0, 1\].*clip"):
        assert_all_finite(rbm1.score_samples([np.arange(1000) * 100]))


def test_rbm_verbose():
    rbm = RBM(n_iter=2, verbose=10)
    old_stdout = sys.stdout
    sys.stdout = StringIO()
    try:
        rbm.fit(Xdigits)
    finally:
        sys.stdout = old_stdout


@pytest.mark.parametrize("csc_container", CSC_CONTAINERS)
def test_sparse_and_verbose(csc_container, capsys):
    # Make sure RBM works with sparse input when verbose=True
    X = csc_container([[0.0], [1.0]])
    rbm = RBM(n_components=2, batch_size=2, n_iter=1, random_state=42, verbose=True)
    rbm.fit(X)
    # Make sure the captured standard output is sound.
    assert re.match(
        r"\[RBM\] Iteration 1,"
        r" pseudo-likelihood = -?(\d)+(\.\d+)?,"
        r" time = (\d|\.)+s",
        capsys.readouterr().out,
    )


@pytest.mark.parametrize(
    "dtype_in, dtype_out",
    [(np.float32, np.float32), (np.float64, np.float64), (int, np.float64)],
)
def test_transformer_dtypes_casting(dtype_in, dtype_out):
    X = Xdigits[:100].astype(dtype_in)
    rbm = RBM(n_components=16, batch_size=5, n_iter=5, random_state=42)
    Xt = rbm.fit_transform(X)

    # dtype_in and dtype_out should be consistent
    assert Xt.dtype == dtype_out, "transform dtype: {} - original dtype: {}".format(
        Xt.dtype, X.dtype
    )
    # ours: the parameters follow the input too (dtype=None)
    assert rbm.components_.dtype == dtype_out


@pytest.mark.parametrize("persistent", [False, True])
def test_convergence_dtype_consistency(persistent):
    # persistent=True is scikit-learn's algorithm (PCD), whose chains h_samples_ are; CD-k has none
    kw = dict(n_components=16, batch_size=5, n_iter=5, random_state=42, persistent=persistent)
    # float 64 transformer
    X_64 = Xdigits[:100].astype(np.float64)
    rbm_64 = RBM(**kw)
    Xt_64 = rbm_64.fit_transform(X_64)

    # float 32 transformer
    X_32 = Xdigits[:100].astype(np.float32)
    rbm_32 = RBM(**kw)
    Xt_32 = rbm_32.fit_transform(X_32)

    # results and attributes should be close enough in 32 bit and 64 bit
    # scikit-learn asks rtol=1e-6; our float32 step (fused bias sums, lr applied in cd_apply_) rounds in another
    # order, and one of 1600 probabilities lands at 1.01e-6: the same float32 noise, so allow 2e-6.
    np.testing.assert_allclose(Xt_64, Xt_32, rtol=2e-06, atol=0)
    np.testing.assert_allclose(rbm_64.intercept_hidden_, rbm_32.intercept_hidden_, rtol=1e-06, atol=0)
    np.testing.assert_allclose(rbm_64.intercept_visible_, rbm_32.intercept_visible_, rtol=1e-05, atol=0)
    np.testing.assert_allclose(rbm_64.components_, rbm_32.components_, rtol=1e-03, atol=0)
    if persistent:
        np.testing.assert_allclose(rbm_64.h_samples_, rbm_32.h_samples_)
    else:
        assert not hasattr(rbm_64, "h_samples_")


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_feature_names_out(method):
    """Check `get_feature_names_out` for `RBM`."""
    n_components = 10
    rbm = RBM(n_components=n_components)
    getattr(rbm, method)(Xdigits)

    names = rbm.get_feature_names_out()
    expected_names = [f"rbm{i}" for i in range(n_components)]
    np.testing.assert_array_equal(expected_names, names)


# ---- beyond scikit-learn's file: dtypes, sparse input in every method, persistent chains ----------------------

@pytest.mark.parametrize("dtype", [None, "float32", "float64", torch.float32])
@pytest.mark.parametrize("X_dtype", [np.float32, np.float64])
def test_dtype_follows_input_unless_given(dtype, X_dtype):
    X = Xdigits[:50].astype(X_dtype)
    rbm = RBM(n_components=4, n_iter=1, random_state=0, dtype=dtype).fit(X)
    want = {None: X_dtype, "float32": np.float32, "float64": np.float64, torch.float32: np.float32}[dtype]
    for value in (rbm.components_, rbm.intercept_hidden_, rbm.intercept_visible_):
        assert value.dtype == want
    assert rbm.transform(X).dtype == X_dtype  # outputs keep the input's dtype whatever the model's
    assert rbm.gibbs(X).dtype == X_dtype
    assert rbm.dtype == dtype  # the parameter itself is left alone (clone, get_params)


@pytest.mark.parametrize("persistent", [False, True, "fast"])
def test_same_initial_weights_in_float32_and_float64(persistent):
    X = Xdigits[:30]
    kw = dict(n_components=8, n_iter=0, random_state=5, persistent=persistent)
    w32 = RBM(dtype="float32", **kw).fit(X).components_
    w64 = RBM(dtype="float64", **kw).fit(X).components_
    assert w32.dtype == np.float32 and w64.dtype == np.float64
    np.testing.assert_array_equal(w32, w64.astype(np.float32))
    assert 0.005 < w64.std() < 0.02  # 0.01 N(0, 1), as scikit-learn's
    # the layers of a DBN too
    a = DBN((6, 3), n_iter=0, random_state=5, dtype="float32").fit(X)
    b = DBN((6, 3), n_iter=0, random_state=5, dtype="float64").fit(X)
    for ra, rb in zip(a.rbms_, b.rbms_):
        np.testing.assert_array_equal(ra.components_, rb.components_.astype(np.float32))


@pytest.mark.parametrize("fmt", ["csr", "csc", "lil", "coo"])
def test_sparse_input_everywhere_matches_dense(fmt):
    import scipy.sparse as sp
    X = Xdigits[:120]
    Xs = sp.csr_matrix(X).asformat(fmt)
    dense = RBM(n_components=8, n_iter=2, random_state=0, persistent=True).fit(X)
    sparse = RBM(n_components=8, n_iter=2, random_state=0, persistent=True).fit(Xs)
    np.testing.assert_array_equal(dense.components_, sparse.components_)
    np.testing.assert_array_equal(dense.h_samples_, sparse.h_samples_)
    dense.partial_fit(X)
    sparse.partial_fit(Xs)
    np.testing.assert_array_equal(dense.components_, sparse.components_)
    np.testing.assert_array_equal(dense.transform(X), sparse.transform(Xs))
    np.testing.assert_array_equal(dense.score_samples(X), sparse.score_samples(Xs))
    np.testing.assert_array_equal(dense.gibbs(X), sparse.gibbs(Xs))
    np.testing.assert_array_equal(dense.sample_hidden(X), sparse.sample_hidden(Xs))


def test_sparse_input_is_densified_in_chunks(monkeypatch):
    # a small chunk size, so that the data span several chunks: results must not depend on it
    import scipy.sparse as sp

    import pymusicrbm.rbm as rbm_module
    X = Xdigits[:100]
    Xs = sp.csr_matrix(X)
    est = RBM(n_components=6, n_iter=1, random_state=0, visible="gaussian", learning_rate=0.01)
    whole = clone(est).fit(Xs)
    dense = clone(est).fit(X)
    monkeypatch.setattr(rbm_module, "_CHUNK_ELEMENTS", 64 * 7)  # 7 rows
    chunked = clone(est).fit(Xs)
    np.testing.assert_array_equal(chunked.components_, whole.components_)
    np.testing.assert_array_equal(chunked.transform(Xs), whole.transform(Xs))
    # sparse statistics (mean_variance_axis) round differently from numpy's in the last bits only
    np.testing.assert_allclose(whole.mean_, dense.mean_, rtol=1e-12)
    np.testing.assert_allclose(whole.scale_, dense.scale_, rtol=1e-12)
    np.testing.assert_allclose(whole.components_, dense.components_, rtol=1e-9)


def test_h_samples_are_the_chains_hidden_states():
    X = Xdigits[:200]
    rbm = RBM(n_components=5, n_iter=2, random_state=0, persistent=True, n_chains=400).fit(X)
    h = rbm.h_samples_
    assert h.shape == (400, 5) and set(np.unique(h)) <= {0.0, 1.0}
    np.testing.assert_array_equal(h, rbm.h_samples_)  # an attribute: the same on every read
    # a sample of p(h | chains): its mean matches the chains' hidden probabilities within 4 standard errors
    p = expit(rbm._chains.numpy() @ rbm.components_.T + rbm.intercept_hidden_)
    assert np.all(np.abs(h.mean(0) - p.mean(0)) < 4 * np.sqrt(0.25 / 400))
    with pytest.raises(AttributeError, match="persistent chains"):
        RBM(n_components=5, n_iter=1, random_state=0).fit(X).h_samples_


def test_bernoulli_inputs_outside_unit_interval_are_clipped():
    rng = np.random.RandomState(0)
    X = rng.normal(0.5, 1.0, size=(60, 5))
    with pytest.warns(UserWarning, match=r"outside \[0, 1\].*clip"):
        a = RBM(n_components=3, n_iter=2, random_state=0).fit(X)
    b = RBM(n_components=3, n_iter=2, random_state=0).fit(np.clip(X, 0, 1))
    np.testing.assert_array_equal(a.components_, b.components_)
    with pytest.warns(UserWarning, match="clip"):
        np.testing.assert_array_equal(a.transform(X), b.transform(np.clip(X, 0, 1)))
    # scikit-learn's estimator checks train on N(100, 1) data: clipped, training stays finite
    with pytest.warns(UserWarning, match="clip"):
        RBM(random_state=0).fit(rng.normal(100, 1, size=(100, 2)))


# ---- check_estimator with default parameters ------------------------------------------------------------------

@pytest.mark.parametrize("Estimator", [RBM, DBN, DBNClassifier])
def test_check_estimator_with_defaults(Estimator):
    with threadpool_limits(1):
        results = check_estimator(Estimator(), on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] == "failed"]
    assert not failed, failed
