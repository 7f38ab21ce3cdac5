"""The one frozen configuration of a simulated survey, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from featuremass.errors import FeaturemassError
from featuremass.io.stretch import STRETCHES

#: First SDSS-like object id; galaxy ids are this plus unique integers.
ID_BASE = 1237640000000000000


def _check_range(name: str, value, lo: float, hi: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise FeaturemassError(f"SurveyConfig.{name} must be a pair (low, high), got {value!r}") from None
    if not (lo <= a <= b <= hi) or not (math.isfinite(a) and math.isfinite(b)):
        raise FeaturemassError(
            f"SurveyConfig.{name} = {value!r} must satisfy {lo} <= low <= high <= {hi}"
        )
    return a, b


@dataclass(frozen=True)
class SurveyConfig:
    """Everything that defines a simulated SDSS-like g-band survey.

    Every distribution the parameters feed is documented in
    ``docs/simulation.md``. Invalid values raise
    :class:`~featuremass.errors.FeaturemassError` naming the field and value.

    Parameters
    ----------
    n_train, n_val, n_test : int
        Galaxies per split (train first, then val, then test).
    npix : tuple of int
        Output image sizes; every galaxy is written at each size.
    seed : int
        Root seed. Galaxy ``i`` draws from ``SeedSequence(seed, spawn_key=(i,))``,
        so the survey does not depend on the number of worker processes.
    redshift_range : (float, float)
        Uniform redshift interval.
    psf_fwhm_range : (float, float)
        Uniform interval of the Moffat PSF FWHM, arcsec.
    sky_mag_range : (float, float)
        Uniform interval of the g-band sky surface brightness, mag/arcsec^2.
    pixel_scale : float
        Native pixel scale, arcsec (SDSS: 0.396).
    mag_limit : float
        Apparent g-band magnitude limit of the sample (galaxies fainter are
        redrawn, which mimics the SDSS main-sample selection, r < 17.77).
    star_density : float
        Foreground stars per arcmin^2 brighter than g = 22.
    star_removed_fraction : float
        Probability that a star brighter than g = 20 is removed by the
        preprocessing (masked and filled with local background and noise).
    crop_factor : float
        Side of the square crop in units of the PSF-broadened R90 (the
        D25-like size radius): ``side = crop_factor * sqrt(R90^2 + FWHM^2)``.
        The diameter of that radius fills ``2 / crop_factor`` of the frame
        (``frame_fill`` in the truth): 0.8 at the default 2.5, >= 0.9 at
        ``crop_factor <= 2.22`` (a galaxy filling its stamp).
    max_native_px : int
        Largest crop side in native pixels (bigger galaxies are cropped tighter).
    ml_scatter_dex : float
        Gaussian scatter of the "SED-fit" M/L, dex.
    colour_scatter : float
        Hidden Gaussian scatter of each component's g-r colour, mag: the part
        of M/L that morphology cannot see.
    stretch : str
        How the stored stamps are stretched: one of
        :data:`featuremass.io.stretch.STRETCHES` (default ``"shifted-log"``,
        the seed stretch). The linear-flux images are written either way.
    stretch_softening : float
        Softening of the log / asinh stretches in units of the sky sigma.
    noise_correlation_px : float
        0 (default): white pixel noise. Otherwise the noise of each output
        stamp is convolved with a Gaussian of this sigma (output pixels) and
        rescaled to its original variance, as resampled or drizzled data have.
    star_residual : float
        0 (default): removed stars are masked and filled with local
        background. Otherwise they are subtracted with a mis-estimated PSF
        model (flux and FWHM each off by a Gaussian error of this relative
        sigma), leaving residuals (cores, rings) in the image.
    electrons_per_nmgy : float
        Detected electrons per nanomaggy (SDSS g, 53.9 s: ~1000).
    h0 : float
        Hubble constant, km/s/Mpc (distances follow the Hubble law).
    chunk_size : int
        Galaxies per task sent to a worker process.
    """

    n_train: int = 1000
    n_val: int = 250
    n_test: int = 500
    npix: tuple[int, ...] = (69,)
    seed: int = 0
    redshift_range: tuple[float, float] = (0.02, 0.1)
    psf_fwhm_range: tuple[float, float] = (1.1, 1.8)
    sky_mag_range: tuple[float, float] = (21.6, 22.3)
    pixel_scale: float = 0.396
    mag_limit: float = 18.3
    star_density: float = 0.8
    star_removed_fraction: float = 0.7
    crop_factor: float = 2.5
    max_native_px: int = 360
    ml_scatter_dex: float = 0.05
    colour_scatter: float = 0.05
    stretch: str = "shifted-log"
    stretch_softening: float = 1.0
    noise_correlation_px: float = 0.0
    star_residual: float = 0.0
    electrons_per_nmgy: float = 1000.0
    h0: float = 70.0
    chunk_size: int = 16

    def __post_init__(self):
        for name in ("n_train", "n_val", "n_test"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise FeaturemassError(f"SurveyConfig.{name} must be a non-negative integer, got {v!r}")
        if self.n_total == 0:
            raise FeaturemassError("SurveyConfig: n_train + n_val + n_test is 0; nothing to simulate")
        try:
            npix = tuple(int(p) for p in (self.npix if not isinstance(self.npix, int) else (self.npix,)))
        except (TypeError, ValueError):
            raise FeaturemassError(f"SurveyConfig.npix must be integers, got {self.npix!r}") from None
        if not npix or any(p < 8 or p > 1024 for p in npix):
            raise FeaturemassError(f"SurveyConfig.npix = {self.npix!r}: each size must be 8..1024")
        if len(set(npix)) != len(npix):
            raise FeaturemassError(f"SurveyConfig.npix = {self.npix!r} repeats a size")
        object.__setattr__(self, "npix", npix)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise FeaturemassError(f"SurveyConfig.seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "redshift_range", _check_range("redshift_range", self.redshift_range, 1e-4, 1.0))
        object.__setattr__(self, "psf_fwhm_range", _check_range("psf_fwhm_range", self.psf_fwhm_range, 0.1, 10.0))
        object.__setattr__(self, "sky_mag_range", _check_range("sky_mag_range", self.sky_mag_range, 15.0, 30.0))
        if self.stretch not in STRETCHES:
            raise FeaturemassError(
                f"SurveyConfig.stretch must be one of {', '.join(STRETCHES)}, got {self.stretch!r}"
            )
        positive = ("pixel_scale", "crop_factor", "stretch_softening", "electrons_per_nmgy", "h0")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise FeaturemassError(f"SurveyConfig.{name} must be a positive number, got {v!r}")
        for name in ("star_density", "ml_scatter_dex", "colour_scatter", "noise_correlation_px"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise FeaturemassError(f"SurveyConfig.{name} must be a non-negative number, got {v!r}")
        if not isinstance(self.star_residual, int | float) or not 0.0 <= self.star_residual <= 1.0:
            raise FeaturemassError(f"SurveyConfig.star_residual must be in [0, 1], got {self.star_residual!r}")
        if not 0.0 <= self.star_removed_fraction <= 1.0:
            raise FeaturemassError(
                f"SurveyConfig.star_removed_fraction must be in [0, 1], got {self.star_removed_fraction!r}"
            )
        if not 10.0 <= self.mag_limit <= 30.0:
            raise FeaturemassError(f"SurveyConfig.mag_limit must be in [10, 30], got {self.mag_limit!r}")
        if not isinstance(self.max_native_px, int) or not 16 <= self.max_native_px <= 2048:
            raise FeaturemassError(f"SurveyConfig.max_native_px must be an integer in 16..2048, got {self.max_native_px!r}")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise FeaturemassError(f"SurveyConfig.chunk_size must be a positive integer, got {self.chunk_size!r}")

    @property
    def n_total(self) -> int:
        return self.n_train + self.n_val + self.n_test

    def as_dict(self) -> dict:
        """JSON-ready mapping of every field."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out
