"""Gini coefficient, M20 and the Gini-M20 bulge and merger statistics.

Lotz, Primack & Madau (2004, AJ 128, 163), eqs. 6-8, with the pixel
segmentation of their Sect. 3.2 and the statistics of Snyder et al. (2015,
MNRAS 451, 4290) as calibrated by Rodriguez-Gomez et al. (2019, MNRAS 483,
4140, eqs. 8-9):

.. math::

    G &= \\frac{1}{\\bar{X} n (n-1)} \\sum_{i=1}^{n} (2i - n - 1) X_i
        \\quad (X_i = |I_i| \\text{ sorted increasingly}) \\\\
    M_{20} &= \\log_{10} \\frac{\\sum_{i \\in 20\\%} M_i}{M_\\mathrm{tot}},
        \\quad M_i = I_i \\left[(x_i - x_c)^2 + (y_i - y_c)^2\\right] \\\\
    F(G, M_{20}) &= -0.693\\,M_{20} + 4.95\\,G - 3.96 \\\\
    S(G, M_{20}) &= 0.139\\,M_{20} + 0.990\\,G - 0.327

where the "20%" pixels are the brightest ones holding 20% of the flux and
``(x_c, y_c)`` minimises ``M_tot`` (the centroid of the segment).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from featuremass.features.segmentation import component8, label8


def gini_segmap(
    image: np.ndarray,
    center: tuple[float, float],
    rpetro_ellip: float,
    *,
    elongation: float = 1.0,
    theta: float = 0.0,
    smoothing_fraction: float = 0.2,
) -> np.ndarray:
    """Pixels assigned to the galaxy for Gini and M20 (Lotz et al. 2004, Sect. 3.2).

    The image (masked pixels already zero) is smoothed by a Gaussian of
    ``sigma = smoothing_fraction * rpetro_ellip``; pixels at or above the mean
    smoothed flux in the 1-px elliptical annulus at ``rpetro_ellip`` (about
    ``center``) are kept, and of those the 8-connected region holding the
    brightest smoothed pixel.

    Returns
    -------
    ndarray of bool
        All False when ``rpetro_ellip`` or the centre is not finite, or when
        nothing reaches the threshold; all True (the whole stamp, which the
        caller should treat as a failure) when everything does.
    """
    img = np.asarray(image, dtype=np.float64)
    empty = np.zeros(img.shape, dtype=bool)
    if not (np.isfinite(rpetro_ellip) and rpetro_ellip > 0 and np.all(np.isfinite(center))):
        return empty
    smooth = ndi.gaussian_filter(img, smoothing_fraction * rpetro_ellip, mode="constant", cval=0.0)
    from featuremass.features.geometry import elliptical_radius

    rho = elliptical_radius(img.shape, center, elongation, theta)
    w = np.clip(rpetro_ellip + 1.0 - rho, 0.0, 1.0) - np.clip(rpetro_ellip - rho, 0.0, 1.0)
    a_in, a_out = max(rpetro_ellip - 0.5, 0.0), rpetro_ellip + 0.5
    area = np.pi * (a_out**2 - a_in**2) / elongation
    threshold = float(np.sum(w * smooth)) / area
    above = smooth >= threshold
    if not above.any():
        return empty
    if above.all():
        return above
    peak = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    if not above[peak]:  # only with a non-finite smoothed value: the labelling's own answer
        labels, n = label8(above)
        return above if n == 1 else labels == labels[peak]
    # The 8-connected region holding the peak (the whole of ``above`` when it is one region).
    return component8(above, peak[0], peak[1])


def gini(values: np.ndarray) -> float:
    """Gini coefficient of pixel fluxes (Lotz et al. 2004, eq. 6; Glasser 1962).

    Uses absolute values, as Lotz et al. do for noisy pixels. 0 for equal
    fluxes, 1 when one pixel holds all the light.

    Returns
    -------
    float
        NaN for fewer than 2 finite values or a zero total.
    """
    x = np.abs(np.asarray(values, dtype=np.float64).ravel())
    x = np.sort(x[np.isfinite(x)])
    n = x.size
    total = x.sum()
    if n < 2 or not total > 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / ((n - 1) * total))


def m20(image: np.ndarray, segmap: np.ndarray) -> float:
    """Second-order moment of the brightest 20% of the light (Lotz et al. 2004, eqs. 7-8).

    The centre is the flux centroid of the segment (which minimises
    ``M_tot``). As in statmorph, the 20% threshold is the faintest pixel
    whose inclusion (counting from the faintest) brings the cumulative flux
    to at least 80%, and every pixel at or above it counts.

    Returns
    -------
    float
        NaN when the segment is empty, its flux is not positive, or a second
        moment is not positive (e.g. one pixel).
    """
    img = np.where(segmap, np.asarray(image, dtype=np.float64), 0.0)
    ys, xs = np.nonzero(segmap)
    if ys.size == 0:
        return float("nan")
    vals = img[ys, xs]
    total = vals.sum()
    if not total > 0:
        return float("nan")
    xc = float(vals @ xs) / total
    yc = float(vals @ ys) / total
    r2 = (xs - xc) ** 2 + (ys - yc) ** 2
    m_tot = float(vals @ r2)
    # statmorph sorts the whole (zero-padded) stamp; zeros add nothing to the
    # cumulative sum, so sorting the segment pixels gives the same threshold.
    order = np.sort(vals)
    frac = np.cumsum(order) / total
    top = order[frac >= 0.8]
    if top.size == 0:
        return float("nan")
    bright = vals >= top[0]
    m_20 = float(vals[bright] @ r2[bright])
    if not (m_20 > 0 and m_tot > 0):
        return float("nan")
    return float(np.log10(m_20 / m_tot))


def gini_m20_bulge(gini_value: float, m20_value: float) -> float:
    """Bulge statistic ``F(G, M20) = -0.693 M20 + 4.95 G - 3.96`` (Rodriguez-Gomez et al. 2019, eq. 8).

    NaN if either input is NaN.
    """
    return float(-0.693 * m20_value + 4.95 * gini_value - 3.96)


def gini_m20_merger(gini_value: float, m20_value: float) -> float:
    """Merger statistic ``S(G, M20) = 0.139 M20 + 0.990 G - 0.327`` (Rodriguez-Gomez et al. 2019, eq. 9).

    NaN if either input is NaN.
    """
    return float(0.139 * m20_value + 0.990 * gini_value - 0.327)
