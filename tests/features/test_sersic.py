"""Sérsic and bulge + disk fits against GalSim-rendered galaxies and analytic formulas.

Truth comes from GalSim's parameters: GalSim's ``half_light_radius`` is the
circularised radius of the sheared profile; a shear with axis ratio q
preserves area, so the semi-major half-light radius is ``hlr / sqrt(q)`` and
the ellipticity ``1 - q``.
"""

from __future__ import annotations

import math

import galsim
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import integrate, special

from featuremass.features.flags import MorphFlag
from featuremass.features.sersic import (
    BULGE_DISK_COLUMNS,
    N_BOUNDS,
    SERSIC_COLUMNS,
    fit_bulge_disk,
    fit_sersic,
    fit_sersic_and_bulge_disk,
    sersic_bn,
    sersic_profile,
    sersic_total_flux,
)

NPIX = 69
CENTER = ((NPIX - 1) / 2, (NPIX - 1) / 2)
Q = 0.6
BETA = 0.5  # radians


def _render(profile, *, psf_fwhm=None, noise=0.0, seed=0, npix=NPIX):
    if psf_fwhm:
        profile = galsim.Convolve(profile, galsim.Gaussian(fwhm=psf_fwhm))
    img = profile.drawImage(nx=npix, ny=npix, scale=1.0).array.astype(np.float64)
    if noise:
        img = img + np.random.default_rng(seed).normal(0.0, noise, img.shape)
    return img


def _sersic(n, hlr, flux=2e4, q=Q):
    return galsim.Sersic(n=n, half_light_radius=hlr, flux=flux).shear(q=q, beta=BETA * galsim.radians)


# --------------------------------------------------------------------------- analytic pieces


@pytest.mark.parametrize(
    ("n", "rtol"),
    # The Ciotti & Bertin expansion is good to ~5e-4 near n = 0.4 and to < 3e-5
    # from n = 1 on (their Fig. 1); below 0.36 the exact inversion is used.
    [(0.2, 1e-9), (0.3, 1e-9), (0.36, 1e-3), (0.5, 1e-3), (1.0, 3e-5), (2.0, 2e-6),
     (4.0, 1e-6), (8.0, 1e-6), (10.0, 1e-6)],
)
def test_bn_solves_its_defining_equation(n, rtol):
    # gamma(2n, b_n) = Gamma(2n) / 2, solved independently by scipy.
    assert sersic_bn(n) == pytest.approx(special.gammaincinv(2 * n, 0.5), rel=rtol)


def test_total_flux_matches_numerical_integral():
    # The profile written out here, with b_n from scipy: nothing from the module under test.
    amp, re, n, ellip = 3.0, 7.0, 2.5, 0.3
    bn = special.gammaincinv(2 * n, 0.5)
    radial, _ = integrate.quad(
        lambda r: 2 * math.pi * r * amp * math.exp(-bn * ((r / re) ** (1 / n) - 1)), 0, np.inf, limit=200
    )
    expected = radial * (1 - ellip)  # an ellipse of axis ratio q has q times the area
    assert sersic_total_flux(amplitude=amp, rhalf=re, n=n, ellip=ellip) == pytest.approx(expected, rel=2e-6)


@pytest.mark.parametrize("n", [1.0, 2.5, 4.0])
def test_profile_holds_half_its_light_inside_rhalf_and_amplitude_at_rhalf(n):
    amp, re = 3.0, 7.0

    def ring(r):
        return 2 * math.pi * r * float(sersic_profile(r, amplitude=amp, rhalf=re, n=n))

    inner, _ = integrate.quad(ring, 0, re, limit=200)
    outer, _ = integrate.quad(ring, re, np.inf, limit=200)
    assert inner / (inner + outer) == pytest.approx(0.5, rel=1e-4)  # b_n's expansion: < 3e-5 from n = 1 on
    assert float(sersic_profile(re, amplitude=amp, rhalf=re, n=n)) == pytest.approx(amp, rel=1e-12)


# --------------------------------------------------------------------------- single Sérsic


# Tolerances: the model integrates the pixels (and convolves the PSF) as
# GalSim does, so what remains is noise (S/N ~ 100-1000 per annulus: < 1 %)
# and, for n = 4 with a PSF, the degeneracy of a blurred cusp with a lower n;
# measured deviations are below 3 %, hence 5 % (8 % on n with a PSF).
@pytest.mark.parametrize("n", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("hlr", [4.0, 9.0])
@pytest.mark.parametrize("psf_fwhm", [None, 3.0])
def test_fit_recovers_galsim_sersic(n, hlr, psf_fwhm):
    noise = 0.5
    img = _render(_sersic(n, hlr), psf_fwhm=psf_fwhm, noise=noise, seed=int(10 * n + hlr))
    res = fit_sersic(
        img, mask=None, center=CENTER, ellip=1 - Q, theta=BETA, rhalf_guess=1.5 * hlr,
        psf_fwhm_px=psf_fwhm, sky_sigma=noise,
    )
    assert set(res) == set(SERSIC_COLUMNS) | {"flag"}
    assert res["flag"] == 0
    tol_n, tol_r = (0.05, 0.05) if psf_fwhm is None else (0.08, 0.05)
    assert res["sersic_n"] == pytest.approx(n, rel=tol_n)
    assert res["sersic_rhalf"] == pytest.approx(hlr / math.sqrt(Q), rel=tol_r)
    assert res["sersic_ellip"] == pytest.approx(1 - Q)
    # Chi^2 per degree of freedom of a correct model on Gaussian noise is ~1;
    # the core's pixel integration is good to ~0.5 %, which at S/N ~ 1000 in the
    # central pixels of compact galaxies leaves some excess.
    assert 0.8 < res["sersic_chi2_dof"] < (1.8 if n < 4 else 3.0)


def test_fit_recovers_index_from_a_bad_start():
    img = _render(_sersic(4.0, 6.0), noise=0.3, seed=3)
    res = fit_sersic(img, center=CENTER, ellip=1 - Q, theta=BETA, rhalf_guess=20.0, n_guess=0.5,
                     sky_sigma=0.3)
    assert res["sersic_n"] == pytest.approx(4.0, rel=0.05)


def test_amplitude_is_surface_brightness_at_rhalf():
    n, hlr, flux = 1.5, 6.0, 2e4
    profile = _sersic(n, hlr, flux=flux)
    img = _render(profile)
    res = fit_sersic(img, center=CENTER, ellip=1 - Q, theta=BETA, rhalf_guess=hlr, sky_sigma=1e-3)
    # GalSim's own surface brightness on the half-light ellipse, along its major axis
    # (a shear keeps the area, so the semi-major half-light radius is hlr / sqrt(q)).
    re = hlr / math.sqrt(Q)
    expected = profile.xValue(galsim.PositionD(re * math.cos(BETA), re * math.sin(BETA)))
    assert res["sersic_amplitude"] == pytest.approx(expected, rel=0.02)


def test_mask_excludes_a_neighbour():
    gal = _sersic(1.0, 5.0)
    star = galsim.Gaussian(fwhm=2.0, flux=5e4).shift(15, 12)
    img = _render(gal + star, noise=0.3, seed=7)
    y, x = np.mgrid[0:NPIX, 0:NPIX]
    mask = np.hypot(x - CENTER[0] - 15, y - CENTER[1] - 12) < 6
    res = fit_sersic(img, mask=mask, center=CENTER, ellip=1 - Q, theta=BETA, rhalf_guess=6.0,
                     sky_sigma=0.3)
    assert res["sersic_n"] == pytest.approx(1.0, rel=0.06)


def test_top_hat_ends_on_the_lower_index_bound():
    img = _render(galsim.TopHat(radius=10.0, flux=2e4), noise=0.1)
    res = fit_sersic(img, center=CENTER, ellip=0.0, theta=0.0, rhalf_guess=7.0, sky_sigma=0.1)
    assert res["flag"] & MorphFlag.SERSIC_AT_BOUND
    assert res["sersic_n"] == pytest.approx(N_BOUNDS[0])


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((NPIX, NPIX)),
        np.full((NPIX, NPIX), 3.0),
        -np.ones((NPIX, NPIX)),
        np.full((NPIX, NPIX), np.nan),
        np.full((NPIX, NPIX), np.inf),
        np.zeros((3, 4, 5)),
    ],
    ids=["blank", "constant", "negative", "nan", "inf", "3d"],
)
def test_bad_images_give_nan_and_flag(image):
    for fit, cols, bit in (
        (fit_sersic, SERSIC_COLUMNS, MorphFlag.SERSIC_FAILED),
        (fit_bulge_disk, BULGE_DISK_COLUMNS, MorphFlag.BULGE_DISK_FAILED),
    ):
        res = fit(image, center=CENTER, ellip=0.2, theta=0.0, rhalf_guess=5.0)
        assert res["flag"] & bit, (fit.__name__, res)
        # "constant" has positive annuli and may fit a flat profile; all others are NaN.
        if not np.any(np.isfinite(image) & (image > 0)):
            assert all(np.isnan(res[c]) for c in cols)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"center": (np.nan, 3.0)},
        {"rhalf_guess": -1.0},
        {"rhalf_guess": np.inf},
        {"ellip": 1.0},
        {"center": (500.0, 500.0)},
        {"mask": np.ones((NPIX, NPIX), dtype=bool)},
        {"mask": np.zeros((5, 5), dtype=bool)},
    ],
)
def test_bad_geometry_gives_nan_and_flag(kwargs):
    img = _render(_sersic(1.0, 5.0), noise=0.3)
    args = {"center": CENTER, "ellip": 0.3, "theta": 0.0, "rhalf_guess": 5.0, **kwargs}
    res = fit_sersic(img, **args)
    assert res["flag"] & MorphFlag.SERSIC_FAILED
    assert np.isnan(res["sersic_n"])
    res = fit_bulge_disk(img, **args)
    assert res["flag"] & MorphFlag.BULGE_DISK_FAILED


# --------------------------------------------------------------------------- bulge + disk


# B/T tolerance 0.05: a compact de Vaucouleurs bulge and the exponential
# disk are partly degenerate inside ~2 px (pixel integration, PSF), and the
# noise moves B/T by ~0.01; measured deviations are below 0.01.
@pytest.mark.parametrize("bt", [0.2, 0.5, 0.8])
def test_bulge_disk_recovers_bulge_to_total(bt):
    flux = 3e4
    bulge = galsim.DeVaucouleurs(half_light_radius=2.5, flux=bt * flux)
    disk = galsim.Exponential(half_light_radius=8.0, flux=(1 - bt) * flux)
    img = _render((bulge + disk).shear(q=Q, beta=BETA * galsim.radians), noise=0.5, seed=int(bt * 10))
    res = fit_bulge_disk(img, center=CENTER, ellip=1 - Q, theta=BETA, rhalf_guess=5.0, sky_sigma=0.5)
    assert set(res) == set(BULGE_DISK_COLUMNS) | {"flag"}
    assert res["flag"] == 0
    assert res["bd_bulge_to_total"] == pytest.approx(bt, abs=0.05)
    assert res["bd_bulge_rhalf"] == pytest.approx(2.5 / math.sqrt(Q), rel=0.15)
    assert res["bd_disk_rhalf"] == pytest.approx(8.0 / math.sqrt(Q), rel=0.1)


def test_bulge_disk_with_psf():
    bt, flux = 0.4, 3e4
    bulge = galsim.DeVaucouleurs(half_light_radius=3.0, flux=bt * flux)
    disk = galsim.Exponential(half_light_radius=9.0, flux=(1 - bt) * flux)
    img = _render((bulge + disk).shear(q=Q, beta=BETA * galsim.radians), psf_fwhm=3.0, noise=0.5)
    res = fit_bulge_disk(img, center=CENTER, ellip=1 - Q, theta=BETA, rhalf_guess=6.0,
                         psf_fwhm_px=3.0, sky_sigma=0.5)
    assert res["bd_bulge_to_total"] == pytest.approx(bt, abs=0.05)
    assert res["bd_chi2_dof"] < 2.0


def test_pure_disk_has_no_bulge():
    img = _render(galsim.Exponential(half_light_radius=6.0, flux=3e4).shear(q=Q, beta=BETA * galsim.radians),
                  noise=0.5, seed=11)
    res = fit_bulge_disk(img, center=CENTER, ellip=1 - Q, theta=BETA, rhalf_guess=6.0, sky_sigma=0.5)
    assert res["bd_bulge_to_total"] < 0.05


def test_combined_fit_equals_separate_fits():
    img = _render(_sersic(2.0, 5.0), noise=0.5, seed=5)
    kw = {"center": CENTER, "ellip": 1 - Q, "theta": BETA, "rhalf_guess": 6.0, "sky_sigma": 0.5}
    both = fit_sersic_and_bulge_disk(img, **kw)
    single, double = fit_sersic(img, **kw), fit_bulge_disk(img, **kw)
    assert both["flag"] == single["flag"] | double["flag"]
    for col in SERSIC_COLUMNS:
        assert both[col] == single[col]
    for col in BULGE_DISK_COLUMNS:
        assert both[col] == double[col]


@settings(max_examples=25, deadline=None)
@given(
    image=arrays(np.float64, (16, 16), elements=st.floats(-1e6, 1e6) | st.just(np.nan) | st.just(np.inf)),
    cx=st.floats(-5, 20), cy=st.floats(-5, 20), ellip=st.floats(0, 0.99), theta=st.floats(-7, 7),
    rhalf=st.floats(0.1, 50), psf=st.sampled_from([None, 2.0]),
)
def test_fits_never_raise_on_random_images(image, cx, cy, ellip, theta, rhalf, psf):
    kw = {"center": (cx, cy), "ellip": ellip, "theta": theta, "rhalf_guess": rhalf, "psf_fwhm_px": psf}
    res = fit_sersic_and_bulge_disk(image, **kw)
    assert isinstance(res["flag"], int)
    for col in SERSIC_COLUMNS:
        assert np.isnan(res[col]) or np.isfinite(res[col])
    if res["flag"] & MorphFlag.SERSIC_FAILED:
        assert np.isnan(res["sersic_n"])
    else:
        assert N_BOUNDS[0] - 1e-9 <= res["sersic_n"] <= N_BOUNDS[1] + 1e-9


# --------------------------------------------------------------------------- sky pedestal


def test_sersic_with_constant_offset_recovers_n_and_offset():
    # A residual sky of 0.3 sigma (typical of a biased sky estimate) added to a
    # GalSim n = 2 profile: the free pedestal recovers both (its prior, half a
    # sigma wide, is weak next to ~2000 sky-dominated pixels).
    noise, offset = 0.5, 0.15
    img = _render(_sersic(2.0, 5.0), noise=noise, seed=11) + offset
    kw = dict(center=CENTER, ellip=1 - Q, theta=BETA, rhalf_guess=6.0, sky_sigma=noise)
    res = fit_sersic(img, fit_sky=True, **kw)
    assert res["flag"] == 0
    assert res["sersic_n"] == pytest.approx(2.0, rel=0.08)
    assert res["sersic_sky"] == pytest.approx(offset, abs=0.03)
    # Without the pedestal the fit absorbs the offset in the amplitude and the
    # per-pixel chi^2 is worse; the pedestal column appears only on request.
    plain = fit_sersic(img, **kw)
    assert "sersic_sky" not in plain
    assert plain["sersic_chi2_dof"] > res["sersic_chi2_dof"] + 0.05


def test_bulge_disk_with_residual_sky_recovers_bulge_to_total():
    bt, flux = 0.4, 4e4
    bulge = galsim.DeVaucouleurs(half_light_radius=2.5, flux=bt * flux)
    disk = galsim.Exponential(half_light_radius=8.0, flux=(1 - bt) * flux)
    img = _render((bulge + disk).shear(q=Q, beta=BETA * galsim.radians), noise=0.5, seed=4) + 0.1
    kw = dict(center=CENTER, ellip=1 - Q, theta=BETA, rhalf_guess=5.0, sky_sigma=0.5)
    res = fit_bulge_disk(img, fit_sky=True, **kw)
    assert res["flag"] == 0
    assert res["bd_bulge_to_total"] == pytest.approx(bt, abs=0.06)
    assert res["bd_sky"] == pytest.approx(0.1, abs=0.03)
    # Without the pedestal the decomposition still succeeds (the bulge may not
    # run away to imitate the pedestal) and B/T stays near the truth.
    res = fit_bulge_disk(img, **kw)
    assert res["flag"] == 0
    assert res["bd_bulge_to_total"] == pytest.approx(bt, abs=0.1)
