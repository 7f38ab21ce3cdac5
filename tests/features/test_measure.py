import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from featuremass.errors import FeaturemassError
from featuremass.features.flags import MorphFlag
from featuremass.features.measure import FEATURE_COLUMNS, MorphologyConfig, measure_galaxy

FAST = MorphologyConfig(fit_sersic=False, fit_bulge_disk=False, profile=False)


def _check(out):
    assert set(out) == set(FEATURE_COLUMNS) | {"flag"}
    assert isinstance(out["flag"], int)
    for k in FEATURE_COLUMNS:
        assert isinstance(out[k], float) and (np.isfinite(out[k]) or np.isnan(out[k]))


def _noisy(img, seed=0, sigma=0.01):
    return img + np.random.default_rng(seed).normal(0, sigma, img.shape)


def test_good_galaxy_is_measured(sersic):
    out = measure_galaxy(sersic(1.0, 5.0, noise=0.01, flux=100.0, q=0.7), config=FAST)
    _check(out)
    assert out["flag"] == 0
    assert np.isfinite([out[k] for k in ("concentration", "asymmetry", "gini", "m20", "rpetro_circ")]).all()


@pytest.mark.parametrize(
    "image,bit",
    [
        (np.zeros((69, 69)), MorphFlag.BLANK_IMAGE),
        (np.full((69, 69), 3.0), MorphFlag.BLANK_IMAGE),
        (-np.abs(np.random.default_rng(0).normal(size=(69, 69))) - 1, MorphFlag.BLANK_IMAGE),
        (np.full((69, 69), np.nan), MorphFlag.BLANK_IMAGE),
        (np.random.default_rng(0).normal(size=(69, 69)), MorphFlag.NO_SOURCE),
    ],
)
def test_unmeasurable_images(image, bit):
    out = measure_galaxy(image, config=FAST)
    _check(out)
    assert out["flag"] & bit
    assert np.isnan(out["concentration"]) and np.isnan(out["gini"])


def test_nan_and_inf_pixels_are_masked(sersic):
    img = sersic(1.0, 5.0, noise=0.01, flux=100.0)
    img[5, 5] = np.nan
    img[40, 30] = np.inf
    out = measure_galaxy(img, config=FAST)
    _check(out)
    assert out["flag"] & MorphFlag.BAD_PIXELS
    assert np.isfinite(out["concentration"])


def test_single_bright_pixel_and_tiny_source(sersic):
    img = _noisy(np.zeros((69, 69)))
    img[34, 34] = 50.0
    out = measure_galaxy(img, config=FAST)
    _check(out)
    assert out["flag"] & MorphFlag.SMALL_SOURCE and np.isnan(out["concentration"])
    tiny = _noisy(sersic(1.0, 0.4, flux=2.0), seed=1)
    out = measure_galaxy(tiny, config=FAST)
    _check(out)
    assert out["flag"] & MorphFlag.SMALL_SOURCE and np.isnan(out["asymmetry"])


def test_edge_touching_and_stamp_filling_sources(sersic):
    edge = sersic(1.0, 15.0, noise=0.01, flux=300.0, q=0.25)
    out = measure_galaxy(edge, config=FAST)
    _check(out)
    assert out["flag"] & MorphFlag.EDGE_TOUCH
    big = sersic(0.5, 40.0, noise=0.01, flux=5000.0)
    out = measure_galaxy(big, config=FAST)
    _check(out)
    assert out["flag"] & (MorphFlag.FILLS_STAMP | MorphFlag.SKY_FAILED)
    assert np.isnan(out["rpetro_circ"])


def test_merger_and_star_next_to_galaxy(sersic):
    merger = sersic(1.0, 4.0, noise=0.01, flux=100.0) + sersic(1.0, 4.0, flux=80.0, offset=(9, 3))
    out = measure_galaxy(merger, config=FAST)
    _check(out)
    assert out["flag"] & MorphFlag.MULTIPLE_SOURCES
    star = sersic(1.0, 5.0, noise=0.01, flux=100.0) + sersic(0.5, 0.7, flux=60.0, offset=(11, -4))
    out = measure_galaxy(star, config=FAST)
    _check(out)
    assert out["flag"] & MorphFlag.CONTAMINATED
    assert out["n_masked_neighbours"] >= 1
    assert np.isfinite([out[k] for k in ("concentration", "asymmetry", "gini", "rpetro_circ")]).all()


def test_caller_mistakes_raise_featuremass_error():
    with pytest.raises(FeaturemassError, match="2-D"):
        measure_galaxy(np.zeros((2, 3, 3)))
    with pytest.raises(FeaturemassError, match="mask shape"):
        measure_galaxy(np.zeros((5, 5)), mask=np.zeros((4, 4), bool))
    with pytest.raises(FeaturemassError, match="eta"):
        MorphologyConfig(eta=2.0)


@settings(max_examples=25, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(8, 40), st.integers(8, 40)),
        elements=st.one_of(st.floats(-1e6, 1e6), st.sampled_from([np.nan, np.inf, -np.inf])),
    )
)
def test_never_raises_on_random_images(img):
    _check(measure_galaxy(img, config=FAST))
