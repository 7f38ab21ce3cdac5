"""Concentration, asymmetry and smoothness (the CAS system).

Conselice (2003, ApJS 147, 1); Bershady, Jangren & Conselice (2000, AJ 119,
2645); Lotz, Primack & Madau (2004, AJ 128, 163), with the conventions of
statmorph (Rodriguez-Gomez et al. 2019, MNRAS 483, 4140, Sect. 4.3):

.. math::

    C &= 5 \\log_{10}(r_{80} / r_{20}) \\\\
    A &= \\frac{\\sum |I - I_{180}| - N\\,\\overline{|B - B_{180}|}}{\\sum |I|} \\\\
    S &= \\frac{\\sum \\max(I - I_S, 0) - N\\,\\overline{\\max(B - B_S, 0)}}{\\sum I}

``A`` is summed over a circle of radius 1.5 ``r_p`` around the centre that
minimises it; ``S`` over the annulus ``[0.25, 1.5] r_p`` with ``I_S`` the image
smoothed by a boxcar of ``int(0.25 r_p)`` px. The background terms are the
values for Gaussian white noise of the measured sky sigma
(:mod:`featuremass.features.sky`).

The 180-degree rotation about ``(x_c, y_c)`` maps pixel ``(x, y)`` to
``(2 x_c - x, 2 y_c - y)``: for a centre on the half-pixel grid that is an
exact array flip, and for any other centre the bilinear interpolation of four
flips with constant weights (as skimage's bilinear rotation gives). The
centre search therefore walks the half-pixel grid (a handful of flips), then
refines with a parabola through the 3 x 3 neighbourhood.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy import ndimage as ndi

from featuremass.features.geometry import elliptical_distance, elliptical_distance_scalar
from featuremass.features.sky import sky_asymmetry_per_pixel, sky_smoothness_per_pixel


def concentration(r20: float, r80: float) -> float:
    """Concentration ``C = 5 log10(r80 / r20)`` (Bershady et al. 2000; Conselice 2003, eq. 3).

    NaN when either radius is not positive and finite.
    """
    if not (np.isfinite(r20) and np.isfinite(r80) and r20 > 0 and r80 > 0):
        return float("nan")
    return float(5.0 * np.log10(r80 / r20))


def _zero_pad(arr: np.ndarray, pad: int) -> np.ndarray:
    """``np.pad(arr, pad)`` (zeros / False) without its per-call overhead (~3 per galaxy)."""
    out = np.zeros((arr.shape[0] + 2 * pad, arr.shape[1] + 2 * pad), dtype=arr.dtype)
    out[pad : pad + arr.shape[0], pad : pad + arr.shape[1]] = arr
    return out


class _Rotator:
    """180-degree rotations of one image (and its mask) about arbitrary centres.

    The image is zero-padded by ``pad`` pixels (mask False there); rotations
    about centres inside the stamp, over windows reaching ``extent`` px from
    them, need ``pad >= extent + 6``.
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray, extent: float | None = None):
        self.ny, self.nx = image.shape
        if extent is not None and np.isfinite(extent):
            self.pad = int(np.ceil(extent)) + 8
        else:
            self.pad = max(self.ny, self.nx) + 2
        self.image = _zero_pad(image, self.pad)
        self.mask = _zero_pad(mask, self.pad)
        self.raw_image = image
        self.raw_mask = mask

    def _flip(self, arr, big_x: int, big_y: int, win):
        """``J[y, x] = arr[big_y - y, big_x - x]`` over window ``win`` (zero outside)."""
        (ya, yb), (xa, xb) = win
        p = self.pad
        y0 = big_y + p - (yb - 1)
        x0 = big_x + p - (xb - 1)
        return arr[y0 : y0 + (yb - ya), x0 : x0 + (xb - xa)][::-1, ::-1]

    def rotated(self, center, win):
        """Bilinear rotated image and nearest-neighbour rotated mask over ``win``."""
        big_x, big_y = 2.0 * center[0], 2.0 * center[1]
        ix, iy = int(np.floor(big_x)), int(np.floor(big_y))
        fx, fy = big_x - ix, big_y - iy
        rot = self._flip(self.image, ix, iy, win)
        if fx > 1e-9 or fy > 1e-9:
            rot = (1 - fx) * (1 - fy) * rot
            if fx > 1e-9:
                rot = rot + fx * (1 - fy) * self._flip(self.image, ix + 1, iy, win)
            if fy > 1e-9:
                rot = rot + (1 - fx) * fy * self._flip(self.image, ix, iy + 1, win)
            if fx > 1e-9 and fy > 1e-9:
                rot = rot + fx * fy * self._flip(self.image, ix + 1, iy + 1, win)
        mrot = self._flip(self.mask, int(np.floor(big_x + 0.5)), int(np.floor(big_y + 0.5)), win)
        return rot, mrot

    def window(self, center, extent):
        """Pixel window ``((ya, yb), (xa, xb))`` covering ``extent`` px around ``center``."""
        xc, yc = center
        ya = max(int(np.floor(yc - extent - 1)), 0)
        yb = min(int(np.ceil(yc + extent + 2)), self.ny)
        xa = max(int(np.floor(xc - extent - 1)), 0)
        xb = min(int(np.ceil(xc + extent + 2)), self.nx)
        return (ya, yb), (xa, xb)


def _ramp(r, rho):
    return np.clip(r - rho + 0.5, 0.0, 1.0)


def _asymmetry_at(rot: _Rotator, center, image, aperture, bkg_per_pixel, *, use_abs=True):
    """Eq. 10 of Lotz et al. (2004) for one centre; NaN when the flux sum is zero.

    ``aperture`` is ``(r_in, r_out, elongation, theta)`` in semi-major pixels.
    """
    r_in, r_out, elongation, theta = aperture
    win = rot.window(center, r_out)  # r_out is the semi-major axis, the largest extent
    (ya, yb), (xa, xb) = win
    if yb <= ya or xb <= xa:
        return float("nan")
    img = image[ya:yb, xa:xb]
    mask = rot.raw_mask[ya:yb, xa:xb]
    img180, mask180 = rot.rotated(center, win)
    good = ~(mask | mask180)
    dx = np.arange(xa, xb) - center[0]
    dy = np.arange(ya, yb)[:, None] - center[1]
    rho = elliptical_distance(dx, dy, elongation, theta)
    w = _ramp(r_out, rho)
    if r_in > 0:
        w = w - _ramp(r_in, rho)
    w = w * good
    abs_sum = float(np.sum(w * np.abs(img)))
    if not abs_sum > 0:
        return float("nan")
    diff = float(np.sum(w * np.abs(img - img180)))
    area = float(np.sum(w))
    return (diff - area * bkg_per_pixel) / abs_sum


@njit(cache=True)
def _asymmetry_kernel(image, mask, xc, yc, r_in, r_out, elongation, theta, bkg):
    """Kernel of :func:`_asymmetry_at` (``image`` with masked pixels already zero).

    Same window, same bilinear rotation (zero outside the stamp), same
    nearest-neighbour rotated mask and aperture ramps; only the order of the
    sums differs (sequential here, pairwise in NumPy).
    """
    ny, nx = image.shape
    ya = max(int(math.floor(yc - r_out - 1)), 0)
    yb = min(int(math.ceil(yc + r_out + 2)), ny)
    xa = max(int(math.floor(xc - r_out - 1)), 0)
    xb = min(int(math.ceil(xc + r_out + 2)), nx)
    if yb <= ya or xb <= xa:
        return np.nan
    big_x, big_y = 2.0 * xc, 2.0 * yc
    ix, iy = int(math.floor(big_x)), int(math.floor(big_y))
    fx, fy = big_x - ix, big_y - iy
    use_x, use_y = fx > 1e-9, fy > 1e-9
    mx, my = int(math.floor(big_x + 0.5)), int(math.floor(big_y + 0.5))
    c, s = math.cos(theta), math.sin(theta)
    abs_sum, diff, area = 0.0, 0.0, 0.0
    for y in range(ya, yb):
        dy = y - yc
        for x in range(xa, xb):
            if mask[y, x]:
                continue
            ry, rx = my - y, mx - x
            if ry >= 0 and rx >= 0 and ry < ny and rx < nx and mask[ry, rx]:
                continue
            dx = x - xc
            rho = elliptical_distance_scalar(dx, dy, elongation, c, s)
            w = min(max(r_out - rho + 0.5, 0.0), 1.0)
            if r_in > 0:
                w -= min(max(r_in - rho + 0.5, 0.0), 1.0)
            if w == 0.0:
                continue
            rot = _pixel_or_zero(image, iy - y, ix - x)
            if use_x or use_y:
                rot = (1 - fx) * (1 - fy) * rot
                if use_x:
                    rot = rot + fx * (1 - fy) * _pixel_or_zero(image, iy - y, ix + 1 - x)
                if use_y:
                    rot = rot + (1 - fx) * fy * _pixel_or_zero(image, iy + 1 - y, ix - x)
                if use_x and use_y:
                    rot = rot + fx * fy * _pixel_or_zero(image, iy + 1 - y, ix + 1 - x)
            val = image[y, x]
            abs_sum += w * abs(val)
            diff += w * abs(val - rot)
            area += w
    if not abs_sum > 0:
        return np.nan
    return (diff - area * bkg) / abs_sum


@njit(cache=True, inline="always")
def _pixel_or_zero(image, y, x):
    # Explicit comparisons: numba compiles chained ones (0 <= y < n) ~40x slower here.
    if y >= 0 and x >= 0 and y < image.shape[0] and x < image.shape[1]:
        return image[y, x]
    return 0.0


class _GridAsymmetry:
    """Circular-aperture asymmetry at many half-pixel-grid centres in one array operation.

    Centre ``(gx/2, gy/2)`` (integers ``gx, gy``) makes the rotation an exact
    flip, and the pixel offsets from it depend only on the parities of
    ``gx, gy``: four weight templates serve every centre. Each centre's
    window of ``2H + 1`` pixels (``H = ceil(r) + 1``) holds the whole aperture;
    pixels outside the stamp have zero weight, as in :func:`_asymmetry_at`.
    """

    def __init__(self, rot: _Rotator, r_aperture: float, bkg_per_pixel: float):
        self.half = int(np.ceil(r_aperture)) + 1
        size = 2 * self.half + 1  # rot.pad >= half + 3 keeps every window in the padding
        self.rot = rot
        self.bkg = bkg_per_pixel
        offs = np.arange(size) - self.half
        templates = np.empty((2, 2, size, size))
        for py in (0, 1):
            for px in (0, 1):
                dx = offs - 0.5 * px
                dy = (offs - 0.5 * py)[:, None]
                templates[py, px] = _ramp(r_aperture, np.sqrt(dx * dx + dy * dy))
        self.templates = templates
        self.valid = _zero_pad(~rot.raw_mask, rot.pad)  # in the stamp and not masked
        self.size = size

    def __call__(self, centres) -> np.ndarray:
        """Asymmetry at each ``(gx, gy)`` (the NumPy reference of :func:`_grid_asymmetry_at`)."""
        win = (self.size, self.size)
        rot = self.rot
        view_image = np.lib.stride_tricks.sliding_window_view(rot.image, win)
        view_valid = np.lib.stride_tricks.sliding_window_view(self.valid, win)
        view_image_rev = np.lib.stride_tricks.sliding_window_view(rot.image[::-1, ::-1], win)
        view_mask_rev = np.lib.stride_tricks.sliding_window_view(rot.mask[::-1, ::-1], win)
        g = np.asarray(centres, dtype=np.int64).reshape(-1, 2)
        gx, gy = g[:, 0], g[:, 1]
        p, h = self.rot.pad, self.half
        x0 = gx // 2 - h + p  # window origin in padded coordinates
        y0 = gy // 2 - h + p
        # Rotated pixel of (y0 + i, x0 + j) is (gy - y0 + 2p - i, gx - x0 + 2p - j):
        # a plain window of the reversed padded array.
        ny_p, nx_p = self.rot.image.shape
        yr = ny_p - 1 - (gy + 2 * p - y0)
        xr = nx_p - 1 - (gx + 2 * p - x0)
        img = view_image[y0, x0]
        img180 = view_image_rev[yr, xr]
        good = view_valid[y0, x0] & ~view_mask_rev[yr, xr]
        w = self.templates[gy % 2, gx % 2] * good
        abs_sum = np.einsum("kij,kij->k", w, np.abs(img))
        diff = np.einsum("kij,kij->k", w, np.abs(img - img180))
        area = w.sum(axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (diff - area * self.bkg) / abs_sum
        out[~(abs_sum > 0)] = np.nan
        return out


def rotational_asymmetry(
    image: np.ndarray,
    center: tuple[float, float],
    *,
    mask: np.ndarray | None = None,
    r_out: float,
    r_in: float = 0.0,
    elongation: float = 1.0,
    theta: float = 0.0,
    sky_sigma: float = 0.0,
) -> float:
    """Rotational asymmetry in an aperture (Conselice 2003, eq. 2; Lotz et al. 2004, eq. 10).

    Pixels masked in the image or in its rotation are excluded from both
    sums (statmorph's symmetric mask). ``r_in > 0`` gives an (elliptical)
    annulus, as for the outer asymmetry of Wen et al. (2014). The background
    term uses :func:`~featuremass.features.sky.sky_asymmetry_per_pixel`;
    ``sky_sigma=0`` switches it off (shape asymmetry).

    Returns
    -------
    float
        NaN when the absolute flux in the aperture is zero, the aperture
        radius is not positive, or the centre is not finite.
    """
    img = np.asarray(image, dtype=np.float64)
    msk = np.zeros(img.shape, bool) if mask is None else np.asarray(mask, bool)
    if not (np.isfinite(r_out) and r_out > 0 and np.all(np.isfinite(center))):
        return float("nan")
    bkg = sky_asymmetry_per_pixel(sky_sigma) if sky_sigma > 0 else 0.0
    return float(_asymmetry_kernel(np.where(msk, 0.0, img), msk, float(center[0]), float(center[1]), float(r_in),
                                   float(r_out), float(elongation), float(theta), float(bkg)))


def _rotational_asymmetry_reference(image, center, *, mask=None, r_out, r_in=0.0, elongation=1.0, theta=0.0,
                                    sky_sigma=0.0) -> float:
    """:func:`rotational_asymmetry` in plain NumPy (the reference of :func:`_asymmetry_kernel`)."""
    img = np.asarray(image, dtype=np.float64)
    msk = np.zeros(img.shape, bool) if mask is None else np.asarray(mask, bool)
    if not (np.isfinite(r_out) and r_out > 0 and np.all(np.isfinite(center))):
        return float("nan")
    bkg = sky_asymmetry_per_pixel(sky_sigma) if sky_sigma > 0 else 0.0
    ny, nx = img.shape
    inside = -1.0 <= center[0] <= nx and -1.0 <= center[1] <= ny
    rot = _Rotator(np.where(msk, 0.0, img), msk, extent=r_out if inside else None)
    return float(_asymmetry_at(rot, center, rot.raw_image, (r_in, r_out, elongation, theta), bkg))


def _descend_reference(grid_eval: _GridAsymmetry, gx: int, gy: int, nx: int, ny: int, max_steps: int):
    """Steepest descent on the half-pixel grid: the final ``(gx, gy)`` and the 3 x 3 values about it.

    Centres outside the stamp and undefined asymmetries count as ``+inf``.
    Plain-NumPy reference of :func:`_descend`.
    """
    cache: dict[tuple[int, int], float] = {}

    def fill(keys) -> None:
        missing = []
        for gx_, gy_ in keys:
            if (gx_, gy_) in cache:
                continue
            if not (0 <= gx_ <= 2 * (nx - 1) and 0 <= gy_ <= 2 * (ny - 1)):
                cache[(gx_, gy_)] = np.inf
            else:
                missing.append((gx_, gy_))
        if missing:
            for key, a in zip(missing, grid_eval(missing), strict=True):
                cache[key] = a if np.isfinite(a) else np.inf

    offsets = [(i, j) for j in (-1, 0, 1) for i in (-1, 0, 1)]
    for _ in range(max_steps):
        fill([(gx + i, gy + j) for i, j in offsets])
        vals = [cache[(gx + i, gy + j)] for i, j in offsets]
        best = int(np.argmin(vals))
        if best == 4 or vals[best] >= vals[4]:
            break
        gx, gy = gx + offsets[best][0], gy + offsets[best][1]
    fill([(gx + i, gy + j) for i, j in offsets])
    return gx, gy, np.array([cache[(gx + i, gy + j)] for i, j in offsets]).reshape(3, 3)


@njit(cache=True)
def _grid_asymmetry_at(image_p, valid_p, mask_p, templates, pad, half, bkg, gx, gy):
    """Kernel of :class:`_GridAsymmetry` for one centre ``(gx / 2, gy / 2)`` (padded arrays)."""
    size = 2 * half + 1
    y0, x0 = gy // 2 - half + pad, gx // 2 - half + pad
    ny_p, nx_p = image_p.shape
    abs_sum, diff, area = 0.0, 0.0, 0.0
    for i in range(size):
        yy, ry = y0 + i, gy + 2 * pad - (y0 + i)
        for j in range(size):
            xx, rx = x0 + j, gx + 2 * pad - (x0 + j)
            if yy < 0 or xx < 0 or ry < 0 or rx < 0 or yy >= ny_p or xx >= nx_p or ry >= ny_p or rx >= nx_p:
                continue
            if not valid_p[yy, xx] or mask_p[ry, rx]:
                continue
            w = templates[gy % 2, gx % 2, i, j]
            v = image_p[yy, xx]
            abs_sum += w * abs(v)
            diff += w * abs(v - image_p[ry, rx])
            area += w
    if not abs_sum > 0:
        return np.inf
    a = (diff - area * bkg) / abs_sum
    return a if np.isfinite(a) else np.inf


@njit(cache=True)
def _descend(image_p, valid_p, mask_p, templates, pad, half, bkg, gx, gy, nx, ny, max_steps):
    """Kernel of :func:`_descend_reference` (same path, same values)."""
    cache = np.full((2 * ny - 1, 2 * nx - 1), np.nan)
    vals = np.empty(9)
    grid = np.empty((3, 3))
    for step in range(max_steps + 1):
        for k in range(9):
            x, y = gx + k % 3 - 1, gy + k // 3 - 1
            if x < 0 or y < 0 or x > 2 * (nx - 1) or y > 2 * (ny - 1):
                vals[k] = np.inf
                continue
            if np.isnan(cache[y, x]):
                cache[y, x] = _grid_asymmetry_at(image_p, valid_p, mask_p, templates, pad, half, bkg, x, y)
            vals[k] = cache[y, x]
        best = int(np.argmin(vals))
        if step == max_steps or best == 4 or vals[best] >= vals[4]:
            break
        gx, gy = gx + best % 3 - 1, gy + best // 3 - 1
    for k in range(9):
        grid[k // 3, k % 3] = vals[k]
    return gx, gy, grid


def asymmetry_center(
    image: np.ndarray,
    start: tuple[float, float],
    *,
    mask: np.ndarray | None = None,
    r_aperture: float,
    sky_sigma: float = 0.0,
    max_steps: int = 40,
) -> tuple[tuple[float, float], float]:
    """Centre that minimises the asymmetry, and the asymmetry there.

    Conselice (2003) and Lotz et al. (2004) take ``A`` at the centre that
    minimises it; statmorph finds it with Nelder-Mead from the centroid. Here
    the minimum is found by steepest descent on the half-pixel grid (where
    the rotation is an exact flip), starting from ``start``, then refined by a
    parabola through the 3 x 3 neighbourhood of the grid minimum (a bilinear
    rotation there); the better of the two is returned.

    Returns
    -------
    (center, asymmetry)
        ``((nan, nan), nan)`` when ``start`` or ``r_aperture`` is not finite
        or the asymmetry is undefined (zero flux) everywhere on the path.
    """
    img = np.asarray(image, dtype=np.float64)
    msk = np.zeros(img.shape, bool) if mask is None else np.asarray(mask, bool)
    nan_result = ((float("nan"), float("nan")), float("nan"))
    if not (np.isfinite(r_aperture) and r_aperture > 0 and np.all(np.isfinite(start))):
        return nan_result
    ny, nx = img.shape
    bkg = sky_asymmetry_per_pixel(sky_sigma) if sky_sigma > 0 else 0.0
    rot = _Rotator(np.where(msk, 0.0, img), msk, extent=r_aperture)
    grid_eval = _GridAsymmetry(rot, r_aperture, bkg)
    gx, gy, grid = _descend(rot.image, grid_eval.valid, rot.mask, grid_eval.templates, rot.pad, grid_eval.half,
                            bkg, int(round(2 * start[0])), int(round(2 * start[1])), nx, ny, max_steps)
    a_grid = grid[1, 1]
    if not np.isfinite(a_grid):
        return nan_result
    center = (gx / 2.0, gy / 2.0)
    # Parabolic refinement along each axis (steps of half a pixel).
    shift = []
    for lo, mid, hi in ((grid[1, 0], grid[1, 1], grid[1, 2]), (grid[0, 1], grid[1, 1], grid[2, 1])):
        denom = lo - 2 * mid + hi
        if np.isfinite(denom) and denom > 0:
            shift.append(float(np.clip(0.5 * (lo - hi) / denom, -0.5, 0.5)) * 0.5)
        else:
            shift.append(0.0)
    if shift[0] != 0.0 or shift[1] != 0.0:
        refined = (center[0] + shift[0], center[1] + shift[1])
        a_ref = _asymmetry_kernel(rot.raw_image, msk, refined[0], refined[1], 0.0, r_aperture, 1.0, 0.0, bkg)
        if np.isfinite(a_ref) and a_ref < a_grid:
            return refined, float(a_ref)
    return center, float(a_grid)


def smoothness(
    image: np.ndarray,
    center: tuple[float, float],
    rpetro_circ: float,
    *,
    sky_sigma: float = 0.0,
    fraction: float = 0.25,
    extent: float = 1.5,
) -> float:
    """Smoothness (clumpiness) ``S`` of Lotz et al. (2004), eq. 11 (module docstring).

    Conselice (2003) multiplies by 10; this follows Lotz et al. and statmorph
    (no factor 10). The annulus ``[fraction, extent] * rpetro_circ`` excludes
    the centre; the boxcar is ``int(fraction * rpetro_circ)`` px wide.

    Returns
    -------
    float
        0.0 when the boxcar is at most 1 px wide (``rpetro_circ < 8`` px; no
        smoothing, as in statmorph); NaN when ``rpetro_circ`` or the centre is
        not finite or the flux in the annulus is not positive.
    """
    img = np.asarray(image, dtype=np.float64)
    if not (np.isfinite(rpetro_circ) and rpetro_circ > 0 and np.all(np.isfinite(center))):
        return float("nan")
    r_in, r_out = fraction * rpetro_circ, extent * rpetro_circ
    boxcar = int(fraction * rpetro_circ)
    ny, nx = img.shape
    ya = max(int(np.floor(center[1] - r_out - 1)) - boxcar, 0)
    yb = min(int(np.ceil(center[1] + r_out + 2)) + boxcar, ny)
    xa = max(int(np.floor(center[0] - r_out - 1)) - boxcar, 0)
    xb = min(int(np.ceil(center[0] + r_out + 2)) + boxcar, nx)
    sub = img[ya:yb, xa:xb]
    dx = np.arange(xa, xb) - center[0]
    dy = np.arange(ya, yb)[:, None] - center[1]
    rho = np.sqrt(dx * dx + dy * dy)
    w = _ramp(r_out, rho) - _ramp(r_in, rho)
    flux = float(np.sum(w * sub))
    if not flux > 0:
        return float("nan")
    if boxcar <= 1:
        return 0.0
    # Smooth the full image so edge handling matches a whole-stamp filter.
    smooth = ndi.uniform_filter(img, size=boxcar)[ya:yb, xa:xb]
    diff = np.maximum(sub - smooth, 0.0)
    area = np.pi * (r_out**2 - r_in**2)
    bkg = sky_smoothness_per_pixel(sky_sigma, boxcar) if sky_sigma > 0 else 0.0
    return float((np.sum(w * diff) - area * bkg) / flux)
