"""LightGBM regression of the g-band M/L from morphology features.

:class:`GBMRegressor` wraps LightGBM's native ``lightgbm.train`` (Ke et al.
2017, NeurIPS 30, "LightGBM: a highly efficient gradient boosting decision
tree") in the scikit-learn estimator conventions, so the fitted model is a
plain :class:`lightgbm.Booster` that saves to LightGBM's own text format.

* Loss: L2 (default) or L1 (Dobbels et al. 2019, A&A 624, A102, trained
  their morphology-based M/L regressor with an L1 loss), or a quantile
  (pinball) loss for the interval models of :mod:`featuremass.models.conformal`.
* Target: linear M/L (default, as the seed) or log10 M/L; predictions are
  always returned as linear M/L.
* Early stopping on a validation set (given, or ``validation_fraction`` of
  the training rows); deterministic (``deterministic=True``, fixed seed and
  thread count, ``force_col_wise=True``), so the same data and parameters give
  bit-identical boosters.
* NaN features (unmeasurable quantities) are handled natively by LightGBM's
  missing-value splits; no imputation is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import KFold
from sklearn.utils import check_array, check_consistent_length, column_or_1d
from sklearn.utils.validation import check_is_fitted

from featuremass.errors import DataError, FeaturemassError, SchemaError
from featuremass.models.inputs import align_columns

LOSSES = {"l2": "regression", "l1": "regression_l1", "quantile": "quantile"}
TARGETS = ("linear", "log")


# --------------------------------------------------------------------------- target transform


def forward_target(y, target: str) -> np.ndarray:
    """M/L → the space the model is fitted in (identity or log10)."""
    y = np.asarray(y, dtype=np.float64)
    if target == "linear":
        return y
    if target == "log":
        bad = ~(y > 0)
        if bad.any():
            raise DataError(
                f"target='log' needs positive M/L; {int(bad.sum())} values are <= 0 or NaN "
                f"(first: {y[bad][:5].tolist()})"
            )
        return np.log10(y)
    raise FeaturemassError(f"unknown target {target!r}; expected one of {TARGETS}")


def inverse_target(z, target: str) -> np.ndarray:
    """The model's output space → linear M/L."""
    z = np.asarray(z, dtype=np.float64)
    if target == "log":
        return 10.0**z
    if target == "linear":
        return z
    raise FeaturemassError(f"unknown target {target!r}; expected one of {TARGETS}")


def check_table(X, y=None, *, estimator, reset: bool, min_samples: int = 1):
    """scikit-learn's input checks on a feature table (and target), before any work.

    Refuses sparse, complex, empty, infinite and ragged input, a table whose
    width differs from the one seen in ``fit`` (unless ``reset``), and a
    missing, non-finite, wrongly shaped or misaligned ``y``, with
    scikit-learn's messages. NaN is allowed in ``X`` (an unmeasurable feature).
    Returns ``y`` as a 1-D float array (or None).
    """
    name = type(estimator).__name__
    table = check_array(X, dtype="numeric", ensure_all_finite="allow-nan",
                        ensure_min_samples=min_samples, input_name="X", estimator=name)
    # A DataFrame is aligned by column name later, with an error naming what is missing.
    if not reset and not isinstance(X, pd.DataFrame) and table.shape[1] != estimator.n_features_in_:
        raise SchemaError(f"X has {table.shape[1]} features, but {name} is expecting "
                          f"{estimator.n_features_in_} features as input")
    if y is None:
        if reset:
            raise FeaturemassError(f"{name} requires y to be passed, but the target y is None")
        return None
    y = column_or_1d(check_array(y, ensure_2d=False, dtype=np.float64, input_name="y",
                                 estimator=name), warn=True)
    check_consistent_length(table, y)
    return y


def as_frame(X, feature_names=None, *, source: str = "X") -> pd.DataFrame:
    """``X`` as a float DataFrame; with ``feature_names``, schema-checked and ordered."""
    if isinstance(X, pd.DataFrame):
        if not all(isinstance(c, str) for c in X.columns):
            X = X.rename(columns=str)  # feature names are strings (as saved in the model)
        if feature_names is not None:
            X = align_columns(X, feature_names, source=source)
        return X
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise FeaturemassError(f"{source} must be 2-D, got shape {arr.shape}")
    if feature_names is None:
        feature_names = [f"x{i}" for i in range(arr.shape[1])]
    elif arr.shape[1] != len(feature_names):
        raise FeaturemassError(
            f"{source} has {arr.shape[1]} columns; the model expects {len(feature_names)}"
        )
    return pd.DataFrame(arr, columns=list(feature_names))


def holdout_split(n: int, fraction: float, random_state: int):
    """Deterministic (train_rows, holdout_rows) index split."""
    rng = np.random.default_rng(random_state)
    order = rng.permutation(n)
    n_hold = max(1, int(round(fraction * n)))
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


class GBMRegressor(RegressorMixin, BaseEstimator):
    """LightGBM regressor of M/L with early stopping and a target transform.

    Parameters
    ----------
    loss : {'l2', 'l1', 'quantile'}
        Training loss. ``'quantile'`` fits the ``alpha`` quantile (pinball loss).
    alpha : float
        Quantile level for ``loss='quantile'``.
    target : {'linear', 'log'}
        Fit M/L itself or log10 M/L. :meth:`predict` always returns linear M/L.
    n_estimators : int
        Maximum boosting rounds (early stopping usually ends sooner).
    learning_rate, num_leaves, min_child_samples, subsample, colsample_bytree, reg_lambda
        LightGBM's ``learning_rate``, ``num_leaves``, ``min_data_in_leaf``,
        ``bagging_fraction`` (with ``bagging_freq=1``), ``feature_fraction``
        and ``lambda_l2``.
    early_stopping_rounds : int
        Stop when the validation loss has not improved for this many rounds
        (0: no early stopping, all ``n_estimators`` rounds).
    validation_fraction : float
        When :meth:`fit` gets no validation set, this fraction of the training
        rows is held out for early stopping.
    random_state : int
        Seed of LightGBM and of the hold-out split.
    n_jobs : int
        LightGBM threads (fixed, for reproducibility).

    Attributes
    ----------
    booster_ : lightgbm.Booster
    best_iteration_ : int
        Number of boosting rounds used for prediction.
    feature_names_in_ : ndarray of str
    n_features_in_ : int
    evals_result_ : dict
        Per-round training and validation loss.
    """

    def __init__(
        self,
        *,
        loss: str = "l2",
        alpha: float = 0.5,
        target: str = "linear",
        n_estimators: int = 2000,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int = 100,
        validation_fraction: float = 0.1,
        random_state: int = 0,
        n_jobs: int = 2,
    ):
        self.loss = loss
        self.alpha = alpha
        self.target = target
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN marks an unmeasurable feature; LightGBM routes it
        return tags

    def lgb_params(self) -> dict:
        """The LightGBM parameter dict this estimator trains with."""
        if self.loss not in LOSSES:
            raise FeaturemassError(f"unknown loss {self.loss!r}; expected one of {list(LOSSES)}")
        if self.target not in TARGETS:
            raise FeaturemassError(f"unknown target {self.target!r}; expected one of {TARGETS}")
        params = {
            "objective": LOSSES[self.loss],
            "learning_rate": float(self.learning_rate),
            "num_leaves": int(self.num_leaves),
            "min_data_in_leaf": int(self.min_child_samples),
            "bagging_fraction": float(self.subsample),
            "bagging_freq": 1 if self.subsample < 1 else 0,
            "feature_fraction": float(self.colsample_bytree),
            "lambda_l2": float(self.reg_lambda),
            "seed": int(self.random_state),
            "num_threads": int(self.n_jobs),
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }
        if self.loss == "quantile":
            params["alpha"] = float(self.alpha)
        return params

    def fit(self, X, y, *, X_val=None, y_val=None):
        """Fit on ``(X, y)``, early-stopping on ``(X_val, y_val)``.

        Without a validation set, ``validation_fraction`` of the rows is held
        out for early stopping (unless ``early_stopping_rounds`` is 0).
        """
        import lightgbm as lgb

        params = self.lgb_params()
        y = check_table(X, y, estimator=self, reset=True, min_samples=2)
        X = as_frame(X)
        names = [str(c) for c in X.columns]
        z = forward_target(y, self.target)
        if len(z) != len(X):
            raise FeaturemassError(f"X has {len(X)} rows but y has {len(z)}")
        if not np.isfinite(z).all():
            raise DataError(f"{int((~np.isfinite(z)).sum())} non-finite target values")
        if X_val is None and self.early_stopping_rounds and len(X) >= 20:
            fit_rows, val_rows = holdout_split(len(X), self.validation_fraction, self.random_state)
            X_fit, z_fit = X.iloc[fit_rows], z[fit_rows]
            X_stop, z_stop = X.iloc[val_rows], z[val_rows]
        else:
            X_fit, z_fit = X, z
            X_stop = None if X_val is None else as_frame(X_val, names, source="X_val")
            z_stop = None if y_val is None else forward_target(y_val, self.target)
        train_set = lgb.Dataset(X_fit.to_numpy(np.float64), label=z_fit, feature_name=names,
                                params={"verbosity": -1}, free_raw_data=True)
        valid_sets, valid_names, callbacks = [train_set], ["train"], []
        self.evals_result_ = {}
        callbacks.append(lgb.record_evaluation(self.evals_result_))
        if X_stop is not None:
            valid_sets.append(lgb.Dataset(X_stop.to_numpy(np.float64), label=z_stop,
                                          reference=train_set))
            valid_names.append("valid")
            if self.early_stopping_rounds:
                callbacks.append(lgb.early_stopping(int(self.early_stopping_rounds), verbose=False))
        booster = lgb.train(params, train_set, num_boost_round=int(self.n_estimators),
                            valid_sets=valid_sets, valid_names=valid_names, callbacks=callbacks)
        self.booster_ = booster
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(names)
        return self

    @classmethod
    def from_booster(cls, booster, *, best_iteration: int | None = None, **params):
        """A fitted estimator around an existing (e.g. loaded) booster."""
        est = cls(**params)
        est.booster_ = booster
        est.best_iteration_ = int(best_iteration or booster.current_iteration())
        est.feature_names_in_ = np.asarray(booster.feature_name(), dtype=object)
        est.n_features_in_ = len(est.feature_names_in_)
        est.evals_result_ = {}
        return est

    def _matrix(self, X) -> np.ndarray:
        check_is_fitted(self, "booster_")
        check_table(X, estimator=self, reset=False)
        return as_frame(X, list(self.feature_names_in_)).to_numpy(np.float64)

    def predict_raw(self, X) -> np.ndarray:
        """Predictions in the fitted space (log10 M/L when ``target='log'``)."""
        matrix = self._matrix(X)
        return self.booster_.predict(matrix, num_iteration=self.best_iteration_)

    def predict(self, X) -> np.ndarray:
        """Predicted linear M/L."""
        return inverse_target(self.predict_raw(X), self.target)

    def predict_contrib(self, X) -> np.ndarray:
        """TreeSHAP contributions (Lundberg et al. 2020), shape ``(n, n_features + 1)``.

        In the fitted space; the last column is the expected value, and each
        row sums to :meth:`predict_raw`.
        """
        return self.booster_.predict(self._matrix(X), num_iteration=self.best_iteration_,
                                     pred_contrib=True)

    def feature_importance(self, kind: str = "gain") -> pd.Series:
        """LightGBM's ``'gain'`` or ``'split'`` importance, indexed by feature."""
        check_is_fitted(self, "booster_")
        values = self.booster_.feature_importance(importance_type=kind,
                                                  iteration=self.best_iteration_)
        return pd.Series(values.astype(np.float64), index=list(self.feature_names_in_), name=kind)

    def model_to_string(self) -> str:
        check_is_fitted(self, "booster_")
        return self.booster_.model_to_string(num_iteration=self.best_iteration_)


# --------------------------------------------------------------------------- cross-validation


@dataclass
class CVResult:
    """Out-of-fold predictions and per-fold models and importances."""

    oof_pred: np.ndarray
    folds: list[np.ndarray]
    models: list = field(default_factory=list)
    gain: list[pd.Series] = field(default_factory=list)


def cross_validate(estimator, X, y, *, n_splits: int = 5, random_state: int = 0) -> CVResult:
    """K-fold cross-validation of a (GBM or baseline) estimator.

    Each fold model is a clone of ``estimator`` fitted on the other folds; a
    GBM early-stops on its own ``validation_fraction`` of those rows, never on
    the held-out fold, so the out-of-fold predictions are honest.
    """
    from sklearn.base import clone

    if n_splits < 2:
        raise FeaturemassError(f"cross-validation needs at least 2 folds, got {n_splits}")
    X = as_frame(X)
    y = np.asarray(y, dtype=np.float64)
    if len(X) < n_splits:
        raise FeaturemassError(f"{len(X)} galaxies cannot be split into {n_splits} folds")
    kfold = KFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    oof = np.full(len(X), np.nan)
    result = CVResult(oof_pred=oof, folds=[])
    for train_rows, test_rows in kfold.split(X):
        model = clone(estimator).fit(X.iloc[train_rows], y[train_rows])
        oof[test_rows] = model.predict(X.iloc[test_rows])
        result.folds.append(test_rows)
        result.models.append(model)
        if hasattr(model, "feature_importance"):
            result.gain.append(model.feature_importance("gain"))
    return result
