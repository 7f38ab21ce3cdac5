"""Every estimator and the transformer through scikit-learn's own checks.

No check is marked expected-failed: every one applies and passes.

``parametrize_with_checks`` feeds each estimator small random tables (1 to 10
columns). The tabular models (LightGBM, mean, ridge) take them as they are.
The image models need ``npix * npix`` pixels a row, so they meet the same
checks behind :class:`RowsAsStamps`, which tiles each table row over an
``npix x npix`` stamp: the checks still reach their ``fit``, ``predict``,
``get_params``/``set_params``, ``clone``, pickling and fitted-state handling
through the pipeline, with nothing of the model's own stubbed. What the
pipeline hides (parameters set by hand, flattened against stacked stamps) is
tested directly below.

Conformal intervals are left out: :class:`~featuremass.models.conformal.ConformalIntervals`
is fitted on a point model and a calibration split (``fit(X, y, X_cal=,
y_cal=, point_model=)``) and predicts intervals, not ``y``; it is not an
estimator in scikit-learn's sense.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted, validate_data

from featuremass.features.transformer import MorphologyFeatures
from featuremass.models.baselines import MeanRegressor, RidgeRegressor
from featuremass.models.cnn import CNNRegressor
from featuremass.models.gbm import GBMRegressor
from featuremass.models.hybrid import HybridRegressor

#: The smallest stamp the CNN takes; one epoch: the checks test the contract, not skill.
NPIX = 8


def _stamps(X, npix: int, keep_columns: bool) -> np.ndarray:
    reps = -(-npix**2 // X.shape[1])
    stamps = np.tile(X, reps)[:, : npix**2]
    return np.hstack([stamps, X]) if keep_columns else stamps


class _OnStamps(BaseEstimator):
    """Fits a clone of ``estimator`` on each table row tiled over an ``npix x npix`` stamp.

    With ``keep_columns`` the row follows its stamp (the hybrid's one-table
    input: stamp, then morphology). A meta-estimator in scikit-learn's own
    pattern (as ``TransformedTargetRegressor``), so the inner model is cloned,
    fitted and delegated to exactly as in any scikit-learn composite.
    """

    def __init__(self, estimator, *, npix: int = NPIX, keep_columns: bool = False):
        self.estimator = estimator
        self.npix = npix
        self.keep_columns = keep_columns

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.regressor_tags = inner.regressor_tags
        return tags

    def _as_stamps(self, X, reset: bool):
        X = validate_data(self, X, reset=reset)
        return _stamps(X, self.npix, self.keep_columns)

    def fit(self, X, y=None):
        self.estimator_ = clone(self.estimator).fit(self._as_stamps(X, True), y)
        return self


class RegressorOnStamps(RegressorMixin, _OnStamps):
    def predict(self, X):
        check_is_fitted(self)
        return self.estimator_.predict(self._as_stamps(X, False))


class TransformerOnStamps(TransformerMixin, _OnStamps):
    def transform(self, X):
        check_is_fitted(self)
        return self.estimator_.transform(self._as_stamps(X, False))


def _cnn():
    return CNNRegressor(npix=NPIX, epochs=1, batch_size=64, augment=False, seed=0)


TABULAR = [
    GBMRegressor(n_estimators=20, n_jobs=1),
    MeanRegressor(),
    RidgeRegressor(),
    TransformerOnStamps(MorphologyFeatures(feature_set="fast")),
]
#: Each check trains a Keras model (seconds apiece): these get scikit-learn's API
#: checks (``legacy=False``: cloning, parameters, fitted state, input width, memory
#: maps); their predictions are tested against data in test_cnn.py and test_hybrid.py.
IMAGE = [
    RegressorOnStamps(_cnn()),
    RegressorOnStamps(HybridRegressor(npix=NPIX, cnn=_cnn(), n_components=2,
                                      gbm_params={"n_estimators": 10, "n_jobs": 1,
                                                  "min_child_samples": 2}),
                      keep_columns=True),
]


@parametrize_with_checks(TABULAR)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


@pytest.mark.cnn
@parametrize_with_checks(IMAGE, legacy=False)
def test_scikit_learn_api_checks_of_the_image_models(estimator, check, eager_keras):
    check(estimator)


@pytest.mark.cnn
def test_image_models_take_flat_rows_clone_and_reuse_a_prefit_cnn(eager_keras):
    rng = np.random.default_rng(0)
    stamps = rng.normal(size=(24, NPIX, NPIX)).astype(np.float32)
    y = 1.0 + stamps[:, 3:5, 3:5].mean(axis=(1, 2))
    cnn = _cnn().fit(stamps, y)
    assert cnn.npix_ == NPIX and cnn.n_features_in_ == NPIX**2
    # Flattened rows are the same stamps.
    np.testing.assert_array_equal(cnn.predict(stamps.reshape(len(stamps), -1)), cnn.predict(stamps))
    with pytest.raises(ValueError, match="X has 10 features, but CNNRegressor is expecting 64"):
        cnn.predict(stamps.reshape(len(stamps), -1)[:, :10])
    # clone copies the parameters, not the fitted network.
    twin = clone(cnn)
    assert twin.get_params() == cnn.get_params() and not hasattr(twin, "model_")
    assert twin.set_params(epochs=3).epochs == 3 and cnn.epochs == 1

    morphology = rng.normal(size=(24, 3))
    hybrid = HybridRegressor(cnn=cnn, prefit=True, n_components=2,
                             gbm_params={"n_estimators": 5, "n_jobs": 1, "min_child_samples": 2})
    hybrid.fit(stamps, y, features=morphology)
    assert hybrid.cnn_ is cnn  # reused as it is: not cloned, not retrained
    one_table = np.hstack([stamps.reshape(len(stamps), -1), morphology])
    np.testing.assert_array_equal(HybridRegressor(npix=NPIX, **{
        k: v for k, v in hybrid.get_params(deep=False).items() if k != "npix"}).fit(
        one_table, y).predict(one_table), hybrid.predict(stamps, features=morphology))
    assert "cnn__epochs" in hybrid.get_params()
    with pytest.raises(ValueError, match="prefit=True needs a fitted cnn"):
        HybridRegressor(cnn=_cnn(), prefit=True).fit(stamps, y, features=morphology)
