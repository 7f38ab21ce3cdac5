"""MorphologyFeatures in a scikit-learn Pipeline with LightGBM."""

from __future__ import annotations

import galsim
import lightgbm
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from featuremass.errors import FeaturemassError
from featuremass.features.measure import FEATURE_COLUMNS
from featuremass.features.transformer import MorphologyFeatures

NPIX = 36


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    n = 16
    imgs = np.empty((n, NPIX, NPIX))
    sizes = rng.uniform(2.0, 5.0, n)
    for i in range(n):
        gal = galsim.Exponential(half_light_radius=sizes[i], flux=4e3)
        imgs[i] = gal.drawImage(nx=NPIX, ny=NPIX, scale=1.0).array + rng.normal(0, 1.0, (NPIX, NPIX))
    return imgs, sizes


def test_pipeline_with_lightgbm_fits_and_predicts(data):
    imgs, y = data
    pipe = Pipeline([
        ("morph", MorphologyFeatures(scale="linear")),
        ("gbm", lightgbm.LGBMRegressor(n_estimators=20, min_child_samples=2, verbose=-1)),
    ])
    pipe.fit(imgs, y)
    pred = pipe.predict(imgs)
    assert pred.shape == (len(y),) and np.all(np.isfinite(pred))
    # The half-light radius is measured, so the fit on the training set follows y.
    assert np.corrcoef(pred, y)[0, 1] > 0.8
    names = pipe[:-1].get_feature_names_out()
    assert list(names) == [*FEATURE_COLUMNS, "flag"]


def test_flattened_input_matches_stacked(data):
    imgs, _ = data
    tr = MorphologyFeatures(scale="linear", keep_flag=False).fit(imgs[:3])
    stacked = tr.transform(imgs[:3])
    flat = clone(tr).fit(imgs[:3].reshape(3, -1)).transform(imgs[:3].reshape(3, -1))
    np.testing.assert_array_equal(stacked, flat)
    assert stacked.shape == (3, len(FEATURE_COLUMNS))
    assert tr.n_features_in_ == NPIX * NPIX


def test_shape_errors_are_clear(data):
    imgs, _ = data
    with pytest.raises(FeaturemassError, match="square"):
        MorphologyFeatures().fit(np.zeros((2, 10)))
    tr = MorphologyFeatures(scale="linear").fit(imgs[:2])
    with pytest.raises(FeaturemassError, match="fitted on"):
        tr.transform(np.zeros((2, 20, 20)))
    with pytest.raises(FeaturemassError, match="scale"):
        MorphologyFeatures(scale="log").fit(imgs[:2])
