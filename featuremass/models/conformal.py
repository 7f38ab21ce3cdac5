"""Per-galaxy M/L prediction intervals, calibrated on held-out data.

Two methods, both with the finite-sample marginal coverage guarantee of split
conformal prediction (Vovk, Gammerman & Shafer 2005; Lei et al. 2018, JASA
113, 1094) when the calibration galaxies are exchangeable with the new ones
and were not used to fit any model:

``'cqr'`` (default for LightGBM)
    Conformalized quantile regression (Romano, Patterson & Candès 2019,
    NeurIPS 32). For each level :math:`1-\\alpha`, two LightGBM quantile
    models give :math:`\\hat q_{\\alpha/2}(x)` and :math:`\\hat q_{1-\\alpha/2}(x)`;
    the conformity score of a calibration galaxy is
    :math:`E_i = \\max(\\hat q_{lo}(x_i) - y_i,\\; y_i - \\hat q_{hi}(x_i))`, and the
    interval is :math:`[\\hat q_{lo}(x) - Q,\\; \\hat q_{hi}(x) + Q]`. The width
    adapts to each galaxy.
``'split'``
    Absolute-residual split conformal: :math:`E_i = |y_i - \\hat y(x_i)|`,
    interval :math:`\\hat y(x) \\pm Q` (same width for every galaxy; used for
    the ridge and mean baselines).

In both, :math:`Q` is the :math:`\\lceil (n+1)(1-\\alpha) \\rceil`-th smallest of the
:math:`n` calibration scores. Scores are computed in the space the point model
is fitted in (log10 M/L for ``target='log'``) and the bounds mapped back to
linear M/L; the map is monotonic, so coverage is unchanged.

Finally every interval is widened, if needed, to contain the point prediction
and the 95% interval to contain the 68% one; this can only increase coverage.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from featuremass.errors import FeaturemassError
from featuremass.models.gbm import GBMRegressor, as_frame, forward_target, inverse_target

METHODS = ("cqr", "split")
DEFAULT_LEVELS = (0.68, 0.95)


def level_tag(level: float) -> str:
    """``0.68 -> '68'``, ``0.95 -> '95'``, ``0.9 -> '90'``."""
    return f"{round(100 * level):d}" if abs(100 * level - round(100 * level)) < 1e-9 else f"{100 * level:g}"


def interval_columns(level: float) -> tuple[str, str]:
    """Output column names of the ``level`` interval: ``('ml_lo68', 'ml_hi68')``."""
    tag = level_tag(level)
    return f"ml_lo{tag}", f"ml_hi{tag}"


def conformal_quantile(scores, level: float) -> float:
    """The :math:`\\lceil (n+1)\\,level \\rceil`-th smallest score (``inf`` if beyond ``n``).

    This finite-sample correction of the empirical quantile is what makes the
    marginal coverage at least ``level`` (Lei et al. 2018, Theorem 2.1).
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(scores)
    if n == 0:
        raise FeaturemassError("conformal calibration needs at least one calibration galaxy")
    k = math.ceil((n + 1) * level)
    return float("inf") if k > n else float(scores[k - 1])


def interval_coverage(y, lo, hi) -> float:
    """Fraction of ``y`` with ``lo <= y <= hi``."""
    y, lo, hi = (np.asarray(a, dtype=np.float64) for a in (y, lo, hi))
    return float(np.mean((y >= lo) & (y <= hi)))


class ConformalIntervals(BaseEstimator):
    """Calibrated prediction intervals around a fitted point model.

    Parameters
    ----------
    method : {'cqr', 'split'}
    levels : tuple of float
        Nominal coverages (default 68% and 95%).
    quantile_params : dict, optional
        :class:`GBMRegressor` parameters for the quantile models of ``'cqr'``
        (``loss`` and ``alpha`` are set per model).

    Attributes
    ----------
    corrections_ : dict
        ``{level: Q}`` in the fitted space.
    quantile_models_ : dict
        ``{(level, 'lo'|'hi'): GBMRegressor}`` (``'cqr'`` only).
    target_ : str
        The point model's target space.
    n_calibration_ : int
    calibration_coverage_ : dict
        Empirical coverage on the calibration set itself (>= nominal by construction).
    """

    def __init__(self, *, method: str = "cqr", levels=DEFAULT_LEVELS, quantile_params=None):
        self.method = method
        self.levels = levels
        self.quantile_params = quantile_params

    def _check(self):
        if self.method not in METHODS:
            raise FeaturemassError(f"unknown interval method {self.method!r}; expected one of {METHODS}")
        levels = tuple(float(v) for v in self.levels)
        if not all(0 < v < 1 for v in levels):
            raise FeaturemassError(f"interval levels must lie in (0, 1), got {levels}")
        return levels

    def fit(self, X_train, y_train, *, X_cal, y_cal, point_model, X_val=None, y_val=None):
        """Fit the quantile models (``'cqr'``) and calibrate on ``(X_cal, y_cal)``.

        ``point_model`` must already be fitted and expose ``predict_raw`` and
        ``target``. ``(X_val, y_val)`` early-stops the quantile models; it must
        not be the calibration set.
        """
        levels = self._check()
        self.target_ = point_model.target
        z_cal = forward_target(y_cal, self.target_)
        self.n_calibration_ = len(z_cal)
        point_cal = np.asarray(point_model.predict_raw(X_cal), dtype=np.float64)
        self.quantile_models_ = {}
        self.corrections_ = {}
        self.calibration_coverage_ = {}
        for level in levels:
            if self.method == "split":
                scores = np.abs(z_cal - point_cal)
                lo_cal = hi_cal = point_cal
            else:
                params = dict(self.quantile_params or {})
                params.update(target=self.target_, loss="quantile")
                tail = (1.0 - level) / 2.0
                models = {}
                for side, alpha in (("lo", tail), ("hi", 1.0 - tail)):
                    models[side] = GBMRegressor(**{**params, "alpha": alpha}).fit(
                        X_train, y_train, X_val=X_val, y_val=y_val
                    )
                    self.quantile_models_[(level, side)] = models[side]
                lo_cal = models["lo"].predict_raw(X_cal)
                hi_cal = models["hi"].predict_raw(X_cal)
                scores = np.maximum(lo_cal - z_cal, z_cal - hi_cal)
            q = conformal_quantile(scores, level)
            self.corrections_[level] = q
            self.calibration_coverage_[level] = float(
                np.mean((z_cal >= lo_cal - q) & (z_cal <= hi_cal + q))
            )
        return self

    def predict_intervals(self, X, point_raw) -> pd.DataFrame:
        """Interval bounds in linear M/L, columns ``ml_lo68, ml_hi68, ml_lo95, ml_hi95``.

        ``point_raw`` is the point model's ``predict_raw(X)``.
        """
        check_is_fitted(self, "corrections_")
        point_raw = np.asarray(point_raw, dtype=np.float64)
        out = {}
        prev = None
        for level in sorted(self.corrections_):
            q = self.corrections_[level]
            if self.method == "split":
                lo, hi = point_raw - q, point_raw + q
            else:
                X = as_frame(X)
                lo = self.quantile_models_[(level, "lo")].predict_raw(X) - q
                hi = self.quantile_models_[(level, "hi")].predict_raw(X) + q
            lo, hi = np.minimum(lo, point_raw), np.maximum(hi, point_raw)
            if prev is not None:  # nested: a wider level contains the narrower one
                lo, hi = np.minimum(lo, prev[0]), np.maximum(hi, prev[1])
            prev = (lo, hi)
            lo_col, hi_col = interval_columns(level)
            out[lo_col] = inverse_target(lo, self.target_)
            out[hi_col] = inverse_target(hi, self.target_)
        order = [c for level in sorted(self.corrections_) for c in interval_columns(level)]
        return pd.DataFrame(out)[order]

    def coverage(self, X, y, point_raw) -> dict:
        """Empirical coverage of each level on ``(X, y)``: ``{'68': 0.69, '95': 0.95}``."""
        bounds = self.predict_intervals(X, point_raw)
        out = {}
        for level in sorted(self.corrections_):
            lo_col, hi_col = interval_columns(level)
            out[level_tag(level)] = interval_coverage(y, bounds[lo_col], bounds[hi_col])
        return out

    # ---------------------------------------------------------------- persistence

    def to_dict(self) -> dict:
        """JSON-able calibration state; quantile boosters are named, saved separately."""
        check_is_fitted(self, "corrections_")
        return {
            "method": self.method,
            "levels": [float(v) for v in sorted(self.corrections_)],
            "target": self.target_,
            "n_calibration": int(self.n_calibration_),
            "corrections": {level_tag(k): float(v) for k, v in self.corrections_.items()},
            "calibration_coverage": {level_tag(k): v for k, v in self.calibration_coverage_.items()},
            "quantile_models": {
                f"{side}{level_tag(level)}": {"file": f"quantile_{side}{level_tag(level)}.txt",
                                              "alpha": float(m.alpha),
                                              "best_iteration": int(m.best_iteration_)}
                for (level, side), m in self.quantile_models_.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict, boosters: dict | None = None):
        """Rebuild from :meth:`to_dict`; ``boosters`` maps ``'lo68'`` etc. to loaded boosters."""
        est = cls(method=d["method"], levels=tuple(d["levels"]))
        est.target_ = d["target"]
        est.n_calibration_ = int(d["n_calibration"])
        tags = {level_tag(v): float(v) for v in d["levels"]}
        est.corrections_ = {tags[k]: float(v) for k, v in d["corrections"].items()}
        est.calibration_coverage_ = {tags[k]: float(v) for k, v in d.get("calibration_coverage", {}).items()}
        est.quantile_models_ = {}
        for key, info in d.get("quantile_models", {}).items():
            side, tag = key[:2], key[2:]
            if boosters is None or key not in boosters:
                raise FeaturemassError(f"quantile model {info['file']} was not loaded")
            est.quantile_models_[(tags[tag], side)] = GBMRegressor.from_booster(
                boosters[key], best_iteration=info["best_iteration"], loss="quantile",
                alpha=info["alpha"], target=est.target_,
            )
        return est
