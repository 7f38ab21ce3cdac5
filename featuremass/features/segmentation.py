"""Segmentation of the central source of a stamp, with neighbours and stars masked.

The stamp is smoothed by a Gaussian of ``smooth_sigma`` px and thresholded at
``nsigma`` times the noise of the smoothed sky, as in SExtractor's filtered
detection (Bertin & Arnouts 1996). That noise is best *measured* on the
detection image itself (:func:`featuremass.features.sky.detection_noise`):
for white noise of standard deviation ``sigma`` it is
``sigma / (2 sqrt(pi) smooth_sigma)``, the default here, but drizzled,
resampled or display-smoothed images have correlated noise, whose smoothed
sky is 1.2-2x noisier, and a threshold on the white-noise value then
detects dozens of noise blobs per stamp. The central
source is the 8-connected detection holding the brightest smoothed pixel
within ``search_radius`` px of the stamp centre. Other detections are masked
when they are significant: at least ``min_area`` px and a peak above
``peak_nsigma`` noise sigmas. Smoothed noise alone makes ~1-4 blobs of
10 px above 2 sigma per 69 px stamp (more when it is correlated), but the
highest peak of a stamp's noise exceeds 4.5 sigma in only ~1% of stamps.

Overlapping sources (a star on the galaxy, a merging companion) are
deblended within the central detection: every pixel climbs the smoothed
image to its local maximum (a watershed by steepest ascent), and a basin
other than the central one is split off and masked when its peak rises
``deblend_nsigma`` noise sigmas above its saddle with the rest and the flux
above the saddle is at least ``deblend_contrast`` of the central basin's,
in the spirit of SExtractor's multi-threshold deblending contrast. A basin
whose peak is significant (``deblend_nsigma`` above its saddle) but too faint
to deblend, and whose saddle lies below ``FAINT_PEAK_SADDLE`` (half) of the
central peak, is a faint source joined to the galaxy through its wings: it is
left out of the central segment without being masked. On crowded fields (the
skimage HDF) such companions made nearly half of one segment and pulled its
centroid 6 px off the galaxy. Basins of noise bumps, and faint peaks joined
high up (arms, knots near the core), stay in the segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import ndimage as ndi

_OFFSETS = [(0, 0)] + [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
_DY = np.array([dy for dy, _ in _OFFSETS[1:]], dtype=np.int64)
_DX = np.array([dx for _, dx in _OFFSETS[1:]], dtype=np.int64)


def ascent_labels(image: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``region`` into basins of the local maxima of ``image`` (steepest ascent).

    Compiled (:func:`_ascent_kernel`); :func:`_ascent_labels_reference` is its
    NumPy reference, documented below.
    """
    img = np.ascontiguousarray(image, dtype=np.float64)
    labels, peaks = _ascent_kernel(img, np.ascontiguousarray(region, dtype=np.bool_))
    return labels, peaks.astype(np.intp, copy=False)


@njit(cache=True)
def _ascent_kernel(image, region):
    """:func:`_ascent_labels_reference` by pointer chasing: each pixel's brightest 8-neighbour
    (offsets in the reference's order, strict ``>``), then the roots in flat order."""
    ny, nx = image.shape
    npx = ny * nx
    parent = np.full(npx, -1, dtype=np.int64)
    for y in range(ny):
        for x in range(nx):
            if not region[y, x]:
                continue
            best = image[y, x]
            p = y * nx + x
            target = p
            for k in range(8):
                dy = _DY[k]
                dx = _DX[k]
                yy, xx = y + dy, x + dx
                if 0 <= yy < ny and 0 <= xx < nx and region[yy, xx]:
                    val = image[yy, xx]
                    if val > best:
                        best = val
                        target = yy * nx + xx
            parent[p] = target
    label_of = np.zeros(npx, dtype=np.int64)
    n_peaks = 0
    for p in range(npx):
        if parent[p] == p:
            n_peaks += 1
            label_of[p] = n_peaks
    peaks = np.empty(n_peaks, dtype=np.int64)
    labels = np.zeros((ny, nx), dtype=np.int64)
    for p in range(npx):
        if parent[p] < 0:
            continue
        if parent[p] == p:
            peaks[label_of[p] - 1] = p
        root = p
        while parent[root] != root:
            root = parent[root]
        # path compression: every pixel on the way points at the root
        q = p
        while parent[q] != root:
            nxt = parent[q]
            parent[q] = root
            q = nxt
        labels[p // nx, p % nx] = label_of[root]
    return labels, peaks


def _ascent_labels_reference(image: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``region`` into basins of the local maxima of ``image`` (steepest ascent; plain NumPy).

    Every pixel of ``region`` points to its brightest 8-neighbour inside
    ``region`` (itself if none is brighter); following the pointers (by
    pointer doubling) leads to a local maximum. This equals a marker
    watershed from all local maxima up to ties on basin boundaries.

    Returns
    -------
    labels : ndarray of int
        0 outside ``region``, else ``1 + index`` of the pixel's peak in ``peaks``.
    peaks : ndarray of int
        Flat indices of the local maxima, increasing.
    """
    ny, nx = image.shape
    padded = np.full((ny + 2, nx + 2), -np.inf)
    padded[1:-1, 1:-1] = np.where(region, image, -np.inf)
    # Running maximum over the offsets in order; a strict ">" keeps the first
    # maximum, so ties keep the pixel itself (offset 0 first).
    best_val = padded[1:-1, 1:-1].copy()
    step = np.zeros((ny, nx), dtype=np.int64)
    for dy, dx in _OFFSETS[1:]:
        val = padded[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx]
        brighter = val > best_val
        np.copyto(best_val, val, where=brighter)
        np.copyto(step, dy * nx + dx, where=brighter)
    # Pointer doubling on the region's pixels only (compact indices, which
    # keep the order of the flat indices).
    inside = np.flatnonzero(region)
    compact = np.full(ny * nx, -1, dtype=np.intp)
    compact[inside] = np.arange(inside.size)
    target = compact[inside + step.ravel()[inside]]
    for _ in range(64):
        nxt = target[target]
        if np.array_equal(nxt, target):
            break
        target = nxt
    roots = np.unique(target)
    peaks = inside[roots]
    labels = np.zeros(ny * nx, dtype=np.int64)
    labels[inside] = np.searchsorted(roots, target) + 1
    return labels.reshape(ny, nx), peaks


@dataclass(frozen=True)
class CentralSource:
    """Result of :func:`segment_central_source`.

    Attributes
    ----------
    segmap : ndarray of bool
        Pixels of the central source (all False when none was found).
    neighbour_mask : ndarray of bool
        Pixels of other sources to ignore (never overlaps ``segmap``).
    sky_exclude : ndarray of bool
        Every detection, dilated: pixels not to use for the sky.
    n_masked_neighbours : int
        Number of other sources masked (separate detections + deblended ones).
    n_blended : int
        Sources split off the central detection by deblending.
    blend_flux_ratio : float
        Largest ratio of a deblended source's basin flux to the central
        basin's (0 if none).
    found : bool
        Whether a central source was found.
    faint_peaks : ndarray of bool or None
        Basins of faint sources joined through the galaxy's wings, left out of
        ``segmap`` and not masked (module docstring); None when there are none.
    """

    segmap: np.ndarray
    neighbour_mask: np.ndarray
    sky_exclude: np.ndarray
    n_masked_neighbours: int
    n_blended: int
    blend_flux_ratio: float
    found: bool
    faint_peaks: np.ndarray | None = None

    @property
    def touches_edge(self) -> bool:
        """Whether the segment reaches the stamp border."""
        s = self.segmap
        return bool(s[0].any() or s[-1].any() or s[:, 0].any() or s[:, -1].any())


#: A significant secondary peak too faint to deblend whose saddle with the rest
#: of the detection lies below this fraction of the central peak (smoothed image)
#: is a separate faint source joined through the galaxy's wings: it is left out
#: of the segment (module docstring). Above it, the peak is the galaxy's own
#: structure (an arm, a knot near the core).
FAINT_PEAK_SADDLE = 0.5


def segment_central_source(
    image: np.ndarray,
    sky_sigma: float,
    *,
    mask: np.ndarray | None = None,
    nsigma: float = 2.0,
    smooth_sigma: float = 1.0,
    min_area: int = 10,
    search_radius: float = 5.0,
    deblend_nsigma: float = 5.0,
    deblend_contrast: float = 0.02,
    sky_dilation: int = 4,
    smoothed: np.ndarray | None = None,
    smoothed_sigma: float | None = None,
    peak_nsigma: float = 4.5,
) -> CentralSource:
    """Segment the source at the stamp centre and mask everything else (module docstring).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Sky-subtracted flux; non-finite pixels are treated as masked.
    sky_sigma : float
        Sky noise per pixel.
    mask : ndarray of bool, optional
        True for pixels to ignore.
    nsigma : float
        Detection threshold in units of the smoothed sky noise.
    smooth_sigma : float
        Gaussian smoothing (px) of the detection image.
    min_area : int
        Detections smaller than this (px) are noise: neither source nor neighbour.
    search_radius : float
        The central source must have its brightest smoothed pixel this close
        (px) to the stamp centre ``((nx-1)/2, (ny-1)/2)``.
    deblend_nsigma, deblend_contrast : float
        Deblending criteria (module docstring).
    sky_dilation : int
        Dilation (px) of all detections for ``sky_exclude``.
    smoothed : ndarray, optional
        The detection image, if already computed: ``image`` with masked and
        non-finite pixels set to 0, convolved with the Gaussian of
        ``smooth_sigma`` (zero outside the stamp). See
        :func:`detection_smoothing` for segmenting one stamp at several sky
        levels with a single convolution.
    smoothed_sigma : float, optional
        Noise of the detection image (measured, to catch correlated noise);
        default the white-noise value ``sky_sigma / (2 sqrt(pi) smooth_sigma)``.
    peak_nsigma : float
        Other detections are neighbours only if their smoothed peak exceeds
        this many noise sigmas (module docstring).

    Returns
    -------
    CentralSource
        ``found`` False (empty ``segmap``) when ``sky_sigma`` is not positive
        and finite or nothing is detected near the centre.
    """
    img = np.asarray(image, dtype=np.float64)
    ny, nx = img.shape
    bad = ~np.isfinite(img)
    if mask is not None:
        bad |= mask
    empty = np.zeros(img.shape, dtype=bool)
    if not (np.isfinite(sky_sigma) and sky_sigma > 0):
        return CentralSource(empty, empty.copy(), empty.copy(), 0, 0, 0.0, False)
    if smoothed is None:
        smooth = ndi.gaussian_filter(np.where(bad, 0.0, img), smooth_sigma, mode="constant")
    else:
        smooth = np.asarray(smoothed, dtype=np.float64)
    sigma_s = _smoothed_sigma(sky_sigma, smooth_sigma, smoothed_sigma)
    detected = (smooth > nsigma * sigma_s) & ~bad
    labels, n = label8(detected)
    if n == 0:
        return CentralSource(empty, empty.copy(), empty.copy(), 0, 0, 0.0, False)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    big = areas >= min_area
    big[0] = False
    # Brightest smoothed pixel near the centre that belongs to a real detection.
    yy, xx = np.ogrid[:ny, :nx]
    near = (xx - (nx - 1) / 2.0) ** 2 + (yy - (ny - 1) / 2.0) ** 2 <= search_radius**2
    cand = near & big[labels]
    if not cand.any():
        return CentralSource(empty, empty.copy(), empty.copy(), 0, 0, 0.0, False)
    seed = np.unravel_index(int(np.argmax(np.where(cand, smooth, -np.inf))), img.shape)
    central_label = labels[seed]
    footprint = labels == central_label
    significant = big & (_label_peaks(smooth, labels, n) > peak_nsigma * sigma_s)
    significant[central_label] = False
    others = significant[labels]
    n_neighbours = int(np.count_nonzero(significant))

    # Deblend the central footprint by steepest ascent on the smoothed image.
    sl = _bbox(footprint, 1)
    sub_fp = footprint[sl]
    sub_smooth = smooth[sl]
    basins, peaks = ascent_labels(sub_smooth, sub_fp)
    main = basins[seed[0] - sl[0].start, seed[1] - sl[1].start]
    secondary = np.zeros(sub_fp.shape, dtype=bool)
    faint = np.zeros(sub_fp.shape, dtype=bool)
    n_blended = 0
    blend_ratio = 0.0
    if peaks.size > 1:
        peak_vals = sub_smooth.ravel()[peaks]
        saddle = _saddles(sub_smooth, basins, peaks.size)
        prominence = peak_vals - saddle
        excess = np.bincount(
            basins.ravel(),
            weights=np.maximum(sub_smooth - saddle[np.maximum(basins - 1, 0)], 0.0).ravel() * (basins > 0).ravel(),
            minlength=peaks.size + 1,
        )[1:]
        main_flux = float(np.sum(np.where(basins == main, sub_smooth, 0.0)))
        for b in range(1, peaks.size + 1):
            if b == main:
                continue
            e = excess[b - 1]
            if prominence[b - 1] <= deblend_nsigma * sigma_s:
                continue  # a noise bump: the galaxy's
            if e >= deblend_contrast * main_flux:
                secondary |= basins == b
                n_blended += 1
                basin_flux = float(np.sum(np.where(basins == b, sub_smooth, 0.0)))
                blend_ratio = max(blend_ratio, basin_flux / main_flux if main_flux > 0 else np.inf)
            elif saddle[b - 1] < FAINT_PEAK_SADDLE * peak_vals[main - 1]:
                faint |= basins == b  # joined to the galaxy only through its wings
    segmap = footprint.copy()
    faint_peaks = None
    if faint.any():
        faint_peaks = np.zeros(img.shape, dtype=bool)
        faint_peaks[sl] = faint
    if n_blended or faint_peaks is not None:
        segmap[sl] &= ~(secondary | faint)
        # Keep only the part connected to the central peak.
        segmap = component8(segmap, seed[0], seed[1])
    neighbours = others.copy()
    neighbours[sl] |= secondary
    neighbour_mask = _dilate_square(neighbours) & ~segmap
    all_det = big[labels]  # the sky excludes faint detections too
    sky_exclude = _dilate_cross(all_det, sky_dilation)
    return CentralSource(
        segmap,
        neighbour_mask,
        sky_exclude,
        n_neighbours + n_blended,
        n_blended,
        blend_ratio,
        True,
        faint_peaks,
    )


def detection_smoothing(
    image: np.ndarray, mask: np.ndarray | None = None, smooth_sigma: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed image and smoothed valid-pixel map, to segment at any sky level.

    With ``G`` the Gaussian of ``smooth_sigma`` (zero outside the stamp) and
    ``v`` the valid (finite, unmasked) pixels, the detection image of
    :func:`segment_central_source` for ``image - level`` is, by linearity,
    ``G * (v image) - level G * v``: the two returned arrays.

    Returns
    -------
    smooth_image, smooth_valid : ndarray
    """
    img = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(img)
    if mask is not None:
        bad |= mask
    smooth_image = ndi.gaussian_filter(np.where(bad, 0.0, img), smooth_sigma, mode="constant")
    if bad.any():
        smooth_valid = ndi.gaussian_filter((~bad).astype(np.float64), smooth_sigma, mode="constant")
    else:  # separable: the product of the two 1-D smoothed edges
        ny, nx = img.shape
        col = ndi.gaussian_filter1d(np.ones(ny), smooth_sigma, mode="constant")
        row = ndi.gaussian_filter1d(np.ones(nx), smooth_sigma, mode="constant")
        smooth_valid = np.outer(col, row)
    return smooth_image, smooth_valid


def detection_mask(
    smoothed: np.ndarray,
    sky_sigma: float,
    *,
    nsigma: float = 1.0,
    smooth_sigma: float = 1.0,
    min_area: int = 10,
    dilation: int = 4,
    smoothed_sigma: float | None = None,
    grow_nsigma: float | None = None,
    peak_nsigma: float | None = None,
) -> np.ndarray:
    """Every detection of at least ``min_area`` px in a smoothed image, dilated (pixels not to use as sky).

    ``smoothed`` is the sky-subtracted detection image (Gaussian of
    ``smooth_sigma``, see :func:`detection_smoothing`), thresholded at
    ``nsigma`` times its noise ``smoothed_sigma`` (default the white-noise
    value ``sky_sigma / (2 sqrt(pi) smooth_sigma)``) and 8-connected.
    With ``grow_nsigma`` (< ``nsigma``) each detection is grown into the
    connected pixels above ``grow_nsigma`` noise sigmas (hysteresis), so that
    the faint outskirts of real sources leave the sky while noise blobs that
    reach only ``grow_nsigma`` do not (masking those would bias the sky low).
    With ``peak_nsigma``, only detections peaking above that many sigmas count.
    All False when the noise is not positive and finite.
    """
    smooth = np.asarray(smoothed, dtype=np.float64)
    sigma_s = _smoothed_sigma(sky_sigma, smooth_sigma, smoothed_sigma)
    if not (np.isfinite(sigma_s) and sigma_s > 0):
        return np.zeros(smooth.shape, dtype=bool)
    detected = smooth > nsigma * sigma_s
    labels, n = label8(detected)
    if n == 0:
        return detected
    big = np.bincount(labels.ravel(), minlength=n + 1) >= min_area
    if peak_nsigma is not None:
        big &= _label_peaks(smooth, labels, n) > peak_nsigma * sigma_s
    big[0] = False
    sources = big[labels]
    if grow_nsigma is not None and grow_nsigma < nsigma and sources.any():
        low, n_low = label8(smooth > grow_nsigma * sigma_s)
        keep = np.zeros(n_low + 1, dtype=bool)
        keep[np.unique(low[sources])] = True
        keep[0] = False
        sources = keep[low]
    return _dilate_cross(sources, dilation)


def _label_peaks(image: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Maximum of ``image`` over each label ``0..n`` (``ndi.maximum``, without its per-label overhead)."""
    inside = labels > 0
    peaks = np.full(n + 1, -np.inf)
    np.maximum.at(peaks, labels[inside], image[inside])
    return peaks


def _smoothed_sigma(sky_sigma: float, smooth_sigma: float, smoothed_sigma: float | None) -> float:
    """Noise of the detection image: the measured one if given, else the white-noise value."""
    if smoothed_sigma is not None and np.isfinite(smoothed_sigma) and smoothed_sigma > 0:
        return float(smoothed_sigma)
    if not (np.isfinite(sky_sigma) and sky_sigma > 0):
        return float("nan")
    return float(sky_sigma) / (2.0 * np.sqrt(np.pi) * smooth_sigma)


def _dilate_square(mask: np.ndarray) -> np.ndarray:
    """Binary dilation by the 3 x 3 square (``ndi.binary_dilation`` with an 8-connected structure)."""
    rows = mask.copy()
    rows[:, 1:] |= mask[:, :-1]
    rows[:, :-1] |= mask[:, 1:]
    out = rows.copy()
    out[1:] |= rows[:-1]
    out[:-1] |= rows[1:]
    return out


def _dilate_cross(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``iterations`` binary dilations by the 4-connected cross (``ndi.binary_dilation``'s default).

    Compiled (:func:`_dilate_cross_kernel`); :func:`_dilate_cross_reference` is the NumPy reference.
    """
    return _dilate_cross_kernel(np.ascontiguousarray(mask, dtype=np.bool_), max(int(iterations), 0))


@njit(cache=True)
def _dilate_cross_kernel(mask, iterations):
    ny, nx = mask.shape
    out = mask.copy()
    for _ in range(iterations):
        prev = out.copy()
        for y in range(ny):
            for x in range(nx):
                if prev[y, x]:
                    if y > 0:
                        out[y - 1, x] = True
                    if y < ny - 1:
                        out[y + 1, x] = True
                    if x > 0:
                        out[y, x - 1] = True
                    if x < nx - 1:
                        out[y, x + 1] = True
    return out


def _dilate_cross_reference(mask: np.ndarray, iterations: int) -> np.ndarray:
    """NumPy reference of :func:`_dilate_cross`."""
    out = mask.copy()
    for _ in range(max(int(iterations), 0)):
        prev = out.copy()
        out[1:] |= prev[:-1]
        out[:-1] |= prev[1:]
        out[:, 1:] |= prev[:, :-1]
        out[:, :-1] |= prev[:, 1:]
    return out


def label8(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of ``mask``: ``ndi.label(mask, structure=np.ones((3, 3)))``, compiled.

    Components are numbered 1..n in the raster order of their first pixel,
    as ``ndi.label`` numbers them (the tests compare the two); the labels are
    int32, as ``ndi.label``'s. Saves ``ndi.label``'s per-call overhead, which
    dominates on stamps of a few thousand pixels.
    """
    return _label8_kernel(np.ascontiguousarray(mask, dtype=np.bool_))


@njit(cache=True)
def _label8_kernel(mask):
    ny, nx = mask.shape
    labels = np.zeros((ny, nx), dtype=np.int32)
    stack_y = np.empty(ny * nx, dtype=np.int64)
    stack_x = np.empty(ny * nx, dtype=np.int64)
    n = 0
    for y0 in range(ny):
        for x0 in range(nx):
            if not mask[y0, x0] or labels[y0, x0] != 0:
                continue
            n += 1
            labels[y0, x0] = n
            stack_y[0], stack_x[0] = y0, x0
            top = 1
            while top > 0:  # flood fill of the new component
                top -= 1
                y, x = stack_y[top], stack_x[top]
                for yy in range(y - 1 if y > 0 else 0, y + 2 if y + 2 < ny else ny):
                    for xx in range(x - 1 if x > 0 else 0, x + 2 if x + 2 < nx else nx):
                        if mask[yy, xx] and labels[yy, xx] == 0:
                            labels[yy, xx] = n
                            stack_y[top], stack_x[top] = yy, xx
                            top += 1
    return labels, n


def component8(mask: np.ndarray, y: int, x: int) -> np.ndarray:
    """``labels == labels[y, x]`` with ``labels`` the 8-connected :func:`label8` of ``mask``.

    The component holding pixel ``(y, x)``, by a flood fill from it; when
    ``mask[y, x]`` is False that expression is the background, ``~mask``,
    and so is the result.
    """
    m = np.ascontiguousarray(mask, dtype=np.bool_)
    if not m[y, x]:
        return ~m
    return _component8_kernel(m, int(y), int(x))


@njit(cache=True)
def _component8_kernel(mask, y0, x0):
    ny, nx = mask.shape
    out = np.zeros((ny, nx), dtype=np.bool_)
    stack_y = np.empty(ny * nx, dtype=np.int64)
    stack_x = np.empty(ny * nx, dtype=np.int64)
    out[y0, x0] = True
    stack_y[0], stack_x[0] = y0, x0
    top = 1
    while top > 0:
        top -= 1
        y, x = stack_y[top], stack_x[top]
        for yy in range(y - 1 if y > 0 else 0, y + 2 if y + 2 < ny else ny):
            for xx in range(x - 1 if x > 0 else 0, x + 2 if x + 2 < nx else nx):
                if mask[yy, xx] and not out[yy, xx]:
                    out[yy, xx] = True
                    stack_y[top], stack_x[top] = yy, xx
                    top += 1
    return out


def _bbox(region: np.ndarray, margin: int):
    ys = np.nonzero(region.any(axis=1))[0]
    xs = np.nonzero(region.any(axis=0))[0]
    ny, nx = region.shape
    return (
        slice(max(ys[0] - margin, 0), min(ys[-1] + margin + 1, ny)),
        slice(max(xs[0] - margin, 0), min(xs[-1] + margin + 1, nx)),
    )


def _saddles(smooth: np.ndarray, basins: np.ndarray, n_peaks: int) -> np.ndarray:
    """Highest pass from each basin into any other basin: max over borders of min(I_p, I_q).

    Basins with no neighbouring basin get ``-inf`` (their prominence is then
    infinite; they are isolated, which cannot happen inside one footprint).
    Compiled (:func:`_saddles_kernel`); :func:`_saddles_reference` is its reference.
    """
    return _saddles_kernel(np.ascontiguousarray(smooth, dtype=np.float64),
                           np.ascontiguousarray(basins, dtype=np.int64), int(n_peaks))


@njit(cache=True)
def _saddle_update(saddle, a, b, level):
    # np.maximum's rule: NaN wins and stays
    for k in (a, b):
        cur = saddle[k]
        if cur == cur and (level != level or level > cur):
            saddle[k] = level


@njit(cache=True)
def _saddles_kernel(smooth, basins, n_peaks):
    saddle = np.full(n_peaks + 1, -np.inf)
    ny, nx = basins.shape
    for y in range(ny):
        for x in range(nx):
            a = basins[y, x]
            if a <= 0:
                continue
            va = smooth[y, x]
            # right, down, down-right, down-left: each unordered pair once
            for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
                yy, xx = y + dy, x + dx
                if yy >= ny or xx < 0 or xx >= nx:
                    continue
                b = basins[yy, xx]
                if b > 0 and b != a:
                    vb = smooth[yy, xx]
                    level = np.nan if (va != va or vb != vb) else min(va, vb)  # np.minimum
                    _saddle_update(saddle, a, b, level)
    return saddle[1:]


def _saddles_reference(smooth: np.ndarray, basins: np.ndarray, n_peaks: int) -> np.ndarray:
    """NumPy reference of :func:`_saddles`."""
    saddle = np.full(n_peaks + 1, -np.inf)
    ends, levels = [], []
    for a, b, va, vb in (
        (basins[:, :-1], basins[:, 1:], smooth[:, :-1], smooth[:, 1:]),
        (basins[:-1, :], basins[1:, :], smooth[:-1, :], smooth[1:, :]),
        (basins[:-1, :-1], basins[1:, 1:], smooth[:-1, :-1], smooth[1:, 1:]),
        (basins[:-1, 1:], basins[1:, :-1], smooth[:-1, 1:], smooth[1:, :-1]),
    ):
        edge = (a != b) & (a > 0) & (b > 0)
        level = np.minimum(va[edge], vb[edge])
        ends += [a[edge], b[edge]]
        levels += [level, level]
    # One unbuffered maximum over all border pairs, both ends of each.
    np.maximum.at(saddle, np.concatenate(ends), np.concatenate(levels))
    return saddle[1:]


def asymmetric_excess(
    smoothed: np.ndarray,
    center: tuple[float, float],
    region: np.ndarray,
    smoothed_sigma: float,
    *,
    nsigma: float = 4.0,
    min_contrast: float = 0.25,
    min_area: int = 5,
    r_min: float = 2.5,
    mask: np.ndarray | None = None,
) -> int:
    """Number of blobs of light in ``region`` that the 180-degree rotation about ``center`` does not hold.

    A neighbour blended into a galaxy so closely that it makes no peak of
    its own still breaks the galaxy's point symmetry (the idea behind the
    asymmetry index; Conselice 2003). With ``S`` the smoothed, sky-subtracted
    stamp and ``S_180(x) = S(2c - x)``, a blob is a connected set of at least
    ``min_area`` pixels of ``region`` farther than ``r_min`` px from ``center``
    where ``S - S_180 > nsigma * sqrt(2) * smoothed_sigma`` (significant) and
    ``S - S_180 > min_contrast * S_180`` (not a centring error, which scales
    with the local brightness). Pixels whose rotated counterpart is in
    ``mask`` (masked neighbours, bad pixels) or off the stamp are skipped.

    Returns 0 when ``smoothed_sigma`` is not positive and finite.
    """
    if not (np.isfinite(smoothed_sigma) and smoothed_sigma > 0):
        return 0
    smooth = np.asarray(smoothed, dtype=np.float64)
    ny, nx = smooth.shape
    yy, xx = np.mgrid[:ny, :nx]
    rot = ndi.map_coordinates(
        smooth, [2.0 * center[1] - yy, 2.0 * center[0] - xx], order=1, mode="constant", cval=np.nan
    )
    if mask is not None and mask.any():
        rot_masked = ndi.map_coordinates(
            _dilate_square(mask).astype(np.float64), [2.0 * center[1] - yy, 2.0 * center[0] - xx], order=0, cval=1.0
        )
        rot[rot_masked > 0] = np.nan
    excess = smooth - rot
    far = (xx - center[0]) ** 2 + (yy - center[1]) ** 2 > r_min**2
    cand = (
        region
        & far
        & np.isfinite(rot)
        & (excess > nsigma * np.sqrt(2.0) * smoothed_sigma)
        & (excess > min_contrast * np.maximum(rot, 0.0))
    )
    labels, n = label8(cand)
    if n == 0:
        return 0
    return int(np.count_nonzero(np.bincount(labels.ravel())[1:] >= min_area))
