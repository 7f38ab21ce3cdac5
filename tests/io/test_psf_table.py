"""Per-galaxy PSF table: reading, validation, and its use in the Sérsic fits."""

from __future__ import annotations

import galsim
import numpy as np
import pandas as pd
import pytest

from featuremass.errors import DataError
from featuremass.features.batch import extract_features
from featuremass.io.psf_table import read_psf_table


def test_fwhm_in_pixels_or_from_arcsec_and_pixel_scale(tmp_path):
    csv = tmp_path / "psf.csv"
    pd.DataFrame({"galaxy_id": [3, 1, 2], "psf_fwhm_px": [2.0, 3.0, 4.0]}).to_csv(csv, index=False)
    np.testing.assert_array_equal(read_psf_table(csv, [1, 2, 3]), [3.0, 4.0, 2.0])
    pq = tmp_path / "psf.parquet"
    pd.DataFrame({"galaxy_id": [1, 2], "psf_fwhm_arcsec": [1.2, 0.9],
                  "pixel_scale_arcsec": [0.4, 0.3]}).to_parquet(pq)
    np.testing.assert_allclose(read_psf_table(pq, [2, 1]), [3.0, 3.0])


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        ({"galaxy_id": [1], "psf_fwhm_px": [2.0]}, r"missing from PSF table .*psf.csv: ids \[2\]"),
        ({"galaxy_id": [1, 2], "psf_fwhm_px": [2.0, -1.0]}, r"psf.csv: psf_fwhm_px .* galaxy 2 has -1.0"),
        ({"galaxy_id": [1, 2], "psf_fwhm_px": [2.0, "x"]}, r"galaxy 2 has 'x'"),
        ({"galaxy_id": [1, 2], "fwhm": [2.0, 2.0]}, "needs a 'psf_fwhm_px' column"),
        ({"galaxy_id": [1, 1], "psf_fwhm_px": [2.0, 2.0]}, "duplicate galaxy_id"),
    ],
)
def test_one_clear_error_naming_the_file_and_value(tmp_path, frame, match):
    csv = tmp_path / "psf.csv"
    pd.DataFrame(frame).to_csv(csv, index=False)
    with pytest.raises(DataError, match=match):
        read_psf_table(csv, [1, 2])
    with pytest.raises(DataError, match="not found"):
        read_psf_table(tmp_path / "absent.csv", [1])


def test_per_galaxy_psf_reaches_the_sersic_fit():
    # An exponential disc (hlr 3 px) seen through Gaussian PSFs of 2 and 5 px:
    # with its own PSF each fit recovers hlr; without, the wider PSF inflates it.
    rng = np.random.default_rng(3)
    fwhm = np.array([2.0, 5.0])
    disc = galsim.Exponential(half_light_radius=3.0, flux=3e4)
    stack = np.stack([
        galsim.Convolve(disc, galsim.Gaussian(fwhm=f)).drawImage(nx=49, ny=49, scale=1.0).array
        + rng.normal(0.0, 1.0, (49, 49))
        for f in fwhm
    ])
    with_psf = extract_features(stack, scale="linear", psf_fwhm=fwhm)["sersic_rhalf"].to_numpy()
    without = extract_features(stack, scale="linear")["sersic_rhalf"].to_numpy()
    np.testing.assert_allclose(with_psf, 3.0, rtol=0.1)
    assert without[1] > 1.15 * with_psf[1]
