"""Per-pixel masks and error maps (``weights``) through the batch and ``featuremass extract``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featuremass.errors import DataError, FeaturemassError
from featuremass.features.batch import extract_features
from tests.features.conftest import render_sersic

NPIX = 49


@pytest.fixture(scope="module")
def scene():
    """A galaxy, the same galaxy with a bright neighbour, and a mask covering the neighbour."""
    galaxy = render_sersic(1.0, 5.0, npix=NPIX, flux=4000.0, q=0.7, beta_deg=30.0, noise=1.0, seed=4)
    neighbour = render_sersic(1.0, 2.0, npix=NPIX, flux=3000.0, offset=(15.0, -14.0))
    y, x = np.mgrid[:NPIX, :NPIX]
    mask = np.hypot(x - (NPIX // 2 + 15), y - (NPIX // 2 - 14)) < 9
    # the neighbour's light is cut at the mask's edge, so only masked pixels differ
    return galaxy, galaxy + np.where(mask, neighbour, 0.0), mask


def _extract(images, **kw):
    return extract_features(np.asarray(images), scale="linear", **kw).drop(columns="galaxy_id")


def test_masked_pixels_count_for_nothing(scene):
    """With the neighbour masked, the stamp measures as if the neighbour were not there at all.

    The masked pixels' values are ignored, so the stamp with the neighbour and
    the same stamp without it must give the same row, bit for bit.
    """
    galaxy, with_neighbour, mask = scene
    masks = np.stack([mask, mask])
    rows = _extract([with_neighbour, galaxy], masks=masks)
    pd.testing.assert_series_equal(rows.iloc[0], rows.iloc[1], check_names=False)
    # and the mask did reach the measurement: unmasked, the neighbour is seen
    unmasked = _extract([with_neighbour])
    assert unmasked["n_masked_neighbours"].iloc[0] >= 1
    assert rows["n_masked_neighbours"].iloc[0] == 0


def test_a_constant_error_map_is_the_noise(scene):
    """A weight map of constant 1-sigma error s: sky_sigma is s, and S/N per pixel scales as 1/s.

    Background-limited S/N per pixel is mean(I / s) over the source
    (Lotz et al. 2004), so for two error levels s1, s2 the ratio is s2 / s1
    exactly; the segmentation (the stamp's own noise) is the same for both.
    """
    galaxy = scene[0]
    s1, s2 = 2.0, 5.0
    rows = _extract([galaxy, galaxy],
                    weights=np.stack([np.full(galaxy.shape, s1), np.full(galaxy.shape, s2)]))
    assert rows["sky_sigma"].tolist() == [s1, s2]
    assert rows["segmap_area_px"].iloc[0] == rows["segmap_area_px"].iloc[1]
    np.testing.assert_allclose(rows["sn_per_pixel"].iloc[0] / rows["sn_per_pixel"].iloc[1], s2 / s1,
                               rtol=1e-12)
    # uniform weights of any level leave the best Sérsic fit where it is
    np.testing.assert_allclose(rows["sersic_n"].iloc[0], rows["sersic_n"].iloc[1], rtol=1e-3)
    # the stamp's own noise (1) is what is measured without a map
    assert abs(_extract([galaxy])["sky_sigma"].iloc[0] - 1.0) < 0.1


def test_unusable_errors_are_masked(scene):
    """A pixel with a zero or non-finite error carries no information: it counts as masked."""
    galaxy, with_neighbour, mask = scene
    errors = np.where(mask, np.nan, 1.0)
    by_weights = _extract([with_neighbour], weights=errors[None])
    by_mask = _extract([with_neighbour], masks=mask[None], weights=np.ones((1, NPIX, NPIX)))
    pd.testing.assert_frame_equal(by_weights, by_mask)


def test_misaligned_maps_are_one_clear_error(tmp_path, scene):
    images = np.stack([scene[0]] * 3)
    np.save(tmp_path / "m.npy", np.zeros((2, NPIX, NPIX), dtype=bool))
    with pytest.raises(DataError, match=r"m\.npy has shape \(2, 49, 49\).*\(3, 49, 49\)"):
        extract_features(images, scale="linear", masks=tmp_path / "m.npy")
    with pytest.raises(DataError, match=r"weights .*\(3, 49, 48\)"):
        extract_features(images, scale="linear", weights=np.ones((3, NPIX, NPIX - 1)))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scale": "auto"}, "linear"),
    ({"scale": "linear", "backend": "statmorph"}, "native"),
    ({"scale": "linear", "feature_set": "fast"}, "full feature set"),
])
def test_weights_only_where_they_mean_something(kwargs, match, scene):
    with pytest.raises(FeaturemassError, match=match):
        extract_features(scene[0][None], weights=np.ones((1, NPIX, NPIX)), **kwargs)


def test_cli_extract_masks_and_weights(tmp_path, scene, capsys):
    from featuremass.cli import main

    galaxy, with_neighbour, mask = scene
    np.save(tmp_path / "i.npy", np.stack([with_neighbour, galaxy]))
    np.save(tmp_path / "m.npy", np.stack([mask, mask]))
    np.save(tmp_path / "w.npy", np.full((2, NPIX, NPIX), 3.0))
    out = tmp_path / "t.parquet"
    assert main(["extract", "--images", str(tmp_path / "i.npy"), "--masks", str(tmp_path / "m.npy"),
                 "--weights", str(tmp_path / "w.npy"), "--scale", "linear", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert table["sky_sigma"].tolist() == [3.0, 3.0]
    pd.testing.assert_series_equal(table.drop(columns="galaxy_id").iloc[0],
                                   table.drop(columns="galaxy_id").iloc[1], check_names=False)
    capsys.readouterr()
    np.save(tmp_path / "short.npy", np.ones((2, NPIX, 40)))
    rc = main(["extract", "--images", str(tmp_path / "i.npy"), "--weights", str(tmp_path / "short.npy"),
               "--scale", "linear", "--out", str(tmp_path / "u.parquet")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "short.npy" in err[0] and "(2, 49, 40)" in err[0] and "(2, 49, 49)" in err[0]
