"""Centroid, ellipticity, elongation and orientation from image moments.

The shape is that of the Gaussian with the same second-order moments as the
light distribution (SExtractor manual, Bertin & Arnouts 1996, eqs. 18-21;
statmorph, Rodriguez-Gomez et al. 2019, Sect. 4.1):

.. math::

    \\bar x = \\frac{\\sum I_i x_i}{\\sum I_i}, \\quad
    \\overline{x^2} = \\frac{\\sum I_i (x_i - x_c)^2}{\\sum I_i}, \\quad
    \\overline{xy} = \\frac{\\sum I_i (x_i - x_c)(y_i - y_c)}{\\sum I_i}

The eigenvalues of the covariance matrix are ``a^2 >= b^2``; the ellipticity
is ``1 - b/a``, the elongation ``a/b`` and the orientation
``theta = atan2(2 xy, x2 - y2) / 2`` (radians counter-clockwise from +x).

:func:`elliptical_distance` is the one elliptical (semi-major-axis) radius of
the package; every feature family measures its elliptical apertures and
annuli with it (or, in a numba kernel, with its scalar twin
:func:`elliptical_distance_scalar`). It takes the elongation ``a/b``;
:func:`elongation_from_ellipticity` converts an ellipticity ``1 - b/a``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Variance of a 1-pixel top hat: the SExtractor floor for infinitely thin sources.
_RHO = 1.0 / 12.0


def centroid(image: np.ndarray) -> tuple[float, float]:
    """First-moment centroid ``(x, y)`` of an image (x = column index).

    Pixels should already be zero outside the source. Returns ``(nan, nan)``
    when the total flux is not positive or the centroid falls outside the
    image.
    """
    img = np.asarray(image, dtype=np.float64)
    total = img.sum()
    if not (np.isfinite(total) and total > 0):
        return float("nan"), float("nan")
    ny, nx = img.shape
    xc = float(img.sum(axis=0) @ np.arange(nx) / total)
    yc = float(img.sum(axis=1) @ np.arange(ny) / total)
    if not (0 <= xc <= nx - 1 and 0 <= yc <= ny - 1):
        return float("nan"), float("nan")
    return xc, yc


def covariance(image: np.ndarray, center: tuple[float, float]) -> np.ndarray:
    """Flux-weighted second central moments about ``center``, regularised.

    Returns the 2x2 matrix ``[[x2, xy], [xy, y2]]``. As in SExtractor (manual
    eq. 43) the diagonal grows by 1/12 until the determinant exceeds
    ``(1/12)^2``, so one-pixel-wide sources keep a finite shape. All NaN when
    the total flux is not positive or the centre is not finite.
    """
    img = np.asarray(image, dtype=np.float64)
    total = img.sum()
    xc, yc = center
    if not (np.isfinite(total) and total > 0 and np.isfinite(xc) and np.isfinite(yc)):
        return np.full((2, 2), np.nan)
    ny, nx = img.shape
    dx = np.arange(nx) - xc
    dy = np.arange(ny) - yc
    col = img.sum(axis=0)
    row = img.sum(axis=1)
    x2 = float(col @ dx**2) / total
    y2 = float(row @ dy**2) / total
    xy = float(dy @ img @ dx) / total
    # Noise can make a moment negative; grow the magnitude as SExtractor does.
    for _ in range(1000):
        if abs(x2 * y2 - xy * xy) >= _RHO**2:
            break
        x2 += _RHO if x2 >= 0 else -_RHO
        y2 += _RHO if y2 >= 0 else -_RHO
    return np.array([[x2, xy], [xy, y2]])


def shape_from_covariance(cov: np.ndarray) -> tuple[float, float, float]:
    """``(ellipticity, elongation, orientation)`` of a moment covariance matrix.

    ``a^2, b^2`` are the absolute eigenvalues, largest first; ellipticity is
    ``1 - b/a``, elongation ``a/b`` and orientation
    ``0.5 atan2(2 xy, x2 - y2)`` in radians counter-clockwise from +x, in
    ``(-pi/2, pi/2]``. NaN for a non-finite matrix.
    """
    cov = np.asarray(cov, dtype=np.float64)
    if not np.all(np.isfinite(cov)):
        return float("nan"), float("nan"), float("nan")
    x2, xy, y2 = cov[0, 0], cov[0, 1], cov[1, 1]
    half_tr = 0.5 * (x2 + y2)
    root = np.sqrt(0.25 * (x2 - y2) ** 2 + xy * xy)
    ev = np.sort(np.abs([half_tr + root, half_tr - root]))[::-1]
    a, b = np.sqrt(ev[0]), np.sqrt(ev[1])
    if not b > 0:
        return float("nan"), float("nan"), float("nan")
    theta = 0.5 * np.arctan2(2.0 * xy, x2 - y2)
    return float(1.0 - b / a), float(a / b), float(theta)


def elongation_from_ellipticity(ellipticity: float) -> float:
    """Elongation ``a/b`` of an ellipticity ``1 - b/a``.

    The axis ratio ``b/a`` is floored at ``1e-3`` so that a degenerate
    (line-like) shape keeps a finite distance.
    """
    return 1.0 / max(1.0 - ellipticity, 1e-3)


def elliptical_distance(dx, dy, elongation: float, theta: float):
    """Semi-major-axis distance of offsets ``(dx, dy)`` from an ellipse's centre.

    The one definition of the elliptical radius used by every feature
    family (Petrosian radii, Gini segment, asymmetry apertures, profiles,
    Sérsic annuli):

    .. math:: \\rho = \\sqrt{x'^2 + (q\\,y')^2}, \\quad
              x' = \\Delta x\\cos\\theta + \\Delta y\\sin\\theta, \\;
              y' = -\\Delta x\\sin\\theta + \\Delta y\\cos\\theta

    with ``q`` the elongation ``a/b`` (see :func:`elongation_from_ellipticity`)
    and ``theta`` the major axis in radians counter-clockwise from +x. Points
    on the ellipse of semi-major axis ``a`` give ``a``; ``q = 1`` gives the
    circular distance. ``dx`` and ``dy`` are floats or arrays that broadcast.
    :func:`elliptical_distance_scalar` is the same formula for numba kernels.
    """
    if elongation == 1.0:
        return np.sqrt(dx * dx + dy * dy)
    c, s = math.cos(theta), math.sin(theta)
    major = dx * c + dy * s
    minor = (dy * c - dx * s) * elongation
    return np.sqrt(major * major + minor * minor)


@njit(cache=True)
def elliptical_distance_scalar(dx, dy, elongation, cos_theta, sin_theta):
    """:func:`elliptical_distance` of one offset, for numba kernels.

    Takes ``cos(theta)`` and ``sin(theta)`` so a pixel loop computes them
    once; same operations in the same order, so the results are identical
    (``tests/features/test_geometry.py`` holds the two together).
    """
    if elongation == 1.0:
        return math.sqrt(dx * dx + dy * dy)
    major = dx * cos_theta + dy * sin_theta
    minor = (dy * cos_theta - dx * sin_theta) * elongation
    return math.sqrt(major * major + minor * minor)


def elliptical_radius(
    shape: tuple[int, int], center: tuple[float, float], elongation: float, theta: float
) -> np.ndarray:
    """:func:`elliptical_distance` of every pixel of a ``shape`` grid from ``center``.

    ``center`` is ``(x, y)`` with x the column index.
    """
    ny, nx = shape
    dx = np.arange(nx, dtype=np.float64) - center[0]
    dy = np.arange(ny, dtype=np.float64)[:, None] - center[1]
    return elliptical_distance(dx, dy, elongation, theta)
