"""Baseline M/L regressors: the mean, and ridge regression on standardised features.

Both follow the scikit-learn conventions of :class:`~featuremass.models.gbm.GBMRegressor`
(``fit(X, y, X_val=None, y_val=None)``, ``predict`` returning linear M/L) and
serialise to a JSON-able dict of coefficients (:meth:`to_dict` /
:meth:`from_dict`), never pickle. The third baseline of the study, "extra
inputs only", is a :class:`GBMRegressor` on the ``extra`` input set.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from featuremass.errors import FeaturemassError
from featuremass.models.gbm import as_frame, check_table, forward_target, inverse_target

#: Ridge penalties tried when ``alpha=None``.
DEFAULT_ALPHAS = tuple(10.0 ** np.arange(-3, 4.5, 0.5))
#: Features are clipped to their training [0.5%, 99.5%] percentiles.
CLIP_QUANTILE = 0.005


class MeanRegressor(RegressorMixin, BaseEstimator):
    """Predicts the training mean of the target (in the fitted space).

    With ``target='log'`` the prediction is the geometric mean of M/L.

    Attributes
    ----------
    mean_ : float
        Mean of the target in the fitted space.
    """

    def __init__(self, *, target: str = "linear"):
        self.target = target

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.regressor_tags.poor_score = True  # the baseline every model must beat: R^2 = 0
        return tags

    def fit(self, X, y, *, X_val=None, y_val=None):
        y = check_table(X, y, estimator=self, reset=True)
        X = as_frame(X)
        z = forward_target(y, self.target)
        if len(z) == 0:
            raise FeaturemassError("cannot fit the mean of an empty training set")
        self.mean_ = float(np.mean(z))
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def predict_raw(self, X):
        check_is_fitted(self, "mean_")
        check_table(X, estimator=self, reset=False)
        X = as_frame(X, list(self.feature_names_in_))
        return np.full(len(X), self.mean_)

    def predict(self, X):
        return inverse_target(self.predict_raw(X), self.target)

    def to_dict(self) -> dict:
        check_is_fitted(self, "mean_")
        return {"kind": "mean", "target": self.target, "mean": self.mean_,
                "feature_names": list(self.feature_names_in_)}

    @classmethod
    def from_dict(cls, d: dict):
        est = cls(target=d["target"])
        est.mean_ = float(d["mean"])
        est.feature_names_in_ = np.asarray(d["feature_names"], dtype=object)
        est.n_features_in_ = len(est.feature_names_in_)
        return est


class RidgeRegressor(RegressorMixin, BaseEstimator):
    r"""Ridge regression on median-imputed, clipped, standardised features.

    Each feature is imputed with its training median (NaN marks an
    unmeasurable quantity), clipped to its training 0.5-99.5 percentile range
    (a linear model extrapolates wildly on the heavy tails of fit quality or
    amplitude columns otherwise), centred and scaled to unit variance; then
    :math:`\beta = (X^T X + \alpha I)^{-1} X^T (z - \bar z)` (Hoerl & Kennard
    1970, Technometrics 12, 55), with the intercept :math:`\bar z`
    unpenalised.

    Parameters
    ----------
    alpha : float or None
        Penalty. ``None`` chooses it from :data:`DEFAULT_ALPHAS`: by the
        validation RMSE when :meth:`fit` gets a validation set, otherwise by
        the exact leave-one-out error from the SVD (Golub, Heath & Wahba
        1979, Technometrics 21, 215).
    target : {'linear', 'log'}

    Attributes
    ----------
    coef_, intercept_ : coefficients on the standardised features
    center_, scale_, impute_ : per-feature mean, standard deviation, median
    clip_low_, clip_high_ : per-feature clipping bounds
    alpha_ : the penalty used
    """

    def __init__(self, *, alpha: float | None = None, target: str = "linear"):
        self.alpha = alpha
        self.target = target

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # imputed with the training median
        return tags

    def _standardise(self, X):
        check_table(X, estimator=self, reset=False)
        A = as_frame(X, list(self.feature_names_in_)).to_numpy(np.float64)
        A = np.where(np.isfinite(A), A, self.impute_)
        A = np.clip(A, self.clip_low_, self.clip_high_)
        return (A - self.center_) / self.scale_

    def fit(self, X, y, *, X_val=None, y_val=None):
        y = check_table(X, y, estimator=self, reset=True)
        X = as_frame(X)
        z = forward_target(y, self.target)
        A = X.to_numpy(np.float64)
        if len(A) != len(z):
            raise FeaturemassError(f"X has {len(A)} rows but y has {len(z)}")
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = A.shape[1]
        finite = np.isfinite(A)
        with np.errstate(all="ignore"):
            med = np.array([np.median(col[ok]) if ok.any() else 0.0
                            for col, ok in zip(A.T, finite.T, strict=True)])
        self.impute_ = med
        A = np.where(finite, A, med)
        self.clip_low_, self.clip_high_ = np.quantile(A, [CLIP_QUANTILE, 1 - CLIP_QUANTILE], axis=0)
        A = np.clip(A, self.clip_low_, self.clip_high_)
        self.center_ = A.mean(axis=0)
        scale = A.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        S = (A - self.center_) / self.scale_
        z_mean = float(np.mean(z))
        zc = z - z_mean
        U, s, Vt = np.linalg.svd(S, full_matrices=False)
        Uz = U.T @ zc

        def coef_for(alpha):
            return Vt.T @ (s / (s**2 + alpha) * Uz)

        if self.alpha is not None:
            alpha = float(self.alpha)
        elif X_val is not None and y_val is not None:
            self.intercept_ = z_mean
            S_val = self._standardise(X_val)
            z_val = forward_target(y_val, self.target)
            errs = [np.mean((S_val @ coef_for(a) + z_mean - z_val) ** 2) for a in DEFAULT_ALPHAS]
            alpha = float(DEFAULT_ALPHAS[int(np.argmin(errs))])
        else:
            errs = []
            for a in DEFAULT_ALPHAS:
                shrink = s**2 / (s**2 + a)
                hat_diag = (U**2) @ shrink + 1.0 / len(z)  # + intercept leverage
                resid = zc - U @ (shrink * Uz)
                errs.append(np.mean((resid / (1.0 - hat_diag)) ** 2))
            alpha = float(DEFAULT_ALPHAS[int(np.argmin(errs))])
        self.alpha_ = alpha
        self.coef_ = coef_for(alpha)
        self.intercept_ = z_mean
        return self

    def predict_raw(self, X):
        check_is_fitted(self, "coef_")
        return self._standardise(X) @ self.coef_ + self.intercept_

    def predict(self, X):
        return inverse_target(self.predict_raw(X), self.target)

    def to_dict(self) -> dict:
        check_is_fitted(self, "coef_")
        return {
            "kind": "ridge", "target": self.target, "alpha": self.alpha_,
            "intercept": self.intercept_, "feature_names": list(self.feature_names_in_),
            "coef": self.coef_.tolist(), "center": self.center_.tolist(),
            "scale": self.scale_.tolist(), "impute": self.impute_.tolist(),
            "clip_low": self.clip_low_.tolist(), "clip_high": self.clip_high_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict):
        est = cls(alpha=d["alpha"], target=d["target"])
        est.alpha_ = float(d["alpha"])
        est.intercept_ = float(d["intercept"])
        est.feature_names_in_ = np.asarray(d["feature_names"], dtype=object)
        est.n_features_in_ = len(est.feature_names_in_)
        for key in ("coef", "center", "scale", "impute", "clip_low", "clip_high"):
            setattr(est, key + "_", np.asarray(d[key], dtype=np.float64))
        return est
