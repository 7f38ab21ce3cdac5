"""Run statmorph (Rodriguez-Gomez et al. 2019, MNRAS 483, 4140) and map it to featuremass's schema.

This backend exists to cross-check the native extractors: it measures one
galaxy with ``statmorph.source_morphology`` and returns a dict with every
column of :data:`featuremass.features.measure.FEATURE_COLUMNS`; columns that
statmorph also computes (same name, same definition) are filled, the rest are
NaN.

What is prepared for statmorph, and why
---------------------------------------
* Sky: the sigma-clipped median of the stamp is subtracted (statmorph wants a
  background-subtracted image); its MAD noise gives the weight map
  ``sqrt(sigma_sky^2 + max(I, 0) / gain)`` (just ``sigma_sky`` without a gain).
* Segmentation: the image is smoothed with a Gaussian (sigma = 1 px),
  thresholded at ``sky + 1.5 sigma_sky``, labelled with 8-connectivity; the
  galaxy is the segment under the stamp centre (else the brightest segment
  within a quarter of the stamp of it). Other segments stay labelled, and
  statmorph masks them.
* Small stamps: the sky box is 32 px on stamps of >= 100 px and 16 px below
  (on 69 px stamps statmorph's default 32 px box is often not found), and the
  outlier cleaning is off by default (with ``n_sigma_outlier = 10`` it masks
  the centre of compact n = 4 bulges). Both are arguments.

Failures: an exception inside statmorph, or statmorph's ``flag >= 2``
("bad measurement"), gives all NaN and ``MorphFlag.BACKEND_ERROR``;
``flag_sersic == 1`` gives NaN Sérsic columns and ``SERSIC_FAILED``; every
``-99`` sentinel becomes NaN with the flag bit of its family. Never raises.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

from featuremass.features.flags import MorphFlag
from featuremass.io.stretch import robust_sky

__all__ = ["STATMORPH_COLUMNS", "measure_galaxy_statmorph", "central_segmap"]

#: statmorph attributes mapped one to one, and the flag bit set when one is -99/NaN.
STATMORPH_COLUMNS: dict[str, MorphFlag] = {
    "xc_centroid": MorphFlag.BACKEND_ERROR,
    "yc_centroid": MorphFlag.BACKEND_ERROR,
    "ellipticity_centroid": MorphFlag.BACKEND_ERROR,
    "elongation_centroid": MorphFlag.BACKEND_ERROR,
    "orientation_centroid": MorphFlag.BACKEND_ERROR,
    "xc_asymmetry": MorphFlag.ASYMMETRY_FAILED,
    "yc_asymmetry": MorphFlag.ASYMMETRY_FAILED,
    "ellipticity_asymmetry": MorphFlag.ASYMMETRY_FAILED,
    "elongation_asymmetry": MorphFlag.ASYMMETRY_FAILED,
    "orientation_asymmetry": MorphFlag.ASYMMETRY_FAILED,
    "rpetro_circ": MorphFlag.PETROSIAN_FAILED,
    "rpetro_ellip": MorphFlag.PETROSIAN_FAILED,
    "rhalf_circ": MorphFlag.RADII_FAILED,
    "rhalf_ellip": MorphFlag.RADII_FAILED,
    "r20": MorphFlag.RADII_FAILED,
    "r50": MorphFlag.RADII_FAILED,
    "r80": MorphFlag.RADII_FAILED,
    "rmax_circ": MorphFlag.RADII_FAILED,
    "rmax_ellip": MorphFlag.RADII_FAILED,
    "flux_circ": MorphFlag.PETROSIAN_FAILED,
    "flux_ellip": MorphFlag.PETROSIAN_FAILED,
    "concentration": MorphFlag.RADII_FAILED,
    "asymmetry": MorphFlag.ASYMMETRY_FAILED,
    "smoothness": MorphFlag.SMOOTHNESS_FAILED,
    "gini": MorphFlag.GINI_M20_FAILED,
    "m20": MorphFlag.GINI_M20_FAILED,
    "gini_m20_bulge": MorphFlag.GINI_M20_FAILED,
    "gini_m20_merger": MorphFlag.GINI_M20_FAILED,
    "multimode": MorphFlag.MID_FAILED,
    "intensity": MorphFlag.MID_FAILED,
    "deviation": MorphFlag.MID_FAILED,
    "outer_asymmetry": MorphFlag.SHAPE_ASYMMETRY_FAILED,
    "shape_asymmetry": MorphFlag.SHAPE_ASYMMETRY_FAILED,
    "sn_per_pixel": MorphFlag.BACKEND_ERROR,
    "sky_mean": MorphFlag.SKY_FAILED,
    "sky_median": MorphFlag.SKY_FAILED,
    "sky_sigma": MorphFlag.SKY_FAILED,
    "sersic_amplitude": MorphFlag.SERSIC_FAILED,
    "sersic_rhalf": MorphFlag.SERSIC_FAILED,
    "sersic_n": MorphFlag.SERSIC_FAILED,
    "sersic_xc": MorphFlag.SERSIC_FAILED,
    "sersic_yc": MorphFlag.SERSIC_FAILED,
    "sersic_ellip": MorphFlag.SERSIC_FAILED,
    "sersic_theta": MorphFlag.SERSIC_FAILED,
    "sersic_chi2_dof": MorphFlag.SERSIC_FAILED,
}


def _feature_columns(columns):
    if columns is not None:
        return tuple(columns)
    try:
        from featuremass.features.measure import FEATURE_COLUMNS
    except ImportError:  # measure.py not importable: the statmorph columns alone
        return tuple(STATMORPH_COLUMNS)
    return tuple(FEATURE_COLUMNS)


def central_segmap(image, *, sky_sigma, mask=None, nsigma=1.5, smooth_sigma=1.0):
    """Label map of sources above ``nsigma`` sky noise, and the label of the central one.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Sky-subtracted image (non-finite pixels already replaced).
    sky_sigma : float
        Sky noise per pixel.
    mask : ndarray of bool, optional
        Pixels never part of a source.

    Returns
    -------
    (segmap, label) : (ndarray of int, int)
        ``label`` is 0 when no source is found.
    """
    smooth = ndimage.gaussian_filter(image, smooth_sigma, mode="nearest")
    # Smoothing lowers the noise by ~ 1 / (2 sqrt(pi) sigma) for a Gaussian kernel.
    noise = sky_sigma / (2.0 * math.sqrt(math.pi) * smooth_sigma)
    det = smooth > nsigma * noise
    if mask is not None:
        det &= ~mask
    segmap, nlab = ndimage.label(det, structure=np.ones((3, 3), dtype=bool))
    if nlab == 0:
        return segmap, 0
    ny, nx = image.shape
    cy, cx = (ny - 1) // 2, (nx - 1) // 2
    label = int(segmap[cy, cx])
    if label == 0:
        yy, xx = np.mgrid[0:ny, 0:nx]
        near = (np.hypot(yy - cy, xx - cx) < min(ny, nx) / 4.0) & (segmap > 0)
        if not np.any(near):
            return segmap, 0
        fluxes = ndimage.sum_labels(smooth, segmap, index=np.arange(1, nlab + 1))
        cand = np.unique(segmap[near])
        label = int(cand[np.argmax(fluxes[cand - 1])])
    return segmap, label


def _gaussian_psf(fwhm_px: float) -> np.ndarray:
    sigma = fwhm_px / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    half = max(int(math.ceil(4 * sigma)), 2)
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    psf = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return psf / psf.sum()


def measure_galaxy_statmorph(
    image,
    *,
    config=None,
    mask=None,
    gain=None,
    psf_fwhm_px=None,
    skybox_size=None,
    n_sigma_outlier=-1,
    columns=None,
    segmentation="own",
    diagnostics=False,
) -> dict:
    """Measure one galaxy with statmorph 0.7.2, in featuremass's schema.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Linear flux (the sky is subtracted here).
    config : MorphologyConfig, optional
        Its ``psf_fwhm_px`` and ``gain`` (when present) are used unless given
        explicitly.
    mask : ndarray of bool, optional
        True marks bad pixels; non-finite pixels are masked too.
    gain : float, optional
        Electrons per image unit, for Poisson terms in the weight map.
    psf_fwhm_px : float, optional
        FWHM of a Gaussian PSF for statmorph's Sérsic fit.
    skybox_size : int, optional
        statmorph's sky box; default 32 on stamps >= 100 px, else 16.
    n_sigma_outlier : float
        statmorph's outlier cleaning threshold; <= 0 (default) turns it off.
    columns : sequence of str, optional
        Output columns; default ``FEATURE_COLUMNS`` of the native backend.
    segmentation : {"own", "native"}
        ``"own"`` (default): this module's sky and segmentation (module
        docstring). ``"native"``: the sky level, segmentation map and masks
        of the native engine (:func:`featuremass.features.measure.prepare_source`,
        with ``config``), so that both backends measure the same pixels and
        any difference comes from the algorithms alone.
    diagnostics : bool
        Also return ``asymmetry_bkg_statmorph`` (statmorph's background
        asymmetry per pixel, from its sky box) and ``asymmetry_white_noise_bkg``
        (statmorph's asymmetry, same centre and aperture, with the background
        term replaced by the white-noise expectation ``2 sigma / sqrt(pi)``
        per pixel that the native engine uses, Conselice 2003 eq. 2). Their
        difference from ``asymmetry`` is the background estimate alone.

    Returns
    -------
    dict
        Every column (float, NaN where unmeasured) and ``flag`` (int, bits of
        :class:`~featuremass.features.flags.MorphFlag`).
    """
    cols = _feature_columns(columns) + (_DIAGNOSTIC_COLUMNS if diagnostics else ())
    out = {c: float("nan") for c in cols}
    if config is not None:
        gain = gain if gain is not None else getattr(config, "gain", None)
        psf_fwhm_px = psf_fwhm_px if psf_fwhm_px is not None else getattr(config, "psf_fwhm_px", None)
    if segmentation not in ("own", "native"):
        from featuremass.errors import FeaturemassError

        raise FeaturemassError(f"segmentation must be 'own' or 'native', got {segmentation!r}")
    try:
        flag = _run_statmorph(
            image, mask, gain, psf_fwhm_px, skybox_size, n_sigma_outlier, out, segmentation, config,
            diagnostics,
        )
    except Exception:  # noqa: BLE001 - a cross-check backend must never stop a batch
        out = {c: float("nan") for c in cols}
        flag = int(MorphFlag.BACKEND_ERROR)
    out["flag"] = int(flag)
    return out


def _native_inputs(img, mask, config):
    """(data, segmap labels, label, mask, sigma, flag) from the native engine's preparation."""
    from featuremass.features.measure import SERIOUS_PREP_FLAGS, prepare_source

    prep = prepare_source(img, config=config, mask=mask)
    if prep.data is None or prep.flag & SERIOUS_PREP_FLAGS:
        return None, None, 0, None, float("nan"), prep.flag
    segmap = np.where(prep.segmap, 1, np.where(prep.neighbour_mask, 2, 0)).astype(np.int32)
    return prep.data, segmap, 1, prep.bad, prep.sigma, prep.flag


def _run_statmorph(
    image, mask, gain, psf_fwhm_px, skybox_size, n_sigma_outlier, out, segmentation="own", config=None,
    diagnostics=False,
) -> int:
    import statmorph

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        return int(MorphFlag.BACKEND_ERROR)
    flag = 0
    bad = ~np.isfinite(img)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    if np.any(~np.isfinite(img)):
        flag |= MorphFlag.BAD_PIXELS
    if np.all(bad):
        return flag | MorphFlag.BLANK_IMAGE
    if segmentation == "native":
        data, segmap, label, bad, sigma, native_flag = _native_inputs(img, mask, config)
        if data is None:
            return flag | native_flag
    else:
        sky, sigma = robust_sky(np.where(bad, np.nan, img))
        if not (np.isfinite(sigma) and sigma > 0):
            return flag | MorphFlag.BLANK_IMAGE | MorphFlag.SKY_FAILED
        data = np.where(bad, 0.0, img - sky)
        segmap, label = central_segmap(data, sky_sigma=sigma, mask=bad)
        if label == 0:
            return flag | MorphFlag.NO_SOURCE
    if gain is not None and gain > 0:
        weightmap = np.sqrt(sigma**2 + np.maximum(data, 0.0) / gain)
    else:
        weightmap = np.full(data.shape, sigma)
    npix = min(data.shape)
    kwargs = {
        "mask": bad,
        "weightmap": weightmap,
        "skybox_size": int(skybox_size or (32 if npix >= 100 else 16)),
        "n_sigma_outlier": n_sigma_outlier,
    }
    if psf_fwhm_px is not None and psf_fwhm_px > 0:
        kwargs["psf"] = _gaussian_psf(psf_fwhm_px)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            morph = statmorph.SourceMorphology(data, segmap, label, **kwargs)
            if morph.flag >= 2:
                return flag | MorphFlag.BACKEND_ERROR
            for col, bit in STATMORPH_COLUMNS.items():
                if col not in out:
                    continue
                if col.startswith("sersic_") and morph.flag_sersic >= 1:
                    flag |= MorphFlag.SERSIC_FAILED
                    continue
                value = float(getattr(morph, col))
                if not np.isfinite(value) or value == -99.0:
                    flag |= bit
                    continue
                out[col] = value
            if diagnostics:
                _asymmetry_diagnostics(morph, sigma, out)
    return int(flag)


#: Extra keys of ``measure_galaxy_statmorph(..., diagnostics=True)``.
_DIAGNOSTIC_COLUMNS = ("asymmetry_bkg_statmorph", "asymmetry_white_noise_bkg")


def _asymmetry_diagnostics(morph, sigma, out) -> None:
    """statmorph's background asymmetry, and its asymmetry with the white-noise term instead."""
    from featuremass.features.sky import sky_asymmetry_per_pixel

    bkg = float(morph._sky_asymmetry)
    if bkg == -99.0 or not np.isfinite(bkg):
        return
    out["asymmetry_bkg_statmorph"] = bkg
    # A = (sum|I - I_180| - area * bkg) / sum|I| at statmorph's centre and
    # aperture; evaluated once with bkg = 0 it gives area / sum|I|.
    white = sky_asymmetry_per_pixel(sigma)
    morph.__dict__["_sky_asymmetry"] = 0.0  # the cached lazy property, on this throwaway object
    try:
        a_raw = float(morph._asymmetry_function(morph._asymmetry_center, morph._cutout_stamp_maskzeroed, "cas"))
    finally:
        morph.__dict__["_sky_asymmetry"] = bkg
    a_sm = float(morph.asymmetry)
    if not (np.isfinite(a_raw) and np.isfinite(a_sm)) or bkg == 0:
        return
    area_over_flux = (a_raw - a_sm) / bkg
    out["asymmetry_white_noise_bkg"] = float(a_raw - area_over_flux * white)
