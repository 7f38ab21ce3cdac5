"""``MorphologyFeatures``: the morphology engine as a scikit-learn transformer.

It maps galaxy images to the feature matrix of
:func:`featuremass.features.batch.extract_features`, so that images go into a
:class:`sklearn.pipeline.Pipeline` with a regressor::

    Pipeline([("morph", MorphologyFeatures()), ("gbm", LGBMRegressor())])

scikit-learn's checks assume 2-D inputs, so the transformer accepts either an
``(n, ny, nx)`` stack or the same stack flattened to ``(n, ny * nx)``; for a
flattened stack ``image_shape`` gives ``(ny, nx)`` (default: square images,
side ``sqrt(ny * nx)``). Unmeasured features are NaN, which gradient-boosted
trees (LightGBM, HistGradientBoosting) handle natively; other estimators need
an imputer in between.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from featuremass.errors import FeaturemassError

__all__ = ["MorphologyFeatures"]


class MorphologyFeatures(TransformerMixin, BaseEstimator):
    """Classical morphology features of galaxy images (scikit-learn transformer).

    Parameters
    ----------
    scale : str
        How the images are scaled, one of
        :data:`featuremass.features.batch.SCALES`; ``'auto'`` (default)
        detects and inverts each stamp's stretch, ``'seed-log'`` undoes the
        seed's log stretch, ``'linear'`` takes the pixels as linear flux.
    backend : {'native', 'statmorph'}
        Measurement backend.
    feature_set : {'full', 'fast'}
        ``'fast'``: the segmentation-free tier (:mod:`featuremass.features.fast`).
    n_jobs : int
        Worker processes for :meth:`transform`.
    config : MorphologyConfig, optional
        Native-backend options.
    keep_flag : bool
        Append the integer ``flag`` column (as float) to the features.
    image_shape : (int, int), optional
        ``(ny, nx)`` of flattened 2-D input; default square.

    Attributes
    ----------
    n_features_in_ : int
        Pixels per image seen in :meth:`fit`.
    image_shape_ : tuple of int
        ``(ny, nx)`` seen in :meth:`fit`.
    feature_names_out_ : ndarray of str
        Output column names.
    """

    def __init__(self, *, scale="auto", backend="native", feature_set="full", n_jobs=1, config=None,
                 keep_flag=True, image_shape=None):
        self.scale = scale
        self.backend = backend
        self.feature_set = feature_set
        self.n_jobs = n_jobs
        self.config = config
        self.keep_flag = keep_flag
        self.image_shape = image_shape

    def _as_stack(self, X, image_shape=None) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 3:
            return X
        if X.ndim != 2:
            raise FeaturemassError(
                f"MorphologyFeatures expects an (n, ny, nx) stack or an (n, ny*nx) array; "
                f"got shape {X.shape}"
            )
        shape = image_shape or self.image_shape
        if shape is None:
            side = math.isqrt(X.shape[1])
            if side * side != X.shape[1]:
                raise FeaturemassError(
                    f"{X.shape[1]} features per row is not a square image; pass image_shape=(ny, nx)"
                )
            shape = (side, side)
        ny, nx = (int(s) for s in shape)
        if ny * nx != X.shape[1]:
            raise FeaturemassError(f"image_shape {shape} does not match {X.shape[1]} features per row")
        return X.reshape(X.shape[0], ny, nx)

    def fit(self, X, y=None):
        """Check the input and record its shape and the output feature names."""
        from featuremass.features.batch import BACKENDS, FEATURE_SETS, SCALES, feature_columns

        if self.scale not in SCALES:
            raise FeaturemassError(f"scale must be one of {SCALES}; got {self.scale!r}")
        if self.backend not in BACKENDS:
            raise FeaturemassError(f"backend must be one of {BACKENDS}; got {self.backend!r}")
        if self.feature_set not in FEATURE_SETS:
            raise FeaturemassError(f"feature_set must be one of {FEATURE_SETS}; got {self.feature_set!r}")
        stack = self._as_stack(X)
        self.image_shape_ = tuple(int(s) for s in stack.shape[1:])
        self.n_features_in_ = int(stack.shape[1] * stack.shape[2])
        from featuremass.io.stretch import STRETCH_COLUMNS

        # What --scale auto detected describes the preparation, not the galaxy:
        # it stays out of the matrix a model sees (STRETCH_UNCERTAIN is in flag).
        names = [c for c in feature_columns(self.feature_set) if c not in STRETCH_COLUMNS]
        names += ["flag"] if self.keep_flag else []
        self.feature_names_out_ = np.asarray(names, dtype=object)
        return self

    def transform(self, X):
        """Measure every image; returns an (n, n_features_out) float64 array."""
        from featuremass.features.batch import extract_features

        check_is_fitted(self, "feature_names_out_")
        stack = self._as_stack(X, self.image_shape_)
        if tuple(stack.shape[1:]) != self.image_shape_:
            raise FeaturemassError(
                f"images of shape {tuple(stack.shape[1:])} given to a transformer fitted on "
                f"{self.image_shape_}"
            )
        df = extract_features(stack, scale=self.scale, backend=self.backend, feature_set=self.feature_set,
                              config=self.config,
                              n_jobs=self.n_jobs, chunk_size=max(1, math.ceil(len(stack) / max(self.n_jobs, 1))))
        return df[list(self.feature_names_out_)].to_numpy(dtype=np.float64)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns (statmorph's where the quantity is the same)."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
