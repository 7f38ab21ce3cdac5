"""Petrosian radii, light-fraction radii (r20, r50, r80) and half-light radii.

Aperture photometry here uses one fast, smooth approximation of exact pixel
overlap: a pixel at (elliptical) distance ``rho`` from the centre counts with
weight ``clip(r - rho + 1/2, 0, 1)`` in an aperture of radius ``r``. The
weights sum to the aperture area to first order and are piecewise linear in
``r``, so a whole curve of growth follows from two histograms (``np.bincount``)
of the pixel distances and cumulative sums, evaluated exactly on a 0.05 px
grid of radii, with no sorting and no root finder.

The Petrosian radius (Petrosian 1976; Lotz, Primack & Madau 2004, eq. 4) is
the radius where the mean surface brightness in an annulus of width 1 px
equals ``eta`` times the mean surface brightness inside it:

.. math:: \\eta(r_p) = \\frac{\\langle I \\rangle_{[r_p - 1/2,\\, r_p + 1/2]}}
                           {\\langle I \\rangle_{< r_p}} = 0.2
"""

from __future__ import annotations

import numpy as np
from numba import njit

from featuremass.features.geometry import elliptical_radius

#: Radial grid step (pixels) for curves of growth; must divide 0.5.
GRID_STEP = 0.05
#: Smallest fraction of a Petrosian annulus that must lie inside the stamp (and
#: unmasked) for the ratio there to count: beyond it the "crossing" is a few
#: corner pixels' noise, and the radius is NaN (no crossing inside the stamp).
MIN_ANNULUS_COVERAGE = 0.25


def growth_curve(values: np.ndarray, rho: np.ndarray, r_max: float, *, step: float = GRID_STEP):
    """Aperture sums ``S(r) = sum_i v_i clip(r - rho_i + 1/2, 0, 1)`` on a radial grid.

    Parameters
    ----------
    values : ndarray
        Pixel values (any shape, flattened); use ones to get the area.
    rho : ndarray
        Distance of each pixel from the centre (same shape as ``values``).
    r_max : float
        Largest radius needed.
    step : float
        Grid step; ``0.5 / step`` must be an integer.

    Returns
    -------
    radii, sums : ndarray
        ``radii[k] = k * step`` for ``k = 0 .. ceil(r_max/step) + m`` with
        ``m = 0.5/step`` (so that sums at ``r_max + 1/2`` exist) and ``S`` there.
    """
    radii, (sums,) = _growth_curves((values,), rho, r_max, step=step)
    return radii, sums


def _growth_curves(values_list, rho: np.ndarray, r_max: float, *, step: float = GRID_STEP):
    """:func:`growth_curve` of several value arrays about the same distances ``rho``.

    The binning of the distances is shared; each curve is exactly what
    :func:`growth_curve` returns for its values (``None`` stands for ones,
    the area). Compiled (:func:`_growth_kernel`); :func:`_growth_curves_reference`
    is the NumPy reference.
    """
    half = int(round(0.5 / step))
    n_out = int(np.ceil(r_max / step)) + half + 1
    n_bins = n_out + half + 1
    rho = np.ravel(rho).astype(np.float64, copy=False)
    idx = np.minimum((rho * (1.0 / step)).astype(np.int64), n_bins - 1)
    radii = np.arange(n_out) * step
    curves = []
    for values in values_list:
        out = np.empty(n_out)
        if values is None:
            _growth_kernel(idx, rho, rho, True, n_bins, half, radii, out)
        else:
            _growth_kernel(idx, np.ravel(values).astype(np.float64, copy=False), rho, False, n_bins,
                           half, radii, out)
        curves.append(out)
    return radii, curves


@njit(cache=True)
def _growth_kernel(idx, v, rho, ones, n_bins, half, radii, out):
    """One curve of :func:`_growth_curves_reference` (the same sums in the same order, so the
    same values): binned sums of ``v`` and ``v rho`` (``v = 1`` when ``ones``), their running
    sums, and ``S(r_k)`` from the bins ``k - m .. k + m``."""
    bins = np.zeros(n_bins)
    bins_d = np.zeros(n_bins)
    for i in range(idx.size):
        w = 1.0 if ones else v[i]
        bins[idx[i]] += w
        bins_d[idx[i]] += w * rho[i]
    cv = np.zeros(n_bins + 1)
    cvd = np.zeros(n_bins + 1)
    acc = 0.0
    acc_d = 0.0
    for k in range(n_bins):
        acc += bins[k]
        acc_d += bins_d[k]
        cv[k + 1] = acc
        cvd[k + 1] = acc_d
    for k in range(out.size):
        lo = max(k - half, 0)
        hi = k + half
        out[k] = cv[lo] + (radii[k] + 0.5) * (cv[hi] - cv[lo]) - (cvd[hi] - cvd[lo])


def _growth_curves_reference(values_list, rho: np.ndarray, r_max: float, *, step: float = GRID_STEP):
    """Plain-NumPy reference of :func:`_growth_curves` (two ``np.bincount`` and ``np.cumsum`` per curve)."""
    half = int(round(0.5 / step))
    n_out = int(np.ceil(r_max / step)) + half + 1
    n_bins = n_out + half + 1
    rho = np.ravel(rho)
    idx = np.minimum((rho * (1.0 / step)).astype(np.int64), n_bins - 1)
    k = np.arange(n_out)
    lo = np.maximum(k - half, 0)
    hi = k + half
    radii = k * step
    curves = []
    for values in values_list:
        v = np.ones(rho.size) if values is None else np.ravel(values).astype(np.float64, copy=False)
        cv = np.zeros(n_bins + 1)
        cvd = np.zeros(n_bins + 1)
        np.cumsum(np.bincount(idx, weights=v, minlength=n_bins), out=cv[1:])
        np.cumsum(np.bincount(idx, weights=v * rho, minlength=n_bins), out=cvd[1:])
        curves.append(cv[lo] + (radii + 0.5) * (cv[hi] - cv[lo]) - (cvd[hi] - cvd[lo]))
    return radii, curves


def petrosian_radius(
    image: np.ndarray,
    center: tuple[float, float],
    *,
    mask: np.ndarray | None = None,
    eta: float = 0.2,
    elongation: float = 1.0,
    theta: float = 0.0,
    rho: np.ndarray | None = None,
    r_start: float | None = None,
) -> float:
    """Circular (``elongation=1``) or elliptical Petrosian radius in pixels.

    Implements Lotz et al. (2004), eq. 4 (module docstring) with the
    definitions of statmorph (Rodriguez-Gomez et al. 2019, Sect. 4.2): the
    annulus spans ``[r - 1/2, r + 1/2]`` (in semi-major units for an
    ellipse), both means use the unmasked in-image area, and the absolute
    values of the means enter the ratio. The ratio is scanned outwards from
    ``r = 1`` on a coarse grid of 100 radii up to the stamp diagonal (times
    the elongation) to bracket the first crossing of ``eta``, which is then
    located on the 0.05 px grid and linearly interpolated.

    Parameters
    ----------
    image : ndarray
        Sky-subtracted flux, masked pixels already set to zero.
    center : (float, float)
        ``(x, y)``.
    mask : ndarray of bool, optional
        True for pixels excluded from the areas.
    eta : float
        Petrosian ratio at the radius.
    elongation, theta : float
        ``a/b`` and major-axis angle (radians CCW from +x) for an elliptical
        radius (the returned value is the semi-major axis).
    rho : ndarray, optional
        Precomputed (elliptical) distances of the pixels from ``center``.
    r_start : float, optional
        Expected radius (e.g. a Petrosian radius about a nearby centre): the
        first box tried reaches ``1.25 r_start + 4`` px from the centre
        (at least 24 px). Only the speed depends on it, not the result.

    Returns
    -------
    float
        NaN when the ratio is already below ``eta`` at 1 px (a point-like or
        one-pixel source), when it never drops below ``eta`` inside the
        search range (a source filling or running off the stamp), or when the
        centre is not finite.
    """
    img = np.asarray(image, dtype=np.float64)
    if not (np.isfinite(center[0]) and np.isfinite(center[1]) and elongation >= 1.0):
        return float("nan")
    r_outer = float(np.hypot(*img.shape)) * elongation
    coarse = np.linspace(1.0, r_outer, 100)
    # Work on a box around the centre, grown until the first crossing is
    # bracketed inside it: a pixel at distance rho only enters the sums at
    # radii above rho - 1/2, so the ratio at r is exact once the box holds
    # every pixel closer than r + 1.
    half_box = 24.0
    if r_start is not None and np.isfinite(r_start):
        half_box = max(half_box, 1.25 * float(r_start) + 4.0)
    while True:
        full = half_box >= r_outer + 2.0
        sl = (slice(None), slice(None)) if full else _box(img.shape, center, half_box)
        r_valid = None if full else half_box - 1.5
        sub_rho = _distances(img.shape, center, elongation, theta, rho, sl)
        result = _petrosian_in_box(
            img[sl], sub_rho, None if mask is None else mask[sl], eta, coarse, r_valid, elongation
        )
        if result is not None or full:
            return float("nan") if result is None else result
        half_box *= 2.0


def _box(shape, center, half_box: float):
    """Slices of the pixels within ``half_box`` px (in x and in y) of ``center``."""
    ny, nx = shape
    xc, yc = center
    return (
        slice(max(int(np.floor(yc - half_box)), 0), max(min(int(np.ceil(yc + half_box)) + 1, ny), 0)),
        slice(max(int(np.floor(xc - half_box)), 0), max(min(int(np.ceil(xc + half_box)) + 1, nx), 0)),
    )


def _distances(shape, center, elongation, theta, rho, sl):
    """(Elliptical) distances of the pixels in box ``sl``: a view of ``rho`` if given."""
    if rho is not None:
        return rho[sl]
    # The box is a sub-image whose origin shifts the centre.
    y0, x0 = sl[0].start or 0, sl[1].start or 0
    sub_shape = (len(range(*sl[0].indices(shape[0]))), len(range(*sl[1].indices(shape[1]))))
    return elliptical_radius(sub_shape, (center[0] - x0, center[1] - y0), elongation, theta)


def _petrosian_in_box(img, rho, mask, eta, coarse, r_valid, elongation=1.0):
    """Petrosian radius from the pixels of one box; None if not bracketed below ``r_valid``.

    ``r_valid`` None means the box is the whole stamp (every coarse radius is
    valid). NaN (as a float) when the answer is NaN whatever the box: the
    ratio is below ``eta`` already at the first coarse radius.
    """
    area_w = None if mask is None else (~mask).astype(np.float64)
    r_max = coarse[-1] if r_valid is None else r_valid
    radii, (flux, area) = _growth_curves((img, area_w), rho, r_max)
    found, value = _crossing_kernel(flux, area, radii, int(round(0.5 / GRID_STEP)), coarse,
                                    -1.0 if r_valid is None else float(r_valid), r_valid is not None, float(eta),
                                    float(elongation), MIN_ANNULUS_COVERAGE, GRID_STEP)
    return float(value) if found else None


@njit(cache=True)
def _crossing_kernel(flux, area, radii, half, coarse, r_valid, has_valid, eta, elongation, min_coverage, step):
    """``(found, radius)``: the Petrosian crossing of :func:`_petrosian_in_box` from its curves of growth.

    Compiled; :func:`_crossing_reference` is the NumPy reference (the same
    element-wise operations, so the same value). ``found`` False means not
    bracketed inside the box (``has_valid``: only radii up to ``r_valid`` count).
    """
    n = radii.size - 2 * half  # r = radii[k], k = half .. radii.size - half - 1
    f = np.empty(n)
    ann_area = np.empty(n)
    for i in range(n):
        k = i + half
        ann_flux = flux[k + half] - flux[k - half]
        ann_area[i] = area[k + half] - area[k - half]
        ann_mean = abs(ann_flux / ann_area[i]) if ann_area[i] > 0 else 0.0
        ap_mean = abs(flux[k] / area[k]) if area[k] > 0 else 0.0
        if ap_mean > 0:
            ratio = ann_mean / ap_mean
        else:
            ratio = 1.0 if ann_mean > 0 else 0.0
        f[i] = ratio - eta
    r0 = radii[half]
    coverage = min_coverage * 2.0 * np.pi
    # Coarse bracketing: the coarse radii kept, up to the first one whose annulus is not covered.
    ci = np.empty(coarse.size, dtype=np.int64)
    m = 0
    for c in coarse:
        j = int(np.rint((c - r0) / step))
        if has_valid:
            if not (j < n and radii[min(max(j, 0), n - 1) + half] <= r_valid):
                continue
        ci[m] = min(max(j, 0), n - 1)
        m += 1
    uncovered = False
    for q in range(m):
        j = ci[q]
        if not ann_area[j] >= coverage * radii[j + half] / elongation:
            m = q
            uncovered = True
            break
    first = -1
    for q in range(m):
        if f[ci[q]] <= 0:
            first = q
            break
    if first < 0:
        return uncovered, np.nan
    if first == 0:
        return True, np.nan
    lo, hi = ci[first - 1], ci[first]
    j = 0
    for q in range(lo, hi + 1):
        if f[q] <= 0:
            j = q - lo
            break
    if j == 0:
        return True, radii[lo + half]
    f0, f1 = f[lo + j - 1], f[lo + j]
    t = f0 / (f0 - f1) if f0 != f1 else 0.0
    return True, radii[lo + j - 1 + half] + t * step


def _crossing_reference(flux, area, radii, coarse, r_valid, eta, elongation=1.0):
    """NumPy reference of :func:`_crossing_kernel`: the radius, NaN, or None (not bracketed)."""
    half = int(round(0.5 / GRID_STEP))
    k = np.arange(half, radii.size - half)  # r from 0.5 so that r - 1/2 >= 0
    ann_flux = flux[k + half] - flux[k - half]
    ann_area = area[k + half] - area[k - half]
    with np.errstate(divide="ignore", invalid="ignore"):
        ann_mean = np.abs(np.where(ann_area > 0, ann_flux / ann_area, 0.0))
        ap_mean = np.abs(np.where(area[k] > 0, flux[k] / area[k], 0.0))
        ratio = np.where(ap_mean > 0, ann_mean / ap_mean, (ann_mean > 0).astype(float))
    f = ratio - eta
    r = radii[k]
    # Coarse bracketing as statmorph does, so that noise wiggles finer than
    # ~1 px beyond the first real crossing do not change the answer.
    ci = np.rint((coarse - r[0]) / GRID_STEP).astype(int)
    if r_valid is not None:
        ci = ci[(ci < r.size) & (r[np.clip(ci, 0, r.size - 1)] <= r_valid)]
    ci = np.clip(ci, 0, r.size - 1)
    # The search ends where the annulus leaves the stamp (or the mask):
    # crossings beyond rest on too few pixels.
    covered = ann_area[ci] >= MIN_ANNULUS_COVERAGE * 2.0 * np.pi * r[ci] / elongation
    uncovered = np.nonzero(~covered)[0]
    if uncovered.size:
        ci = ci[: uncovered[0]]
    below = np.nonzero(f[ci] <= 0)[0]
    if below.size == 0:
        return float("nan") if uncovered.size else None
    if below[0] == 0:
        return float("nan")
    lo, hi = ci[below[0] - 1], ci[below[0]]
    seg = f[lo : hi + 1]
    j = int(np.argmax(seg <= 0))
    if j == 0:
        return float(r[lo])
    f0, f1 = seg[j - 1], seg[j]
    t = f0 / (f0 - f1) if f0 != f1 else 0.0
    return float(r[lo + j - 1] + t * GRID_STEP)


def radius_at_fraction(
    image: np.ndarray,
    center: tuple[float, float],
    r_total: float,
    fraction: float | np.ndarray,
    *,
    elongation: float = 1.0,
    theta: float = 0.0,
    rho: np.ndarray | None = None,
) -> float | np.ndarray:
    """Radius of the aperture holding ``fraction`` of the flux inside ``r_total``.

    As in statmorph (and Lotz et al. 2004 for r20 and r80), the fraction of
    light is ``|F(<r)| / F(<r_total)``; the first radius where it exceeds
    ``fraction`` is returned, linearly interpolated on the 0.05 px grid.
    Circular for ``elongation=1``, otherwise the semi-major axis of the
    ellipse.

    Returns
    -------
    float or ndarray
        NaN when ``r_total`` is not positive and finite, the total flux is not
        positive, or the fraction is never reached.
    """
    fractions = np.atleast_1d(np.asarray(fraction, dtype=np.float64))
    out = np.full(fractions.shape, np.nan)
    img = np.asarray(image, dtype=np.float64)
    if not (np.isfinite(r_total) and r_total > 0 and np.isfinite(center[0]) and np.isfinite(center[1])):
        return out if np.ndim(fraction) else float(out[0])
    # Only pixels closer than r_total + 1 enter the curve up to r_total.
    sl = _box(img.shape, center, r_total + 2.0)
    radii, flux = growth_curve(img[sl], _distances(img.shape, center, elongation, theta, rho, sl), r_total)
    n = int(round(r_total / GRID_STEP))
    total = np.interp(r_total, radii, flux)
    if not (np.isfinite(total) and total > 0):
        return out if np.ndim(fraction) else float(out[0])
    curve = np.abs(flux[: n + 2]) / total
    r = radii[: n + 2]
    for i, frac in enumerate(fractions):
        above = np.nonzero(curve > frac)[0]
        if above.size == 0:
            continue
        j = int(above[0])
        if j == 0:
            out[i] = 0.0
            continue
        c0, c1 = curve[j - 1], curve[j]
        out[i] = min(r[j - 1] + (frac - c0) / (c1 - c0) * GRID_STEP, r_total)
    return out if np.ndim(fraction) else float(out[0])
