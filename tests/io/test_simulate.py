"""The simulated survey: seed conventions, determinism, atomic writes, physics."""

from __future__ import annotations

import math

import galsim
import numpy as np
import pandas as pd
import pytest

from featuremass.cli import main
from featuremass.errors import FeaturemassError
from featuremass.io.layout import SPLITS, SeedLayout, load_split
from featuremass.io.simulate import (
    ORACLE_COLUMNS,
    SurveyConfig,
    colour_to_ml,
    draw_galaxy,
    galaxy_rng,
    simulate_galaxy,
    simulate_survey,
)
from featuremass.io.simulate._render import correlate_noise, observing_conditions, render_galaxy

TINY = SurveyConfig(n_train=6, n_val=3, n_test=3, npix=(32, 48), seed=7, chunk_size=4)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "data"
    summary = simulate_survey(out, TINY, n_jobs=1)
    return out, summary


def test_loads_by_seed_conventions(survey):
    out, summary = survey
    meta = pd.read_csv(out / "metadata" / "metadata.tsv", sep="\t", index_col=0)
    assert meta.index.name == "SDSS_ID"
    assert {"M/L", "L_g", "distance_Mpc", "galsize_kpc"} <= set(meta.columns)
    sizes = {"train": 6, "val": 3, "test": 3}
    for npix in TINY.npix:
        d = out / "images" / f"{npix}pix_npy"
        for split in SPLITS:
            stem = "train_images_all" if split == "train" else f"{split}_images"
            names_stem = "train_names_all" if split == "train" else f"{split}_names"
            images = np.load(d / f"{stem}.npy")
            names = np.load(d / f"{names_stem}.npy")
            assert images.shape == (sizes[split], npix, npix)
            assert images.dtype == np.float32 and names.dtype == np.int64
            assert images.min() >= -1.0 and images.max() <= 1.0
            assert np.isin(names, meta.index).all()
            labels = np.loadtxt(out / "split" / f"{split}_labels.txt", dtype=np.int64, ndmin=1)
            np.testing.assert_array_equal(labels, names)
            linear = np.load(SeedLayout(out).linear_path(npix, split))
            assert linear.shape == images.shape and linear.dtype == np.float32
    assert "simulated 12 galaxies" in str(summary)


def test_load_split_and_truth(survey):
    out, _ = survey
    ds = load_split(out, npix=48, split="test")
    assert len(ds) == 3 and np.isfinite(ds.target).all()
    truth = pd.read_parquet(SeedLayout(out).truth_path)
    assert len(truth) == 12 and truth["galaxy_id"].is_unique
    assert set(ORACLE_COLUMNS) <= set(truth.columns)
    meta = pd.read_csv(out / "metadata" / "metadata.tsv", sep="\t", index_col=0)
    joined = truth.set_index("galaxy_id").loc[meta.index]
    np.testing.assert_allclose(joined["M/L"], meta["M/L"], rtol=1e-5)
    # Hubble law with H0 = 70 km/s/Mpc, independent of the code.
    np.testing.assert_allclose(meta["distance_Mpc"], 299792.458 * meta["redshift"] / 70.0, rtol=1e-5)
    assert ((truth["redshift"] >= 0.02) & (truth["redshift"] <= 0.1)).all()
    assert ((truth["psf_fwhm_arcsec"] >= 1.1) & (truth["psf_fwhm_arcsec"] <= 1.8)).all()


def test_deterministic_and_independent_of_jobs(survey, tmp_path):
    out, _ = survey
    again = tmp_path / "again"
    simulate_survey(again, TINY, n_jobs=2)
    for rel in ("images/32pix_npy/train_images_all.npy", "images/48pix_linear/val_linear.npy",
                "images/48pix_npy/test_names.npy", "metadata/metadata.tsv", "split/val_labels.txt"):
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    simulate_survey(other, SurveyConfig(n_train=6, n_val=3, n_test=3, npix=(32, 48), seed=8), n_jobs=1)
    assert (out / "metadata/metadata.tsv").read_bytes() != (other / "metadata/metadata.tsv").read_bytes()


def test_refuses_overwrite_and_leaves_no_partial(tmp_path):
    cfg = SurveyConfig(n_train=2, n_val=1, n_test=1, npix=(32,), seed=1)
    out = tmp_path / "d"
    simulate_survey(out, cfg, n_jobs=1)
    before = (out / "metadata/metadata.tsv").read_bytes()
    with pytest.raises(FeaturemassError, match=str(out)):
        simulate_survey(out, cfg, n_jobs=1)
    simulate_survey(out, SurveyConfig(n_train=2, n_val=1, n_test=1, npix=(32,), seed=2), n_jobs=1, overwrite=True)
    assert (out / "metadata/metadata.tsv").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temp folders left
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(FeaturemassError, match="thesis.tex"):
        simulate_survey(foreign, cfg, n_jobs=1, overwrite=True)
    assert (foreign / "thesis.tex").exists()


@pytest.mark.parametrize(
    "kwargs",
    [{"n_train": -1}, {"npix": (4,)}, {"redshift_range": (0.1, 0.02)}, {"star_removed_fraction": 2.0},
     {"n_train": 0, "n_val": 0, "n_test": 0}, {"seed": -3}, {"stretch": "sqrt"},
     {"crop_factor": 0.0}, {"noise_correlation_px": -1.0}, {"star_residual": 1.5},
     {"stretch_softening": float("nan")}],
)
def test_config_validation(kwargs):
    with pytest.raises(FeaturemassError):
        SurveyConfig(**kwargs)


def test_colour_ml_relation_matches_bell2003():
    # Bell et al. 2003 Table 7: log M/L_g = -0.499 + 1.519 (g - r), minus 0.06 dex to Chabrier.
    assert colour_to_ml(0.7) == pytest.approx(10 ** (-0.499 + 1.519 * 0.7 - 0.06))


def test_bulge_dominated_have_higher_ml():
    cfg = SurveyConfig()
    rows = pd.DataFrame([draw_galaxy(galaxy_rng(11, i), cfg) for i in range(600)])
    ml = rows["M/L"]
    bulgy = ml[rows["bulge_to_total"] > 0.6].mean()
    disky = ml[rows["bulge_to_total"] < 0.2].mean()
    assert bulgy > disky + 0.5
    # M/L is the mass over the observed light of the components.
    mass = (rows["L_g_intrinsic"] * rows["bulge_to_total"] * rows["ml_bulge"]).to_numpy()
    assert (mass < 10 ** rows["log_mass"].to_numpy() * (1 + 1e-9)).all()
    assert (rows["g_mag"] <= cfg.mag_limit).all()


def test_rendered_flux_matches_galsim():
    """The noiseless model holds the GalSim flux of bulge and disk that falls on the crop."""
    cfg = SurveyConfig(star_density=0.0)
    for index in range(4):
        rng = galaxy_rng(5, index)
        gal = draw_galaxy(rng, cfg)
        obs = observing_conditions(rng, gal, cfg)
        noisy, model, stars = render_galaxy(rng, gal, obs, cfg)
        assert stars["n_stars"] == 0
        side, scale = obs["crop_native_px"], cfg.pixel_scale
        kpa = gal["kpc_per_arcsec"]
        psf = galsim.Moffat(beta=obs["psf_beta"], fwhm=obs["psf_fwhm_arcsec"])
        # Independent reference: plain GalSim bulge + disk (no arms, bar split, clumps at disk).
        bulge = galsim.Sersic(n=gal["bulge_sersic_n"], half_light_radius=gal["bulge_re_kpc"] / kpa,
                              flux=gal["flux_bulge_nmgy"])
        disk = galsim.Exponential(half_light_radius=gal["disk_re_kpc"] / kpa,
                                  flux=gal["flux_disk_nmgy"] + gal["flux_clumps_nmgy"]).shear(
            q=gal["disk_q"], beta=gal["position_angle_deg"] * galsim.degrees)
        ref = galsim.Convolve(bulge + disk, psf).drawImage(nx=side, ny=side, scale=scale).array.sum()
        assert model.sum() == pytest.approx(ref, rel=0.08)
        # The noisy image: same flux within a few sigma of sky + Poisson noise.
        sigma = math.sqrt(side**2 * obs["sky_sigma_nmgy"] ** 2 + ref / cfg.electrons_per_nmgy)
        assert abs(noisy.sum() - model.sum()) < 5 * sigma


def test_cli_simulate(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["simulate", "--out", str(out), "--n-train", "2", "--n-val", "1", "--n-test", "1",
            "--npix", "32", "--seed", "3", "-j", "1"]
    assert main(argv) == 0
    assert "simulated 4 galaxies" in capsys.readouterr().out
    assert load_split(out, npix=32, split="train").images.shape == (2, 32, 32)
    assert main(argv) == 2  # exists: one clear error line, no traceback
    err = capsys.readouterr().err
    assert "error" in err and str(out) in err and "Traceback" not in err


# --------------------------------------------------------------------------- variants (issue 10)


def _sky_corners(img: np.ndarray, k: int = 12) -> list[np.ndarray]:
    return [img[:k, :k], img[:k, -k:], img[-k:, :k], img[-k:, -k:]]


def test_stretch_variants_share_the_linear_stamp():
    """Every stretch renders the same galaxy: identical linear flux, only the stored map differs."""
    base = SurveyConfig(npix=(48,), seed=4)
    truth, images = simulate_galaxy(base, 0)
    lin0, stretched0 = images[48]
    for kind in ("clipped-log", "asinh", "linear"):
        t, im = simulate_galaxy(SurveyConfig(npix=(48,), seed=4, stretch=kind), 0)
        lin, stretched = im[48]
        np.testing.assert_array_equal(lin, lin0)
        assert t["stretch"] == kind and t["M/L"] == truth["M/L"]
        assert stretched.min() >= -1.0 and stretched.max() <= 1.0
        # Each stretch is monotone in the linear flux: a rank-preserving map of the same pixels.
        order = np.argsort(lin.ravel(), kind="stable")
        assert (np.diff(stretched.ravel()[order].astype(np.float64)) >= -1e-6).all()
        if kind == "linear":  # an affine image of the flux (correlation 1)
            assert np.corrcoef(lin.ravel(), stretched.ravel())[0, 1] > 0.99999
        if kind == "clipped-log":
            # log10(1 + max(x, 0)/a): every pixel below the sky level sits at the floor -1.
            at_floor = stretched == -1.0
            assert at_floor.mean() > 0.2 and (stretched[~at_floor] > -1.0).all()
    assert truth["stretch"] == "shifted-log" and truth["noise_correlation_px"] == 0.0


def test_crop_factor_makes_the_galaxy_fill_the_frame():
    """Fill = R90 diameter / frame side = 2 / crop_factor (up to the integer crop side)."""
    for crop, lo in ((2.5, 0.75), (2.0, 0.95)):
        cfg = SurveyConfig(npix=(32,), seed=9, crop_factor=crop, star_density=0.0)
        rng = galaxy_rng(9, 0)
        gal = draw_galaxy(rng, cfg)
        obs = observing_conditions(rng, gal, cfg)
        r90 = gal["galsize_kpc"] / gal["kpc_per_arcsec"]
        side_arcsec = obs["crop_native_px"] * cfg.pixel_scale
        assert obs["frame_fill"] == pytest.approx(2 * math.hypot(r90, obs["psf_fwhm_arcsec"]) / side_arcsec)
        assert obs["frame_fill"] >= lo
        if not obs["crop_clipped"]:
            assert obs["frame_fill"] == pytest.approx(2.0 / crop, rel=0.05)


def test_white_noise_correlates_with_the_gaussian_autocorrelation():
    """A Gaussian kernel of sigma s gives lag-d autocorrelation exp(-d^2 / (4 s^2))."""
    white = np.random.default_rng(0).normal(0.0, 2.0, (256, 256))
    for s in (1.0, 2.0):
        c = correlate_noise(white, s)
        assert np.std(c) == pytest.approx(np.std(white), rel=1e-6)
        lag1 = np.corrcoef(c[:, :-1].ravel(), c[:, 1:].ravel())[0, 1]
        assert lag1 == pytest.approx(math.exp(-1.0 / (4 * s * s)), abs=0.03)


def test_correlated_noise_variant_changes_only_the_noise():
    kw = {"npix": (69,), "seed": 2, "star_density": 0.0}
    for index in range(2):
        _, white = simulate_galaxy(SurveyConfig(**kw), index)
        t, corr = simulate_galaxy(SurveyConfig(noise_correlation_px=1.5, **kw), index)
        assert t["noise_correlation_px"] == 1.5
        w, c = white[69][0].astype(np.float64), corr[69][0].astype(np.float64)
        lag = [np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1] for a in (w, c)]
        # a sky corner: the white stamp's neighbours are nearly independent, the variant's are not
        wc, cc = np.concatenate([x.ravel() for x in _sky_corners(w)]), np.concatenate([x.ravel() for x in _sky_corners(c)])
        assert lag[1] > lag[0]
        assert np.std(cc) == pytest.approx(np.std(wc), rel=0.35)
        # the signal is untouched: the total flux moves by less than the noise allows
        sigma_sum = np.std(wc) * 69 * 3.0
        assert abs(c.sum() - w.sum()) < 5 * sigma_sum


def test_residual_stars_leave_flux_that_grows_with_the_psf_error():
    """Subtracting a star with its exact PSF leaves nothing; a wrong flux/FWHM leaves a residual."""
    kw = {"npix": (32,), "seed": 1, "star_density": 40.0, "star_removed_fraction": 1.0}
    found = False
    for index in range(6):
        exact, _ = simulate_galaxy(SurveyConfig(star_residual=1e-9, **kw), index)
        rough, _ = simulate_galaxy(SurveyConfig(star_residual=0.2, **kw), index)
        if exact["n_stars_removed"] == 0:
            continue
        found = True
        assert exact["star_residual_abs_nmgy"] < 1e-6 * exact["star_flux_removed_nmgy"]
        assert rough["star_residual_abs_nmgy"] > 0.02 * rough["star_flux_removed_nmgy"]
    assert found


def test_cli_simulate_variant_recorded(tmp_path):
    out = tmp_path / "v"
    assert main(["simulate", "--out", str(out), "--n-train", "2", "--n-val", "0", "--n-test", "1",
                 "--npix", "32", "-j", "1", "--stretch", "clipped-log", "--crop-factor", "2.0",
                 "--noise-correlation", "1.0", "--star-residual", "0.1"]) == 0
    truth = pd.read_parquet(SeedLayout(out).truth_path)
    assert (truth["stretch"] == "clipped-log").all() and (truth["crop_factor"] == 2.0).all()
    assert (truth["noise_correlation_px"] == 1.0).all() and (truth["star_residual"] == 0.1).all()
    images = load_split(out, npix=32, split="train").images
    assert (images == -1.0).mean() > 0.1
