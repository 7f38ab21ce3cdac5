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
    assert np.isfinite([out[k] for k in ("concentration", "asymmetry", "gini", "m20", "rpetro_circ")]).all()
    # A Gaussian with r_e = 40 px on 69 px: its Petrosian radius (eta = 0.2 at
    # r^2 / 2 s^2 ~ 2.5, i.e. ~ 76 px) lies far outside the stamp. With the sky
    # known (zero), no crossing is found inside the stamp: NaN radii.
    big = sersic(0.5, 40.0, noise=0.01, flux=5000.0)
    out = measure_galaxy(big, config=MorphologyConfig(subtract_sky=False, fit_sersic=False,
                                                      fit_bulge_disk=False, profile=False))
    _check(out)
    assert out["flag"] & MorphFlag.FILLS_STAMP and out["flag"] & MorphFlag.PETROSIAN_FAILED
    assert np.isnan(out["rpetro_circ"]) and np.isnan(out["concentration"])
    # With the sky measured, the "sky" is galaxy light: a warning, not a failure.
    out = measure_galaxy(big, config=FAST)
    _check(out)
    assert out["flag"] & MorphFlag.FILLS_STAMP


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


def _analytic_reference(n, rhalf, npix, flux, sub=8):
    """Petrosian radius, C, Gini and M20 of a noiseless Sérsic stamp, from the profile alone.

    The Petrosian radius solves Lotz et al. (2004) eq. 4 with the analytic
    curve of growth ``L(r) = P(2n, b_n (r/r_e)^{1/n})`` (Graham & Driver
    2005, eq. 2). C, Gini and M20 need the stamp's truncation, so they come
    from the profile integrated over ``sub x sub`` sub-pixels (an independent
    re-implementation of the definitions: r20/r80 of the flux inside
    1.5 r_p, Gini over the pixels inside r_p, M20 about the centre).
    """
    from scipy import optimize
    from scipy.special import gammainc, gammaincinv

    bn = gammaincinv(2 * n, 0.5)

    def growth(r):
        return gammainc(2 * n, bn * (r / rhalf) ** (1 / n))

    def eta(r):
        ann = (growth(r + 0.5) - growth(r - 0.5)) / (np.pi * ((r + 0.5) ** 2 - (r - 0.5) ** 2))
        return ann / (growth(r) / (np.pi * r * r)) - 0.2

    rp = optimize.brentq(eta, 2.0, 500.0)
    c = (npix - 1) / 2.0
    u = (np.arange(npix * sub) + 0.5) / sub - 0.5 - c
    xx, yy = np.meshgrid(u, u)
    r_sub = np.hypot(xx, yy)
    fine = np.exp(-bn * (r_sub / rhalf) ** (1 / n))
    pix = fine.reshape(npix, sub, npix, sub).mean(axis=(1, 3))
    pix *= flux / (2 * np.pi * n * rhalf**2 * np.exp(bn) * gammainc(2 * n, np.inf) * _gamma(2 * n) / bn ** (2 * n))
    # Curve of growth inside the stamp from the sub-pixels (exact areas).
    order = np.argsort(r_sub.ravel())
    cum = np.cumsum(fine.ravel()[order])
    rs = r_sub.ravel()[order]
    total = np.interp(1.5 * rp, rs, cum)
    r20, r80 = np.interp([0.2 * total, 0.8 * total], cum, rs)
    conc = 5 * np.log10(r80 / r20)
    yy_p, xx_p = np.mgrid[:npix, :npix]
    rr = np.hypot(xx_p - c, yy_p - c)
    vals = np.sort(pix[rr < rp])
    k = np.arange(1, vals.size + 1)
    gini = np.sum((2 * k - vals.size - 1) * vals) / (vals.mean() * vals.size * (vals.size - 1))
    sel = rr < rp
    f, r2 = pix[sel], rr[sel] ** 2
    o = np.argsort(f)[::-1]
    cf = np.cumsum(f[o])
    bright = o[: int(np.searchsorted(cf, 0.2 * cf[-1])) + 1]
    m20 = np.log10(np.sum(f[bright] * r2[bright]) / np.sum(f * r2))
    return rp, conc, gini, m20


def _gamma(x):
    from scipy.special import gamma

    return gamma(x)


@pytest.mark.parametrize("n", [1.0, 4.0])
def test_galaxy_filling_the_stamp_is_measured_with_a_warning(sersic, n):
    # r_e = stamp / 4, as the seed's D25 crops: the galaxy covers the whole
    # stamp and its edges sit near the noise. The sky is known to be zero
    # (as in the survey's linear truth images), so the comparison isolates
    # the truncation of the apertures by the stamp.
    npix, rhalf, flux = 69, 17.0, 400.0
    img = sersic(n, rhalf, npix=npix, flux=flux, noise=0.01, seed=3)
    out = measure_galaxy(img, config=MorphologyConfig(subtract_sky=False, fit_bulge_disk=False))
    _check(out)
    from featuremass.features.flags import SERIOUS_FLAGS, is_good

    assert out["flag"] & (MorphFlag.FILLS_STAMP | MorphFlag.EDGE_TOUCH)
    assert not out["flag"] & SERIOUS_FLAGS and is_good(out["flag"])
    rp, conc, gini, m20 = _analytic_reference(n, rhalf, npix, flux)
    # Tolerances: the statmorph-agreement thresholds of the benchmark
    # (r_p 3 %, C 0.1, Gini 0.02 + noise, M20 0.1); Gini also differs because
    # its segment is the Lotz smoothed-flux segment, not the exact disk < r_p.
    assert out["rpetro_circ"] == pytest.approx(rp, rel=0.03)
    assert out["concentration"] == pytest.approx(conc, abs=0.1)
    assert out["gini"] == pytest.approx(gini, abs=0.04)
    assert out["m20"] == pytest.approx(m20, abs=0.1)
    # A symmetric galaxy: A ~ 0. The background term uses a sky sigma measured
    # on pixels that still hold the galaxy's outskirts (slightly high), hence
    # the one-sided tolerance.
    assert -0.06 < out["asymmetry"] < 0.02
    assert np.isfinite(out["sersic_n"]) and out["sersic_n"] == pytest.approx(n, rel=0.15)
