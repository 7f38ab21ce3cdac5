"""Sky level, sky noise and signal-to-noise per pixel.

statmorph measures the sky in a 32 x 32 px box free of sources, which often
does not exist on a 69 px stamp. Here the sky comes from every pixel that is
neither masked nor near a detected source, with iterative 3-sigma clipping
(the SExtractor-style background estimate; Bertin & Arnouts 1996), so it
works on small stamps as long as a modest number of sky pixels remain.

Two things make real stamps harder than white noise on plenty of sky:

* correlated noise (drizzled, resampled or display-smoothed images): the
  per-pixel sigma no longer says how noisy a smoothed detection image is,
  so :func:`detection_noise` measures it on the detection image itself;
* galaxies whose light fills the stamp: the pixels left outside every
  detection still hold the galaxy's wings and their clipped mean is too
  high. :func:`sky_gradient` tests whether the sky pixels still brighten
  towards the galaxy, and :func:`profile_sky` then takes the sky as the
  asymptote of the outer radial profile, ``I(r) = s + A r^-p`` (a power-law
  tail, which the de Vaucouleurs wings of n = 4 galaxies follow over a
  factor of two in radius), with the SExtractor mode ``2.5 median - 1.5 mean``
  (Bertin & Arnouts 1996) of the stamp border when the fit is degenerate.

The sky contributions to the asymmetry and smoothness (Conselice 2003;
Lotz, Primack & Madau 2004) are then the values expected for Gaussian white
noise of that standard deviation, rather than measured in a sky box.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numba import njit

from featuremass.io.stretch import _bisect, _median_mad_sorted

#: Fewest sky pixels needed for a sky estimate.
MIN_SKY_PIXELS = 50


@dataclass(frozen=True)
class SkyEstimate:
    """Result of :func:`estimate_sky` (NaN fields when the sky is unmeasurable)."""

    mean: float
    median: float
    sigma: float
    n_pixels: int


def estimate_sky(
    image: np.ndarray,
    *,
    exclude: np.ndarray | None = None,
    clip: float = 3.0,
    n_iter: int = 5,
    min_pixels: int = MIN_SKY_PIXELS,
) -> SkyEstimate:
    """Sigma-clipped sky mean, median and standard deviation.

    Starting from the median and the MAD-based standard deviation
    (``sigma = 1.4826 MAD``), pixels further than ``clip`` sigma from the
    median are rejected and the statistics recomputed, ``n_iter`` times or
    until nothing changes. The returned ``sigma`` is the standard deviation of
    the surviving pixels, corrected for the truncation of a Gaussian at
    ``clip`` sigma.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Linear flux.
    exclude : ndarray of bool, optional
        True for pixels that are not sky (masked, sources, their surroundings).
    clip : float
        Clipping threshold in standard deviations.
    n_iter : int
        Maximum number of clipping passes.
    min_pixels : int
        Fewest finite, non-excluded pixels needed.

    Returns
    -------
    SkyEstimate
        All fields NaN (and ``n_pixels`` the number available) when fewer than
        ``min_pixels`` finite sky pixels remain or their spread is zero
        (a constant image has no measurable noise).
    """
    img = np.asarray(image, dtype=np.float64)
    ok = np.isfinite(img)
    if exclude is not None:
        ok &= ~exclude
    # One sort makes every clipping pass O(log n): the pixels kept by a pass
    # are a contiguous run [lo, hi) of the sorted values, so the median is an
    # index lookup and the mean and std are taken on a view.
    values = np.sort(img[ok])
    nan = float("nan")
    if values.size < min_pixels:
        return SkyEstimate(nan, nan, nan, int(values.size))
    # The MAD of a sorted run by binary search, equal to np.median(|v - med|).
    med, sigma = _median_mad_sorted(values, 0, values.size)
    if not sigma > 0:
        sigma = float(np.std(values))
    if not sigma > 0:
        return SkyEstimate(nan, nan, nan, int(values.size))
    ok, mean, med, sigma, count = _clip_sorted_kernel(values, med, sigma, float(clip), int(n_iter), int(min_pixels),
                                                      _clip_std_factor(clip))
    if not ok:
        return SkyEstimate(nan, nan, nan, int(count))
    return SkyEstimate(float(mean), float(med), float(sigma), int(count))


@njit(cache=True)
def _clip_sorted_kernel(values, med, sigma, clip, n_iter, min_pixels, factor):
    """The clipping passes of :func:`estimate_sky` on the sorted ``values`` (compiled).

    :func:`_clip_sorted_reference` is the NumPy reference: the same prefix sums
    (``np.cumsum`` adds in order, as this loop does), binary searches
    (``np.searchsorted``) and run statistics, so the same values. Returns
    ``(ok, mean, median, sigma, n_pixels)``.
    """
    n = values.size
    csum = np.empty(n + 1)
    csum2 = np.empty(n + 1)
    csum[0] = 0.0
    csum2[0] = 0.0
    if n > 0:
        d = values[0] - med
        csum[1] = d
        csum2[1] = d * d
        for i in range(1, n):
            d = values[i] - med
            csum[i + 1] = csum[i] + d
            csum2[i + 1] = csum2[i] + d * d
    shift = med
    lo, hi = 0, n
    for _ in range(n_iter):
        new_lo = max(_bisect(values, med - clip * sigma, 0, n, True), lo)
        new_hi = min(_bisect(values, med + clip * sigma, 0, n, False), hi)
        if new_hi - new_lo < min_pixels:
            return False, np.nan, np.nan, np.nan, max(new_hi - new_lo, 0)
        if new_lo == lo and new_hi == hi:
            break
        lo, hi = new_lo, new_hi
        m = hi - lo
        mid = lo + m // 2
        med = values[mid] if m % 2 else (values[mid - 1] + values[mid]) / 2.0
        m1 = (csum[hi] - csum[lo]) / m
        var = (csum2[hi] - csum2[lo]) / m - m1 * m1
        sigma = (np.sqrt(var) if var > 0 else 0.0) / factor
        if not sigma > 0:
            return False, np.nan, np.nan, np.nan, hi - lo
    return True, shift + (csum[hi] - csum[lo]) / (hi - lo), med, sigma, hi - lo


def _clip_sorted_reference(values, med, sigma, clip, n_iter, min_pixels, factor):
    """NumPy reference of :func:`_clip_sorted_kernel` (prefix sums by ``np.cumsum``)."""
    nan = float("nan")
    lo, hi = 0, values.size
    dev = values - med
    csum = np.concatenate(([0.0], np.cumsum(dev)))
    csum2 = np.concatenate(([0.0], np.cumsum(dev * dev)))
    shift = med
    for _ in range(n_iter):
        # keep |v - med| < clip * sigma, within the pixels kept so far
        new_lo = max(int(np.searchsorted(values, med - clip * sigma, side="right")), lo)
        new_hi = min(int(np.searchsorted(values, med + clip * sigma, side="left")), hi)
        if new_hi - new_lo < min_pixels:
            return False, nan, nan, nan, max(new_hi - new_lo, 0)
        if new_lo == lo and new_hi == hi:
            break
        lo, hi = new_lo, new_hi
        med = _sorted_median(values, lo, hi)
        sigma = _run_std(csum, csum2, lo, hi) / factor
        if not sigma > 0:
            return False, nan, nan, nan, hi - lo
    return True, shift + (csum[hi] - csum[lo]) / (hi - lo), med, sigma, hi - lo


def detection_noise(
    smoothed: np.ndarray, *, exclude: np.ndarray | None = None, min_pixels: int = MIN_SKY_PIXELS
) -> float:
    """Standard deviation of a (smoothed) detection image over its sky pixels.

    The sigma-clipped standard deviation (:func:`estimate_sky`) of
    ``smoothed`` where ``exclude`` is False. Measuring the noise of the image
    that is thresholded, rather than scaling the per-pixel sigma by the
    white-noise factor ``1 / (2 sqrt(pi) s)`` of a Gaussian of ``s`` px,
    includes whatever correlation the noise has (SExtractor measures its
    filtered background the same way; Bertin & Arnouts 1996, Sect. 3).
    NaN when fewer than ``min_pixels`` pixels remain.
    """
    return estimate_sky(smoothed, exclude=exclude, min_pixels=min_pixels).sigma


def _radial_bins(image, center, keep, step=1.0):
    """Mean value, mean radius and pixel count in rings of ``step`` px of the ``keep`` pixels."""
    ys, xs = np.nonzero(keep)
    r = np.hypot(xs - center[0], ys - center[1])
    vals = image[ys, xs]
    k = (r / step).astype(np.int64)
    cnt = np.bincount(k).astype(np.float64)
    tot = np.bincount(k, weights=vals)
    rad = np.bincount(k, weights=r)
    use = cnt >= 4
    return tot[use] / cnt[use], rad[use] / cnt[use], cnt[use]


def sky_gradient(
    image: np.ndarray, center: tuple[float, float], sky_pixels: np.ndarray, sigma: float, *, correlation: float = 1.0
) -> float:
    """Significance (in sigmas) of a fall of the sky pixels' level with distance from ``center``.

    The sky pixels (True in ``sky_pixels``) are split at their median
    distance from the galaxy; the returned value is the difference of the
    inner and outer means over its standard error, with pixel noise
    ``sigma`` and ``correlation`` pixels per independent noise sample
    (1 for white noise). A few sigmas means the "sky" still holds the
    galaxy's (or a neighbour's) light. NaN with fewer than 20 pixels a side.
    """
    ys, xs = np.nonzero(sky_pixels)
    if ys.size < 40 or not (np.isfinite(sigma) and sigma > 0):
        return float("nan")
    r = np.hypot(xs - center[0], ys - center[1])
    vals = np.asarray(image, dtype=np.float64)[ys, xs]
    inner = r <= np.median(r)
    n_in, n_out = int(inner.sum()), int((~inner).sum())
    if n_in < 20 or n_out < 20:
        return float("nan")
    # Medians: a star or a noise spike must not make a gradient.
    diff = np.median(vals[inner]) - np.median(vals[~inner])
    err = 1.2533 * sigma * np.sqrt(max(correlation, 1.0) * (1.0 / n_in + 1.0 / n_out))
    return float(diff / err)


def profile_sky(
    image: np.ndarray,
    center: tuple[float, float],
    *,
    exclude: np.ndarray | None = None,
    r_in: float | None = None,
    exponents: np.ndarray | None = None,
    sigma: float | None = None,
    correlation: float = 1.0,
    max_chi2: float = 3.0,
) -> float:
    """Sky level as the asymptote of the outer radial profile ``I(r) = s + A r^-p``.

    Ring means (1 px rings) of the finite, non-excluded pixels farther than
    ``r_in`` (default a third of the smaller stamp side) from ``center`` are
    fitted by weighted linear least squares in ``(s, A)`` for each ``p`` of
    ``exponents`` (default 2 .. 8 by 0.25: no galaxy tail falls slower than r^-2); the best fit with ``A >= 0`` wins.
    A power law is the slowest plausible fall of a galaxy's wings (a Sérsic
    profile of n = 4 falls as ~ r^-3 to r^-4 at 2-8 effective radii, an
    exponential disk faster), so ``s`` errs low by a fraction of the light at
    the stamp edge rather than high by all of it.

    With the pixel noise ``sigma`` (and ``correlation`` pixels per
    independent sample), a fit whose chi-square per degree of freedom
    exceeds ``max_chi2`` is rejected: the rings then hold structure
    (neighbours, faint sources) that no smooth tail explains, and
    extrapolating it would be a guess.

    Returns
    -------
    float
        NaN when fewer than four rings remain, no fit has ``A >= 0``, or the
        best fit is rejected.
    """
    img = np.asarray(image, dtype=np.float64)
    ny, nx = img.shape
    keep = np.isfinite(img)
    if exclude is not None:
        keep &= ~exclude
    r_in = min(ny, nx) / 3.0 if r_in is None else float(r_in)
    yy, xx = np.ogrid[:ny, :nx]
    keep &= (xx - center[0]) ** 2 + (yy - center[1]) ** 2 >= r_in**2
    if not keep.any():
        return float("nan")
    mean, rad, cnt = _radial_bins(img, center, keep)
    if mean.size < 4:
        return float("nan")
    # Weights 1/error of each ring mean; the scale matters only for the chi-square test.
    noise = 1.0 if sigma is None else float(sigma) * np.sqrt(max(correlation, 1.0))
    w = np.sqrt(cnt) / noise
    best, level = np.inf, float("nan")
    for p in np.arange(2.0, 8.01, 0.25) if exponents is None else exponents:
        design = np.column_stack([np.ones_like(rad), rad ** (-p)]) * w[:, None]
        coef, *_ = np.linalg.lstsq(design, mean * w, rcond=None)
        if coef[1] < 0:
            continue
        chi2 = float(np.sum((design @ coef - mean * w) ** 2))
        if chi2 < best:
            best, level = chi2, float(coef[0])
    if sigma is not None and best / max(mean.size - 2, 1) > max_chi2:
        return float("nan")
    return level


def mode_sky(values: np.ndarray) -> float:
    """SExtractor's crowded-field mode ``2.5 median - 1.5 mean`` of 3-sigma-clipped values (NaN if < 10)."""
    est = estimate_sky(np.asarray(values, dtype=np.float64).ravel(), min_pixels=10)
    return float(2.5 * est.median - 1.5 * est.mean)


def _run_std(csum: np.ndarray, csum2: np.ndarray, lo: int, hi: int) -> float:
    """Population standard deviation of a run from prefix sums of (shifted) values."""
    n = hi - lo
    m1 = (csum[hi] - csum[lo]) / n
    var = (csum2[hi] - csum2[lo]) / n - m1 * m1
    return float(np.sqrt(var)) if var > 0 else 0.0


def _sorted_median(values: np.ndarray, lo: int, hi: int) -> float:
    """Median of the sorted run ``values[lo:hi]`` (as ``np.median``)."""
    n = hi - lo
    mid = lo + n // 2
    if n % 2:
        return float(values[mid])
    return float((values[mid - 1] + values[mid]) / 2.0)


@functools.lru_cache(maxsize=8)
def _clip_std_factor(clip: float) -> float:
    """Std of a unit Gaussian truncated at +-clip (to de-bias clipped sigmas); cached, one clip per run."""
    from math import erf, exp, pi, sqrt

    mass = erf(clip / sqrt(2.0))
    return sqrt(1.0 - 2.0 * clip * exp(-0.5 * clip * clip) / (sqrt(2.0 * pi) * mass))


def sky_asymmetry_per_pixel(sky_sigma: float) -> float:
    """Expected ``|B - B_180|`` per pixel for Gaussian white sky noise.

    The background term of the asymmetry (Conselice 2003, eq. 2; Lotz et al.
    2004, eq. 10) is the mean absolute difference between two independent sky
    pixels, ``E|n_1 - n_2| = 2 sigma / sqrt(pi)``. NaN when ``sky_sigma`` is
    not finite.
    """
    return 2.0 * float(sky_sigma) / np.sqrt(np.pi)


def sky_smoothness_per_pixel(sky_sigma: float, boxcar_size: int) -> float:
    """Expected ``max(B - B_S, 0)`` per pixel for Gaussian white sky noise.

    ``B_S`` is ``B`` smoothed with a ``k x k`` boxcar (Lotz et al. 2004, eq. 11).
    ``B - B_S`` is Gaussian with variance ``sigma^2 (1 - 1/k^2)``, and the mean
    of its positive part is ``sigma sqrt(1 - 1/k^2) / sqrt(2 pi)``. Zero for
    ``k <= 1`` (no smoothing).
    """
    k = int(boxcar_size)
    if k <= 1:
        return 0.0
    return float(sky_sigma) * np.sqrt(1.0 - 1.0 / k**2) / np.sqrt(2.0 * np.pi)


def sn_per_pixel(image: np.ndarray, region: np.ndarray, sky_sigma: float, *, gain=None) -> float:
    """Mean signal-to-noise per pixel of a source (Lotz et al. 2004, Sect. 3.1).

    .. math:: \\langle S/N \\rangle = \\frac{1}{N}\\sum_{i} \\frac{I_i}{\\sqrt{\\sigma_\\mathrm{sky}^2 + I_i / g}}

    over the ``N`` pixels of ``region`` with non-negative flux ``I_i``
    (sky-subtracted), as statmorph does over its Gini segmap. ``gain`` ``g``
    (electrons per data unit) adds Poisson noise; None means background-limited.

    Returns NaN when ``region`` holds no such pixel or ``sky_sigma`` is not
    positive and finite.
    """
    if not (np.isfinite(sky_sigma) and sky_sigma > 0):
        return float("nan")
    img = np.asarray(image, dtype=np.float64)
    sel = region & np.isfinite(img) & (img >= 0)
    if not sel.any():
        return float("nan")
    vals = img[sel]
    var = np.full(vals.shape, float(sky_sigma) ** 2)
    if gain is not None and gain > 0:
        var = var + vals / gain
    return float(np.mean(vals / np.sqrt(var)))
