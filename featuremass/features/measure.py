"""Every native morphology feature of one galaxy stamp: :func:`measure_galaxy`.

The order follows statmorph (Rodriguez-Gomez et al. 2019): sky and
segmentation, centroid and moments, the Petrosian radius about the centroid
(for the asymmetry aperture), the asymmetry centre, then everything else
about that centre; Sérsic, bulge + disk and profile features come from
:mod:`featuremass.features.sersic` and :mod:`featuremass.features.profile`.
Unmeasurable quantities are NaN and the ``flag`` column gets the
:class:`~featuremass.features.flags.MorphFlag` bit that says why; bad data
never raises.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from featuremass.errors import FeaturemassError
from featuremass.features import cas, geometry, gini_m20, mid, radii, shape_asymmetry, sky
from featuremass.features.flags import MorphFlag
from featuremass.features.profile import PROFILE_COLUMNS, PROFILE_FAMILY
from featuremass.features.segmentation import (
    asymmetric_excess,
    detection_mask,
    detection_smoothing,
    segment_central_source,
)
from featuremass.features.sersic import (
    BULGE_DISK_COLUMNS,
    BULGE_DISK_FAMILY,
    SERSIC_COLUMNS,
    SERSIC_FAMILY,
)

#: Columns of the non-parametric part, in output order.
NONPARAMETRIC_COLUMNS = (
    "xc_centroid",
    "yc_centroid",
    "ellipticity_centroid",
    "elongation_centroid",
    "orientation_centroid",
    "xc_asymmetry",
    "yc_asymmetry",
    "ellipticity_asymmetry",
    "elongation_asymmetry",
    "orientation_asymmetry",
    "rpetro_circ",
    "rpetro_ellip",
    "rhalf_circ",
    "rhalf_ellip",
    "rmax_circ",
    "rmax_ellip",
    "r20",
    "r50",
    "r80",
    "concentration",
    "asymmetry",
    "smoothness",
    "gini",
    "m20",
    "gini_m20_bulge",
    "gini_m20_merger",
    "multimode",
    "intensity",
    "deviation",
    "outer_asymmetry",
    "shape_asymmetry",
    "sn_per_pixel",
    "sky_mean",
    "sky_sigma",
    "segmap_area_px",
    "n_masked_neighbours",
)

#: Feature family of each non-parametric column (for importance summed by family).
NONPARAMETRIC_FAMILY = {
    **dict.fromkeys((f"{q}_{centre}" for centre in ("centroid", "asymmetry")
                     for q in ("xc", "yc", "ellipticity", "elongation", "orientation")), "geometry"),
    **dict.fromkeys((f"{r}_{kind}" for r in ("rpetro", "rhalf", "rmax") for kind in ("circ", "ellip")),
                    "radii"),
    **dict.fromkeys(("r20", "r50", "r80"), "radii"),
    **dict.fromkeys(("concentration", "asymmetry", "smoothness"), "CAS"),
    **dict.fromkeys(("gini", "m20", "gini_m20_bulge", "gini_m20_merger"), "Gini-M20"),
    **dict.fromkeys(("multimode", "intensity", "deviation"), "MID"),
    **dict.fromkeys(("outer_asymmetry", "shape_asymmetry"), "shape asymmetry"),
    **dict.fromkeys(("sn_per_pixel", "sky_mean", "sky_sigma", "n_masked_neighbours"), "sky/noise"),
    "segmap_area_px": "geometry",
}

#: Every output column of :func:`measure_galaxy` except ``flag``, in order.
FEATURE_COLUMNS: tuple[str, ...] = (
    NONPARAMETRIC_COLUMNS + tuple(SERSIC_COLUMNS) + tuple(BULGE_DISK_COLUMNS) + tuple(PROFILE_COLUMNS)
)
#: Feature family of every column of :data:`FEATURE_COLUMNS`.
FEATURE_FAMILY = {**NONPARAMETRIC_FAMILY, **SERSIC_FAMILY, **BULGE_DISK_FAMILY, **PROFILE_FAMILY}

#: Columns that describe where the galaxy sits in the stamp and how the stamp is
#: oriented, not the galaxy: in an isotropic universe they carry no information
#: about M/L, so models leave them out by default (a model that used them would
#: be learning the cutout procedure). They stay in the feature table.
POSITION_COLUMNS: tuple[str, ...] = (
    "xc_centroid", "yc_centroid", "xc_asymmetry", "yc_asymmetry", "sersic_xc", "sersic_yc",
    "orientation_centroid", "orientation_asymmetry", "sersic_theta",
)


@dataclass(frozen=True)
class MorphologyConfig:
    """Parameters of :func:`measure_galaxy` (validated on creation).

    Attributes
    ----------
    eta : float
        Petrosian ratio defining the Petrosian radius (Lotz et al. 2004: 0.2).
    psf_fwhm_px : float or None
        Gaussian PSF FWHM (px) convolved into the Sérsic models; None: no PSF.
    fit_sersic, fit_bulge_disk, profile : bool
        Whether to run the single Sérsic fit, the bulge + disk fit, and the
        radial-profile features (their columns are NaN, unflagged, when off).
    subtract_sky : bool
        Subtract the measured sky level (set False for images whose sky is
        already exactly zero).
    detect_nsigma : float
        Detection threshold of the segmentation in smoothed-sky sigmas.
    min_segmap_area_px : int
        Smaller central sources are SMALL_SOURCE (features NaN).
    min_rpetro_px : float
        Smaller circular Petrosian radii are SMALL_SOURCE (features NaN).
    gain : float or None
        Electrons per data unit, for the Poisson term of ``sn_per_pixel``.
    """

    eta: float = 0.2
    psf_fwhm_px: float | None = None
    fit_sersic: bool = True
    fit_bulge_disk: bool = True
    profile: bool = True
    subtract_sky: bool = True
    detect_nsigma: float = 2.0
    min_segmap_area_px: int = 10
    min_rpetro_px: float = 1.5
    gain: float | None = None

    def __post_init__(self):
        if not (isinstance(self.eta, int | float) and 0 < self.eta < 1):
            raise FeaturemassError(f"MorphologyConfig.eta must be in (0, 1), got {self.eta!r}")
        if self.psf_fwhm_px is not None and not (
            isinstance(self.psf_fwhm_px, int | float) and math.isfinite(self.psf_fwhm_px) and self.psf_fwhm_px > 0
        ):
            raise FeaturemassError(
                f"MorphologyConfig.psf_fwhm_px must be a positive number or None, got {self.psf_fwhm_px!r}"
            )
        for name in ("fit_sersic", "fit_bulge_disk", "profile", "subtract_sky"):
            if not isinstance(getattr(self, name), bool):
                raise FeaturemassError(f"MorphologyConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if not (isinstance(self.detect_nsigma, int | float) and self.detect_nsigma > 0):
            raise FeaturemassError(f"MorphologyConfig.detect_nsigma must be positive, got {self.detect_nsigma!r}")
        if not (isinstance(self.min_segmap_area_px, int) and self.min_segmap_area_px >= 1):
            raise FeaturemassError(
                f"MorphologyConfig.min_segmap_area_px must be a positive integer, got {self.min_segmap_area_px!r}"
            )
        if not (isinstance(self.min_rpetro_px, int | float) and self.min_rpetro_px >= 0):
            raise FeaturemassError(f"MorphologyConfig.min_rpetro_px must be >= 0, got {self.min_rpetro_px!r}")
        if self.gain is not None and not (isinstance(self.gain, int | float) and self.gain > 0):
            raise FeaturemassError(f"MorphologyConfig.gain must be positive or None, got {self.gain!r}")


_NAN = float("nan")

#: A detection is a source (masked from the sky, a neighbour) only if its smoothed
#: peak exceeds this many detection-noise sigmas; fainter ones are mostly noise,
#: and masking noise peaks biases the sky low.
NEIGHBOUR_PEAK_NSIGMA = 4.5

#: A sky whose clipped sigma exceeds this many times the noise of pixel-to-pixel
#: differences is smooth light, not sky (correlated noise makes the ratio ~1.3).
SMOOTH_SKY_RATIO = 2.0

#: Bits of :attr:`PreparedSource.flag` after which nothing more is measured.
SERIOUS_PREP_FLAGS = int(MorphFlag.BLANK_IMAGE | MorphFlag.SKY_FAILED | MorphFlag.NO_SOURCE)


def measure_galaxy(image, *, config: MorphologyConfig | None = None, mask=None, weights=None) -> dict:
    """Measure every feature of :data:`FEATURE_COLUMNS` on one galaxy stamp.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
        Linear flux with the galaxy near the centre; sky need not be subtracted.
    config : MorphologyConfig, optional
        Parameters; default ``MorphologyConfig()``.
    mask : array_like of bool, optional
        True for pixels to ignore. Non-finite pixels are always ignored
        (and set ``BAD_PIXELS``).
    weights : array_like of float, optional
        The 1-sigma error of every pixel, in the image's units: statmorph's
        ``weightmap`` convention (not an inverse variance). When given, it is
        the noise: ``sky_sigma`` (and every measurement that uses it: S/N,
        the asymmetry and smoothness noise terms, the shape-asymmetry
        threshold) is its median over the sky pixels the segmentation left,
        and the Sérsic and bulge + disk fits weight each pixel by
        ``1 / weights**2``. Pixels with a non-finite or non-positive error
        are ignored, as masked ones. The detection (segmentation) still reads
        the stamp's own noise.

    Returns
    -------
    dict
        ``{column: float}`` for every column of :data:`FEATURE_COLUMNS`, plus
        ``flag`` (int, bits of :class:`~featuremass.features.flags.MorphFlag`).
        Values are finite or NaN. Everything is NaN for BLANK_IMAGE,
        SKY_FAILED and NO_SOURCE; only the sky, centroid geometry and segment
        area are kept for SMALL_SOURCE (segment below ``min_segmap_area_px``
        or Petrosian radius below ``min_rpetro_px``) and for a source with no
        Petrosian crossing inside the stamp (PETROSIAN_FAILED); otherwise each
        failed quantity is NaN with its own bit. EDGE_TOUCH, FILLS_STAMP
        (segment over half the stamp) and CONTAMINATED are warnings: the
        galaxy is measured on the pixels the stamp holds (apertures reaching
        past the stamp use their in-stamp part, as statmorph does).

    Raises
    ------
    FeaturemassError
        Only for a caller's mistake: ``image`` not 2-D, or ``mask`` or
        ``weights`` of another shape. Bad *data* never raises: an unexpected failure gives
        all-NaN features and ``BACKEND_ERROR``.
    """
    config = MorphologyConfig() if config is None else config
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise FeaturemassError(f"measure_galaxy expects a 2-D image, got shape {img.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != img.shape:
            raise FeaturemassError(f"mask shape {mask.shape} does not match image shape {img.shape}")
    sigma_map = None
    if weights is not None:
        sigma_map = np.asarray(weights, dtype=np.float64)
        if sigma_map.shape != img.shape:
            raise FeaturemassError(f"weights shape {sigma_map.shape} does not match image shape {img.shape}")
        with np.errstate(invalid="ignore"):
            unusable = ~(np.isfinite(sigma_map) & (sigma_map > 0))
        if unusable.any():
            mask = unusable if mask is None else mask | unusable
    out = dict.fromkeys(FEATURE_COLUMNS, _NAN)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flag = _measure(img, mask, config, out, sigma_map)
    except Exception:  # noqa: BLE001 - one galaxy must never stop a batch
        out = dict.fromkeys(FEATURE_COLUMNS, _NAN)
        flag = int(MorphFlag.BACKEND_ERROR)
    for k, v in out.items():
        v = float(v)
        out[k] = v if math.isfinite(v) else _NAN
    out["flag"] = int(flag)
    return out


@dataclass(frozen=True)
class PreparedSource:
    """Sky-subtracted stamp and segmentation of its central source (:func:`prepare_source`).

    Attributes
    ----------
    data : ndarray
        ``image - level`` with masked, non-finite and neighbour pixels set to 0.
    level, sigma : float
        Sky level subtracted and sky noise per pixel (NaN when unmeasured).
    sky_mean : float
        The measured sky level (reported even when ``subtract_sky`` is off).
    segmap : ndarray of bool
        The central source.
    mask : ndarray of bool
        Pixels to ignore: bad pixels, the user's mask and masked neighbours.
    bad : ndarray of bool
        Bad pixels and the user's mask only.
    neighbour_mask : ndarray of bool
        Masked neighbours (stars, companions).
    n_masked_neighbours, n_blended : int
    blend_flux_ratio : float
    flag : int
        Bits set so far; a serious bit means nothing more can be measured.
    detection_sigma : float
        Noise of the detection image (the stamp smoothed by a 1 px Gaussian).
    faint_peaks : ndarray of bool or None
        Faint sources left out of ``segmap`` unmasked
        (:attr:`~featuremass.features.segmentation.CentralSource.faint_peaks`);
        they count for ``CONTAMINATED`` as the segment's own light would.
    """

    data: np.ndarray | None
    level: float
    sigma: float
    sky_mean: float
    segmap: np.ndarray | None
    mask: np.ndarray | None
    bad: np.ndarray | None
    neighbour_mask: np.ndarray | None
    n_masked_neighbours: int
    n_blended: int
    blend_flux_ratio: float
    flag: int
    detection_sigma: float = float("nan")
    faint_peaks: np.ndarray | None = None


def prepare_source(image, *, config: MorphologyConfig | None = None, mask=None) -> PreparedSource:
    """Sky level, sky noise and segmentation of the central source of one stamp.

    The first step of :func:`measure_galaxy`, public so that other backends
    (:func:`~featuremass.features.statmorph_backend.measure_galaxy_statmorph`
    with ``segmentation="native"``) can measure the very same pixels.

    1. A first sky level and sigma from the sigma-clipped stamp
       (:func:`featuremass.features.sky.estimate_sky`).
    2. The detection image (the stamp smoothed by a 1 px Gaussian) is
       thresholded at ``detect_nsigma`` times its own noise, measured on it
       (:func:`featuremass.features.sky.detection_noise`), which holds for
       correlated noise; detections of at least 10 px peaking above
       :data:`NEIGHBOUR_PEAK_NSIGMA` are grown down to
       1 noise sigma (hysteresis) and dilated, and the sky is the clipped
       mean of the pixels outside them. This is done twice, the second time
       with the detection noise measured on the sky pixels alone.
    3. If those sky pixels still brighten towards the galaxy (a 5-sigma
       gradient, :func:`~featuremass.features.sky.sky_gradient`) the level is
       the asymptote of their radial profile
       (:func:`~featuremass.features.sky.profile_sky`) when a smooth tail
       fits them and its asymptote is lower;
       if fewer than ``sky.MIN_SKY_PIXELS`` remain, or their spread is over
       :data:`SMOOTH_SKY_RATIO` times the pixel-to-pixel noise (a galaxy
       filling its stamp), the level is the asymptote of the outer third's profile, or
       the mode of the stamp border, and the noise comes from differences of
       pixels two apart. Either sets ``SKY_UNCERTAIN`` (a warning: the
       galaxy is still measured).

    ``FILLS_STAMP`` (segment over half the stamp) and ``EDGE_TOUCH`` are
    warnings only.
    """
    config = MorphologyConfig() if config is None else config
    img = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(img)
    flag = MorphFlag.BAD_PIXELS if bad.any() else MorphFlag(0)
    if mask is not None:
        bad = bad | mask
    finite_vals = img[~bad]
    if finite_vals.size == 0 or np.ptp(finite_vals) == 0 or not (finite_vals > 0).any():
        return _failed_preparation(flag | MorphFlag.BLANK_IMAGE)
    sky0 = sky.estimate_sky(img, exclude=bad)
    if not np.isfinite(sky0.sigma):
        return _failed_preparation(flag | MorphFlag.SKY_FAILED)

    # One convolution serves every detection map (the smoothing is linear).
    smooth_img, smooth_valid = detection_smoothing(img, bad)
    bg = _sky_background(img, bad, smooth_img, smooth_valid, sky0, config)
    flag |= bg.flag
    if not bg.ok:
        return _failed_preparation(flag | MorphFlag.SKY_FAILED)
    level = bg.level if config.subtract_sky else 0.0
    seg = segment_central_source(
        img - level,
        bg.sigma,
        mask=bad,
        nsigma=config.detect_nsigma,
        smoothed=smooth_img - level * smooth_valid,
        smoothed_sigma=bg.detection_sigma,
        peak_nsigma=NEIGHBOUR_PEAK_NSIGMA,
    )
    if not seg.found:
        return _failed_preparation(flag | MorphFlag.NO_SOURCE, bg.level, bg.sigma)
    flag |= _segment_warnings(seg, img.size)
    total_mask = bad | seg.neighbour_mask
    data = np.where(total_mask, 0.0, img - level)
    noise_s = bg.detection_sigma
    return PreparedSource(
        data, float(level), float(bg.sigma), float(bg.level), seg.segmap, total_mask, bad,
        seg.neighbour_mask, seg.n_masked_neighbours, seg.n_blended, seg.blend_flux_ratio, int(flag),
        float(noise_s) if noise_s is not None and np.isfinite(noise_s) else float(bg.sigma / (2.0 * np.sqrt(np.pi))),
        seg.faint_peaks,
    )


def _failed_preparation(flag, sky_mean: float = _NAN, sigma: float = _NAN) -> PreparedSource:
    return PreparedSource(None, _NAN, sigma, sky_mean, None, None, None, None, 0, 0, 0.0, int(flag))


@dataclass(frozen=True)
class _SkyBackground:
    """The sky of one stamp (:func:`_sky_background`): ``ok`` False when none could be measured."""

    ok: bool
    level: float
    sigma: float
    detection_sigma: float | None  # noise of the smoothed stamp; None when the sky is a fallback
    flag: MorphFlag  # FILLS_STAMP, SKY_UNCERTAIN


def _sky_background(img, bad, smooth_img, smooth_valid, sky0, config) -> _SkyBackground:
    """Steps 2 and 3 of :func:`prepare_source`: the sky outside the detections, or a fallback."""
    ny, nx = img.shape
    center = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    # Pixels near the stamp edge are smoothed with zeros beyond it: quieter than the sky.
    not_interior = bad | (smooth_valid < 0.99)
    level, sigma, noise_s, sky_pixels, sources = _sky_outside_detections(
        img, bad, smooth_img, smooth_valid, not_interior, sky0, config
    )
    pixel_noise = _difference_sigma(img, bad)
    if sky_pixels is not None and sigma > SMOOTH_SKY_RATIO * pixel_noise:
        # The "sky" varies far more than neighbouring pixels do: it is smooth
        # galaxy light spread over the whole stamp, not noise.
        sky_pixels = None
    if sky_pixels is None:
        # Too little sky left: a galaxy filling its stamp.
        flag = MorphFlag.FILLS_STAMP if sources.mean() > 0.5 else MorphFlag(0)
        level = _sky_of_filled_stamp(img, bad, center)
        if not (np.isfinite(level) and np.isfinite(pixel_noise) and pixel_noise > 0):
            return _SkyBackground(False, _NAN, _NAN, None, flag)
        return _SkyBackground(True, level, pixel_noise, None, flag | MorphFlag.SKY_UNCERTAIN)
    level, uncertain = _sky_without_wings(img, center, sky_pixels, level, sigma, noise_s)
    return _SkyBackground(True, level, sigma, noise_s, MorphFlag.SKY_UNCERTAIN if uncertain else MorphFlag(0))


def _sky_outside_detections(img, bad, smooth_img, smooth_valid, not_interior, sky0, config):
    """Sky level and noise of the pixels outside the detections (two passes at most).

    Returns ``(level, sigma, detection_sigma, sky_pixels, sources)``;
    ``sky_pixels`` is None when the sky could not be measured outside them.
    """
    level, sigma = sky0.median, sky0.sigma
    noise_s = sky.detection_noise(smooth_img - level * smooth_valid, exclude=not_interior)
    sky_pixels = None
    for _ in range(2):
        detection = smooth_img - level * smooth_valid
        sources = detection_mask(
            detection, sigma, nsigma=config.detect_nsigma, smoothed_sigma=noise_s, grow_nsigma=1.0,
            peak_nsigma=NEIGHBOUR_PEAK_NSIGMA,
        )
        est = sky.estimate_sky(img, exclude=bad | sources)
        if not np.isfinite(est.sigma):
            sky_pixels = None
            break
        previous = (level, noise_s)
        level, sigma, sky_pixels = est.mean, est.sigma, ~(bad | sources)
        measured = sky.detection_noise(smooth_img - level * smooth_valid, exclude=not_interior | sources)
        if np.isfinite(measured):
            noise_s = measured
        # A second pass only matters when the first moved the threshold.
        if abs(level - previous[0]) < 0.05 * sigma and abs(noise_s / previous[1] - 1.0) < 0.05:
            break
    return level, sigma, noise_s, sky_pixels, sources


def _sky_of_filled_stamp(img, bad, center) -> float:
    """The asymptote of the outer third's radial profile, else the mode of the stamp border."""
    level = sky.profile_sky(img, center, exclude=bad)
    if not np.isfinite(level):
        border = np.zeros(img.shape, dtype=bool)
        border[:3], border[-3:], border[:, :3], border[:, -3:] = True, True, True, True
        level = sky.mode_sky(img[border & ~bad])
    return level


def _sky_without_wings(img, center, sky_pixels, level, sigma, noise_s) -> tuple[float, bool]:
    """``(level, uncertain)``: a lower level when the sky pixels still brighten towards the galaxy."""
    white = sigma / (2.0 * np.sqrt(np.pi))
    correlation = (noise_s / white) ** 2 if np.isfinite(noise_s) else 1.0
    if sky.sky_gradient(img, center, sky_pixels, sigma, correlation=correlation) > 5.0:
        # The "sky" still holds the galaxy's wings: extrapolate them away.
        tail = sky.profile_sky(img, center, exclude=~sky_pixels, r_in=0.0, sigma=sigma, correlation=correlation)
        if np.isfinite(tail) and tail < level - 0.1 * sigma:
            return max(tail, level - 2.0 * sigma), True
    return level, False


def _segment_warnings(seg, n_pixels: int) -> MorphFlag:
    """EDGE_TOUCH, FILLS_STAMP and MULTIPLE_SOURCES of a central-source segmentation."""
    flag = MorphFlag(0)
    if seg.touches_edge:
        flag |= MorphFlag.EDGE_TOUCH
    if seg.segmap.sum() > 0.5 * n_pixels:
        flag |= MorphFlag.FILLS_STAMP
    if seg.n_blended and seg.blend_flux_ratio >= 0.1:
        flag |= MorphFlag.MULTIPLE_SOURCES
    return flag


def _difference_sigma(img: np.ndarray, bad: np.ndarray) -> float:
    """Pixel noise from differences of pixels two apart along rows, ``1.4826 median|d| / sqrt 2``.

    Blind to smooth light (a galaxy's profile changes little over 2 px
    outside its core); differences of noise have zero median.
    """
    ok = ~(bad[:, 2:] | bad[:, :-2])
    d = np.abs(img[:, 2:] - img[:, :-2])[ok]
    if d.size < 10:
        return float("nan")
    k = d.size // 2
    return float(1.4826 * np.partition(d, k)[k] / np.sqrt(2.0))


def _noise_from_weights(prep: PreparedSource, sigma_map: np.ndarray) -> PreparedSource:
    """``prep`` with its sky noise read from a per-pixel error map: the map's median on the sky."""
    if prep.segmap is None:
        return prep
    sky_pixels = ~(prep.mask | prep.segmap)
    if not sky_pixels.any():
        sky_pixels = ~prep.mask
    values = sigma_map[sky_pixels]
    return prep if values.size == 0 else replace(prep, sigma=float(np.median(values)))


def _measure(img, user_mask, config, out, sigma_map=None) -> int:
    """Every feature of one stamp into ``out``, in statmorph's order; the flag bits."""
    prep = prepare_source(img, config=config, mask=user_mask)
    if sigma_map is not None:
        prep = _noise_from_weights(prep, sigma_map)
    flag = MorphFlag(prep.flag)
    if np.isfinite(prep.sigma):
        out["sky_mean"], out["sky_sigma"] = prep.sky_mean, prep.sigma
    if prep.data is None:
        return int(flag)
    area = int(prep.segmap.sum())
    out["segmap_area_px"] = area
    out["n_masked_neighbours"] = prep.n_masked_neighbours
    no_bg = np.where(prep.segmap, prep.data, 0.0)

    # Geometry about the centroid.
    xc, yc = geometry.centroid(no_bg)
    if not np.isfinite(xc):
        return int(flag | MorphFlag.NO_SOURCE)
    out["xc_centroid"], out["yc_centroid"] = xc, yc
    (out["ellipticity_centroid"], out["elongation_centroid"], out["orientation_centroid"]) = (
        geometry.shape_from_covariance(geometry.covariance(no_bg, (xc, yc)))
    )
    if area < config.min_segmap_area_px:
        return int(flag | MorphFlag.SMALL_SOURCE)

    # The Petrosian radius about the centroid sizes the asymmetry aperture.
    rp_centroid = radii.petrosian_radius(prep.data, (xc, yc), mask=prep.mask, eta=config.eta)
    if not np.isfinite(rp_centroid) or rp_centroid < config.min_rpetro_px:
        flag |= MorphFlag.PETROSIAN_FAILED
        if not np.isfinite(rp_centroid) and (flag & (MorphFlag.FILLS_STAMP | MorphFlag.EDGE_TOUCH)):
            return int(flag)  # no Petrosian crossing inside the stamp: radii undefined
        return int(flag | MorphFlag.SMALL_SOURCE)
    if prep.n_blended or _mask_near(prep.neighbour_mask, (xc, yc), 1.5 * rp_centroid):
        flag |= MorphFlag.CONTAMINATED

    center, asym_flag = _asymmetry_centre(prep, (xc, yc), rp_centroid, out)
    flag |= asym_flag
    if not flag & MorphFlag.CONTAMINATED and _blended_neighbour(prep, center, rp_centroid):
        flag |= MorphFlag.CONTAMINATED
    shape = _Shape(*geometry.shape_from_covariance(geometry.covariance(no_bg, center)))
    out["ellipticity_asymmetry"], out["elongation_asymmetry"], out["orientation_asymmetry"] = shape
    if not np.isfinite(shape.elongation):
        shape = _Shape(0.0, 1.0, 0.0)  # round, for the apertures below

    flag |= _radii_and_cas(prep, center, shape, rp_centroid, config, out)
    gseg, gini_flag = _gini_m20(prep, (xc, yc), shape, config, out)
    flag |= gini_flag
    flag |= _mid(prep, gseg, config, out)
    flag |= _shape_asymmetry(prep, center, shape, out)
    weights = None if sigma_map is None else np.where(prep.mask, 0.0, sigma_map ** -2.0)
    flag |= _parametric(prep.data, prep.mask, center, shape.ellipticity, shape.theta, out, config, prep.sigma,
                        weights=weights)
    return int(flag)


class _Shape(NamedTuple):
    """Moment shape about the asymmetry centre (:func:`geometry.shape_from_covariance`)."""

    ellipticity: float
    elongation: float
    theta: float


def _asymmetry_centre(prep: PreparedSource, centroid, rp_centroid: float, out) -> tuple[tuple[float, float], MorphFlag]:
    """The asymmetry centre and the asymmetry there (``ASYMMETRY_FAILED`` when it drifts or is NaN)."""
    xc, yc = centroid
    flag = MorphFlag(0)
    (ax, ay), asym = cas.asymmetry_center(
        prep.data, (xc, yc), mask=prep.mask, r_aperture=1.5 * rp_centroid, sky_sigma=prep.sigma
    )
    # statmorph keeps its asymmetry centre wherever it lands; on clumpy or blended
    # galaxies it lies a few px from the centroid, and only a jump of a whole
    # Petrosian radius means the minimum found another component.
    if not np.isfinite(ax) or math.hypot(ax - xc, ay - yc) > max(rp_centroid, 2.0):
        if np.isfinite(ax):
            flag |= MorphFlag.ASYMMETRY_FAILED  # drifted away: fall back on the centroid
        ax, ay = xc, yc
        asym = cas.rotational_asymmetry(prep.data, (ax, ay), mask=prep.mask, r_out=1.5 * rp_centroid,
                                        sky_sigma=prep.sigma)
    out["xc_asymmetry"], out["yc_asymmetry"] = ax, ay
    out["asymmetry"] = asym
    if not np.isfinite(asym):
        flag |= MorphFlag.ASYMMETRY_FAILED
    return (ax, ay), flag


def _radii_and_cas(prep: PreparedSource, center, shape: _Shape, rp_centroid: float, config, out) -> MorphFlag:
    """Petrosian radii, r20/r50/r80, concentration and smoothness about ``center``."""
    data, mask = prep.data, prep.mask
    flag = MorphFlag(0)
    # The radius about the centroid tells how large a box the search needs.
    rp = radii.petrosian_radius(data, center, mask=mask, eta=config.eta, r_start=rp_centroid)
    rpe = radii.petrosian_radius(
        data, center, mask=mask, eta=config.eta, elongation=shape.elongation, theta=shape.theta,
        r_start=rp_centroid * math.sqrt(shape.elongation),
    )
    out["rpetro_circ"], out["rpetro_ellip"] = rp, rpe
    if not (np.isfinite(rp) and np.isfinite(rpe)):
        flag |= MorphFlag.PETROSIAN_FAILED
    r20, r50, r80 = radii.radius_at_fraction(data, center, 1.5 * rp, np.array([0.2, 0.5, 0.8]))
    out["r20"], out["r50"], out["r80"] = r20, r50, r80
    out["concentration"] = cas.concentration(r20, r80)
    if not np.isfinite(out["concentration"]) or not np.isfinite(r50):
        flag |= MorphFlag.RADII_FAILED
    out["smoothness"] = cas.smoothness(data, center, rp, sky_sigma=prep.sigma)
    if not np.isfinite(out["smoothness"]):
        flag |= MorphFlag.SMOOTHNESS_FAILED
    return flag


def _gini_m20(prep: PreparedSource, centroid, shape: _Shape, config, out) -> tuple[np.ndarray, MorphFlag]:
    """Gini, M20 and S/N per pixel on the Lotz et al. segment (centred on the centroid, as statmorph)."""
    data = prep.data
    flag = MorphFlag(0)
    gseg = gini_m20.gini_segmap(data, centroid, out["rpetro_ellip"], elongation=shape.elongation, theta=shape.theta)
    if gseg.any() and not gseg.all():
        g = gini_m20.gini(data[gseg])
        m = gini_m20.m20(data, gseg)
        out["gini"], out["m20"] = g, m
        out["gini_m20_bulge"] = gini_m20.gini_m20_bulge(g, m)
        out["gini_m20_merger"] = gini_m20.gini_m20_merger(g, m)
        out["sn_per_pixel"] = sky.sn_per_pixel(data, gseg & ~prep.mask, prep.sigma, gain=config.gain)
    if not (np.isfinite(out["gini"]) and np.isfinite(out["m20"])):
        flag |= MorphFlag.GINI_M20_FAILED
    if np.isfinite(out["sn_per_pixel"]) and out["sn_per_pixel"] < 2.5:
        flag |= MorphFlag.LOW_SN
    return gseg, flag


def _mid(prep: PreparedSource, gseg: np.ndarray, config, out) -> MorphFlag:
    """Multimode, intensity and deviation (on the Gini segment when MID's own fails)."""
    mseg = mid.mid_segmap(prep.data, prep.segmap, eta=config.eta)
    if mseg is None and gseg.any() and not gseg.all():
        mseg = gseg
    if mseg is not None:
        out["multimode"] = mid.multimode(prep.data, prep.segmap, mseg)
        out["intensity"], out["deviation"] = mid.intensity_deviation(prep.data, mseg)
    if not all(np.isfinite(out[k]) for k in ("multimode", "intensity", "deviation")):
        return MorphFlag.MID_FAILED
    return MorphFlag(0)


def _shape_asymmetry(prep: PreparedSource, center, shape: _Shape, out) -> MorphFlag:
    """Shape asymmetry, rmax, half-light radii and outer asymmetry (Pawlik et al. 2016)."""
    data = prep.data
    flag = MorphFlag(0)
    sseg = shape_asymmetry.shape_asymmetry_segmap(data, prep.sigma)
    rmax_c = shape_asymmetry.rmax(sseg, center)
    rmax_e = shape_asymmetry.rmax(sseg, center, elongation=shape.elongation, theta=shape.theta)
    out["rmax_circ"], out["rmax_ellip"] = rmax_c, rmax_e
    out["rhalf_circ"] = radii.radius_at_fraction(data, center, rmax_c, 0.5)
    out["rhalf_ellip"] = radii.radius_at_fraction(data, center, rmax_e, 0.5, elongation=shape.elongation,
                                                  theta=shape.theta)
    if not (np.isfinite(out["rhalf_circ"]) and np.isfinite(out["rhalf_ellip"])):
        flag |= MorphFlag.RADII_FAILED
    out["shape_asymmetry"] = shape_asymmetry.shape_asymmetry(sseg, center, rmax_c)
    out["outer_asymmetry"] = shape_asymmetry.outer_asymmetry(
        data,
        center,
        mask=prep.mask,
        rhalf_ellip=out["rhalf_ellip"],
        rmax_ellip=rmax_e,
        elongation=shape.elongation,
        theta=shape.theta,
        sky_sigma=prep.sigma,
    )
    if not (np.isfinite(out["shape_asymmetry"]) and np.isfinite(out["outer_asymmetry"])):
        flag |= MorphFlag.SHAPE_ASYMMETRY_FAILED
    return flag


def _parametric(data, mask, center, ellip, theta, out, config, sigma, weights=None) -> MorphFlag:
    """Sérsic, bulge + disk and profile features (the fits helper's functions)."""
    from featuremass.features import profile, sersic

    flag = MorphFlag(0)
    rhalf = out["rhalf_ellip"] if np.isfinite(out["rhalf_ellip"]) else out["r50"]
    conc = out["concentration"]
    # Starting index from C (Graham & Driver 2005: C ~ 2.8 for n=1, 5.2 for n=4).
    n_guess = float(np.clip(1.0 + (conc - 2.8) * 1.25, 0.5, 6.0)) if np.isfinite(conc) else None
    fit_kw = dict(
        mask=mask, center=center, ellip=ellip, theta=theta, rhalf_guess=rhalf,
        psf_fwhm_px=config.psf_fwhm_px, sky_sigma=sigma, weights=weights,
    )
    jobs = []
    if config.fit_sersic and config.fit_bulge_disk:
        # One shared reduction to annuli for both fits (~30% faster than two calls).
        jobs.append(
            (
                MorphFlag.SERSIC_FAILED | MorphFlag.BULGE_DISK_FAILED,
                lambda: sersic.fit_sersic_and_bulge_disk(data, n_guess=n_guess, **fit_kw),
            )
        )
    elif config.fit_sersic:
        jobs.append((MorphFlag.SERSIC_FAILED, lambda: sersic.fit_sersic(data, n_guess=n_guess, **fit_kw)))
    elif config.fit_bulge_disk:
        jobs.append((MorphFlag.BULGE_DISK_FAILED, lambda: sersic.fit_bulge_disk(data, **fit_kw)))
    if config.profile:
        jobs.append(
            (
                MorphFlag.PROFILE_FAILED,
                lambda: profile.profile_features(
                    data, mask=mask, center=center, ellip=ellip, theta=theta, rpetro=out["rpetro_ellip"],
                    sky_sigma=sigma,
                ),
            )
        )
    for fail_bit, job in jobs:
        if not (np.isfinite(rhalf) and rhalf > 0 and np.isfinite(out["rpetro_ellip"])):
            flag |= fail_bit
            continue
        try:
            res = job()
        except Exception:  # noqa: BLE001 - a failed fit must not lose the other features
            flag |= fail_bit
            continue
        flag |= MorphFlag(int(res.get("flag", 0)))
        for k, v in res.items():
            if k != "flag" and k in out:
                out[k] = v
    return flag


def _blended_neighbour(prep: PreparedSource, center, rpetro: float) -> bool:
    """Whether light within 2 Petrosian radii breaks the galaxy's point symmetry (a blended neighbour)."""
    from scipy import ndimage as ndi

    smooth = ndi.gaussian_filter(prep.data, 1.0, mode="constant")
    ny, nx = smooth.shape
    yy, xx = np.ogrid[:ny, :nx]
    near = (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= (2.0 * rpetro) ** 2
    # faint sources left out of the segment are light near the galaxy all the same
    region = prep.segmap if prep.faint_peaks is None else prep.segmap | prep.faint_peaks
    return asymmetric_excess(smooth, center, region & near, prep.detection_sigma, mask=prep.mask) > 0


def _mask_near(mask: np.ndarray, center, radius: float) -> bool:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return False
    return bool(np.any((xs - center[0]) ** 2 + (ys - center[1]) ** 2 <= radius**2))
