"""Regression metrics for M/L predictions, each with a bootstrap 95% interval.

Every metric is a pure function of ``(y_true, y_pred)`` that reduces the last
axis, so the same code scores one prediction vector or a whole stack of
bootstrap resamples at once.

Conventions
-----------
* Residual ``delta = y_pred - y_true`` (a positive bias means over-prediction).
* "log" space is log10 M/L (dex). The M/L of a galaxy is positive, but a
  regressor on linear M/L can predict zero or less; such predictions are
  floored at :data:`LOG_FLOOR` before the logarithm (and are then almost
  always outliers), so that every galaxy keeps a finite log residual.
* Outliers: ``|log10 M/L_pred - log10 M/L_true| > 0.3 dex``
  (:data:`OUTLIER_DEX`), i.e. a prediction off by more than a factor of two.
  A fixed absolute threshold is used rather than a multiple of the NMAD so
  that the outlier fractions of different models (mean, ridge, LightGBM,
  CNN) are directly comparable; 0.3 dex is about twice the typical
  systematic uncertainty of SED-fitted stellar M/L (0.1-0.2 dex, Taylor et
  al. 2011, MNRAS 418, 1587; Conroy 2013, ARA&A 51, 393), so a prediction
  beyond it is wrong rather than merely noisy.
"""

from __future__ import annotations

import numpy as np

from featuremass.errors import FeaturemassError

#: Outlier threshold on |Δ log10 M/L| in dex (a factor of 2).
OUTLIER_DEX = 0.3
#: Predictions below this value are floored before taking log10.
LOG_FLOOR = 1e-3
#: Consistency constant that makes the MAD a standard-deviation estimator for
#: Gaussian data: 1 / Phi^-1(3/4).
NMAD_SCALE = 1.4826

__all__ = [
    "LOG_FLOOR",
    "NMAD_SCALE",
    "OUTLIER_DEX",
    "bias",
    "bootstrap_interval",
    "format_metric",
    "mae",
    "nmad",
    "outlier_fraction",
    "paired_difference",
    "r2_score",
    "regression_report",
    "rmse",
    "rmse_dex",
]


def _pair(y_true, y_pred):
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise FeaturemassError(
            f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}"
        )
    if y_true.shape[-1] == 0:
        raise FeaturemassError("cannot score an empty prediction set")
    return y_true, y_pred


def rmse(y_true, y_pred):
    r"""Root-mean-square error, :math:`\sqrt{\langle (\hat y - y)^2 \rangle}`.

    Reduces the last axis.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    return np.sqrt(np.mean((y_pred - y_true) ** 2, axis=-1))


def mae(y_true, y_pred):
    r"""Mean absolute error, :math:`\langle |\hat y - y| \rangle`."""
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(np.abs(y_pred - y_true), axis=-1)


def bias(y_true, y_pred):
    r"""Mean residual :math:`\langle \hat y - y \rangle` (positive: over-prediction)."""
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(y_pred - y_true, axis=-1)


def r2_score(y_true, y_pred):
    r"""Coefficient of determination :math:`1 - SS_{res}/SS_{tot}`.

    :math:`SS_{res} = \sum (y - \hat y)^2`, :math:`SS_{tot} = \sum (y - \bar y)^2`.
    NaN when the true values are constant (``SS_tot = 0``).
    """
    y_true, y_pred = _pair(y_true, y_pred)
    ss_res = np.sum((y_true - y_pred) ** 2, axis=-1)
    ss_tot = np.sum((y_true - np.mean(y_true, axis=-1, keepdims=True)) ** 2, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def nmad(y_true, y_pred):
    r"""Normalised median absolute deviation of the residuals.

    :math:`\sigma_{NMAD} = 1.4826\,\mathrm{median}(|\Delta - \mathrm{median}(\Delta)|)`
    with :math:`\Delta = \hat y - y` (Hoaglin, Mosteller & Tukey 1983; the
    usual robust scatter of photometric-redshift work, e.g. Brammer et al.
    2008, ApJ 686, 1503). Equals the standard deviation for Gaussian residuals
    and ignores outliers.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    delta = y_pred - y_true
    med = np.median(delta, axis=-1, keepdims=True)
    return NMAD_SCALE * np.median(np.abs(delta - med), axis=-1)


def _log10(values):
    return np.log10(np.maximum(values, LOG_FLOOR))


def rmse_dex(y_true, y_pred):
    r"""RMSE of log10 M/L in dex, :math:`\sqrt{\langle(\log_{10}\hat y - \log_{10} y)^2\rangle}`.

    Predictions (and true values) below :data:`LOG_FLOOR` are floored first.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    return rmse(_log10(y_true), _log10(y_pred))


def outlier_fraction(y_true, y_pred, *, threshold: float = OUTLIER_DEX):
    r"""Fraction of galaxies with :math:`|\log_{10}\hat y - \log_{10} y| >` ``threshold`` dex.

    The default 0.3 dex (a factor of two) is justified in the module docstring.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(np.abs(_log10(y_pred) - _log10(y_true)) > threshold, axis=-1)


#: name -> (function, space it is applied in). "log" metrics get log10 inputs.
_LINEAR_METRICS = {"rmse": rmse, "r2": r2_score, "mae": mae, "bias": bias, "nmad": nmad}


def bootstrap_interval(metric, y_true, y_pred, *, n_boot: int = 1000, random_state=0,
                       confidence: float = 0.95, chunk: int = 200):
    """Percentile bootstrap interval of ``metric`` over paired resamples of galaxies.

    Parameters
    ----------
    metric : callable
        ``metric(y_true, y_pred)`` reducing the last axis (all functions here).
    n_boot : int
        Resamples (Efron & Tibshirani 1993, ch. 13: the percentile interval).
    random_state : int or numpy Generator
    confidence : float
        Central probability of the interval (0.95 → 2.5th and 97.5th percentiles).

    Returns
    -------
    (lo, hi) : tuple of float
        NaN, NaN when ``n_boot`` is 0.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    if n_boot <= 0:
        return float("nan"), float("nan")
    values = np.concatenate([metric(y_true[idx], y_pred[idx])
                             for idx in _resamples(y_true.shape[-1], n_boot, random_state, chunk)])
    return _percentile_interval(values, confidence)


def _resamples(n: int, n_boot: int, random_state, chunk: int):
    """Index arrays (size, n) of bootstrap resamples of n galaxies, ``chunk`` at a time."""
    rng = np.random.default_rng(random_state)
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


def _percentile_interval(values, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.nanquantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_difference(metric, y_true, pred_a, pred_b, *, n_boot: int = 1000, random_state=0,
                      confidence: float = 0.95, chunk: int = 200) -> dict:
    """``metric(y, pred_a) - metric(y, pred_b)`` with a paired bootstrap interval.

    Two models scored on the same galaxies share the galaxies' own scatter, so
    their separate intervals overlap even when one is consistently better.
    Resampling galaxies once for both models (the paired bootstrap) gives the
    interval of the difference itself: when it excludes zero, the ranking of
    the two models holds on this test set.

    Returns
    -------
    dict
        ``{"value": float, "ci95": [lo, hi], "p_a_better": float}``;
        ``p_a_better`` is the fraction of resamples where model A has the
        smaller metric (meaningful for error metrics such as RMSE).
    """
    y_true, pred_a = _pair(y_true, pred_a)
    _, pred_b = _pair(y_true, pred_b)
    if y_true.ndim != 1:
        raise FeaturemassError(f"expected 1-D arrays, got shape {y_true.shape}")
    value = float(metric(y_true, pred_a) - metric(y_true, pred_b))
    if n_boot <= 0:
        return {"value": value, "ci95": [float("nan"), float("nan")], "p_a_better": float("nan")}
    diffs = np.concatenate([
        metric(y_true[idx], pred_a[idx]) - metric(y_true[idx], pred_b[idx])
        for idx in _resamples(y_true.shape[-1], n_boot, random_state, chunk)])
    lo, hi = _percentile_interval(diffs, confidence)
    return {"value": value, "ci95": [lo, hi], "p_a_better": float(np.mean(diffs < 0))}


def regression_report(y_true, y_pred, *, n_boot: int = 1000, random_state=0) -> dict:
    """All metrics, in linear M/L and in log10 M/L, each with a bootstrap 95% interval.

    Returns
    -------
    dict
        ``{"n": int, "outlier_threshold_dex": 0.3,
        "linear": {metric: {"value", "ci95"}}, "log": {...},
        "outlier_fraction": {...}, "rmse_dex": {...}}``. ``log`` holds the same
        metrics computed on log10 M/L (so ``log.rmse`` equals ``rmse_dex``).
        Intervals use the same resamples for every metric (one seeded
        generator per metric, identical seed), so they are reproducible.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    if y_true.ndim != 1:
        raise FeaturemassError(f"expected 1-D arrays, got shape {y_true.shape}")
    finite = np.isfinite(y_true) & np.isfinite(y_pred)
    if not finite.all():
        raise FeaturemassError(
            f"{int((~finite).sum())} non-finite values among {len(y_true)} true/predicted M/L"
        )

    def entry(metric, a, b):
        lo, hi = bootstrap_interval(metric, a, b, n_boot=n_boot, random_state=random_state)
        return {"value": float(metric(a, b)), "ci95": [lo, hi]}

    log_true, log_pred = _log10(y_true), _log10(y_pred)
    out = {
        "n": int(len(y_true)),
        "outlier_threshold_dex": OUTLIER_DEX,
        "n_boot": int(n_boot),
        "linear": {k: entry(f, y_true, y_pred) for k, f in _LINEAR_METRICS.items()},
        "log": {k: entry(f, log_true, log_pred) for k, f in _LINEAR_METRICS.items()},
    }
    out["rmse_dex"] = out["log"]["rmse"]
    out["outlier_fraction"] = entry(outlier_fraction, y_true, y_pred)
    return out


def format_metric(entry: dict, digits: int = 3) -> str:
    """``'0.912 [0.890, 0.934]'`` for one ``{"value", "ci95"}`` entry."""
    lo, hi = entry["ci95"]
    return f"{entry['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
