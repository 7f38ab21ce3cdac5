"""Compiled dynamic-range estimate of the seed-log inverse (see :mod:`featuremass.io.stretch`).

:func:`featuremass.io.stretch.estimate_dynamic_range` finds the dynamic range
``R`` (dex) whose recovered sky noise is ``1 / k`` of the scale: a Brent root
of a quartile equation, then a few secant steps, each evaluating the robust
sky sigma of ``10**(u R) - 1`` over the sorted sky-like pixels. The robust
sky (clipped median and MAD of a sorted run) reads only ``O(log^2 n)`` of
the values, so here the map ``u -> 10**(u R) - 1`` is evaluated lazily at
those indices instead of over the whole stamp for each trial ``R``, and the
whole search runs compiled. :func:`_brent` is the algorithm of
:func:`scipy.optimize.brentq` (Brent 1973, ch. 4). Every step follows
``_dynamic_range_sorted_py`` in the same order, so ``R`` agrees with it to
rounding (the tests hold it there, and :func:`_brent` to ``scipy.optimize.brentq``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_LN10 = math.log(10.0)
#: ``scipy.optimize.brentq``'s default relative tolerance (4 machine epsilons) and iteration cap.
_BRENT_RTOL = 4.0 * np.finfo(float).eps
_BRENT_MAXITER = 100


# ----------------------------------------------------------------- lazy robust sky of expm1((u a) b)
#
# The four kernels below are featuremass.io.stretch's _bisect, _kth_deviation_kernel,
# _median_mad_kernel and _robust_sky_kernel with ``values[i]`` replaced by
# ``expm1((u[i] * a) * b)`` (an increasing map of the sorted ``u``, so the
# values stay sorted); ``a = 0`` means the identity (``values = u``).


@njit(cache=True, inline="always")
def _val(u, i, a, b):
    if a == 0.0:
        return u[i]
    return math.expm1((u[i] * a) * b)


@njit(cache=True)
def _bisect_g(u, a, b, x, lo, hi, right):
    while lo < hi:
        mid = (lo + hi) // 2
        v = _val(u, mid, a, b)
        if v < x or (right and v == x):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _kth_deviation_g(u, a, b, lo, hi, split, med, k):
    n_below, n_above = split - lo, hi - split
    take = k + 1
    i_lo, i_hi = max(0, take - n_above), min(take, n_below)
    i, j = 0, take
    while True:
        i = (i_lo + i_hi) // 2
        j = take - i
        if i < n_below and j > 0 and _val(u, split + j - 1, a, b) - med > med - _val(u, split - 1 - i, a, b):
            i_lo = i + 1
        elif i > 0 and j < n_above and med - _val(u, split - i, a, b) > _val(u, split + j, a, b) - med:
            i_hi = i - 1
        else:
            break
    last_below = med - _val(u, split - i, a, b) if i > 0 else -np.inf
    last_above = _val(u, split + j - 1, a, b) - med if j > 0 else -np.inf
    return max(last_below, last_above)


@njit(cache=True)
def _median_mad_g(u, a, b, lo, hi):
    n = hi - lo
    mid = lo + n // 2
    med = _val(u, mid, a, b) if n % 2 else (_val(u, mid - 1, a, b) + _val(u, mid, a, b)) / 2.0
    split = min(max(_bisect_g(u, a, b, med, 0, u.size, False), lo), hi)
    k = n // 2
    if n % 2:
        mad = _kth_deviation_g(u, a, b, lo, hi, split, med, k)
    else:
        mad = (_kth_deviation_g(u, a, b, lo, hi, split, med, k - 1)
               + _kth_deviation_g(u, a, b, lo, hi, split, med, k)) / 2.0
    return med, 1.4826 * mad


@njit(cache=True)
def _robust_sky_g(u, a, b, n_iter, clip):
    """Clipped median and sigma of ``expm1((u a) b)`` for sorted ``u`` (``robust_sky``'s rounds)."""
    n = u.size
    if n < 10:
        return np.nan, np.nan
    lo, hi = 0, n
    med, sigma = _median_mad_g(u, a, b, lo, hi)
    for _ in range(n_iter):
        if sigma <= 0:
            break
        new_lo = max(_bisect_g(u, a, b, med - clip * sigma, 0, n, True), lo)
        new_hi = min(_bisect_g(u, a, b, med + clip * sigma, 0, n, False), hi)
        if (new_lo == lo and new_hi == hi) or new_hi - new_lo < 10:
            break
        lo, hi = new_lo, new_hi
        med, sigma = _median_mad_g(u, a, b, lo, hi)
    if sigma <= 0:  # quantised or constant sky: the plain std (a pass over the run)
        buf = np.empty(hi - lo)
        for i in range(lo, hi):
            buf[i - lo] = _val(u, i, a, b)
        sigma = np.std(buf)
    return med, sigma


# ----------------------------------------------------------------------------- root finding


@njit(cache=True)
def _equation(mode, x, u, q25, q75, target):
    """mode 0: the quartile equation of ``R``; mode 1: the recovered sky sigma minus the target."""
    if mode == 0:
        return (math.exp(q75 * x * _LN10) - math.exp(q25 * x * _LN10)) / 1.349 - target
    return _robust_sky_g(u, x * _LN10, 1.0, 5, 3.0)[1] - target


@njit(cache=True)
def _brent(mode, xa, xb, xtol, rtol, maxiter, u, q25, q75, target):
    """Root of :func:`_equation` in ``[xa, xb]`` (which must bracket it) by Brent's method.

    The steps of ``scipy.optimize.brentq``: inverse quadratic or secant
    interpolation when it moves less than half the previous step and stays
    inside the bracket, else bisection; stop when half the bracket is below
    ``(xtol + rtol |x|) / 2``.
    """
    xpre, xcur = xa, xb
    xblk, fblk, spre, scur = 0.0, 0.0, 0.0, 0.0
    fpre = _equation(mode, xpre, u, q25, q75, target)
    fcur = _equation(mode, xcur, u, q25, q75, target)
    if fpre == 0:
        return xpre
    if fcur == 0:
        return xcur
    for _ in range(maxiter):
        if fpre != 0 and fcur != 0 and (fpre < 0) != (fcur < 0):
            xblk, fblk = xpre, fpre
            spre = scur = xcur - xpre
        if abs(fblk) < abs(fcur):
            xpre, xcur, xblk = xcur, xblk, xcur
            fpre, fcur, fblk = fcur, fblk, fcur
        delta = (xtol + rtol * abs(xcur)) / 2.0
        sbis = (xblk - xcur) / 2.0
        if fcur == 0 or abs(sbis) < delta:
            return xcur
        if abs(spre) > delta and abs(fcur) < abs(fpre):
            if xpre == xblk:
                stry = -fcur * (xcur - xpre) / (fcur - fpre)
            else:
                dpre = (fpre - fcur) / (xpre - xcur)
                dblk = (fblk - fcur) / (xblk - xcur)
                stry = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
            if 2.0 * abs(stry) < min(abs(spre), 3.0 * abs(sbis) - delta):
                spre, scur = scur, stry
            else:
                spre, scur = sbis, sbis
        else:
            spre, scur = sbis, sbis
        xpre, fpre = xcur, fcur
        if abs(scur) > delta:
            xcur += scur
        else:
            xcur += delta if sbis > 0 else -delta
        fcur = _equation(mode, xcur, u, q25, q75, target)
    return xcur


@njit(cache=True)
def _percentile_sorted(v, q):
    pos = q * (v.size - 1)
    i = int(pos)
    j = min(i + 1, v.size - 1)
    return v[i] + (pos - i) * (v[j] - v[i])


@njit(cache=True)
def _dynamic_range_kernel(u, scale_factor):
    """``featuremass.io.stretch._dynamic_range_sorted`` of the sorted finite ``u``, step for step."""
    if u.size < 10:
        return 3.0
    target = 1.0 / scale_factor
    med_u, sig_u = _robust_sky_g(u, 0.0, 1.0, 5, 3.0)
    if np.isfinite(sig_u) and sig_u > 0:
        m = _bisect_g(u, 0.0, 1.0, med_u + 8.0 * sig_u, 0, u.size, False)
        if m >= 10:
            u = u[:m]
    lo, hi = 0.05, 12.0
    q25, q75 = _percentile_sorted(u, 0.25), _percentile_sorted(u, 0.75)
    if q75 > q25:
        if _equation(0, lo, u, q25, q75, target) < 0 < _equation(0, hi, u, q25, q75, target):
            R_prev = _brent(0, lo, hi, 1e-6, _BRENT_RTOL, _BRENT_MAXITER, u, q25, q75, target)
            f_prev = _equation(1, R_prev, u, q25, q75, target)
            R_cur = R_prev * 1.02
            for _ in range(8):
                f_cur = _equation(1, R_cur, u, q25, q75, target)
                if not np.isfinite(f_cur):
                    break
                if abs(f_cur) < 1e-5 * target or f_cur == f_prev:
                    if lo <= R_cur <= hi:
                        return R_cur
                    break
                R_next = R_cur - f_cur * (R_cur - R_prev) / (f_cur - f_prev)
                R_prev, f_prev, R_cur = R_cur, f_cur, min(max(R_next, lo), hi)
                if abs(R_cur - R_prev) < 1e-5 * R_prev:
                    return R_cur
    f_lo, f_hi = _equation(1, lo, u, q25, q75, target), _equation(1, hi, u, q25, q75, target)
    if not (np.isfinite(f_lo) and np.isfinite(f_hi)):
        return 3.0
    if f_lo >= 0:
        return lo
    if f_hi <= 0:
        return hi
    return _brent(1, lo, hi, 2e-4, _BRENT_RTOL, _BRENT_MAXITER, u, q25, q75, target)
