"""The compiled dynamic-range search and the batched seed-log inverse against their references.

References: ``scipy.optimize.brentq`` (Brent's method), the NumPy/SciPy
``_dynamic_range_sorted_py`` and robust sky of :mod:`featuremass.io.stretch`,
and the per-stamp ``invert_stretch(stamp, 'seed-log')``; independently, the
dynamic range the forward :func:`seed_stretch` used.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from featuremass.features.seedlog import seed_log_inverse_stack
from featuremass.io import stretch, stretch_kernels


def _galaxy(rng, n=48, flux=400.0):
    y, x = np.mgrid[:n, :n]
    r = np.hypot(x - n / 2 + rng.uniform(-2, 2), y - n / 2 + rng.uniform(-2, 2))
    return flux * np.exp(-r / rng.uniform(2.0, 6.0)) + rng.normal(size=(n, n)) + rng.uniform(-5, 5)


@pytest.mark.parametrize("q25,q75,target", [(0.1, 0.2, 1.0), (0.02, 0.05, 0.5), (0.3, 0.9, 2.0)])
def test_brent_matches_scipy_brentq(q25, q75, target):
    u = np.zeros(1)

    def f(R):
        return (math.exp(q75 * R * stretch_kernels._LN10) - math.exp(q25 * R * stretch_kernels._LN10)) / 1.349 - target

    expected = optimize.brentq(f, 0.05, 12.0, xtol=1e-6)
    got = stretch_kernels._brent(0, 0.05, 12.0, 1e-6, stretch_kernels._BRENT_RTOL, 100, u, q25, q75, target)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_lazy_robust_sky_matches_the_eager_one(seed):
    rng = np.random.default_rng(seed)
    u = np.sort(np.concatenate([rng.normal(0.2, 0.01, 3000), rng.uniform(0.2, 1.0, 400)]))
    assert stretch_kernels._robust_sky_g(u, 0.0, 1.0, 5, 3.0) == stretch._robust_sky_sorted_py(u)
    R = 3.7
    med, sig = stretch._robust_sky_sorted_py(np.expm1(u * R * np.log(10.0)))
    got = stretch_kernels._robust_sky_g(u, R, stretch_kernels._LN10, 5, 3.0)
    assert got[0] == pytest.approx(med, rel=1e-13) and got[1] == pytest.approx(sig, rel=1e-13)


def test_dynamic_range_kernel_matches_the_reference_and_the_forward_stretch():
    rng = np.random.default_rng(7)
    for k in range(6):
        img = _galaxy(rng, flux=10.0 ** rng.uniform(1.5, 3.5))
        y = stretch.seed_stretch(img)
        u = np.sort(((np.clip(y.astype(np.float64), -1, 1) + 1) / 2).ravel())
        ref = stretch._dynamic_range_sorted_py(u, 1.0)
        assert stretch._dynamic_range_sorted(u, 1.0) == pytest.approx(ref, rel=1e-9)
        # Independent: the forward stretch's own R (max z - min z, z = log10(1 + x / s)).
        assert ref == pytest.approx(_forward_range(img), rel=0.05), k


def _forward_range(img):
    """``R = max z - min z`` of the seed stretch from its definition, ``z = log10(x - min x + s)``."""
    sky, sigma = stretch.robust_sky(img.ravel())
    x = img - sky
    z = np.log10(x - x.min() + sigma)
    return float(z.max() - z.min())


def test_batched_seed_log_inverse_matches_the_per_stamp_inverse():
    rng = np.random.default_rng(3)
    stack = np.stack([stretch.seed_stretch(_galaxy(rng, flux=10.0 ** rng.uniform(1.5, 3.5))) for _ in range(7)])
    stack[3, 5, 5] = np.nan           # a bad pixel: the per-stamp path
    stack[4] = 0.25                   # a constant stamp
    linear, R = seed_log_inverse_stack(stack)
    for i, stamp in enumerate(stack):
        inv = stretch.invert_stretch(stamp.astype(np.float64), "seed-log")
        np.testing.assert_allclose(linear[i], inv.image, rtol=1e-9, atol=1e-9 * np.nanmax(np.abs(inv.image)) + 1e-12)
        assert (np.isnan(R[i]) and np.isnan(inv.param)) or R[i] == pytest.approx(inv.param, rel=1e-12)
    # float64 input gives the same as float32 (the sort order is the same)
    lin64, R64 = seed_log_inverse_stack(stack.astype(np.float64))
    np.testing.assert_array_equal(R64, R)
