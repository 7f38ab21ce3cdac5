import numpy as np

from featuremass.features.sky import (
    estimate_sky,
    sky_asymmetry_per_pixel,
    sky_smoothness_per_pixel,
    sn_per_pixel,
)


def test_estimate_sky_recovers_gaussian_noise_with_a_source():
    rng = np.random.default_rng(1)
    img = rng.normal(5.0, 2.0, (69, 69))
    img[30:40, 30:40] += 100.0  # a source the clipping must reject
    est = estimate_sky(img)
    # 4661 sky pixels: the mean is known to 2/sqrt(4661) ~ 0.03, sigma to ~1%.
    assert abs(est.mean - 5.0) < 0.1
    assert abs(est.sigma - 2.0) < 0.06


def test_estimate_sky_nan_for_constant_or_too_few_pixels():
    assert np.isnan(estimate_sky(np.full((20, 20), 3.0)).sigma)
    exclude = np.ones((20, 20), bool)
    exclude[0, :10] = False
    assert np.isnan(estimate_sky(np.random.default_rng(0).normal(size=(20, 20)), exclude=exclude).mean)


def test_background_terms_match_monte_carlo():
    rng = np.random.default_rng(2)
    b = rng.normal(0, 1.5, (400, 400))
    mc_asym = np.mean(np.abs(b - b[::-1, ::-1]))
    assert abs(sky_asymmetry_per_pixel(1.5) - mc_asym) < 0.01 * mc_asym
    from scipy import ndimage as ndi

    mc_smooth = np.mean(np.maximum(b - ndi.uniform_filter(b, 3), 0))
    assert abs(sky_smoothness_per_pixel(1.5, 3) - mc_smooth) < 0.02 * mc_smooth
    assert sky_smoothness_per_pixel(1.5, 1) == 0.0


def test_sn_per_pixel():
    img = np.full((5, 5), 10.0)
    region = np.ones((5, 5), bool)
    assert sn_per_pixel(img, region, 2.0) == 5.0
    assert np.isnan(sn_per_pixel(img, ~region, 2.0))
