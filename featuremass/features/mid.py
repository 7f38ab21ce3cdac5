"""Multimode, intensity and deviation (the MID statistics).

Freeman et al. (2013, MNRAS 434, 282) and Peth et al. (2016, MNRAS 458,
963), with the conventions of statmorph (Rodriguez-Gomez et al. 2019,
Sect. 4.5). Everything works on the non-negative flux inside the galaxy's
segment.

*MID segmap* (Freeman et al. 2013, Sect. 4.3): lower a threshold ``t``
through the quantiles of the segment's pixel values until the mean flux of
the 8-connected clump above ``t`` holding the brightest pixel satisfies
``t / <I>_clump = eta`` (0.2); the clump is then smoothed by a 3 x 3 boxcar
and cut at 0.5.

*Multimode* (eqs. 5-7 there): at threshold ``t`` let ``A_1 >= A_2`` be the
areas of the two largest clumps;
``M = A_2/A_1`` at the ``t`` that maximises ``A_2^2 / A_1``.

*Intensity* (eq. 8 there): the image (MID segment only) is smoothed by a
Gaussian of 1 px, split into the basins of its local maxima, and
``I = F_2 / F_1``, the ratio of the two largest basin fluxes.

*Deviation* (eq. 9 there): ``D = sqrt(pi / n_seg) |x_peak - x_cen|``, the
distance between the peak of the brightest basin and the flux centroid, in
units of the radius of a circle with the segment's area.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy import ndimage as ndi

from featuremass.features.segmentation import _bbox, ascent_labels, component8

_EIGHT = np.ones((3, 3), dtype=bool)


def mid_segmap(image: np.ndarray, segmap: np.ndarray, *, eta: float = 0.2) -> np.ndarray | None:
    """Segment of the galaxy for the MID statistics (module docstring).

    Parameters
    ----------
    image : ndarray
        Sky-subtracted flux (masked pixels zero).
    segmap : ndarray of bool
        The galaxy's detection segment.
    eta : float
        Target ratio of the threshold to the clump's mean flux.

    Returns
    -------
    ndarray of bool or None
        None when the segment is empty or holds no positive flux, or when the
        ratio is above ``eta`` already at the lowest threshold (statmorph
        then falls back on the Gini segmap; the caller decides).
    """
    img = np.where(segmap, np.maximum(np.asarray(image, dtype=np.float64), 0.0), 0.0)
    if not segmap.any() or not img.max() > 0:
        return None
    sl = _bbox(segmap, 2)
    sub = img[sl]
    peak = np.unravel_index(int(np.argmax(sub)), sub.shape)
    values = np.sort(sub[segmap[sl]])
    py, px = int(peak[0]), int(peak[1])
    lo = _threshold_index(np.ascontiguousarray(sub), values, py, px, float(eta))
    if lo < 0:
        return None
    t = values[lo]
    if t > 0:
        clump, _ = _peak_clump(sub, t, py, px)
    else:
        clump = np.ones(sub.shape, dtype=bool)
    smooth = ndi.uniform_filter(clump.astype(np.float64), size=3) > 0.5
    smooth[peak] = True
    out = np.zeros(segmap.shape, dtype=bool)
    out[sl] = component8(smooth, peak[0], peak[1])
    return out


@njit(cache=True)
def _clump_ratio(sub, values, k, py, px, eta):
    t = values[k]
    if t <= 0:  # every pixel of the stamp is >= 0: one clump, the whole stamp
        return 0.0 - eta
    _, mean = _peak_clump(sub, t, py, px)
    return t / mean - eta


@njit(cache=True)
def _threshold_index(sub, values, py, px, eta):
    """Index into the sorted ``values`` of the MID threshold (bisection on
    ``t / <I>_clump - eta``; :func:`_threshold_index_reference`); -1 when the ratio
    is above ``eta`` already at the lowest value."""
    n = values.size
    if _clump_ratio(sub, values, 0, py, px, eta) > 0:
        return -1
    lo, hi = 0, n - 1  # ratio(lo) <= 0 < ratio(hi) = 1 - eta
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _clump_ratio(sub, values, mid, py, px, eta) > 0:
            hi = mid
        else:
            lo = mid
    return lo


def _threshold_index_reference(sub, values, py, px, eta) -> int:
    """Plain-Python reference of :func:`_threshold_index` (labelling by ``ndi.label``)."""

    def ratio(k: int) -> float:
        t = values[k]
        if t <= 0:
            return 0.0 - eta
        _, mean = _peak_clump_reference(sub, t, py, px)
        return t / mean - eta

    if ratio(0) > 0:
        return -1
    lo, hi = 0, values.size - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ratio(mid) > 0:
            hi = mid
        else:
            lo = mid
    return lo


def _peak_clump_reference(sub: np.ndarray, t: float, py: int, px: int) -> tuple[np.ndarray, float]:
    """The 8-connected clump of ``{sub >= t}`` holding ``(py, px)``, and its mean flux (plain NumPy)."""
    labels, _ = ndi.label(sub >= t, structure=_EIGHT)
    clump = labels == labels[py, px]
    return clump, float(sub[clump].mean())


@njit(cache=True)
def _peak_clump(sub, t, py, px):
    """Kernel of :func:`_peak_clump_reference`: a flood fill from the peak (it must be ``>= t``)."""
    ny, nx = sub.shape
    clump = np.zeros((ny, nx), dtype=np.bool_)
    stack = np.empty(ny * nx, dtype=np.int64)
    clump[py, px] = True
    stack[0] = py * nx + px
    top, total, count = 1, 0.0, 0
    while top > 0:
        top -= 1
        y, x = divmod(stack[top], nx)
        total += sub[y, x]
        count += 1
        for yy in range(max(y - 1, 0), min(y + 2, ny)):
            for xx in range(max(x - 1, 0), min(x + 2, nx)):
                if not clump[yy, xx] and sub[yy, xx] >= t:
                    clump[yy, xx] = True
                    stack[top] = yy * nx + xx
                    top += 1
    return clump, total / count


@njit(cache=True)
def _find(parent, p):
    while parent[p] != p:
        parent[p] = parent[parent[p]]  # path halving
        p = parent[p]
    return p


def _top_two_areas(sub: np.ndarray, thresholds: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Kernel of :func:`_top_two_areas_reference` by union-find over the pixels, brightest first.

    Lowering the threshold only adds pixels, so one pass in decreasing flux
    order, merging 8-connected neighbours, sees every threshold's clumps in
    turn; a histogram of clump sizes gives the two largest at each threshold.
    The sorts run in NumPy (compiling numba's sort costs seconds); ``order``,
    :func:`_brightest_first` of ``sub``, saves the pixel sort when several
    threshold sets run on the same ``sub``.
    """
    flat = np.ascontiguousarray(sub, dtype=np.float64).ravel()
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if order is None:
        order = _brightest_first(flat)
    return _top_two_areas_kernel(flat, sub.shape[1], order, thresholds, np.argsort(-thresholds, kind="stable"))


def _brightest_first(flat: np.ndarray) -> np.ndarray:
    """Pixel indices of ``flat`` by decreasing value, ties in index order (the union-find's order)."""
    return np.argsort(-flat, kind="stable")


@njit(cache=True)
def _top_two_areas_kernel(flat, nx, order, thresholds, threshold_order):
    n_pix = flat.size
    ny = n_pix // nx
    parent = np.full(n_pix, -1, dtype=np.int64)
    size = np.zeros(n_pix, dtype=np.int64)
    hist = np.zeros(n_pix + 1, dtype=np.int64)
    out = np.zeros((thresholds.size, 2))
    a_max, added = 0, 0
    for k in threshold_order:
        t = thresholds[k]
        while added < n_pix and flat[order[added]] >= t:
            p = order[added]
            added += 1
            parent[p], size[p] = p, 1
            hist[1] += 1
            a_max = max(a_max, 1)
            y, x = divmod(p, nx)
            for yy in range(max(y - 1, 0), min(y + 2, ny)):
                for xx in range(max(x - 1, 0), min(x + 2, nx)):
                    q = yy * nx + xx
                    if parent[q] < 0:
                        continue
                    rp, rq = _find(parent, p), _find(parent, q)
                    if rp == rq:
                        continue
                    if size[rp] < size[rq]:
                        rp, rq = rq, rp
                    hist[size[rp]] -= 1
                    hist[size[rq]] -= 1
                    parent[rq] = rp
                    size[rp] += size[rq]
                    hist[size[rp]] += 1
                    a_max = max(a_max, size[rp])
        if added == 0:
            continue
        a2 = a_max if hist[a_max] >= 2 else 0
        if a2 == 0:
            s = a_max - 1
            while s > 0 and hist[s] == 0:
                s -= 1
            a2 = s
        out[k, 0] = a_max
        out[k, 1] = a2
    return out


def _top_two_areas_reference(sub: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(A_1, A_2)`` clump areas of ``{sub >= t}`` for each threshold (``A_2 = 0`` for one clump).

    All thresholds are labelled in one call: the masks are stacked as tiles
    of one tall image, separated by an empty row so that no clump spans two
    tiles. ``ndi.label`` numbers clumps in raster order, so each tile's
    labels form one increasing run.
    """
    n_t = thresholds.size
    out = np.zeros((n_t, 2))
    if n_t == 0:
        return out
    ny, nx = sub.shape
    tiles = np.zeros((n_t, ny + 1, nx), dtype=bool)
    np.greater_equal(sub[None], thresholds[:, None, None], out=tiles[:, :ny])
    labels, n = ndi.label(tiles.reshape(n_t * (ny + 1), nx), structure=_EIGHT)
    if n == 0:
        return out
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    last_label = np.maximum.accumulate(labels.reshape(n_t, -1).max(axis=1))
    tile = np.searchsorted(last_label, np.arange(1, n + 1), side="left")
    order = np.lexsort((counts, tile))
    tile_sorted, count_sorted = tile[order], counts[order]
    last = np.nonzero(np.r_[tile_sorted[1:] != tile_sorted[:-1], True])[0]
    out[tile_sorted[last], 0] = count_sorted[last]
    prev = last - 1
    same = (prev >= 0) & (tile_sorted[np.maximum(prev, 0)] == tile_sorted[last])
    out[tile_sorted[last[same]], 1] = count_sorted[prev[same]]
    return out


def multimode(image: np.ndarray, segmap: np.ndarray, mid_segment: np.ndarray) -> float:
    """Multimode statistic ``M = A_2 / A_1`` (Freeman et al. 2013, eqs. 5-7; module docstring).

    Thresholds are quantiles of the flux in ``segmap`` with the flux outside
    ``mid_segment`` set to zero (as in statmorph): a coarse grid in steps of
    0.02 in quantile, then steps of 0.002 around the best coarse value, in
    place of statmorph's basin-hopping search.

    Returns
    -------
    float
        0.0 when no threshold splits the segment into two clumps (a single
        clump, e.g. a star, as statmorph returns); NaN when the segment holds
        no positive flux.
    """
    cut = np.where(mid_segment, np.maximum(np.asarray(image, dtype=np.float64), 0.0), 0.0)
    if not mid_segment.any() or not cut.max() > 0:
        return float("nan")
    sl = _bbox(mid_segment, 1)
    sub = cut[sl]
    values = np.sort(cut[segmap | mid_segment])
    last = values.size - 1

    def thresholds(qs):
        t = values[(np.clip(qs, 0.0, 1.0) * last).astype(np.int64)]
        return np.unique(t[t > 0])

    coarse = thresholds(np.arange(0.0, 1.0, 0.02))
    if coarse.size == 0:
        return 0.0
    order = _brightest_first(np.ascontiguousarray(sub, dtype=np.float64).ravel())  # one sort, two passes
    areas = _top_two_areas(sub, coarse, order)
    score = areas[:, 1] ** 2 / np.maximum(areas[:, 0], 1.0)
    best = int(np.argmax(score))
    # Refine around the best coarse threshold (in quantile space).
    q_best = np.searchsorted(values, coarse[best]) / max(last, 1)
    fine = thresholds(q_best + np.arange(-0.02, 0.0201, 0.002))
    fine_areas = _top_two_areas(sub, fine, order)
    fine_score = fine_areas[:, 1] ** 2 / np.maximum(fine_areas[:, 0], 1.0)
    all_areas = np.vstack([areas, fine_areas])
    all_score = np.concatenate([score, fine_score])
    k = int(np.argmax(all_score))
    if not all_score[k] > 0:
        return 0.0
    return float(all_areas[k, 1] / all_areas[k, 0])


def intensity_deviation(
    image: np.ndarray, mid_segment: np.ndarray, *, sigma: float = 1.0
) -> tuple[float, float]:
    """Intensity ``I`` and deviation ``D`` (Freeman et al. 2013, eqs. 8-9; module docstring).

    Basins are found by steepest ascent on the smoothed image, a fast
    equivalent of statmorph's marker watershed from every local maximum.

    Returns
    -------
    (intensity, deviation)
        ``I = 0`` with a single basin (as statmorph); both NaN when the
        segment is empty or holds no positive flux.
    """
    cut = np.where(mid_segment, np.maximum(np.asarray(image, dtype=np.float64), 0.0), 0.0)
    area = int(mid_segment.sum())
    if area == 0 or not cut.max() > 0:
        return float("nan"), float("nan")
    pad = int(np.ceil(4 * sigma)) + 1
    sl = _bbox(mid_segment, pad)
    sub = cut[sl]
    smooth = ndi.gaussian_filter(sub, sigma)
    labels, peaks = ascent_labels(smooth, smooth > 0)
    if peaks.size == 0:
        return float("nan"), float("nan")
    sums = np.bincount(labels.ravel(), weights=smooth.ravel(), minlength=peaks.size + 1)[1:]
    order = np.argsort(sums)[::-1]
    intensity = float(sums[order[1]] / sums[order[0]]) if peaks.size > 1 else 0.0
    py, px = np.unravel_index(peaks[order[0]], sub.shape)
    total = sub.sum()
    yc = float(sub.sum(axis=1) @ np.arange(sub.shape[0])) / total
    xc = float(sub.sum(axis=0) @ np.arange(sub.shape[1])) / total
    deviation = float(np.sqrt(np.pi / area) * np.hypot(px - xc, py - yc))
    return intensity, deviation
