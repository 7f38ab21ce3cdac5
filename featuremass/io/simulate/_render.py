"""Render one galaxy: GalSim profiles, numpy modulations, PSF, stars, noise, crop.

The image is drawn once at the native SDSS pixel scale on a square crop sized
from the galaxy (the seed's D25-like crop), then resampled to each output size.
See ``docs/simulation.md`` for the model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import galsim
import numpy as np
from scipy import ndimage, signal
from skimage.transform import resize

from featuremass.io.simulate._config import SurveyConfig
from featuremass.io.stretch import apply_stretch

#: Moffat index of the SDSS-like PSF core.
PSF_BETA = 3.5
#: Faintest and brightest foreground star (g, AB mag).
STAR_MAG_RANGE = (14.0, 22.0)
#: Stars brighter than this may be removed by the preprocessing.
STAR_REMOVE_BRIGHTER = 20.0
#: Slope of the star counts, d log10 N / dm (high Galactic latitude).
STAR_COUNT_SLOPE = 0.15


def observing_conditions(rng: np.random.Generator, galaxy: dict, cfg: SurveyConfig) -> dict:
    """PSF, sky, crop size and centring offset of one observation."""
    fwhm = rng.uniform(*cfg.psf_fwhm_range)
    e_mag, e_ang = rng.uniform(0.0, 0.05), rng.uniform(0.0, math.pi)
    sky_mag = rng.uniform(*cfg.sky_mag_range)
    sky_nmgy = 10.0 ** (-0.4 * (sky_mag - 22.5)) * cfg.pixel_scale**2
    r90_arcsec = galaxy["galsize_kpc"] / galaxy["kpc_per_arcsec"]
    side = cfg.crop_factor * math.hypot(r90_arcsec, fwhm) / cfg.pixel_scale
    side_px = int(round(side))
    clipped = side_px > cfg.max_native_px
    side_px = int(np.clip(side_px, 16, cfg.max_native_px))
    return {
        "psf_fwhm_arcsec": fwhm,
        "psf_beta": PSF_BETA,
        "psf_e1": e_mag * math.cos(2 * e_ang),
        "psf_e2": e_mag * math.sin(2 * e_ang),
        "sky_mag_arcsec2": sky_mag,
        "sky_nmgy_per_px": sky_nmgy,
        "sky_sigma_nmgy": math.sqrt(sky_nmgy * cfg.electrons_per_nmgy) / cfg.electrons_per_nmgy,
        "crop_native_px": side_px,
        # Diameter of the PSF-broadened R90 over the frame side (> 1: the galaxy overfills it).
        "frame_fill": 2.0 * math.hypot(r90_arcsec, fwhm) / (side_px * cfg.pixel_scale),
        "crop_clipped": bool(clipped),
        "center_dx_px": float(rng.uniform(-0.5, 0.5)),
        "center_dy_px": float(rng.uniform(-0.5, 0.5)),
    }


def _psf(obs: dict) -> galsim.GSObject:
    return galsim.Moffat(beta=obs["psf_beta"], fwhm=obs["psf_fwhm_arcsec"]).shear(
        e1=obs["psf_e1"], e2=obs["psf_e2"]
    )


def _psf_image(psf: galsim.GSObject, fwhm: float, scale: float) -> np.ndarray:
    half = int(math.ceil(4.0 * fwhm / scale))
    arr = psf.drawImage(nx=2 * half + 1, ny=2 * half + 1, scale=scale).array.astype(np.float64)
    return arr / arr.sum()


def _draw_no_pixel(obj: galsim.GSObject, side: int, scale: float, oversample: int, offset) -> np.ndarray:
    """Sample a profile at pixel centres (finer grid binned when ``oversample`` > 1)."""
    n = side * oversample
    img = obj.drawImage(
        nx=n, ny=n, scale=scale / oversample, method="no_pixel",
        offset=(offset[0] * oversample, offset[1] * oversample),
    ).array.astype(np.float64)
    if oversample > 1:
        img = img.reshape(side, oversample, side, oversample).sum(axis=(1, 3))
    return img


def _disk_plane_coords(side: int, scale: float, offset, pa: float, q: float, oversample: int = 1):
    """Sky pixel centres -> (major, minor) sky offsets and de-projected disk-plane radius/angle (arcsec)."""
    n = side * oversample
    step = scale / oversample
    c = (n - 1) / 2.0
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    x = (x - c - offset[0] * oversample) * step
    y = (y - c - offset[1] * oversample) * step
    major = x * math.cos(pa) + y * math.sin(pa)
    minor = -x * math.sin(pa) + y * math.cos(pa)
    yd = minor / q
    return major, minor, np.hypot(major, yd), np.arctan2(yd, major)


def _bin(arr: np.ndarray, side: int, oversample: int) -> np.ndarray:
    if oversample == 1:
        return arr
    return arr.reshape(side, oversample, side, oversample).mean(axis=(1, 3))


class _Frame(NamedTuple):
    """The native-pixel crop a galaxy is drawn on, and the disk's orientation in it."""

    side: int  # crop side, native pixels
    scale: float  # arcsec per native pixel
    offset: tuple[float, float]  # galaxy centre from the crop centre, pixels
    pa: float  # disk position angle, radians
    q: float  # disk axis ratio
    oversample: int  # sub-pixels per pixel side for the disk-plane modulations


def render_galaxy(rng: np.random.Generator, galaxy: dict, obs: dict, cfg: SurveyConfig, *,
                  return_noise: bool = False):
    """Linear-flux image (nanomaggies per native pixel) of one galaxy.

    Draws, in order: the disk with its spiral arms, the bar, the clumps and
    the dust lane (all convolved with the PSF at once), the PSF-convolved
    Sérsic bulge, then stars and noise (:func:`_observe`).

    Returns
    -------
    noisy : ndarray (side, side)
        Sky-subtracted, PSF-convolved image with Poisson noise, stars (kept
        ones) and removed stars filled with local background (or, with
        ``cfg.star_residual > 0``, subtracted with an imperfect PSF model).
    model : ndarray (side, side)
        The noiseless galaxy alone (no stars), for tests and diagnostics.
    stars : dict
        Star counts and fluxes for the truth table.
    noise : ndarray (side, side), only with ``return_noise``
        The zero-mean noise part of ``noisy`` (Poisson and fill noise), so
        that callers can correlate it without touching the signal.
    """
    scale = cfg.pixel_scale
    kpa = galaxy["kpc_per_arcsec"]
    psf = _psf(obs)
    psf_img = _psf_image(psf, obs["psf_fwhm_arcsec"], scale)
    disk_re = galaxy["disk_re_kpc"] / kpa
    h = disk_re / 1.678  # exponential scale length, arcsec
    frame = _Frame(obs["crop_native_px"], scale, (obs["center_dx_px"], obs["center_dy_px"]),
                   math.radians(galaxy["position_angle_deg"]), galaxy["disk_q"], 1 if h / scale >= 3.0 else 3)
    major, minor, r, theta = _disk_plane_coords(frame.side, scale, frame.offset, frame.pa, frame.q, frame.oversample)

    intrinsic = _spiral_disk(galaxy, frame, disk_re, r / h, theta)
    if galaxy["has_bar"]:
        intrinsic = intrinsic + _bar(galaxy, frame, kpa)
    if galaxy["n_clumps"] > 0 and galaxy["flux_clumps_nmgy"] > 0:
        intrinsic = intrinsic + _clumps(rng, galaxy, frame, disk_re)
    transmission = None
    if galaxy["dust_lane_depth"] > 0.01:
        intrinsic, transmission = _dust_lane(galaxy, frame, intrinsic, major, minor, h)
    model = signal.fftconvolve(intrinsic, psf_img, mode="same")
    if galaxy["flux_bulge_nmgy"] > 0:
        model = model + _bulge(galaxy, frame, kpa, psf, psf_img, transmission)
    model = np.clip(model, 0.0, None)

    noisy, clean, star_info = _observe(rng, model, obs, psf, cfg, frame.side)
    if return_noise:
        return noisy, model, star_info, noisy - clean
    return noisy, model, star_info


def _spiral_disk(galaxy: dict, frame: _Frame, disk_re: float, rr_scale, theta) -> np.ndarray:
    """Exponential disk (GalSim) modulated by logarithmic spiral arms, before the PSF.

    ``rr_scale`` and ``theta`` are the disk-plane radius (in scale lengths)
    and angle of the (oversampled) pixels. The flux is that of the smooth
    disk (without the bar) times the fraction of the disk on the crop.
    """
    side, oversample = frame.side, frame.oversample
    flux_disk = galaxy["flux_disk_nmgy"]
    flux_disk_smooth = flux_disk - flux_disk * galaxy["bar_fraction"]
    disk = galsim.Exponential(half_light_radius=disk_re, flux=1.0).shear(q=frame.q, beta=frame.pa * galsim.radians)
    disk_fine = _draw_no_pixel(disk, side * oversample, frame.scale / oversample, 1,
                               (frame.offset[0] * oversample, frame.offset[1] * oversample))
    # flux=1, so the sum is the fraction of the disk's light that lands on the crop.
    on_crop = float(min(disk_fine.sum(), 1.0))
    if galaxy["n_arms"] > 0 and galaxy["arm_amplitude"] > 0:
        m = galaxy["n_arms"]
        tan_p = math.tan(math.radians(galaxy["arm_pitch_deg"]))
        rr = np.maximum(rr_scale, 1e-3)
        phase = m * (theta - np.log(rr) / tan_p) - galaxy["arm_phase_rad"]
        # Arms start outside the bulge region and are narrow ridges:
        # ((1 + cos)/2)^3 has mean 5/16 over angle, so ``wave`` has zero mean.
        taper = -np.expm1(-(rr / 0.8) ** 2)
        wave = ((0.5 * (1.0 + np.cos(phase))) ** 3 - 0.3125) / 0.6875
        disk_fine = disk_fine * np.clip(1.0 + galaxy["arm_amplitude"] * taper * wave, 0.0, None)
    disk_img = _bin(disk_fine, side, oversample) * oversample**2
    if disk_img.sum() > 0:
        disk_img *= flux_disk_smooth * on_crop / disk_img.sum()
    return disk_img


def _bar(galaxy: dict, frame: _Frame, kpa: float) -> np.ndarray:
    """The bar: an elongated Gaussian in the disk plane, projected, before the PSF."""
    bar_len = galaxy["bar_length_kpc"] / kpa
    bar_angle = math.radians(galaxy["bar_angle_deg"])
    bar = (
        galsim.Gaussian(sigma=bar_len / 2.0, flux=1.0)
        .shear(q=galaxy["bar_q"], beta=bar_angle * galsim.radians)
        .transform(1.0, 0.0, 0.0, frame.q)
        .rotate(frame.pa * galsim.radians)
        .withFlux(galaxy["flux_disk_nmgy"] * galaxy["bar_fraction"])
    )
    return _draw_no_pixel(bar, frame.side, frame.scale, frame.oversample, frame.offset)


def _clumps(rng: np.random.Generator, galaxy: dict, frame: _Frame, disk_re: float) -> np.ndarray:
    """Star-forming clumps: galsim.RandomKnots positions in the disk plane, gamma-distributed fluxes."""
    knots = galsim.RandomKnots(
        npoints=int(galaxy["n_clumps"]), half_light_radius=disk_re, flux=1.0,
        rng=galsim.BaseDeviate(int(rng.integers(1, 2**31 - 1))),
    )
    pts = np.asarray(knots.points, dtype=np.float64)
    weights = rng.gamma(2.0, 1.0, len(pts))
    weights *= galaxy["flux_clumps_nmgy"] / weights.sum()
    pa, q = frame.pa, frame.q
    xs = pts[:, 0] * math.cos(pa) - pts[:, 1] * q * math.sin(pa)
    ys = pts[:, 0] * math.sin(pa) + pts[:, 1] * q * math.cos(pa)
    return _deposit(xs, ys, weights, frame.side, frame.scale, frame.offset)


def _dust_lane(galaxy: dict, frame: _Frame, intrinsic, major, minor, h: float):
    """Dust lane along the major axis of a (nearly) edge-on disk: ``(intrinsic, transmission)``.

    The lane redistributes the attenuation already in the disk's flux, so the
    total is kept.
    """
    depth = galaxy["dust_lane_depth"]
    width = max(0.5 * h * max(frame.q, 0.12), 0.5 * frame.scale)
    lane = np.exp(-0.5 * (minor / width) ** 2) * np.exp(-0.5 * (major / (4.0 * h)) ** 2)
    transmission = _bin(1.0 - depth * lane, frame.side, frame.oversample)
    before = intrinsic.sum()
    intrinsic = intrinsic * transmission
    if intrinsic.sum() > 0:
        intrinsic *= before / intrinsic.sum()
    return intrinsic, transmission


def _bulge(galaxy: dict, frame: _Frame, kpa: float, psf, psf_img, transmission) -> np.ndarray:
    """Sérsic bulge (GalSim, convolved with the PSF and the pixel), behind the dust lane if any."""
    side, scale = frame.side, frame.scale
    bulge_re = galaxy["bulge_re_kpc"] / kpa
    bulge = galsim.Sersic(
        n=galaxy["bulge_sersic_n"], half_light_radius=bulge_re,
        flux=galaxy["flux_bulge_nmgy"], trunc=_sersic_trunc(bulge_re, side * scale),
        flux_untruncated=True,
    ).shear(q=galaxy["bulge_q"], beta=(frame.pa + math.radians(galaxy["bulge_pa_offset_deg"])) * galsim.radians)
    bulge_img = galsim.Convolve(bulge, psf).drawImage(
        nx=side, ny=side, scale=scale, offset=frame.offset
    ).array.astype(np.float64)
    if transmission is not None:
        smooth_t = signal.fftconvolve(transmission, psf_img, mode="same")
        before = bulge_img.sum()
        bulge_img = bulge_img * np.clip(smooth_t, 0.0, 1.0)
        if bulge_img.sum() > 0:
            bulge_img *= before / bulge_img.sum()
    return bulge_img


def _observe(rng: np.random.Generator, model, obs: dict, psf, cfg: SurveyConfig, side: int):
    """Stars, sky and Poisson noise on the noiseless model: ``(noisy, clean, star_info)``.

    Removed stars are filled from their surroundings (or subtracted with an
    imperfect PSF model); ``clean`` is ``noisy`` without its noise.
    """
    stars_img, removal_masks, subtracted, star_info = _stars(rng, side, obs, psf, cfg)
    sky = obs["sky_nmgy_per_px"] * cfg.electrons_per_nmgy
    expected = (model + stars_img) * cfg.electrons_per_nmgy + sky
    noisy = (rng.poisson(expected).astype(np.float64) - sky) / cfg.electrons_per_nmgy
    clean = model + stars_img
    if subtracted is not None:
        noisy = noisy - subtracted
        clean = clean - subtracted
    for mask in removal_masks:
        noisy, level = _fill_from_surroundings(rng, noisy, mask, obs["sky_sigma_nmgy"])
        clean = np.where(mask, level, clean)
    return noisy, clean, star_info


#: Truncation radii of bulges, in units of r_e. GalSim caches its Sérsic
#: tables for at most 100 (n, trunc/r_0) pairs; 4 ratios x ~22 indices fit.
_TRUNC_RATIOS = (4.0, 8.0, 16.0, 32.0)


def _sersic_trunc(re_arcsec: float, crop_arcsec: float) -> float:
    """Truncation radius of a bulge: the smallest listed multiple of ``r_e``
    beyond the crop's half-diagonal, at most 32 ``r_e``.

    Light beyond the crop never reaches the image, but an untruncated high-n
    Sérsic makes GalSim's FFT huge. With ``flux_untruncated=True`` the profile
    inside the truncation radius is exactly the untruncated one; beyond 32
    ``r_e`` lies 0.2 % of an n = 4 profile's light.
    """
    needed = 0.75 * crop_arcsec
    for ratio in _TRUNC_RATIOS:
        if ratio * re_arcsec >= needed:
            return ratio * re_arcsec
    return _TRUNC_RATIOS[-1] * re_arcsec


def _deposit(xs, ys, weights, side: int, scale: float, offset) -> np.ndarray:
    """Bilinear deposit of point sources (arcsec offsets from the centre) on the grid."""
    img = np.zeros((side, side), dtype=np.float64)
    c = (side - 1) / 2.0
    px = xs / scale + c + offset[0]
    py = ys / scale + c + offset[1]
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < side) & (yi >= 0) & (yi < side)
        np.add.at(img, (yi[ok], xi[ok]), (weights * w)[ok])
    return img


def _stars(rng: np.random.Generator, side: int, obs: dict, psf: galsim.GSObject, cfg: SurveyConfig):
    """Foreground stars: Poisson number, power-law magnitudes, uniform positions.

    A removed star is either masked (the returned masks, filled later) or,
    with ``cfg.star_residual > 0``, subtracted: the returned ``subtracted``
    image holds the PSF model that was taken off, whose flux and FWHM are
    each wrong by a Gaussian relative error of sigma ``cfg.star_residual``
    (the PSF-fit errors of a real star subtraction). A core/ring residual
    is left where the model misses.
    """
    area_arcmin2 = (side * cfg.pixel_scale / 60.0) ** 2
    n = int(rng.poisson(cfg.star_density * area_arcmin2))
    img = np.zeros((side, side), dtype=np.float64)
    full = galsim.ImageD(side, side, scale=cfg.pixel_scale)
    masks = []
    subtracted = np.zeros((side, side), dtype=np.float64) if cfg.star_residual > 0 else None
    residual_abs = 0.0
    kept_flux = removed_flux = 0.0
    n_removed = 0
    lo, hi = STAR_MAG_RANGE
    k = STAR_COUNT_SLOPE * math.log(10.0)
    for _ in range(n):
        # Inverse CDF of dN/dm ∝ 10^(slope m) on [lo, hi].
        u = rng.random()
        mag = math.log(math.exp(k * lo) + u * (math.exp(k * hi) - math.exp(k * lo))) / k
        flux = 10.0 ** (-0.4 * (mag - 22.5))
        x, y = rng.uniform(0, side, 2)
        remove = mag < STAR_REMOVE_BRIGHTER and rng.random() < cfg.star_removed_fraction
        # Draw on a sub-image out to where the Moffat wing falls below a tenth
        # of the sky noise: I(r) ~ F (beta-1)/(pi alpha^2) (r/alpha)^(-2 beta).
        alpha = obs["psf_fwhm_arcsec"] / (2.0 * math.sqrt(2.0 ** (1.0 / PSF_BETA) - 1.0))
        peak = flux * (PSF_BETA - 1.0) / (math.pi * alpha**2) * cfg.pixel_scale**2
        reach = alpha * max(peak / (0.1 * obs["sky_sigma_nmgy"]), 1.0) ** (1.0 / (2.0 * PSF_BETA))
        half = int(math.ceil(max(reach, 2.0 * obs["psf_fwhm_arcsec"]) / cfg.pixel_scale)) + 1
        bounds = galsim.BoundsI(int(x) + 1 - half, int(x) + 1 + half, int(y) + 1 - half, int(y) + 1 + half)
        bounds = bounds & full.bounds
        if not bounds.isDefined():
            continue
        stamp = galsim.ImageD(bounds, scale=cfg.pixel_scale)
        psf.withFlux(flux).drawImage(image=stamp, center=galsim.PositionD(x + 0.5, y + 0.5))
        sl = (slice(bounds.ymin - 1, bounds.ymax), slice(bounds.xmin - 1, bounds.xmax))
        img[sl] += stamp.array
        if remove and subtracted is not None:
            n_removed += 1
            removed_flux += flux
            err_flux, err_fwhm = rng.normal(0.0, cfg.star_residual, 2)
            fit_fwhm = obs["psf_fwhm_arcsec"] * max(1.0 + err_fwhm, 0.5)
            fit = galsim.Moffat(beta=PSF_BETA, fwhm=fit_fwhm).shear(e1=obs["psf_e1"], e2=obs["psf_e2"])
            fit_stamp = galsim.ImageD(bounds, scale=cfg.pixel_scale)
            fit.withFlux(flux * max(1.0 + err_flux, 0.0)).drawImage(
                image=fit_stamp, center=galsim.PositionD(x + 0.5, y + 0.5))
            subtracted[sl] += fit_stamp.array
            residual_abs += float(np.abs(stamp.array - fit_stamp.array).sum())
        elif remove:
            n_removed += 1
            removed_flux += flux
            mask = np.zeros((side, side), dtype=bool)
            mask[sl] = stamp.array > 2.0 * obs["sky_sigma_nmgy"]
            masks.append(ndimage.binary_dilation(mask, iterations=2))
        else:
            kept_flux += flux
    info = {
        "n_stars": n,
        "n_stars_removed": n_removed,
        "n_stars_kept": n - n_removed,
        "star_flux_kept_nmgy": kept_flux,
        "star_flux_removed_nmgy": removed_flux,
        "star_residual_abs_nmgy": residual_abs,
    }
    return img, masks, subtracted, info


def _fill_from_surroundings(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
                            sigma: float) -> tuple[np.ndarray, float]:
    """Replace masked pixels by the median of a ring around them plus sky noise.

    This is the crude star removal of survey preprocessing: on the galaxy it
    leaves a flat patch at the local level. Returns the image and that level.
    """
    if not mask.any():
        return image, 0.0
    ring = ndimage.binary_dilation(mask, iterations=3) & ~mask
    level = float(np.median(image[ring])) if ring.any() else 0.0
    out = image.copy()
    out[mask] = level + rng.normal(0.0, sigma, int(mask.sum()))
    return out, level


def resample(linear: np.ndarray, npix: int) -> np.ndarray:
    """Resize a native-scale linear image to ``npix`` pixels, conserving flux."""
    side = linear.shape[0]
    if side == npix:
        return linear.copy()
    out = resize(
        linear, (npix, npix), order=1, mode="reflect", anti_aliasing=side > npix,
        preserve_range=True,
    )
    return out * (side / npix) ** 2


def correlate_noise(noise: np.ndarray, sigma_px: float) -> np.ndarray:
    """Noise convolved with a Gaussian of ``sigma_px`` pixels, rescaled to its own variance.

    The convolution gives the noise an autocorrelation of width ``sqrt(2)
    sigma_px`` (what resampling or drizzling does to real survey noise), and
    the rescaling keeps the per-pixel sigma, so only the correlation changes.
    """
    smooth = ndimage.gaussian_filter(noise, sigma_px, mode="reflect")
    s_in, s_out = float(np.std(noise)), float(np.std(smooth))
    return smooth * (s_in / s_out) if s_out > 0 else smooth


def render_outputs(linear: np.ndarray, npix_list, cfg: SurveyConfig | None = None,
                   noise: np.ndarray | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{npix: (linear_resized float32, stretched float32)}``.

    ``cfg`` picks the stretch and, with ``noise`` (the noise part of
    ``linear``), the noise correlation applied at each output size.
    """
    cfg = cfg if cfg is not None else SurveyConfig()
    out = {}
    for npix in npix_list:
        lin = resample(linear, npix)
        if cfg.noise_correlation_px > 0 and noise is not None:
            white = resample(noise, npix)
            lin = lin - white + correlate_noise(white, cfg.noise_correlation_px)
        stretched = apply_stretch(lin, cfg.stretch, softening=cfg.stretch_softening)
        out[npix] = (lin.astype(np.float32), stretched)
    return out
