"""Radial surface-brightness profile features in elliptical annuli.

The mean surface brightness ``I(r)`` is measured in thin elliptical annuli
(semi-major radius ``r``, the galaxy's ellipticity and orientation) at fixed
multiples of the Petrosian radius, so that profiles of galaxies of different
size compare shape to shape (Petrosian 1976; Blanton et al. 2001, AJ 121,
2358 use the same scaling). Each is expressed as a surface brightness in
magnitudes relative to the mean surface brightness inside ``2 r_petro``
(the Petrosian total-flux aperture, Blanton et al. 2001):

.. math::

    \\mu_k = -2.5\\log_{10}\\frac{I(k\\,r_p)}{\\langle I\\rangle_{<2 r_p}} .

Two log-log slopes summarise the shape,

.. math::

    s = \\frac{\\ln I(r_2) - \\ln I(r_1)}{\\ln r_2 - \\ln r_1},

between ``(0.25, 0.5) r_p`` (inner) and ``(1, 2) r_p`` (outer). For a Sérsic
profile the slope is :math:`-b_n[(r_2/r_e)^{1/n} - (r_1/r_e)^{1/n}] / [n \\ln(r_2/r_1)]`
(Graham & Driver 2005, PASA 22, 118, eq. 1), so the two slopes bracket ``n``.

The outer samples of a galaxy that fills its stamp (the seed's D25 crops)
fall where the galaxy is near the sky noise and the stamp covers only part
of the annulus. Each annulus mean therefore uses the pixels the stamp covers
(at least :data:`MIN_ANNULUS_PIXELS`), and every logarithm is the asinh
logarithm of Lupton, Gunn & Szalay (1999, AJ 118, 1406, eq. 2),

.. math:: \\widetilde{\\ln} I = \\operatorname{asinh}\\!\\Big(\\frac{I}{2\\beta}\\Big) + \\ln\\beta ,

with ``beta`` the noise of the annulus mean: equal to ``ln I`` to better than
``1/(4 (I/2beta)^2)`` at high signal-to-noise, and still defined (and
monotonic) where the mean is at or below zero within the noise.
"""

from __future__ import annotations

import math

import numpy as np

from featuremass.features.flags import MorphFlag
from featuremass.features.geometry import elliptical_radius, elongation_from_ellipticity

__all__ = ["PROFILE_COLUMNS", "PROFILE_RADII", "SLOPE_RADII", "annulus_mean", "profile_features"]

#: Multiples of the Petrosian radius at which the profile is sampled.
PROFILE_RADII = (0.25, 0.5, 1.0, 1.5, 2.0)
#: (inner, outer) pairs of Petrosian multiples for the log-log slopes.
SLOPE_RADII = {"prof_slope_inner": (0.25, 0.5), "prof_slope_outer": (1.0, 2.0)}
#: Half-width of an annulus in ln r (the annulus spans r e^{-w} .. r e^{w}).
ANNULUS_LOG_HALF_WIDTH = 0.1
#: Fewest good pixels an annulus needs inside the stamp.
MIN_ANNULUS_PIXELS = 8

PROFILE_COLUMNS = tuple(
    f"prof_mu_{str(k).replace('.', 'p')}" for k in PROFILE_RADII
) + tuple(SLOPE_RADII)
#: Feature family of each column (for importance summed by family).
PROFILE_FAMILY = dict.fromkeys(PROFILE_COLUMNS, "profile")


def _annulus(r_ell, good, r, log_half_width):
    lo, hi = r * math.exp(-log_half_width), r * math.exp(log_half_width)
    if hi - lo < 1.0:
        lo, hi = max(r - 0.5, 0.0), r + 0.5
    return good & (r_ell >= lo) & (r_ell < hi)


def annulus_mean(image, r_ell, good, r, *, log_half_width=ANNULUS_LOG_HALF_WIDTH):
    """Mean of ``image`` over good pixels with ``r e^{-w} <= r_ell < r e^{w}``.

    The annulus is widened to at least 1 px in total so that a small radius
    still holds pixels. NaN when it holds none.
    """
    sel = _annulus(r_ell, good, r, log_half_width)
    if not np.any(sel):
        return float("nan")
    return float(np.mean(image[sel]))


def _asinh_log(value: float, softening: float) -> float:
    """Lupton et al. (1999) asinh logarithm: ``ln value`` for ``value >> softening``."""
    return math.asinh(value / (2.0 * softening)) + math.log(softening)


def profile_features(image, *, mask=None, center, ellip, theta, rpetro, sky_sigma=None) -> dict:
    """Normalised surface-brightness profile and log-log slopes (module equations).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Sky-subtracted linear flux.
    mask : ndarray of bool, optional
        True marks pixels to ignore.
    center : (float, float)
        ``(x, y)``, x = column.
    ellip, theta : float
        Ellipticity ``1 - b/a`` and major-axis angle (radians CCW from +x).
    rpetro : float
        Petrosian radius in pixels (semi-major for an elliptical one).
    sky_sigma : float, optional
        Sky noise per pixel; the noise of an annulus mean (the asinh
        softening) is ``sky_sigma / sqrt(N)``. Default: the standard deviation
        of the annulus pixels over ``sqrt(N)``.

    Returns
    -------
    dict
        :data:`PROFILE_COLUMNS` and ``flag``. A sample is NaN, with
        ``PROFILE_FAILED``, only when its annulus holds fewer than
        :data:`MIN_ANNULUS_PIXELS` good pixels inside the stamp or the mean
        inside ``2 r_petro`` is not positive. Bad inputs (non-finite
        geometry, non-positive ``rpetro``) give all NaN and ``PROFILE_FAILED``.
    """
    out = {c: float("nan") for c in PROFILE_COLUMNS}
    out["flag"] = int(MorphFlag.PROFILE_FAILED)
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        return out
    geometry = (center[0], center[1], ellip, theta, rpetro)
    if not all(np.isfinite(v) for v in geometry) or rpetro <= 0 or not 0 <= ellip < 1:
        return out
    good = np.isfinite(img)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != img.shape:
            return out
        good &= ~m
    if not np.any(good):
        return out
    r_ell = elliptical_radius(img.shape, center, elongation_from_ellipticity(ellip), theta)
    inside = good & (r_ell < 2.0 * rpetro)
    norm = float(np.mean(img[inside])) if np.any(inside) else float("nan")
    if not norm > 0:
        return out
    have_sigma = sky_sigma is not None and np.isfinite(sky_sigma) and sky_sigma > 0
    logs = {}
    for k in PROFILE_RADII:
        sel = _annulus(r_ell, good, k * rpetro, ANNULUS_LOG_HALF_WIDTH)
        n = int(np.count_nonzero(sel))
        if n < MIN_ANNULUS_PIXELS:
            logs[k] = float("nan")
            continue
        vals = img[sel]
        noise = (float(sky_sigma) if have_sigma else float(np.std(vals))) / math.sqrt(n)
        # A noiseless annulus (synthetic images) still needs a positive softening.
        noise = max(noise, 1e-6 * abs(norm))
        logs[k] = _asinh_log(float(np.mean(vals)), noise)
    failed = False
    for k, col in zip(PROFILE_RADII, PROFILE_COLUMNS, strict=False):
        if np.isfinite(logs[k]):
            out[col] = -2.5 / math.log(10.0) * (logs[k] - math.log(norm))
        else:
            failed = True
    for col, (k1, k2) in SLOPE_RADII.items():
        if np.isfinite(logs[k1]) and np.isfinite(logs[k2]):
            out[col] = (logs[k2] - logs[k1]) / math.log(k2 / k1)
        else:
            failed = True
    out["flag"] = int(MorphFlag.PROFILE_FAILED) if failed else 0
    return out
