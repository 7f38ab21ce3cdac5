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

# stretch imports this module inside functions only, so this is no import cycle.
from featuremass.io.stretch import RESIDUAL_FLOOR, _asinh_spread_min, _weighted_line

_LN10 = math.log(10.0)
#: ``scipy.optimize.brentq``'s default relative tolerance (4 machine epsilons) and iteration cap.
_BRENT_RTOL = 4.0 * np.finfo(float).eps
_BRENT_MAXITER = 100


# ----------------------------------------------------------------- lazy robust sky of a monotone map
#
# The kernels below are featuremass.io.stretch's _bisect, _kth_deviation_kernel,
# _median_mad_kernel and _robust_sky_kernel with ``values[i]`` replaced by an
# increasing map of the sorted ``u`` (so the values stay sorted), chosen by ``mode``:
#
#   mode 0: ``u[i]`` (the identity)
#   mode 1: ``expm1((u[i] * a) * b)`` (the logs' inverse, ``a = R``, ``b = ln 10``)
#   mode 2: ``sinh(a * (u[i] - b))`` (the asinh inverse, ``a = D``, ``b = u_sky``)
#
# each written in the order of the NumPy expression it stands for, so that
# ``_map`` gives the value the eager NumPy array holds. The ``_g`` versions
# (``a = 0``: identity, else mode 1) keep the seed-log search's signature.


@njit(cache=True, inline="always")
def _map(u, i, mode, a, b):
    if mode == 0:
        return u[i]
    if mode == 1:
        return math.expm1((u[i] * a) * b)
    return math.sinh(a * (u[i] - b))


@njit(cache=True)
def _bisect_m(u, mode, a, b, x, lo, hi, right):
    while lo < hi:
        mid = (lo + hi) // 2
        v = _map(u, mid, mode, a, b)
        if v < x or (right and v == x):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _kth_deviation_m(u, mode, a, b, lo, hi, split, med, k):
    n_below, n_above = split - lo, hi - split
    take = k + 1
    i_lo, i_hi = max(0, take - n_above), min(take, n_below)
    i, j = 0, take
    while True:
        i = (i_lo + i_hi) // 2
        j = take - i
        if (i < n_below and j > 0
                and _map(u, split + j - 1, mode, a, b) - med > med - _map(u, split - 1 - i, mode, a, b)):
            i_lo = i + 1
        elif i > 0 and j < n_above and med - _map(u, split - i, mode, a, b) > _map(u, split + j, mode, a, b) - med:
            i_hi = i - 1
        else:
            break
    last_below = med - _map(u, split - i, mode, a, b) if i > 0 else -np.inf
    last_above = _map(u, split + j - 1, mode, a, b) - med if j > 0 else -np.inf
    return max(last_below, last_above)


@njit(cache=True)
def _median_mad_m(u, mode, a, b, lo, hi):
    n = hi - lo
    mid = lo + n // 2
    med = _map(u, mid, mode, a, b) if n % 2 else (_map(u, mid - 1, mode, a, b) + _map(u, mid, mode, a, b)) / 2.0
    split = min(max(_bisect_m(u, mode, a, b, med, 0, u.size, False), lo), hi)
    k = n // 2
    if n % 2:
        mad = _kth_deviation_m(u, mode, a, b, lo, hi, split, med, k)
    else:
        mad = (_kth_deviation_m(u, mode, a, b, lo, hi, split, med, k - 1)
               + _kth_deviation_m(u, mode, a, b, lo, hi, split, med, k)) / 2.0
    return med, 1.4826 * mad


@njit(cache=True)
def _robust_sky_m(u, mode, a, b, n_iter, clip):
    """Clipped median and sigma of the mapped sorted ``u`` (``robust_sky``'s rounds)."""
    n = u.size
    if n < 10:
        return np.nan, np.nan
    lo, hi = 0, n
    med, sigma = _median_mad_m(u, mode, a, b, lo, hi)
    for _ in range(n_iter):
        if sigma <= 0:
            break
        new_lo = max(_bisect_m(u, mode, a, b, med - clip * sigma, 0, n, True), lo)
        new_hi = min(_bisect_m(u, mode, a, b, med + clip * sigma, 0, n, False), hi)
        if (new_lo == lo and new_hi == hi) or new_hi - new_lo < 10:
            break
        lo, hi = new_lo, new_hi
        med, sigma = _median_mad_m(u, mode, a, b, lo, hi)
    if sigma <= 0:  # quantised or constant sky: the plain std (a pass over the run)
        buf = np.empty(hi - lo)
        for i in range(lo, hi):
            buf[i - lo] = _map(u, i, mode, a, b)
        sigma = np.std(buf)
    return med, sigma


@njit(cache=True, inline="always")
def _mode_g(a):
    return 0 if a == 0.0 else 1


@njit(cache=True)
def _bisect_g(u, a, b, x, lo, hi, right):
    return _bisect_m(u, _mode_g(a), a, b, x, lo, hi, right)


@njit(cache=True)
def _robust_sky_g(u, a, b, n_iter, clip):
    """Clipped median and sigma of ``expm1((u a) b)`` for sorted ``u`` (``a = 0``: of ``u``)."""
    return _robust_sky_m(u, _mode_g(a), a, b, n_iter, clip)


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


# ----------------------------------------------------------------------- --scale auto, one stamp
#
# ``featuremass.io.stretch.invert_stretch(stamp, "auto")`` on a regular stamp
# (every pixel finite, values within [-1, 1], not constant, no pile-up at the
# floor), compiled step for step from the binned residual levels
# (``_level_bins_rows``, at the end of this module): the homoscedastic ``R`` (``_log_slope``), the seed-log
# candle, the asinh scale, sky and candle, and the lower-tail score of each
# family. Every robust statistic of an inverse reads the sorted stamp through
# the lazy map above, so no inverse image is built until the winner is known.
# The stamp's image is then ``(map(u) - sky) / sigma`` with the map and the
# numbers returned here; the caller builds it with the NumPy expression of the
# per-stamp inverse. Where the per-stamp inverse takes a branch this kernel
# does not follow (a sky with no measurable noise), it returns ``_FALLBACK``
# and the caller inverts that stamp with ``invert_stretch``.

#: ``kind`` codes of the kernel's result (the indices of ``featuremass.io.stretch.STRETCHES``).
_SHIFTED, _ASINH, _LINEAR, _FALLBACK = 0, 2, 3, -1
_MIN_BIN_PIXELS = 15
_AGREE_LOW, _AGREE_HIGH = 0.85, 1.55


@njit(cache=True)
def _agrees_kernel(candle, fitted, fitted_err):
    if not (np.isfinite(candle) and np.isfinite(fitted) and np.isfinite(fitted_err)):
        return False
    return _AGREE_LOW * fitted - 2.0 * fitted_err <= candle <= _AGREE_HIGH * fitted + 2.0 * fitted_err


@njit(cache=True)
def _clip_value(x, lo, hi):
    """``np.clip`` of a scalar (NaN stays NaN)."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


@njit(cache=True)
def _near_sky_len(u_sorted):
    """Length of ``featuremass.io.stretch._near_sky(u_sorted)`` (a prefix of the sorted values)."""
    med, sig = _robust_sky_m(u_sorted, 0, 0.0, 0.0, 5, 3.0)
    if np.isfinite(sig) and sig > 0:
        m = _bisect_m(u_sorted, 0, 0.0, 0.0, med + 8.0 * sig, 0, u_sorted.size, False)
        if m >= 10:
            return m
    return u_sorted.size


@njit(cache=True)
def _asinh_sky_kernel(u_sorted, D, u_sky, rounds):
    """``featuremass.io.stretch._asinh_sky``: the fixed point of ``u_sky += asinh(median) / D``."""
    for _ in range(rounds):
        med = _robust_sky_m(u_sorted, 2, D, u_sky, 5, 3.0)[0]
        if not np.isfinite(med):
            break
        u_sky += math.asinh(med) / D
        if abs(med) < 1e-3:
            break
    return u_sky


@njit(cache=True)
def _asinh_candle_kernel(u_sorted, u_sky, D0):
    """``featuremass.io.stretch._asinh_candle``: ``(D, u_sky)`` of the seed convention, or NaN."""
    u_sorted = u_sorted[:_near_sky_len(u_sorted)]
    D_prev = D0
    D_cur = D0
    f_cur = np.nan
    for _ in range(2):
        u_sky = _asinh_sky_kernel(u_sorted, D_prev, u_sky, 3)
        f_prev = _robust_sky_m(u_sorted, 2, D_prev, u_sky, 5, 3.0)[1] - 1.0
        D_cur = D_prev * (1.1 if f_prev < 0 else 0.9)
        for _ in range(6):
            f_cur = _robust_sky_m(u_sorted, 2, D_cur, u_sky, 5, 3.0)[1] - 1.0
            if not (np.isfinite(f_cur) and np.isfinite(f_prev)) or f_cur == f_prev:
                return np.nan, u_sky
            if abs(f_cur) < 1e-4:
                break
            D_next = _clip_value(D_cur - f_cur * (D_cur - D_prev) / (f_cur - f_prev), 0.05, 60.0)
            D_prev, f_prev, D_cur = D_cur, f_cur, D_next
        if abs(f_cur) > 1e-2:
            return np.nan, u_sky
        moved = abs(D_cur - D_prev) / D_cur
        D_prev = D_cur
        if moved < 1e-4:
            break
    return D_prev, _asinh_sky_kernel(u_sorted, D_prev, u_sky, 5)


@njit(cache=True)
def _lower_tail_excess_kernel(u_sorted, mode, a, b):
    """``featuremass.io.stretch._lower_tail_excess`` of the mapped sorted values."""
    med, sigma = _robust_sky_m(u_sorted, mode, a, b, 5, 3.0)
    if not (np.isfinite(sigma) and sigma > 0):
        return np.inf
    n_low = _bisect_m(u_sorted, mode, a, b, med, 0, u_sorted.size, False)
    if n_low < 40:
        return np.inf
    q2 = _map(u_sorted, int(0.0455 * (n_low - 1)), mode, a, b)
    q1 = _map(u_sorted, int(0.3173 * (n_low - 1)), mode, a, b)
    if not med - q1 > 0:
        return np.inf
    return abs(math.log((med - q2) / (med - q1) / 2.0))


@njit(cache=True)
def _sky_units(u_sorted, mode, a, b):
    """Sky and sigma of ``_to_sky_units``; sigma NaN where the per-stamp inverse falls back on the std."""
    sky, sigma = _robust_sky_m(u_sorted, mode, a, b, 5, 3.0)
    if not (np.isfinite(sigma) and sigma > 0):
        return sky, np.nan
    return sky, sigma


@njit(cache=True)
def _kept_bins(levels, meds, counts):
    """The bins of ``_level_bins`` that hold at least ``_MIN_BIN_PIXELS`` levels, in order."""
    n_keep = 0
    for b in range(counts.size):
        if counts[b] >= _MIN_BIN_PIXELS:
            n_keep += 1
    out_l, out_m, out_w = np.empty(n_keep), np.empty(n_keep), np.empty(n_keep)
    j = 0
    for b in range(counts.size):
        if counts[b] >= _MIN_BIN_PIXELS:
            out_l[j], out_m[j], out_w[j] = levels[b], meds[b], float(counts[b])
            j += 1
    return out_l, out_m, out_w


@njit(cache=True)
def _auto_kernel(u_sorted, levels, meds, weights):
    """``invert_stretch(stamp, "auto")`` of one regular stamp from its sorted values and level bins.

    Returns ``(kind, param, uncertain, mode, a, b, sky, sigma)``: the stamp's
    image is ``(map(u) - sky) / sigma`` with the lazy map ``(mode, a, b)``;
    ``kind`` is ``_FALLBACK`` where the per-stamp inverse must run instead.
    """
    nan = np.nan
    # _log_slope
    R, R_err = nan, nan
    if levels.size >= 3 and levels.max() - levels.min() > 0:
        R, R_err = _weighted_line(levels, meds, weights)
    if not np.isfinite(R) or R <= 3.0 * R_err or R <= 0.05:
        sky, sigma = _sky_units(u_sorted, 0, 0.0, 0.0)
        kind = _LINEAR if np.isfinite(sigma) else _FALLBACK
        return kind, nan, not np.isfinite(R), 0, 0.0, 0.0, sky, sigma
    # _invert_shifted
    R_seed = _dynamic_range_kernel(u_sorted, 1.0)
    shifted_seed = _agrees_kernel(R_seed, R, R_err)
    shifted_uncertain = not shifted_seed and not (np.isfinite(R_err) and R_err <= 0.2 * R)
    R_shifted = _clip_value(R_seed if shifted_seed else R, 0.05, 12.0)
    sky_s, sigma_s = _sky_units(u_sorted, 1, R_shifted, _LN10)
    kind_s = _SHIFTED if np.isfinite(sigma_s) else _FALLBACK
    shifted = (kind_s, R_shifted, shifted_uncertain, 1, R_shifted, _LN10, sky_s, sigma_s)
    # _asinh_scale about the clipped-median sky of u
    u_sky0 = _robust_sky_m(u_sorted, 0, 0.0, 0.0, 5, 3.0)[0]
    if levels.size < 3:
        return shifted
    w = weights / weights.sum()  # integer counts: the sum is exact in any order
    D = math.exp(_asinh_spread_min(math.log(0.05), math.log(60.0), 1e-3, levels - u_sky0, meds, w))
    if not np.isfinite(D):
        return shifted
    near = u_sorted[:_near_sky_len(u_sorted)]
    u_sky = _asinh_sky_kernel(near, D, u_sky0, 3)
    score_shifted = _lower_tail_excess_kernel(u_sorted, 1, R_shifted, _LN10)
    score_asinh = _lower_tail_excess_kernel(u_sorted, 2, D, u_sky)
    if score_shifted <= score_asinh:
        return shifted
    # _invert_asinh (its u_sky and D are the ones above: the same inputs)
    D_seed, u_seed = _asinh_candle_kernel(u_sorted, u_sky0, D)
    asinh_seed = _agrees_kernel(D_seed, D, 0.05 * D)
    if asinh_seed:
        D_a, u_a = D_seed, u_seed
    else:
        D_a, u_a = D, _asinh_sky_kernel(u_sorted, D, u_sky0, 5)
    if shifted_seed and not asinh_seed:
        return shifted
    sky_a, sigma_a = _sky_units(u_sorted, 2, D_a, u_a)
    kind_a = _ASINH if np.isfinite(sigma_a) else _FALLBACK
    return kind_a, D_a, not asinh_seed, 2, D_a, u_a, sky_a, sigma_a


@njit(cache=True)
def _auto_rows(u_sorted, bin_levels, bin_meds, bin_counts, kinds, params, uncertain, modes, a, b, sky, sigma):
    """:func:`_auto_kernel` of every stamp (rows of ``u_sorted``, their 16 level bins), into the outputs."""
    for i in range(u_sorted.shape[0]):
        levels, meds, weights = _kept_bins(bin_levels[i], bin_meds[i], bin_counts[i])
        res = _auto_kernel(u_sorted[i], levels, meds, weights)
        kinds[i], params[i], uncertain[i], modes[i] = res[0], res[1], res[2], res[3]
        a[i], b[i], sky[i], sigma[i] = res[4], res[5], res[6], res[7]


@njit(cache=True)
def _select(a, lo, hi, k):
    """The ``k``-th smallest (0-based) of ``a[lo:hi]``, partially reordering it in place (Hoare's select)."""
    k += lo
    hi -= 1
    while hi > lo:
        mid = (lo + hi) // 2
        x, y, z = a[lo], a[mid], a[hi]
        pivot = max(min(x, y), min(max(x, y), z))  # median of three
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[k]


@njit(cache=True)
def _level_bins_rows(u, levels, meds, counts):
    """``featuremass.io.stretch._level_bins(u[k], all True)`` of every stamp, by selection instead of sorts.

    Every number ``_level_bins`` reads from its two sorted arrays is an order
    statistic: the 1 % and 99 % levels, and in each bin the middle level and
    the middle one or two ``log|r|``. Each is found here by selection
    (:func:`_select`), which returns the same value as indexing the sorted
    array; the bin medians then go through the same key arithmetic
    (``bin * span + (s - s_min)`` minus ``bin * span - s_min``; the key is
    non-decreasing in ``s``, so the key of the order statistic is the order
    statistic of the keys). Fills ``levels``, ``meds`` and ``counts`` (n, 16),
    every count 0 where ``_level_bins`` returns nothing.
    """
    n, ny, nx = u.shape
    nb = counts.shape[1]
    m = (ny - 2) * (nx - 2)
    s = np.empty(m)
    lev = np.empty(m)
    work = np.empty(m)
    group_s = np.empty(m)
    group_l = np.empty(m)
    bins = np.empty(m, dtype=np.int64)
    inner = np.empty(nb - 1)
    starts = np.empty(nb + 1, dtype=np.int64)
    for k in range(n):
        for b in range(nb):
            counts[k, b] = 0
            levels[k, b] = np.nan
            meds[k, b] = np.nan
        q = 0
        for i in range(1, ny - 1):  # _residual_levels, its expressions in its order
            for j in range(1, nx - 1):
                a = u[k, i - 1, j - 1] - 2.0 * u[k, i, j - 1] + u[k, i + 1, j - 1]
                bb = u[k, i - 1, j] - 2.0 * u[k, i, j] + u[k, i + 1, j]
                c = u[k, i - 1, j + 1] - 2.0 * u[k, i, j + 1] + u[k, i + 1, j + 1]
                r = a - 2.0 * bb + c
                if abs(r) < RESIDUAL_FLOOR:
                    continue
                t = ((u[k, i - 1, j - 1] + u[k, i, j - 1] + u[k, i + 1, j - 1])
                     + (u[k, i - 1, j] + u[k, i, j] + u[k, i + 1, j])
                     + (u[k, i - 1, j + 1] + u[k, i, j + 1] + u[k, i + 1, j + 1]))
                s[q] = np.log(abs(r))
                lev[q] = t / 9.0
                q += 1
        if q < 3 * _MIN_BIN_PIXELS:
            continue
        work[:q] = lev[:q]
        lo = _select(work, 0, q, int(0.01 * (q - 1)))
        hi = _select(work, 0, q, int(0.99 * (q - 1)))
        if not hi > lo:
            continue
        step = (hi - lo) / nb  # np.linspace(lo, hi, nb + 1)[1:-1]
        for b in range(1, nb):
            inner[b - 1] = b * step + lo
        s_min, s_max = np.inf, -np.inf
        for e in range(q):
            x = lev[e]
            if not x <= hi:
                bins[e] = nb
                continue
            b = 0
            while b < nb - 1 and inner[b] <= x:
                b += 1
            bins[e] = b
            counts[k, b] += 1
            s_min = min(s_min, s[e])
            s_max = max(s_max, s[e])
        span = s_max - s_min + 1.0
        starts[0] = 0
        for b in range(nb):
            starts[b + 1] = starts[b] + counts[k, b]
        fill = starts[:nb].copy()
        for e in range(q):
            b = bins[e]
            if b < nb:
                group_s[fill[b]] = s[e]
                group_l[fill[b]] = lev[e]
                fill[b] += 1
        for b in range(nb):
            size = counts[k, b]
            if size < _MIN_BIN_PIXELS:
                continue
            first, stop = starts[b], starts[b + 1]
            s_lower = _select(group_s, first, stop, (size - 1) // 2)
            s_upper = _select(group_s, first, stop, size // 2)
            offset = b * span - s_min
            lower = (b * span + (s_lower - s_min)) - offset
            upper = (b * span + (s_upper - s_min)) - offset
            meds[k, b] = (lower + upper) / 2.0
            levels[k, b] = _select(group_l, first, stop, size // 2)
