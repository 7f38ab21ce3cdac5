"""Each compiled (numba) kernel against the plain-NumPy reference beside it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featuremass.features import cas, mid, sersic


def _lumpy(rng, ny, nx):
    """Noise on two blobs: several clumps at most thresholds."""
    y, x = np.mgrid[:ny, :nx]
    blobs = 3 * np.exp(-((x - nx / 3) ** 2 + (y - ny / 2) ** 2) / 20) + 2 * np.exp(
        -((x - 2 * nx / 3) ** 2 + (y - ny / 3) ** 2) / 10)
    return np.maximum(blobs + 0.3 * rng.normal(size=(ny, nx)), 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_mid_clump_kernels_match_scipy_labelling(seed):
    rng = np.random.default_rng(seed)
    sub = _lumpy(rng, 31, 26)
    thresholds = rng.uniform(0.0, 2.5, 17)  # unsorted, with repeats of the same clump count
    np.testing.assert_array_equal(mid._top_two_areas(sub, thresholds), mid._top_two_areas_reference(sub, thresholds))
    py, px = np.unravel_index(int(np.argmax(sub)), sub.shape)
    for t in (0.05, 0.5, 1.5):
        clump, mean = mid._peak_clump(sub, t, py, px)
        ref_clump, ref_mean = mid._peak_clump_reference(sub, t, py, px)
        np.testing.assert_array_equal(clump, ref_clump)
        assert mean == pytest.approx(ref_mean, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_asymmetry_descent_kernel_matches_the_numpy_grid(seed, sersic):
    rng = np.random.default_rng(seed)
    img = sersic(1.5, 5.0, noise=0.05, seed=seed, offset=tuple(rng.uniform(-2, 2, 2)))
    img += sersic(0.5, 1.0, flux=100.0, offset=(5.0, -3.0))
    mask = rng.random(img.shape) < 0.02
    r_ap = rng.uniform(5.0, 15.0)
    rot = cas._Rotator(np.where(mask, 0.0, img), mask, extent=r_ap)
    grid = cas._GridAsymmetry(rot, r_ap, 0.01)
    gx, gy = (int(v) for v in rng.integers(60, 76, 2))
    got = cas._descend(rot.image, grid.valid, rot.mask, grid.templates, rot.pad, grid.half, 0.01, gx, gy, 69, 69, 40)
    ref = cas._descend_reference(grid, gx, gy, 69, 69, 40)
    assert got[:2] == ref[:2]
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-10)


def test_sersic_profile_kernel_matches_numpy():
    log_grid = sersic._log_grid(sersic._unit_grid()[:150])
    for rhalf, n in [(3.0, 1.0), (10.0, 4.0), (0.5, 0.3), (2.0, 8.0)]:
        np.testing.assert_allclose(sersic._profile_and_derivs(log_grid, rhalf, n),
                                   sersic._profile_and_derivs_reference(log_grid, rhalf, n), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("seed", range(3))
def test_bilinear_asymmetry_kernel_matches_the_numpy_rotation(seed, sersic):
    rng = np.random.default_rng(seed)
    img = sersic(1.0, 4.0, noise=0.05, seed=seed, offset=(1.3, -0.7)) + sersic(0.5, 1.0, flux=80.0, offset=(4, 2))
    mask = rng.random(img.shape) < 0.02
    for _ in range(6):
        center = tuple(34.0 + rng.uniform(-4, 4, 2))
        kw = dict(mask=mask, r_out=rng.uniform(3.0, 40.0), r_in=float(rng.choice([0.0, 2.5])),
                  elongation=float(rng.choice([1.0, 1.8])), theta=rng.uniform(0, np.pi),
                  sky_sigma=float(rng.choice([0.0, 0.05])))
        assert cas.rotational_asymmetry(img, center, **kw) == pytest.approx(
            cas._rotational_asymmetry_reference(img, center, **kw), rel=1e-10, abs=1e-12)


def test_small_solver_matches_lapack():
    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 5):
        a = rng.normal(size=(n, n))
        a = a @ a.T + 1e-3 * np.eye(n)  # normal equations are symmetric positive definite
        b = rng.normal(size=n)
        x, ok = sersic._solve_small(a, b)
        assert ok
        np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-9)
    assert not sersic._solve_small(np.zeros((3, 3)), np.ones(3))[1]


@pytest.mark.parametrize("seed", range(5))
def test_ascent_and_saddle_kernels_match_numpy(seed):
    from featuremass.features import segmentation as seg

    rng = np.random.default_rng(seed)
    img = _lumpy(rng, 23 + seed, 30)
    if seed == 4:
        img = np.round(img, 1)  # plateaus: ties keep the first maximum
    region = img > 0.2
    region[rng.random(region.shape) < 0.05] = False
    labels, peaks = seg.ascent_labels(img, region)
    ref_labels, ref_peaks = seg._ascent_labels_reference(img, region)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(peaks, ref_peaks)
    np.testing.assert_array_equal(seg._saddles(img, labels, peaks.size),
                                  seg._saddles_reference(img, labels, peaks.size))


@pytest.mark.parametrize("model", [0, 1, 2])
def test_compiled_levenberg_marquardt_matches_the_python_one(model):
    from featuremass.features import fit_kernels

    rng = np.random.default_rng(model)
    grid = np.concatenate([[0.0], np.geomspace(0.01, 60.0, 80)])
    log_grid = sersic._log_grid(grid)
    nb = 18
    # annulus means of a profile on the grid: smooth, positive averaging weights
    centres = np.geomspace(0.5, 30.0, nb)
    matrix = np.exp(-0.5 * ((grid[None, :] - centres[:, None]) / (0.3 * centres[:, None] + 0.3)) ** 2)
    matrix /= matrix.sum(axis=1, keepdims=True)
    wa, wb = np.empty((grid.size, 3)), np.empty((grid.size, 3))
    if model == fit_kernels.SERSIC:
        truth = np.array([math.log(5.0), math.log(4.0), math.log(2.5)])
        data = sersic._sersic_model(truth, matrix, np.zeros(nb), log_grid, wa)[0].copy()
        p0, lower, upper = np.array([1.0, 1.0, 0.0]), np.array([-np.inf, -3.0, -1.6]), np.array([np.inf, 5.0, 2.1])

        def fun(p):
            return sersic._sersic_model(p, matrix, data, log_grid, wa)
    else:
        rel = model == fit_kernels.BULGE_DISK_NESTED
        truth = np.array([3.0, 1.0, math.log(1.5) - (math.log(6.0) if rel else 0.0), math.log(6.0)])
        data = sersic._bulge_disk_model(truth, matrix, log_grid, wa, wb, rel)[0]
        p0 = truth + np.array([-0.5, 0.3, 0.3, -0.3])
        lower = np.array([0.0, 0.0, math.log(0.01) if rel else math.log(0.05), math.log(0.3)])
        upper = np.array([np.inf, np.inf, 0.0 if rel else 5.0, 5.0])

        def fun(p):
            m, s = sersic._bulge_disk_model(p, matrix, log_grid, wa, wb, rel)
            return m - data, s
    data = data * (1.0 + 0.001 * rng.normal(size=nb))
    ref_p, ref_cost, ref_ok = sersic._levenberg_marquardt(fun, p0, lower, upper, max_iter=80)
    p, cost, ok = fit_kernels.lm_fit(model, p0, lower, upper, matrix, data, log_grid, max_iter=80)
    assert ok == ref_ok
    np.testing.assert_allclose(p, ref_p, rtol=1e-9, atol=1e-12)
    assert cost == pytest.approx(ref_cost, rel=1e-9)
    r0 = fun(p0)[0]
    assert cost < 0.05 * float(r0 @ r0)  # and it fits


@pytest.mark.parametrize("seed", range(3))
def test_growth_curve_kernel_matches_numpy_bit_for_bit(seed):
    from featuremass.features import radii

    rng = np.random.default_rng(seed)
    img = _lumpy(rng, 27, 33)
    y, x = np.mgrid[:27, :33]
    rho = np.hypot(x - 15.3, (y - 12.8) / 0.7)
    mask_w = (rng.random(img.shape) > 0.1).astype(float)
    got = radii._growth_curves((img, None, mask_w), rho, 14.2)
    ref = radii._growth_curves_reference((img, None, mask_w), rho, 14.2)
    np.testing.assert_array_equal(got[0], ref[0])
    for a, b in zip(got[1], ref[1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(4))
def test_mid_threshold_kernel_matches_the_labelling_reference(seed):
    rng = np.random.default_rng(seed)
    sub = _lumpy(rng, 29, 31)
    py, px = np.unravel_index(int(np.argmax(sub)), sub.shape)
    values = np.sort(sub[sub > 0.05 * seed])
    for eta in (0.05, 0.2, 0.6):
        assert mid._threshold_index(sub, values, int(py), int(px), eta) == \
            mid._threshold_index_reference(sub, values, int(py), int(px), eta)


def test_cross_dilation_kernel_matches_numpy_and_scipy():
    from scipy import ndimage as ndi

    from featuremass.features import segmentation as seg

    rng = np.random.default_rng(0)
    mask = rng.random((17, 23)) < 0.05
    for it in (0, 1, 4):
        got = seg._dilate_cross(mask, it)
        np.testing.assert_array_equal(got, seg._dilate_cross_reference(mask, it))
        if it:
            np.testing.assert_array_equal(got, ndi.binary_dilation(mask, iterations=it))


@pytest.mark.parametrize("density", [0.05, 0.3, 0.55, 0.8])
def test_label8_kernel_matches_scipy_label_numbering(density):
    """Same components, numbered in the same (raster) order, as ``ndi.label`` with the 3 x 3 square."""
    from scipy import ndimage as ndi

    from featuremass.features import segmentation as seg

    rng = np.random.default_rng(int(density * 100))
    for shape in ((1, 1), (1, 9), (9, 1), (23, 17), (40, 40)):
        mask = rng.random(shape) < density
        labels, n = seg.label8(mask)
        ref, n_ref = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
        assert n == n_ref
        assert labels.dtype == ref.dtype
        np.testing.assert_array_equal(labels, ref)
        # A region of every pixel, and of none.
        for m in (np.ones(shape, dtype=bool), np.zeros(shape, dtype=bool)):
            np.testing.assert_array_equal(seg.label8(m)[0], ndi.label(m, structure=np.ones((3, 3)))[0])


@pytest.mark.parametrize("seed", range(3))
def test_component8_kernel_matches_the_labelling(seed):
    """``labels == labels[y, x]`` of ``ndi.label``, also from a pixel outside the mask (the background)."""
    from scipy import ndimage as ndi

    from featuremass.features import segmentation as seg

    rng = np.random.default_rng(seed)
    mask = rng.random((31, 26)) < 0.45
    ref, _ = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    for y, x in zip(rng.integers(0, 31, 12), rng.integers(0, 26, 12), strict=True):
        np.testing.assert_array_equal(seg.component8(mask, y, x), ref == ref[y, x])


@pytest.mark.parametrize("seed", range(6))
def test_sky_clipping_kernel_matches_numpy_bit_for_bit(seed):
    """The compiled clipping passes of ``estimate_sky`` against their ``np.cumsum`` / ``np.searchsorted`` reference."""
    from featuremass.features import sky

    rng = np.random.default_rng(seed)
    n = int(rng.integers(60, 3000))
    values = rng.normal(3.0, 0.5, n)
    values[: n // 7] += rng.exponential(4.0, n // 7)  # a source's tail to clip
    values = np.sort(np.round(values, 2 if seed % 2 else 12))  # ties on every other seed
    med = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - med)))
    for clip, n_iter, min_pixels in ((3.0, 5, 50), (2.0, 10, 10), (1.0, 3, n - 5), (0.05, 5, 50)):
        factor = sky._clip_std_factor(clip)
        got = sky._clip_sorted_kernel(values, med, sigma, clip, n_iter, min_pixels, factor)
        ref = sky._clip_sorted_reference(values, med, sigma, clip, n_iter, min_pixels, factor)
        assert got[0] == ref[0] and got[4] == ref[4]
        np.testing.assert_array_equal(np.array(got[1:4]), np.array(ref[1:4]))  # NaN where both fail


@pytest.mark.parametrize("seed", range(4))
def test_petrosian_crossing_kernel_matches_numpy(seed):
    """The compiled crossing search of ``petrosian_radius`` against its NumPy reference, in and out of a box."""
    from featuremass.features import radii

    rng = np.random.default_rng(seed)
    ny, nx = 45, 51
    y, x = np.mgrid[:ny, :nx]
    elong = 1.0 if seed % 2 == 0 else 1.6
    rho = np.hypot(x - 25.3, (y - 21.8) * elong)
    img = np.exp(-rho / rng.uniform(2.0, 9.0)) + rng.normal(0.0, 0.01 * (seed + 1), (ny, nx))
    if seed == 3:
        img[::3] = 0.0  # a striped, masked stamp: annuli lose coverage
    mask = rng.random((ny, nx)) < 0.05 * seed
    coarse = np.linspace(1.0, float(np.hypot(ny, nx)) * elong, 100)
    for r_valid in (None, 8.5, 20.0):
        r_max = coarse[-1] if r_valid is None else r_valid
        grid, (flux, area) = radii._growth_curves((np.where(mask, 0.0, img), (~mask).astype(float)), rho, r_max)
        for eta in (0.01, 0.2, 0.5, 0.95):
            ref = radii._crossing_reference(flux, area, grid, coarse, r_valid, eta, elong)
            found, value = radii._crossing_kernel(flux, area, grid, 10, coarse, -1.0 if r_valid is None else r_valid,
                                                  r_valid is not None, eta, elong, radii.MIN_ANNULUS_COVERAGE,
                                                  radii.GRID_STEP)
            if ref is None:
                assert not found
            else:
                assert found
                np.testing.assert_array_equal(value, ref)  # bit for bit, NaN included
