"""The seed's log stretch, and an approximate inverse back to linear flux.

The workshop data (Dobbels et al. 2019 layout) stores every cutout
log-scaled with an *automatic* scale and then normalised per image to
[-1, 1]. featuremass uses one explicit definition of that stretch:

.. math::

    x &= I - \\mathrm{sky}, \\qquad s = k\\,\\sigma_\\mathrm{sky} \\\\
    z &= \\log_{10}\\bigl(x - \\min x + s\\bigr) \\\\
    y &= 2\\,\\frac{z - \\min z}{\\max z - \\min z} - 1

where ``sky`` and ``sigma_sky`` are the sigma-clipped median and the
MAD-based standard deviation of the image (the "automatic scale"), and
``k`` (default 1) sets where the log turns over from linear to logarithmic.

Classical morphology (CAS, Gini, M20, Petrosian radii...) is defined on linear
flux, so :func:`inverse_seed_stretch` undoes the stretch approximately. Writing
``u = (y + 1) / 2`` and ``R = max z - min z`` (the dynamic range in dex),

.. math::

    \\frac{x - \\min x}{s} = 10^{u R} - 1 .

Only ``R`` is unknown. Because ``s`` is tied to the sky noise, the sky pixels of
the recovered image must have a standard deviation of exactly ``1/k`` in units
of ``s``; :func:`inverse_seed_stretch` solves for the ``R`` that makes this so
(the sky noise is a standard candle inside every stamp).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from featuremass.errors import FeaturemassError

#: Default ratio of the log's turnover scale to the sky noise.
DEFAULT_SCALE_FACTOR = 1.0


def robust_sky(image: np.ndarray, *, n_iter: int = 5, clip: float = 3.0) -> tuple[float, float]:
    """Sigma-clipped median and MAD standard deviation of an image's sky.

    Iteratively discards pixels more than ``clip`` standard deviations from the
    median (the galaxy, stars), as in the usual SExtractor-style background
    estimate. Non-finite pixels are ignored.

    Returns
    -------
    (sky, sigma) : tuple of float
        NaN, NaN when fewer than 10 finite pixels remain; ``sigma`` is 0 for a
        constant image.
    """
    values = np.asarray(image, dtype=np.float64).ravel()
    values = np.sort(values[np.isfinite(values)])
    return _robust_sky_sorted(values, n_iter=n_iter, clip=clip)


def _robust_sky_sorted(values: np.ndarray, *, n_iter: int = 5, clip: float = 3.0) -> tuple[float, float]:
    """:func:`robust_sky` of finite values already sorted in increasing order.

    Each clipping pass keeps a contiguous run ``values[lo:hi]``, so the median
    is an index lookup and the kept run is found by binary search; only the
    MAD needs a pass over the run (``np.partition``).
    """
    n = values.size
    if n < 10:
        return float("nan"), float("nan")
    lo, hi = 0, n
    med, sigma = _median_mad_sorted(values, lo, hi)
    for _ in range(n_iter):
        if sigma <= 0:
            break
        # keep |v - med| < clip * sigma, within the current run
        new_lo = max(int(np.searchsorted(values, med - clip * sigma, side="right")), lo)
        new_hi = min(int(np.searchsorted(values, med + clip * sigma, side="left")), hi)
        if (new_lo == lo and new_hi == hi) or new_hi - new_lo < 10:
            break
        lo, hi = new_lo, new_hi
        med, sigma = _median_mad_sorted(values, lo, hi)
    if sigma <= 0:  # quantised or constant sky: fall back on the plain std
        sigma = float(np.std(values[lo:hi]))
    return med, sigma


def _median_mad_sorted(values: np.ndarray, lo: int, hi: int) -> tuple[float, float]:
    """Median and ``1.4826 * MAD`` of the sorted run ``values[lo:hi]`` (as ``np.median``).

    The absolute deviations below and above the median are two sorted
    sequences, so their median is found by a binary search over how many of
    the smallest deviations come from each side (O(log n), no pass over the
    data).
    """
    n = hi - lo
    mid = lo + n // 2
    med = float(values[mid]) if n % 2 else float((values[mid - 1] + values[mid]) / 2.0)
    split = min(max(int(np.searchsorted(values, med, side="left")), lo), hi)
    k = n // 2
    if n % 2:
        mad = _kth_deviation(values, lo, hi, split, med, k)
    else:
        mad = (_kth_deviation(values, lo, hi, split, med, k - 1) + _kth_deviation(values, lo, hi, split, med, k)) / 2.0
    return med, 1.4826 * mad


def _kth_deviation(values: np.ndarray, lo: int, hi: int, split: int, med: float, k: int) -> float:
    """``k``-th smallest (0-based) of ``|v - med|`` over the sorted run ``values[lo:hi]``.

    ``below[i] = med - values[split - 1 - i]`` and ``above[j] = values[split + j] - med``
    are both increasing; the ``k + 1`` smallest deviations are ``i`` of the
    first and ``k + 1 - i`` of the second for one ``i``, found by bisection.
    """
    n_below, n_above = split - lo, hi - split
    take = k + 1
    i_lo, i_hi = max(0, take - n_above), min(take, n_below)
    while True:
        i = (i_lo + i_hi) // 2
        j = take - i
        if i < n_below and j > 0 and values[split + j - 1] - med > med - values[split - 1 - i]:
            i_lo = i + 1  # the next deviation below the median is smaller: take more of them
        elif i > 0 and j < n_above and med - values[split - i] > values[split + j] - med:
            i_hi = i - 1
        else:
            break
    last_below = med - values[split - i] if i > 0 else -np.inf
    last_above = values[split + j - 1] - med if j > 0 else -np.inf
    return float(max(last_below, last_above))


def seed_stretch(
    image: np.ndarray, *, scale_factor: float = DEFAULT_SCALE_FACTOR
) -> np.ndarray:
    """Log-scale with an automatic scale and normalise to [-1, 1] (the seed's stretch).

    Parameters
    ----------
    image : ndarray, shape (ny, nx) or (n, ny, nx)
        Linear flux. A stack is stretched image by image.
    scale_factor : float
        ``k`` in the module equation: the log turns over at ``k`` times the sky
        noise.

    Returns
    -------
    ndarray of float32, same shape, values in [-1, 1]. A constant or
    non-finite image maps to all -1 (there is nothing to scale).
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3:
        return np.stack([seed_stretch(a, scale_factor=scale_factor) for a in arr])
    if arr.ndim != 2:
        raise FeaturemassError(f"seed_stretch expects a 2-D image or a 3-D stack, got shape {arr.shape}")
    if scale_factor <= 0:
        raise FeaturemassError(f"scale_factor must be positive, got {scale_factor}")
    finite = np.isfinite(arr)
    out = np.full(arr.shape, -1.0, dtype=np.float32)
    if finite.sum() < 10:
        return out
    sky, sigma = robust_sky(arr)
    x = np.where(finite, arr - sky, 0.0)
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = float(np.ptp(x[finite])) * 1e-3
        if sigma <= 0:
            return out
    s = scale_factor * sigma
    z = np.log10(x - x[finite].min() + s)
    zmin, zmax = z[finite].min(), z[finite].max()
    if zmax <= zmin:
        return out
    y = 2.0 * (z - zmin) / (zmax - zmin) - 1.0
    out[finite] = np.clip(y[finite], -1.0, 1.0)
    return out


#: The stretches featuremass can apply and invert (see :func:`apply_stretch`).
STRETCHES = ("shifted-log", "clipped-log", "asinh", "linear")


def apply_stretch(
    linear_image: np.ndarray,
    kind: str,
    *,
    softening: float = 1.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Stretch linear flux with one of :data:`STRETCHES` and normalise to [-1, 1].

    With ``sky`` and ``sigma`` the sigma-clipped median and MAD standard
    deviation of the image (:func:`robust_sky`), ``x = I - sky`` and the
    softening ``a = softening * sigma``:

    ===============  =====================================================
    ``shifted-log``  ``z = log10(x - min x + a)`` (:func:`seed_stretch`)
    ``clipped-log``  ``z = log10(1 + max(x, 0) / a)``: the negative half
                     of the sky noise piles up at the floor (-1)
    ``asinh``        ``z = asinh(x / a)`` (Lupton et al. 1999, AJ 118, 1406)
    ``linear``       ``z = I``
    ===============  =====================================================

    then ``y = 2 (z - min z) / (max z - min z) - 1`` per image. Non-finite
    pixels become -1; an image with fewer than 10 finite pixels, or a
    constant one, maps to all -1 (there is nothing to scale).

    Parameters
    ----------
    linear_image : ndarray, shape (ny, nx) or (n, ny, nx)
        Linear flux; a stack is stretched image by image.
    kind : str
        One of :data:`STRETCHES`.
    softening : float
        ``a`` in units of the robust sky sigma (where the log / asinh turns
        over from linear); ignored by ``linear``.
    rng : numpy.random.Generator, optional
        Accepted so that simulators can pass their generator to every
        preparation step; the four maps are deterministic and do not draw.

    Returns
    -------
    ndarray of float32, same shape, values in [-1, 1].
    """
    if kind not in STRETCHES:
        raise FeaturemassError(f"unknown stretch {kind!r}; expected one of {', '.join(STRETCHES)}")
    if not (np.isfinite(softening) and softening > 0):
        raise FeaturemassError(f"softening must be positive, got {softening}")
    arr = np.asarray(linear_image, dtype=np.float64)
    if arr.ndim == 3:
        return np.stack([apply_stretch(a, kind, softening=softening, rng=rng) for a in arr]) if len(arr) \
            else np.zeros(arr.shape, dtype=np.float32)
    if arr.ndim != 2:
        raise FeaturemassError(f"apply_stretch expects a 2-D image or a 3-D stack, got shape {arr.shape}")
    if kind == "shifted-log":
        return seed_stretch(arr, scale_factor=softening)
    finite = np.isfinite(arr)
    out = np.full(arr.shape, -1.0, dtype=np.float32)
    if finite.sum() < 10:
        return out
    if kind == "linear":
        z = arr
    else:
        sky, sigma = robust_sky(arr)
        x = np.where(finite, arr - sky, 0.0)
        if not np.isfinite(sigma) or sigma <= 0:
            sigma = float(np.ptp(x[finite])) * 1e-3
            if sigma <= 0:
                return out
        a = softening * sigma
        z = np.log10(1.0 + np.maximum(x, 0.0) / a) if kind == "clipped-log" else np.arcsinh(x / a)
    out[finite] = _normalise(z[finite])
    return out


def _normalise(z: np.ndarray) -> np.ndarray:
    """Affine map of ``z`` onto [-1, 1] (all -1 when ``z`` is constant)."""
    zmin, zmax = z.min(), z.max()
    if not zmax > zmin:
        return np.full(z.shape, -1.0)
    return np.clip(2.0 * (z - zmin) / (zmax - zmin) - 1.0, -1.0, 1.0)


def _sky_pixels(u: np.ndarray) -> np.ndarray:
    """Pixels of the stretched image that are sky: below a clipped threshold."""
    values = u[np.isfinite(u)].ravel()
    med, sigma = robust_sky(values)
    if not np.isfinite(sigma) or sigma <= 0:
        return values[values <= med]
    return values[np.abs(values - med) < 3 * sigma]


def inverse_seed_stretch(
    stretched: np.ndarray,
    *,
    scale_factor: float = DEFAULT_SCALE_FACTOR,
    dynamic_range_dex: float | None = None,
) -> np.ndarray:
    """Approximately invert :func:`seed_stretch` to linear, sky-subtracted flux.

    The result is in units of the stretch scale ``s`` (``k`` times the sky
    noise), i.e. the sky noise of the result is about ``1/k``.

    What it recovers: the *relative* linear flux of every pixel above the
    8-bit / float quantisation, so that ratios (concentration, Gini, M20,
    Petrosian radii, asymmetry, Sérsic n) are meaningful.

    What it cannot recover: the absolute flux calibration and the sky level
    (both removed by the stretch), any pixel that was clipped or saturated
    before stretching, flux structure below the quantisation step (8-bit PNGs
    keep only 256 levels, so the faint outskirts are coarse), and the exact
    dynamic range when the stamp has almost no sky pixels (for example a
    galaxy that fills the stamp); then the estimate of ``R`` is biased and so
    are the recovered flux ratios. If the images were stretched by a different
    rule than featuremass's, the inverse is only approximately right.

    Parameters
    ----------
    stretched : ndarray, shape (ny, nx) or (n, ny, nx)
        Values in [-1, 1].
    scale_factor : float
        The ``k`` used by the forward stretch.
    dynamic_range_dex : float, optional
        ``R = max z - min z`` if known (e.g. stored with the data); otherwise
        it is estimated from the sky noise, as described in the module docs.

    Returns
    -------
    ndarray of float64, same shape. NaN where the input is not finite.
    """
    arr = np.asarray(stretched, dtype=np.float64)
    if arr.ndim == 3:
        return np.stack(
            [
                inverse_seed_stretch(a, scale_factor=scale_factor, dynamic_range_dex=dynamic_range_dex)
                for a in arr
            ]
        )
    if arr.ndim != 2:
        raise FeaturemassError(
            f"inverse_seed_stretch expects a 2-D image or a 3-D stack, got shape {arr.shape}"
        )
    u = (np.clip(arr, -1.0, 1.0) + 1.0) / 2.0
    finite = np.isfinite(u)
    if finite.sum() < 10 or np.ptp(u[finite]) == 0:
        out = np.zeros_like(u)
        out[~finite] = np.nan
        return out
    # u -> 10**(uR) - 1 is increasing: one sort of u orders every recovered image.
    u_sorted = np.sort(u[finite])
    R = dynamic_range_dex if dynamic_range_dex is not None else _dynamic_range_sorted(u_sorted, scale_factor)
    # (x - min x) / s = 10**(uR) - 1; the sky level sits at its sigma-clipped median.
    w = np.expm1(u * R * np.log(10.0))
    sky, _ = _robust_sky_sorted(np.expm1(u_sorted * R * np.log(10.0)))
    out = w - sky
    out[~finite] = np.nan
    return out


def estimate_dynamic_range(stretched: np.ndarray, *, scale_factor: float = DEFAULT_SCALE_FACTOR) -> float:
    """Estimate ``R`` (dex) so that the recovered sky noise is ``1/k`` of the scale.

    The sky noise of the recovered image is measured with :func:`robust_sky`,
    the same estimator the forward stretch used to set ``s``. That estimator
    is affine-equivariant, so at the true ``R`` (where the recovered image is
    an affine function of the input) it returns exactly ``1/k``, whatever the
    galaxy contributes to the stamp.

    For speed the search runs on the sky-like pixels only (those within 8
    clipped standard deviations of the stretched sky, a superset of what the
    clipping keeps) and starts from a closed-form guess: quantiles commute
    with the monotone map ``u -> 10**(uR)``, so the interquartile range of the
    sky gives ``R`` from one scalar equation. The same monotonicity means the
    pixels are sorted once: every trial ``R`` then clips a sorted array, where
    medians are index lookups and clipping is a binary search.

    Returns a value between 0.05 and 12 dex; for an image with no usable sky
    the upper/lower bound is returned.
    """
    u = (np.clip(np.asarray(stretched, dtype=np.float64), -1.0, 1.0) + 1.0) / 2.0
    return _dynamic_range_sorted(np.sort(u[np.isfinite(u)].ravel()), scale_factor)


def _dynamic_range_sorted(u: np.ndarray, scale_factor: float) -> float:
    """:func:`estimate_dynamic_range` of the finite stretched values ``(y + 1) / 2``, sorted."""
    if u.size < 10:
        return 3.0
    target = 1.0 / scale_factor
    ln10 = np.log(10.0)
    med_u, sig_u = _robust_sky_sorted(u)
    if np.isfinite(sig_u) and sig_u > 0:
        cand = u[: int(np.searchsorted(u, med_u + 8.0 * sig_u, side="left"))]  # u < med + 8 sigma
        if cand.size >= 10:
            u = cand

    def excess(R: float) -> float:
        # The map is increasing, so the recovered values stay sorted.
        _, sigma = _robust_sky_sorted(np.expm1(u * R * ln10))
        return sigma - target

    lo, hi = 0.05, 12.0
    # Closed-form start from the sky quartiles (exact for a Gaussian sky).
    q25, q75 = np.percentile(u, [25.0, 75.0])
    if q75 > q25:
        def iqr_excess(R: float) -> float:
            return (np.exp(q75 * R * ln10) - np.exp(q25 * R * ln10)) / 1.349 - target

        if iqr_excess(lo) < 0 < iqr_excess(hi):
            R_prev = optimize.brentq(iqr_excess, lo, hi, xtol=1e-6)
            f_prev = excess(R_prev)
            R_cur = R_prev * 1.02
            # Secant steps on the exact estimator; converges in 2-4 calls from
            # the quartile guess because sigma(R) is smooth and monotone.
            for _ in range(8):
                f_cur = excess(R_cur)
                if not np.isfinite(f_cur):
                    break
                if abs(f_cur) < 1e-5 * target or f_cur == f_prev:
                    if lo <= R_cur <= hi:
                        return float(R_cur)
                    break
                R_next = R_cur - f_cur * (R_cur - R_prev) / (f_cur - f_prev)
                R_prev, f_prev, R_cur = R_cur, f_cur, float(np.clip(R_next, lo, hi))
                if abs(R_cur - R_prev) < 1e-5 * R_prev:
                    return float(R_cur)
    f_lo, f_hi = excess(lo), excess(hi)
    if not (np.isfinite(f_lo) and np.isfinite(f_hi)):
        return 3.0
    if f_lo >= 0:
        return lo
    if f_hi <= 0:
        return hi
    return float(optimize.brentq(excess, lo, hi, xtol=2e-4))
