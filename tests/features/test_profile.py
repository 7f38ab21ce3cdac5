"""Radial-profile features against the analytic Sérsic profile (GalSim-rendered)."""

from __future__ import annotations

import math

import galsim
import numpy as np
import pytest
from scipy import integrate, special

from featuremass.features.flags import MorphFlag
from featuremass.features.profile import (
    ANNULUS_LOG_HALF_WIDTH,
    PROFILE_COLUMNS,
    PROFILE_RADII,
    SLOPE_RADII,
    profile_features,
)

NPIX = 128
CENTER = ((NPIX - 1) / 2, (NPIX - 1) / 2)
Q, BETA = 0.7, 0.4
RPETRO = 24.0  # any scale works: the features sample the profile at multiples of it


def _bn(n):
    return special.gammaincinv(2 * n, 0.5)


def _analytic_annulus_mean(n, re, r):
    """Area-weighted mean of I(r') = exp(-b (r'/re)^(1/n)) over the annulus the code samples."""
    lo, hi = r * math.exp(-ANNULUS_LOG_HALF_WIDTH), r * math.exp(ANNULUS_LOG_HALF_WIDTH)
    f = lambda x: math.exp(-_bn(n) * (x / re) ** (1 / n)) * x  # noqa: E731
    return integrate.quad(f, lo, hi)[0] / (0.5 * (hi**2 - lo**2))


def _analytic_mean_inside(n, re, r):
    """Mean surface brightness inside semi-major radius r (Graham & Driver 2005, eq. 2)."""
    b = _bn(n)
    enclosed = 2 * math.pi * n * re**2 * special.gamma(2 * n) / b ** (2 * n) * special.gammainc(2 * n, b * (r / re) ** (1 / n))
    return enclosed / (math.pi * r**2)


@pytest.mark.parametrize("n", [1.0, 2.0, 4.0])
def test_profile_matches_analytic_sersic(n):
    hlr = 12.0
    gal = galsim.Sersic(n=n, half_light_radius=hlr, flux=1e5).shear(q=Q, beta=BETA * galsim.radians)
    img = gal.drawImage(nx=NPIX, ny=NPIX, scale=1.0).array.astype(np.float64)
    res = profile_features(img, mask=None, center=CENTER, ellip=1 - Q, theta=BETA, rpetro=RPETRO)
    assert res["flag"] == 0
    re = hlr / math.sqrt(Q)  # semi-major half-light radius
    means = {k: _analytic_annulus_mean(n, re, k * RPETRO) for k in PROFILE_RADII}
    # Pixelisation and the stamp (which cuts the 2 r_p aperture's ellipse corners
    # only slightly) leave < 1 % errors: 0.02 mag and 2 % in slope.
    norm = _analytic_mean_inside(n, re, 2 * RPETRO)
    for k, col in zip(PROFILE_RADII, PROFILE_COLUMNS, strict=False):
        assert res[col] == pytest.approx(-2.5 * math.log10(means[k] / norm), abs=0.02), col
    for col, (k1, k2) in SLOPE_RADII.items():
        expected = math.log(means[k2] / means[k1]) / math.log(k2 / k1)
        assert res[col] == pytest.approx(expected, rel=0.02), col


def test_slopes_follow_the_local_sersic_slope():
    # The chord slope between r1 and r2 of I ~ exp(-b (r/re)^(1/n)) is
    # -b [(r2/re)^(1/n) - (r1/re)^(1/n)] / ln(r2/r1); an exponential disk (n = 1)
    # seen face-on, with thin annuli, must follow it within a few per cent.
    hlr = 10.0
    img = galsim.Exponential(half_light_radius=hlr, flux=1e5).drawImage(nx=NPIX, ny=NPIX, scale=1.0).array
    res = profile_features(img, center=CENTER, ellip=0.0, theta=0.0, rpetro=RPETRO)
    b = _bn(1.0)
    for col, (k1, k2) in SLOPE_RADII.items():
        r1, r2 = k1 * RPETRO, k2 * RPETRO
        expected = -b * (r2 / hlr - r1 / hlr) / math.log(r2 / r1)
        assert res[col] == pytest.approx(expected, rel=0.03)
    assert res["prof_slope_outer"] < res["prof_slope_inner"] < 0


@pytest.mark.parametrize(
    ("image", "kwargs"),
    [
        (np.zeros((40, 40)), {}),
        (np.full((40, 40), np.nan), {}),
        (-np.ones((40, 40)), {}),
        (np.ones((40, 40)), {"rpetro": -1.0}),
        (np.ones((40, 40)), {"rpetro": np.nan}),
        (np.ones((40, 40)), {"center": (np.inf, 2.0)}),
        (np.ones((40, 40)), {"mask": np.ones((40, 40), dtype=bool)}),
        (np.ones(40), {}),
    ],
)
def test_unmeasurable_gives_nan_and_flag(image, kwargs):
    args = {"center": (20.0, 20.0), "ellip": 0.2, "theta": 0.0, "rpetro": 8.0, **kwargs}
    res = profile_features(image, **args)
    assert set(res) == set(PROFILE_COLUMNS) | {"flag"}
    assert res["flag"] & MorphFlag.PROFILE_FAILED
    assert np.isnan(res["prof_slope_inner"])


def test_annulus_outside_the_stamp_is_nan_but_others_survive():
    img = galsim.Exponential(half_light_radius=4.0, flux=1e4).drawImage(nx=41, ny=41, scale=1.0).array
    res = profile_features(img, center=(20.0, 20.0), ellip=0.0, theta=0.0, rpetro=18.0)
    assert res["flag"] & MorphFlag.PROFILE_FAILED
    assert np.isfinite(res["prof_slope_inner"])
    assert np.isnan(res["prof_mu_2p0"])  # 36 px lies beyond every pixel of a 41 px stamp
