"""The fast tier against analytic Sérsic profiles (GalSim), and its invariances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import gammainc, gammaincinv

from featuremass.features.batch import extract_features
from featuremass.features.fast import FAST_COLUMNS, fast_features
from featuremass.features.flags import MorphFlag
from featuremass.features.transformer import MorphologyFeatures
from featuremass.io.stretch import STRETCH_COLUMNS


def _col(values, name):
    return values[:, FAST_COLUMNS.index(name)]


def _sersic_radius(n, rhalf, fraction, r_max):
    """Radius holding ``fraction`` of a Sérsic profile's light within ``r_max`` (Graham & Driver 2005)."""
    b = gammaincinv(2 * n, 0.5)
    inside = gammainc(2 * n, b * (r_max / rhalf) ** (1 / n))
    return rhalf * (gammaincinv(2 * n, fraction * inside) / b) ** n


@pytest.mark.parametrize("n", [0.5, 1.0, 2.0])
def test_radii_and_areas_match_the_sersic_growth_curve(sersic, n):
    img = sersic(n, 4.0, npix=69, flux=1000.0) + 3.0  # a sky offset the border removes
    values, flags = fast_features(img[None])
    assert flags[0] & int(MorphFlag.BLANK_IMAGE | MorphFlag.NO_SOURCE) == 0
    for f, name in zip((0.2, 0.5, 0.8), ("fast_r20", "fast_r50", "fast_r80"), strict=True):
        # The curve of growth stops at r_max = 34.5 px; the areas count the whole square stamp.
        assert _col(values, name)[0] == pytest.approx(_sersic_radius(n, 4.0, f, 34.5), rel=0.05, abs=0.3)
        # A circular, monotonic profile: the brightest pixels holding f fill the disc of radius r_f.
        area = _col(values, f"fast_area{int(f * 100)}")[0]
        assert area == pytest.approx(np.pi * _sersic_radius(n, 4.0, f, 34.5 * 1.13) ** 2, rel=0.1, abs=3.0)


def test_ellipticity_of_an_elliptical_gaussian(sersic):
    img = sersic(0.5, 5.0, q=0.5, beta_deg=30.0)
    values, _ = fast_features(img[None])
    assert _col(values, "fast_ellipticity")[0] == pytest.approx(0.5, abs=0.02)
    assert _col(values, "fast_asymmetry_stamp")[0] == pytest.approx(0.0, abs=0.01)


def test_asymmetry_sees_an_off_centre_clump(sersic):
    smooth = sersic(1.0, 5.0, noise=0.01, seed=1)
    clumpy = smooth + sersic(0.5, 1.0, flux=300.0, offset=(6.0, 3.0))
    values, _ = fast_features(np.stack([smooth, clumpy]))
    a = _col(values, "fast_asymmetry_r50")
    assert abs(a[0]) < 0.05 and a[1] > 0.2


def test_values_do_not_depend_on_flux_scale_or_zero_point(sersic):
    stack = np.stack([sersic(n, r, noise=0.05, seed=s) for s, (n, r) in enumerate([(1, 4), (3, 6), (0.5, 8)])])
    v1, f1 = fast_features(stack)
    v2, f2 = fast_features(1e-3 * stack - 7.5)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_allclose(v1, v2, rtol=1e-7, atol=1e-9, equal_nan=True)


def test_blank_and_bad_stamps_give_nan_and_a_flag_without_touching_the_others(sersic):
    good = sersic(1.0, 4.0, noise=0.05, seed=3)
    holed = good.copy()
    holed[30:33, 30:33] = np.nan
    stack = np.stack([good, np.zeros_like(good), np.full_like(good, 5.0), np.full_like(good, np.nan), holed])
    values, flags = fast_features(stack)
    alone, _ = fast_features(good[None])
    np.testing.assert_allclose(values[0], alone[0], rtol=1e-10)
    for i in (1, 2, 3):
        assert flags[i] & int(MorphFlag.BLANK_IMAGE)
        assert np.isnan(values[i]).all()
    assert flags[4] & int(MorphFlag.BAD_PIXELS)
    assert np.isfinite(_col(values, "fast_r50")[4])


def test_extract_and_transformer_take_the_fast_set(sersic):
    stack = np.stack([sersic(1.0, 4.0, noise=0.05, seed=s) for s in range(3)] + [np.zeros((69, 69))])
    df = extract_features(stack, scale="linear", feature_set="fast")
    assert list(df.columns) == ["galaxy_id", *FAST_COLUMNS, *STRETCH_COLUMNS, "flag"]
    assert len(df) == 4 and df["flag"].iloc[3] & int(MorphFlag.BLANK_IMAGE)
    X = MorphologyFeatures(scale="linear", feature_set="fast").fit_transform(stack)
    assert X.shape == (4, len(FAST_COLUMNS) + 1)
    np.testing.assert_allclose(X[:, :-1], df[list(FAST_COLUMNS)].to_numpy(), equal_nan=True)


def test_cli_extract_fast_feature_set(sersic, tmp_path):
    from featuremass.cli import main
    from featuremass.features.batch import read_feature_table

    imgs = tmp_path / "imgs.npy"
    np.save(imgs, np.stack([sersic(1.0, 4.0, noise=0.05, seed=s) for s in range(2)]))
    out = tmp_path / "f.parquet"
    assert main(["extract", "--images", str(imgs), "--feature-set", "fast", "--out", str(out)]) == 0
    df, meta = read_feature_table(out)
    assert list(df.columns) == ["galaxy_id", *FAST_COLUMNS, *STRETCH_COLUMNS, "flag"]
    assert meta["feature_set"] == "fast"
    assert main(["extract", "--images", str(imgs), "--feature-set", "fast", "--backend", "statmorph",
                 "--out", str(tmp_path / "g.parquet")]) == 2


def test_compiled_areas_and_gini_match_their_numpy_references():
    from featuremass.features.fast import (
        FRACTIONS,
        _areas_gini_kernel,
        gini_of_brightest,
        light_areas,
    )

    rng = np.random.default_rng(4)
    rows = np.concatenate([rng.exponential(1.0, (6, 500)) - 0.3,   # sky below zero too
                           rng.normal(0.0, 1.0, (2, 500)),          # total may be <= 0
                           np.zeros((1, 500))], axis=0)
    rows[0, :3] = [50.0, 40.0, 30.0]                               # a few pixels hold most light
    sorted_asc = np.sort(rows, axis=1)
    total = rows.sum(axis=1)
    areas, gini = np.empty((len(rows), 3)), np.empty(len(rows))
    _areas_gini_kernel(sorted_asc, total, np.asarray(FRACTIONS), areas, gini)
    sorted_desc = sorted_asc[:, ::-1]
    ref_areas = light_areas(sorted_desc, total, FRACTIONS)
    np.testing.assert_array_equal(areas, ref_areas)
    np.testing.assert_array_equal(gini, gini_of_brightest(sorted_desc, ref_areas[:, 2]))
    assert np.isfinite(areas[:6]).all() and np.isnan(areas[-1]).all()


def test_centred_asymmetry_matches_the_masked_numpy_expression():
    from featuremass.features.fast import rotational_asymmetry_stamp

    rng = np.random.default_rng(9)
    n, ny, nx = 4, 21, 24
    data = rng.normal(size=(n, ny, nx)) + 5.0 * rng.uniform(size=(n, 1, 1))
    sigma = rng.uniform(0.5, 1.5, n)
    center = (np.array([10.2, 3.0, np.nan, 20.7]), np.array([9.6, 15.4, 4.0, np.nan]))
    region = rng.uniform(size=data.shape) < 0.7
    got = rotational_asymmetry_stamp(data, sigma, region=region, center=center)
    # reference: I_180[y, x] = I[2 y_c - y, 2 x_c - x] by fancy indexing, pixels without a partner masked
    mx = np.round(2 * np.nan_to_num(center[0], nan=nx - 1)).astype(int)
    my = np.round(2 * np.nan_to_num(center[1], nan=ny - 1)).astype(int)
    xs, ys = mx[:, None] - np.arange(nx), my[:, None] - np.arange(ny)
    valid = ((ys >= 0) & (ys < ny))[:, :, None] & ((xs >= 0) & (xs < nx))[:, None, :] & region
    rotated = data[np.arange(n)[:, None, None], ys.clip(0, ny - 1)[:, :, None], xs.clip(0, nx - 1)[:, None, :]]
    num = np.where(valid, np.abs(data - rotated), 0.0).sum(axis=(1, 2))
    den = np.where(valid, np.abs(data), 0.0).sum(axis=(1, 2))
    expected = (num - valid.sum(axis=(1, 2)) * 2.0 * sigma / np.sqrt(np.pi)) / den
    np.testing.assert_array_equal(got, expected)
    whole = rotational_asymmetry_stamp(data, sigma)
    expected = (np.abs(data - data[:, ::-1, ::-1]).sum(axis=(1, 2)) - ny * nx * 2.0 * sigma / np.sqrt(np.pi)) \
        / np.abs(data).sum(axis=(1, 2))
    np.testing.assert_array_equal(whole, expected)


def test_radial_bins_match_bincount():
    from featuremass.features.fast import _radial_bins

    rng = np.random.default_rng(2)
    data = rng.normal(size=(3, 17, 19))
    xc, yc = rng.uniform(5, 12, 3), rng.uniform(5, 12, 3)
    nb, step = 12, 0.5
    r, flux, count = np.empty(data.shape), np.empty((3, nb + 1)), np.empty((3, nb + 1))
    _radial_bins(data, xc, yc, step, nb, r, flux, count)
    y, x = np.mgrid[:17, :19]
    ref_r = np.sqrt((x[None] - xc[:, None, None]) ** 2 + (y[None] - yc[:, None, None]) ** 2)
    np.testing.assert_array_equal(r, ref_r)
    idx = (np.arange(3)[:, None, None] * (nb + 1) + np.minimum((ref_r / step).astype(int), nb)).ravel()
    np.testing.assert_array_equal(flux.ravel(), np.bincount(idx, weights=data.ravel(), minlength=3 * (nb + 1)))
    np.testing.assert_array_equal(count.ravel(), np.bincount(idx, minlength=3 * (nb + 1)))
