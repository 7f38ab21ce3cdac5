import numpy as np
import pandas as pd
import pytest

from featuremass.errors import DataError, SchemaError
from featuremass.models.baselines import MeanRegressor, RidgeRegressor
from featuremass.models.gbm import GBMRegressor, cross_validate


def _data(n=800, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    y = 2.0 + np.where(X["a"] > 0, 1.0, 0.0) + 0.3 * X["b"] + rng.normal(0, noise, n)
    return X, y.to_numpy()


FAST = {"n_estimators": 300, "learning_rate": 0.1, "n_jobs": 1}


def test_gbm_learns_step_function():
    X, y = _data()
    Xt, yt = _data(400, seed=1)
    m = GBMRegressor(**FAST).fit(X, y)
    rmse = np.sqrt(np.mean((m.predict(Xt) - yt) ** 2))
    # noise sigma is 0.1; the step and slope must be learnt (std(y) is about 0.58)
    assert rmse < 0.2
    assert m.best_iteration_ < 300  # early stopping on the held-out 10%
    assert list(m.feature_names_in_) == ["a", "b", "c", "d"]


def test_gbm_is_deterministic():
    X, y = _data()
    a = GBMRegressor(**FAST).fit(X, y).predict(X)
    b = GBMRegressor(**FAST).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)


def test_gbm_log_target_predicts_the_geometric_mean():
    # Log-normal scatter of sigma dex around a step: the median of M/L is 10**mu; fitted in
    # log10 the model returns that median (in linear M/L), fitted linearly it returns the
    # arithmetic mean, 10**mu * exp((sigma ln 10)**2 / 2) (the log-normal mean).
    rng = np.random.default_rng(3)
    n, sigma = 4000, 0.2
    X = pd.DataFrame({"a": rng.normal(size=n)})
    mu = np.where(X["a"] > 0, 0.8, 0.3)
    y = 10 ** (mu + rng.normal(0, sigma, n))
    bright = (X["a"] > 0).to_numpy()
    log_model = GBMRegressor(target="log", **FAST).fit(X, y)
    linear_model = GBMRegressor(target="linear", **FAST).fit(X, y)
    lognormal_mean = np.exp((sigma * np.log(10)) ** 2 / 2)
    assert np.median(log_model.predict(X)[bright]) == pytest.approx(10**0.8, rel=0.03)
    assert np.median(log_model.predict(X)[~bright]) == pytest.approx(10**0.3, rel=0.03)
    assert np.median(linear_model.predict(X)[bright]) == pytest.approx(10**0.8 * lognormal_mean,
                                                                       rel=0.03)
    with pytest.raises(DataError, match="positive"):
        GBMRegressor(target="log", **FAST).fit(X, y - 10)


def test_gbm_l1_fits_the_median():
    # skewed noise: the L1 model tracks the median (0), the L2 model the mean (1)
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"a": rng.uniform(size=3000)})
    y = rng.exponential(1.0, 3000) - np.log(2)  # median 0, mean 1 - ln 2 = 0.307
    l1 = GBMRegressor(loss="l1", early_stopping_rounds=0, n_estimators=50, n_jobs=1).fit(X, y)
    l2 = GBMRegressor(loss="l2", early_stopping_rounds=0, n_estimators=50, n_jobs=1).fit(X, y)
    assert abs(np.mean(l1.predict(X))) < 0.08
    assert np.mean(l2.predict(X)) == pytest.approx(1 - np.log(2), abs=0.08)


def test_gbm_contrib_sums_to_prediction_and_schema():
    X, y = _data(300)
    m = GBMRegressor(**FAST).fit(X, y)
    contrib = m.predict_contrib(X)
    np.testing.assert_allclose(contrib.sum(axis=1), m.predict_raw(X), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(m.predict(X[["d", "c", "b", "a"]]), m.predict(X))
    with pytest.raises(SchemaError, match="missing"):
        m.predict(X[["a", "b", "c"]])


def test_gbm_handles_nan_features():
    X, y = _data(500)
    X.loc[::7, "a"] = np.nan
    m = GBMRegressor(**FAST).fit(X, y)
    assert np.isfinite(m.predict(X)).all()


def test_cross_validate_out_of_fold():
    X, y = _data(400)
    res = cross_validate(GBMRegressor(**FAST), X, y, n_splits=4)
    assert np.isfinite(res.oof_pred).all()
    assert sorted(np.concatenate(res.folds).tolist()) == list(range(400))
    assert len(res.gain) == 4 and all(list(g.index) == list(X.columns) for g in res.gain)


def test_mean_regressor():
    X = pd.DataFrame({"a": [0.0, 0.0]})
    assert MeanRegressor().fit(X, [1.0, 100.0]).predict(X)[0] == pytest.approx(50.5)
    # log target: the geometric mean 10**mean(log10 y) = 10**1 = 10
    assert MeanRegressor(target="log").fit(X, [1.0, 100.0]).predict(X)[0] == pytest.approx(10.0)


def test_ridge_recovers_linear_model():
    # every value appears twice, so the 0.5/99.5 percentile clipping is a no-op
    rng = np.random.default_rng(0)
    grid = np.repeat(np.linspace(-2, 2, 100), 2)
    X = pd.DataFrame({name: rng.permutation(grid) * s
                      for name, s in (("a", 1.0), ("b", 5.0), ("c", 0.1))})
    y = 3.0 + 2.0 * X["a"] - 0.5 * X["b"] + 10.0 * X["c"]
    m = RidgeRegressor(alpha=1e-9).fit(X, y)
    np.testing.assert_allclose(m.predict(X), y, atol=1e-6)
    # coefficient on standardised features = raw coefficient x std
    np.testing.assert_allclose(m.coef_, [2.0, -0.5, 10.0] * X.std(ddof=0).to_numpy(), rtol=1e-6)


def test_ridge_clips_heavy_tails():
    # a feature with one extreme test value must not drive the prediction to extremes
    X = pd.DataFrame({"a": np.linspace(0, 1, 1000)})
    m = RidgeRegressor(alpha=1e-9).fit(X, 2 * X["a"])
    # unclipped it would predict 2e6; clipped, about 2 x the 99.5th percentile (0.995)
    assert m.predict(pd.DataFrame({"a": [1e6]}))[0] == pytest.approx(2 * 0.995, rel=0.01)


def test_ridge_chooses_alpha_and_imputes():
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(300, 20)))
    X.columns = [f"f{i}" for i in range(20)]
    y = X["f0"] + rng.normal(0, 1, 300)
    X.iloc[::5, 3] = np.nan
    m = RidgeRegressor().fit(X, y)
    assert np.isfinite(m.predict(X)).all()
    assert m.alpha_ > 1e-3  # noisy, mostly irrelevant features: some shrinkage helps
    d = RidgeRegressor.from_dict(m.to_dict())
    np.testing.assert_array_equal(d.predict(X), m.predict(X))
