"""Small seeded GalSim stamps shared by the feature tests."""

from __future__ import annotations

import galsim
import numpy as np
import pytest


def render_sersic(
    n: float,
    rhalf: float,
    *,
    npix: int = 69,
    flux: float = 1000.0,
    q: float = 1.0,
    beta_deg: float = 0.0,
    psf_fwhm: float | None = None,
    noise: float = 0.0,
    seed: int = 0,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """A GalSim Sérsic galaxy (pixel-integrated), optional Gaussian PSF and noise."""
    gal = galsim.Sersic(n=n, half_light_radius=rhalf, flux=flux)
    if q != 1.0:
        gal = gal.shear(q=q, beta=beta_deg * galsim.degrees)
    if psf_fwhm:
        gal = galsim.Convolve(gal, galsim.Gaussian(fwhm=psf_fwhm))
    img = gal.drawImage(nx=npix, ny=npix, scale=1.0, offset=offset).array.astype(np.float64)
    if noise > 0:
        img = img + np.random.default_rng(seed).normal(0.0, noise, img.shape)
    return img


@pytest.fixture
def sersic():
    return render_sersic
