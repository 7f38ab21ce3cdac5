"""Metric functions against values computed by hand."""

import numpy as np
import pytest

from featuremass.errors import FeaturemassError
from featuremass.models.metrics import (
    bias,
    bootstrap_interval,
    mae,
    nmad,
    outlier_fraction,
    paired_difference,
    r2_score,
    regression_report,
    rmse,
    rmse_dex,
)

# y_true = [1, 2, 3, 4], y_pred = [1.5, 2, 2, 5]  ->  delta = [0.5, 0, -1, 1]
Y_TRUE = np.array([1.0, 2.0, 3.0, 4.0])
Y_PRED = np.array([1.5, 2.0, 2.0, 5.0])


def test_rmse_by_hand():
    # mean(delta^2) = (0.25 + 0 + 1 + 1) / 4 = 0.5625 ; sqrt = 0.75
    assert rmse(Y_TRUE, Y_PRED) == pytest.approx(0.75)


def test_mae_by_hand():
    # (0.5 + 0 + 1 + 1) / 4 = 0.625
    assert mae(Y_TRUE, Y_PRED) == pytest.approx(0.625)


def test_bias_by_hand():
    # (0.5 + 0 - 1 + 1) / 4 = 0.125 (over-prediction is positive)
    assert bias(Y_TRUE, Y_PRED) == pytest.approx(0.125)


def test_r2_by_hand():
    # mean(y) = 2.5; SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5; SS_res = 2.25; R2 = 1 - 2.25/5
    assert r2_score(Y_TRUE, Y_PRED) == pytest.approx(0.55)


def test_r2_constant_truth_is_nan():
    assert np.isnan(r2_score([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))


def test_nmad_by_hand():
    # median(delta) = median(-1, 0, 0.5, 1) = 0.25
    # |delta - 0.25| = 0.25, 0.25, 1.25, 0.75 -> median 0.5 ; NMAD = 1.4826 * 0.5
    assert nmad(Y_TRUE, Y_PRED) == pytest.approx(0.7413)


def test_nmad_ignores_one_outlier():
    # residuals 0,0,0,0,100 -> median 0, |.| median 0 -> NMAD 0 while RMSE is large
    y = np.zeros(5)
    p = np.array([0, 0, 0, 0, 100.0])
    assert nmad(y, p) == 0.0
    assert rmse(y, p) == pytest.approx(np.sqrt(100.0**2 / 5))


def test_outlier_fraction_by_hand():
    # log10 ratios: log10(1) = 0, log10(2.1) = 0.322 (> 0.3), log10(0.4) = -0.398 (> 0.3),
    # log10(1.9) = 0.279 (< 0.3)  -> 2 of 4
    assert outlier_fraction(np.ones(4), [1.0, 2.1, 0.4, 1.9]) == pytest.approx(0.5)


def test_nonpositive_prediction_is_an_outlier():
    assert outlier_fraction([1.0, 1.0], [-0.5, 1.0]) == pytest.approx(0.5)
    assert np.isfinite(rmse_dex([1.0, 1.0], [-0.5, 1.0]))


def test_rmse_dex_by_hand():
    # log10 residuals: log10(10/1) = 1, log10(10/10) = 0 -> sqrt(1/2)
    assert rmse_dex([1.0, 10.0], [10.0, 10.0]) == pytest.approx(np.sqrt(0.5))


def test_metrics_reduce_last_axis():
    stack_true = np.stack([Y_TRUE, Y_TRUE])
    stack_pred = np.stack([Y_PRED, Y_TRUE])
    np.testing.assert_allclose(rmse(stack_true, stack_pred), [0.75, 0.0])


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(FeaturemassError, match="shape"):
        rmse([1.0, 2.0], [1.0])


def test_bootstrap_interval_of_constant_residual_collapses():
    y = np.linspace(1, 3, 50)
    lo, hi = bootstrap_interval(rmse, y, y + 0.2, n_boot=200)
    assert lo == pytest.approx(0.2) and hi == pytest.approx(0.2)


def test_bootstrap_interval_of_bias_matches_normal_theory():
    # bias of N(0, 1) residuals: the 95% interval half-width is 1.96 / sqrt(n)
    rng = np.random.default_rng(1)
    n = 2000
    y = rng.uniform(1, 3, n)
    p = y + rng.normal(0, 1, n)
    lo, hi = bootstrap_interval(bias, y, p, n_boot=1000, random_state=3)
    assert (hi - lo) / 2 == pytest.approx(1.96 / np.sqrt(n), rel=0.12)
    assert lo < bias(y, p) < hi


def test_regression_report_structure_and_spaces():
    rng = np.random.default_rng(0)
    y = rng.uniform(0.5, 4, 300)
    p = y * 10 ** rng.normal(0, 0.1, 300)
    rep = regression_report(y, p, n_boot=100)
    assert rep["n"] == 300 and rep["outlier_threshold_dex"] == 0.3
    assert rep["linear"]["rmse"]["value"] == pytest.approx(float(rmse(y, p)))
    assert rep["log"]["rmse"]["value"] == pytest.approx(float(rmse_dex(y, p)))
    assert rep["rmse_dex"] == rep["log"]["rmse"]
    # 0.1 dex Gaussian scatter: log NMAD close to 0.1
    assert rep["log"]["nmad"]["value"] == pytest.approx(0.1, rel=0.15)
    for space in ("linear", "log"):
        for entry in rep[space].values():
            lo, hi = entry["ci95"]
            assert lo <= entry["value"] <= hi


def test_regression_report_refuses_nan():
    with pytest.raises(FeaturemassError, match="non-finite"):
        regression_report([1.0, 2.0], [1.0, np.nan], n_boot=10)


def test_paired_difference_of_identical_models_is_exactly_zero():
    rng = np.random.default_rng(4)
    y = rng.uniform(1, 4, 300)
    p = y + rng.normal(0, 0.5, 300)
    out = paired_difference(rmse, y, p, p, n_boot=200)
    assert out["value"] == 0.0 and out["ci95"] == [0.0, 0.0] and out["p_a_better"] == 0.0


def test_paired_difference_detects_a_consistently_better_model():
    # B = A's residuals scaled by 1.2 on every galaxy: B's RMSE is exactly 1.2 x A's
    # in every resample, so the difference is -0.2 RMSE_A and A wins in all of them.
    rng = np.random.default_rng(5)
    y = rng.uniform(1, 4, 500)
    r = rng.normal(0, 0.5, 500)
    out = paired_difference(rmse, y, y + r, y + 1.2 * r, n_boot=300, random_state=1)
    expected = -0.2 * np.sqrt(np.mean(r ** 2))
    assert out["value"] == pytest.approx(expected, rel=1e-12)
    assert out["ci95"][1] < 0 and out["p_a_better"] == 1.0
