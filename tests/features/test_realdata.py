"""Preparation and features on real HST stamps (AEGIS, tests/data) and on analytic profiles.

Expected values come from the AEGIS catalogue (sky level and noise), from
statmorph given the same segmap, and from the analytic Sérsic profile;
never from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import optimize, special

from featuremass.features.flags import MorphFlag
from featuremass.features.measure import MorphologyConfig, measure_galaxy, prepare_source

DATA = Path(__file__).resolve().parents[1] / "data"
FAST = MorphologyConfig(fit_sersic=False, fit_bulge_disk=False, profile=False)
NEIGHBOUR_BITS = int(MorphFlag.CONTAMINATED | MorphFlag.MULTIPLE_SOURCES)


def _aegis():
    from astropy.io import fits
    out = []
    for band in ("F606w", "F814w"):
        for row in fits.getdata(DATA / f"AEGIS_{band}_catalog.fits"):
            img = fits.getdata(DATA / str(row["GAL_FILENAME"]).strip(), ext=int(row["GAL_HDU"]))
            out.append((np.asarray(img, np.float64), float(row["NOISE_MEAN"]), float(np.sqrt(row["NOISE_VARIANCE"]))))
    return out


@pytest.fixture(scope="module")
def aegis():
    return _aegis()


def _central_galaxy(img, sigma):
    """The central galaxy by an independent recipe (photutils-style 1.5 sigma on a 1.5 px-smoothed stamp), dilated."""
    lab, _ = ndi.label(ndi.gaussian_filter(img, 1.5) > 1.5 * sigma)
    c = lab[img.shape[0] // 2, img.shape[1] // 2]
    return ndi.binary_dilation(lab == c, iterations=4) if c else np.zeros(img.shape, bool)


def test_sky_level_unbiased_on_aegis_sky_crops(aegis):
    # 16 px crops of pure sky (outside the central galaxy) of every stamp:
    # the mean of (sky - NOISE_MEAN) / sqrt(NOISE_VARIANCE) over ~170 crops.
    bias = []
    for img, mean, sigma in aegis:
        gal = _central_galaxy(img - mean, sigma)
        for y in range(0, img.shape[0] - 15, 16):
            for x in range(0, img.shape[1] - 15, 16):
                if not gal[y : y + 16, x : x + 16].any():
                    bias.append((prepare_source(img[y : y + 16, x : x + 16], config=FAST).sky_mean - mean) / sigma)
    bias = np.asarray(bias)
    assert bias.size > 100 and np.isfinite(bias).all()
    assert abs(bias.mean()) <= 0.05


def test_contaminated_does_not_fire_on_real_correlated_noise(aegis):
    # A symmetric GalSim galaxy placed on real sky (48 px AEGIS crops with no
    # source above 1.5 sigma after a 1.5 px smoothing, an independent
    # photutils-style recipe; real correlated noise): nothing may be called a
    # neighbour.
    import galsim
    fired, n = 0, 0
    for k, (img, mean, sigma) in enumerate(aegis):
        smooth = ndi.gaussian_filter(img - mean, 1.5)
        for y0 in range(0, img.shape[0] - 47, 12):
            for x0 in range(0, img.shape[1] - 47, 12):
                if (smooth[y0 : y0 + 48, x0 : x0 + 48] > 1.5 * sigma).any():
                    continue
                gal = galsim.Sersic(n=1.0 + k % 4, half_light_radius=3.0 + k % 3, flux=3000 * sigma)
                stamp = img[y0 : y0 + 48, x0 : x0 + 48] - mean + gal.drawImage(nx=48, ny=48, scale=1.0).array
                fired += bool(measure_galaxy(stamp, config=FAST)["flag"] & NEIGHBOUR_BITS)
                n += 1
    assert n >= 10
    assert fired <= 0.05 * n


def test_same_segmap_agrees_with_statmorph(aegis):
    from featuremass.features.statmorph_backend import measure_galaxy_statmorph

    cols = ("concentration", "gini", "m20", "rpetro_circ", "r20", "r50", "r80")
    within = {c: [] for c in cols}
    for img, _, _ in aegis:
        ours = measure_galaxy(img, config=FAST)
        ref = measure_galaxy_statmorph(img, config=FAST, segmentation="native", columns=cols)
        for c in cols:
            assert np.isfinite(ours[c]) and np.isfinite(ref[c]), c
            within[c].append(abs(ours[c] - ref[c]) <= 0.10 * abs(ref[c]))
    for c in cols:
        assert np.mean(within[c]) >= 0.9, (c, within[c])


def _analytic_petrosian(n, rhalf, eta=0.2):
    """r where I(r) = eta <I>(<r) for a Sérsic profile (Graham & Driver 2005, eqs. 2, 4)."""
    b = special.gammaincinv(2 * n, 0.5)

    def f(r):
        x = b * (r / rhalf) ** (1 / n)
        return 1.0 / (2 * n * np.exp(x) * x ** (-2 * n) * special.gamma(2 * n) * special.gammainc(2 * n, x)) - eta

    return optimize.brentq(f, 1e-3 * rhalf, 50 * rhalf)


@pytest.mark.parametrize("n_sersic, noise", [(1.0, 0.0), (1.0, 0.05), (4.0, 0.0), (4.0, 0.05)])
def test_petrosian_radius_of_sersic_within_3_percent(sersic, n_sersic, noise):
    # r_e = 12 px on a 128 px stamp: the n = 4 wings still hold light at the
    # stamp edge, so the sky level must not absorb them.
    img = sersic(n_sersic, 12.0, npix=128, flux=1e4, noise=noise, seed=3)
    rp = measure_galaxy(img, config=FAST)["rpetro_circ"]
    expected = _analytic_petrosian(n_sersic, 12.0)
    assert abs(rp / expected - 1) <= 0.03, (rp, expected)


def test_filled_stamp_is_measured_with_sky_uncertain(sersic):
    # An n = 4 galaxy whose wings fill a 69 px stamp: no clean sky, still measured.
    img = sersic(4.0, 15.0, npix=69, flux=3e4, noise=0.02, seed=5)
    out = measure_galaxy(img, config=FAST)
    for c in ("concentration", "gini", "m20", "r20", "r50", "r80", "rpetro_circ"):
        assert np.isfinite(out[c]), c
    assert out["flag"] & MorphFlag.SKY_UNCERTAIN
    assert not out["flag"] & MorphFlag.SKY_FAILED


def _correlated(rng, shape):
    pad = 5
    noise = ndi.gaussian_filter(rng.normal(size=(shape[0] + 2 * pad, shape[1] + 2 * pad)), 1.0)[pad:-pad, pad:-pad]
    return noise * 2.0 * np.sqrt(np.pi)


def test_injected_neighbours_found_and_clean_stamps_not_flagged(sersic):
    # 12 galaxies with and without a compact neighbour of 5-30 % of their flux
    # within 0.7-1.8 analytic Petrosian radii, on correlated unit noise.
    import galsim
    rng = np.random.default_rng(11)
    found, false = 0, 0
    n = 12
    for _ in range(n):
        n_s, re, flux = rng.uniform(1, 4), rng.uniform(3, 6), rng.uniform(4e3, 1.5e4)
        base = sersic(n_s, re, npix=69, flux=flux, psf_fwhm=2.0)
        d = min(rng.uniform(0.7, 1.8) * _analytic_petrosian(n_s, re), 28.0)
        a = rng.uniform(0, 2 * np.pi)
        nb = galsim.Convolve(
            galsim.Exponential(half_light_radius=1.5, flux=rng.uniform(0.05, 0.3) * flux), galsim.Gaussian(fwhm=2.0)
        )
        extra = nb.drawImage(nx=69, ny=69, scale=1.0, offset=(d * np.cos(a), d * np.sin(a))).array
        noise = _correlated(rng, base.shape)
        false += bool(measure_galaxy(base + noise, config=FAST)["flag"] & NEIGHBOUR_BITS)
        found += bool(measure_galaxy(base + extra + noise, config=FAST)["flag"] & NEIGHBOUR_BITS)
    assert found >= n - 1
    assert false <= 1
