"""Outer asymmetry and shape asymmetry, with the radii ``rmax``.

*Shape asymmetry* (Pawlik et al. 2016, MNRAS 456, 3032, eq. 2) is the
rotational asymmetry of the binary detection mask of the galaxy's faint
light, with no background term:

.. math:: A_S = \\frac{\\sum |M - M_{180}|}{\\sum |M|}

summed within ``rmax_circ``, the largest distance from the centre to a pixel
of the mask. The mask (their Sect. 3.1) is the image smoothed by a 3 x 3
boxcar and cut at one sky sigma, keeping the 8-connected region of the
brightest smoothed pixel. Pawlik et al. and statmorph take the sky level
and sigma from an annulus or a sky box; here they come from
:mod:`featuremass.features.sky` (the image is already sky-subtracted).

*Outer asymmetry* (Wen, Zheng & An 2014, ApJ 787, 130) is the usual flux
asymmetry with its background term, summed over the elliptical annulus
between ``rhalf_ellip`` and ``rmax_ellip``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from featuremass.features.cas import rotational_asymmetry
from featuremass.features.geometry import elliptical_distance

_EIGHT = np.ones((3, 3), dtype=bool)


def shape_asymmetry_segmap(image: np.ndarray, sky_sigma: float, *, boxcar_size: int = 3) -> np.ndarray:
    """Binary detection mask of Pawlik et al. (2016), Sect. 3.1 (module docstring).

    Parameters
    ----------
    image : ndarray
        Sky-subtracted flux, masked pixels zero.
    sky_sigma : float
        Sky noise per (unsmoothed) pixel, the threshold.
    boxcar_size : int
        Width of the smoothing boxcar.

    Returns
    -------
    ndarray of bool
        All False when ``sky_sigma`` is not positive and finite. The brightest
        smoothed pixel is always included.
    """
    img = np.asarray(image, dtype=np.float64)
    if not (np.isfinite(sky_sigma) and sky_sigma > 0):
        return np.zeros(img.shape, dtype=bool)
    smooth = ndi.uniform_filter(img, size=boxcar_size)
    above = smooth >= sky_sigma
    peak = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    above[peak] = True
    labels, _ = ndi.label(above, structure=_EIGHT)
    return labels == labels[peak]


def rmax(segmap: np.ndarray, center: tuple[float, float], *, elongation: float = 1.0, theta: float = 0.0) -> float:
    """Largest (elliptical, semi-major) distance from ``center`` to a pixel of ``segmap``.

    Pawlik et al. (2016) ``R_max``; statmorph's ``rmax_circ`` / ``rmax_ellip``.
    NaN when ``segmap`` is empty or the centre is not finite.
    """
    ys, xs = np.nonzero(segmap)
    if ys.size == 0 or not np.all(np.isfinite(center)):
        return float("nan")
    dx, dy = xs - center[0], ys - center[1]
    return float(np.max(elliptical_distance(dx, dy, elongation, theta)))


def shape_asymmetry(segmap: np.ndarray, center: tuple[float, float], rmax_circ: float) -> float:
    """Shape asymmetry ``A_S`` (Pawlik et al. 2016, eq. 2) within ``rmax_circ``.

    NaN when ``rmax_circ`` is not positive and finite or the mask is empty.
    """
    if not (np.isfinite(rmax_circ) and rmax_circ > 0):
        return float("nan")
    return rotational_asymmetry(segmap.astype(np.float64), center, r_out=rmax_circ)


def outer_asymmetry(
    image: np.ndarray,
    center: tuple[float, float],
    *,
    mask: np.ndarray | None,
    rhalf_ellip: float,
    rmax_ellip: float,
    elongation: float,
    theta: float,
    sky_sigma: float,
) -> float:
    """Outer asymmetry (Wen et al. 2014) in the ellipse annulus ``[rhalf_ellip, rmax_ellip]``.

    NaN when the radii are not finite, ``rmax_ellip <= rhalf_ellip``, or the
    annulus holds no flux.
    """
    if not (np.isfinite(rhalf_ellip) and np.isfinite(rmax_ellip) and 0 < rhalf_ellip < rmax_ellip):
        return float("nan")
    return rotational_asymmetry(
        image,
        center,
        mask=mask,
        r_in=rhalf_ellip,
        r_out=rmax_ellip,
        elongation=elongation,
        theta=theta,
        sky_sigma=sky_sigma,
    )
