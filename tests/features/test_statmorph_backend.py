"""The statmorph backend: schema mapping and failure handling (few, small statmorph runs)."""

from __future__ import annotations

import math

import galsim
import numpy as np
import pytest
import statmorph  # noqa: F401  (the backend under test)

from featuremass.features import statmorph_backend
from featuremass.features.flags import MorphFlag
from featuremass.features.measure import FEATURE_COLUMNS
from featuremass.features.statmorph_backend import measure_galaxy_statmorph


def _galaxy(n=1.0, hlr=5.0, npix=69, noise=1.0, seed=0):
    gal = galsim.Sersic(n=n, half_light_radius=hlr, flux=3e4).shear(q=0.7, beta=0.3 * galsim.radians)
    img = gal.drawImage(nx=npix, ny=npix, scale=1.0).array.astype(np.float64)
    return img + 10.0 + np.random.default_rng(seed).normal(0, noise, img.shape)


def test_maps_statmorph_to_the_native_schema():
    res = measure_galaxy_statmorph(_galaxy())
    assert set(res) == set(FEATURE_COLUMNS) | {"flag"}
    assert res["flag"] & MorphFlag.BACKEND_ERROR == 0
    values = np.array([res[c] for c in FEATURE_COLUMNS], dtype=float)
    assert not np.any(values == -99.0)
    # Columns statmorph does not compute stay NaN.
    assert np.isnan(res["bd_bulge_to_total"]) and np.isnan(res["prof_slope_inner"])
    # Analytic expectations for an n = 1 profile (Graham & Driver 2005): C ~ 2.8,
    # Sérsic n = 1; semi-major r_e = hlr / sqrt(q). statmorph fits in 2-D.
    assert res["sersic_n"] == pytest.approx(1.0, rel=0.15)
    assert res["sersic_rhalf"] == pytest.approx(5.0 / math.sqrt(0.7), rel=0.1)
    assert res["concentration"] == pytest.approx(2.7, abs=0.35)
    assert 0 < res["gini"] < 1


@pytest.mark.parametrize(
    "image",
    [np.zeros((40, 40)), np.full((40, 40), np.nan), np.ones((40, 40)), np.zeros((2, 3, 4))],
    ids=["blank", "nan", "constant", "3d"],
)
def test_unmeasurable_images_give_nan_and_flag(image):
    res = measure_galaxy_statmorph(image)
    assert res["flag"] != 0
    assert all(np.isnan(res[c]) for c in FEATURE_COLUMNS)


class _FakeMorph:
    """Stands in for statmorph.SourceMorphology: flags and -99 sentinels on demand."""

    def __init__(self, flag=0, flag_sersic=0, sentinel=()):
        self.flag, self.flag_sersic, self._sentinel = flag, flag_sersic, set(sentinel)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return -99.0 if name in self._sentinel else 0.5


@pytest.fixture
def fake_statmorph(monkeypatch):

    def install(factory):
        monkeypatch.setattr(statmorph, "SourceMorphology", factory)

    return install


def test_statmorph_exception_becomes_backend_error(fake_statmorph):
    def boom(*args, **kwargs):
        raise RuntimeError("statmorph exploded")

    fake_statmorph(boom)
    res = measure_galaxy_statmorph(_galaxy())
    assert res["flag"] & MorphFlag.BACKEND_ERROR
    assert all(np.isnan(res[c]) for c in FEATURE_COLUMNS)


def test_statmorph_bad_flag_becomes_nan(fake_statmorph):
    fake_statmorph(lambda *a, **k: _FakeMorph(flag=2))
    res = measure_galaxy_statmorph(_galaxy())
    assert res["flag"] & MorphFlag.BACKEND_ERROR
    assert np.isnan(res["asymmetry"])


def test_sentinels_become_nan_with_their_family_flag(fake_statmorph):
    fake_statmorph(lambda *a, **k: _FakeMorph(flag=1, flag_sersic=1, sentinel={"asymmetry", "m20"}))
    res = measure_galaxy_statmorph(_galaxy())
    assert np.isnan(res["asymmetry"]) and res["flag"] & MorphFlag.ASYMMETRY_FAILED
    assert np.isnan(res["m20"]) and res["flag"] & MorphFlag.GINI_M20_FAILED
    assert np.isnan(res["sersic_n"]) and res["flag"] & MorphFlag.SERSIC_FAILED
    assert res["gini"] == 0.5 and res["concentration"] == 0.5
    assert not res["flag"] & MorphFlag.BACKEND_ERROR


def test_segmap_picks_the_central_source():
    img = np.zeros((41, 41))
    img[18:23, 18:23] = 10.0  # centre
    img[2:6, 2:6] = 50.0  # brighter neighbour in a corner
    segmap, label = statmorph_backend.central_segmap(img, sky_sigma=1.0)
    assert label > 0 and segmap[20, 20] == label and segmap[3, 3] not in (0, label)


@pytest.mark.parametrize("n,hlr,seed", [(1.0, 6.0, 1), (4.0, 4.0, 2), (1.0, 15.0, 3)])
def test_native_segmentation_isolates_the_algorithms(n, hlr, seed):
    # Same pixels, sky and segmentation map for both backends: what is left
    # are the algorithms, which must agree within the benchmark tolerances
    # (C 0.1, Gini 0.02, M20 0.1, r_petro 3 %). hlr = 15 px fills the stamp.
    from featuremass.features.measure import MorphologyConfig, measure_galaxy

    config = MorphologyConfig(fit_sersic=False, fit_bulge_disk=False, profile=False)
    img = _galaxy(n=n, hlr=hlr, noise=1.0, seed=seed)
    ref = measure_galaxy_statmorph(img, config=config, segmentation="native")
    nat = measure_galaxy(img, config=config)
    assert ref["flag"] & MorphFlag.BACKEND_ERROR == 0
    assert nat["rpetro_circ"] == pytest.approx(ref["rpetro_circ"], rel=0.03)
    assert nat["concentration"] == pytest.approx(ref["concentration"], abs=0.1)
    assert nat["gini"] == pytest.approx(ref["gini"], abs=0.02)
    assert nat["m20"] == pytest.approx(ref["m20"], abs=0.1)
    assert nat["asymmetry"] == pytest.approx(ref["asymmetry"], abs=0.03)


def test_segmentation_option_is_validated():
    from featuremass.errors import FeaturemassError

    with pytest.raises(FeaturemassError, match="segmentation"):
        measure_galaxy_statmorph(np.zeros((10, 10)), segmentation="mine")


def test_asymmetry_background_diagnostics():
    # On pure white noise statmorph's sky-box term is a sample of the white-noise
    # expectation 2 sigma / sqrt(pi) (Conselice 2003), so swapping the one for
    # the other leaves A nearly unchanged; the keys appear only on request.
    img = _galaxy(npix=101, hlr=4.0, noise=1.0, seed=3)
    res = measure_galaxy_statmorph(img, diagnostics=True, skybox_size=32)
    assert res["asymmetry_bkg_statmorph"] == pytest.approx(2.0 / math.sqrt(math.pi), rel=0.15)
    assert res["asymmetry_white_noise_bkg"] == pytest.approx(res["asymmetry"], abs=0.01)
    assert "asymmetry_bkg_statmorph" not in measure_galaxy_statmorph(img)
