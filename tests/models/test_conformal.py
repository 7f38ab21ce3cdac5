import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from featuremass.models.conformal import (
    ConformalIntervals,
    conformal_quantile,
    interval_columns,
    interval_coverage,
)
from featuremass.models.gbm import GBMRegressor


def test_conformal_quantile_by_hand():
    scores = np.arange(1.0, 10.0)  # 1..9, n = 9
    # level 0.8: k = ceil(10 * 0.8) = 8 -> 8th smallest = 8
    assert conformal_quantile(scores[::-1], 0.8) == 8.0
    # level 0.95: k = ceil(9.5) = 10 > n -> infinite
    assert math.isinf(conformal_quantile(scores, 0.95))


def test_interval_columns_and_coverage():
    assert interval_columns(0.68) == ("ml_lo68", "ml_hi68")
    assert interval_coverage([1, 2, 3, 4], [0, 0, 0, 5], [1.5, 1.5, 4, 6]) == 0.5


class _Oracle:
    """The true regression function f(x) = 1 + x as a 'point model'."""

    target = "linear"

    def predict_raw(self, X):
        return 1.0 + np.asarray(X["x"], dtype=np.float64)


def _homoscedastic(n, seed, sigma=0.2):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": rng.uniform(0, 2, n)})
    return X, 1.0 + X["x"].to_numpy() + rng.normal(0, sigma, n)


def test_split_conformal_with_oracle_matches_gaussian_quantiles():
    sigma = 0.2
    X_cal, y_cal = _homoscedastic(4000, 1, sigma)
    X_test, y_test = _homoscedastic(20000, 2, sigma)
    c = ConformalIntervals(method="split").fit(None, None, X_cal=X_cal, y_cal=y_cal,
                                               point_model=_Oracle())
    # |N(0, sigma)| quantiles: sigma * Phi^-1((1 + level) / 2) = 0.994 sigma, 1.960 sigma
    assert c.corrections_[0.68] == pytest.approx(sigma * stats.norm.ppf(0.84), rel=0.05)
    assert c.corrections_[0.95] == pytest.approx(sigma * stats.norm.ppf(0.975), rel=0.05)
    cov = c.coverage(X_test, y_test, _Oracle().predict_raw(X_test))
    assert abs(cov["68"] - 0.68) < 0.03
    assert abs(cov["95"] - 0.95) < 0.02


def test_cqr_coverage_heteroscedastic():
    # y = sin(3x) + N(0, sigma(x)), sigma grows with x: the CQR width must grow too
    rng = np.random.default_rng(0)

    def draw(n):
        X = pd.DataFrame({"x": rng.uniform(0, 2, n), "junk": rng.normal(size=n)})
        sig = 0.05 + 0.2 * X["x"].to_numpy()
        return X, 2 + np.sin(3 * X["x"].to_numpy()) + rng.normal(0, 1, n) * sig

    X_tr, y_tr = draw(3000)
    X_val, y_val = draw(800)
    X_cal, y_cal = draw(2500)
    X_te, y_te = draw(20000)
    params = {"n_estimators": 200, "learning_rate": 0.1, "n_jobs": 1, "num_leaves": 15}
    point = GBMRegressor(**params).fit(X_tr, y_tr, X_val=X_val, y_val=y_val)
    c = ConformalIntervals(method="cqr", quantile_params=params).fit(
        X_tr, y_tr, X_cal=X_cal, y_cal=y_cal, point_model=point, X_val=X_val, y_val=y_val)
    raw = point.predict_raw(X_te)
    cov = c.coverage(X_te, y_te, raw)
    assert abs(cov["68"] - 0.68) < 0.03
    assert abs(cov["95"] - 0.95) < 0.02
    b = c.predict_intervals(X_te, raw)
    width = (b["ml_hi68"] - b["ml_lo68"]).to_numpy()
    x = X_te["x"].to_numpy()
    # noise sigma is 0.07 near x=0.1 and 0.41 near x=1.8: widths must follow
    assert np.median(width[x > 1.6]) > 2.5 * np.median(width[x < 0.4])
    # nested and containing the point prediction
    assert (b["ml_lo95"] <= b["ml_lo68"]).all() and (b["ml_hi95"] >= b["ml_hi68"]).all()
    assert (b["ml_lo68"] <= raw).all() and (b["ml_hi68"] >= raw).all()


def test_log_target_intervals_are_positive():
    X_cal, y_cal = _homoscedastic(500, 3)

    class LogOracle:
        target = "log"

        def predict_raw(self, X):
            return np.log10(1.0 + np.asarray(X["x"]))

    c = ConformalIntervals(method="split").fit(None, None, X_cal=X_cal, y_cal=y_cal,
                                               point_model=LogOracle())
    b = c.predict_intervals(X_cal, LogOracle().predict_raw(X_cal))
    assert (b["ml_lo95"] > 0).all()
    d = ConformalIntervals.from_dict(c.to_dict())
    np.testing.assert_array_equal(d.predict_intervals(X_cal, LogOracle().predict_raw(X_cal)), b)
