"""Cutouts from FITS images with a real TAN WCS and Gaussian sources at known RA/Dec."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from featuremass.errors import DataError
from featuremass.io.cutouts import CutoutConfig, make_cutouts, read_catalog
from featuremass.io.layout import load_split, read_metadata
from featuremass.io.stretch import inverse_seed_stretch

SHAPE = (160, 200)  # ny, nx
PIXSCALE = 0.396  # arcsec, SDSS
NPIX = 21


def _wcs(ra0, dec0):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [SHAPE[1] / 2 + 0.5, SHAPE[0] / 2 + 0.5]
    w.wcs.cdelt = [-PIXSCALE / 3600, PIXSCALE / 3600]
    return w


def _image(path, w, sources, *, nan_box=None, seed=0, sigma_px=2.0):
    """Sky + noise + Gaussians at (ra, dec); positions through astropy's WCS."""
    rng = np.random.default_rng(seed)
    data = 10.0 + rng.normal(0, 1.0, SHAPE)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    for ra, dec in sources:
        x, y = w.world_to_pixel_values(ra, dec)
        data += 400 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma_px**2))
    if nan_box is not None:
        data[nan_box] = np.nan
    fits.PrimaryHDU(data.astype(np.float32), header=w.to_header()).writeto(path)
    return path


def _offset(w, x, y):
    ra, dec = w.pixel_to_world_values(x, y)
    return float(ra), float(dec)


@pytest.fixture
def sky(tmp_path):
    w1, w2 = _wcs(150.0, 2.0), _wcs(150.1, 2.0)
    good1 = [_offset(w1, 50.3, 60.7), _offset(w1, 140.0, 100.2), _offset(w1, 100.0, 40.0)]
    good2 = [_offset(w2, 90.6, 80.1)]
    nan_src = _offset(w1, 40.0, 130.0)
    edge = _offset(w1, 3.0, 80.0)  # the stamp would cross the left edge
    off = (151.0, 3.0)  # far from both images
    img1 = _image(tmp_path / "field1.fits", w1, good1 + [nan_src, edge],
                  nan_box=(slice(120, 140), slice(30, 50)), seed=1)
    img2 = _image(tmp_path / "field2.fits", w2, good2, seed=2)
    rows = [
        (1001, *good1[0], 1.5, 6.0), (1002, *good1[1], 2.5, 6.0), (1003, *good1[2], 0.7, 6.0),
        (1004, *good2[0], 3.1, 6.0), (1005, *nan_src, 1.0, 6.0), (1006, *edge, 1.0, 6.0),
        (1007, *off, 1.0, 6.0), (1008, np.nan, 2.0, 1.0, 6.0), (1009, *good1[0], np.nan, 6.0),
    ]
    cat = pd.DataFrame(rows, columns=["objid", "RA", "DEC", "ml", "d25"])
    cat_path = tmp_path / "catalog.csv"
    cat.to_csv(cat_path, index=False)
    return [img1, img2], cat_path, cat


def _config(**kw):
    base = dict(npix=NPIX, id_col="objid", ra_col="RA", dec_col="DEC", target_col="ml",
                size_col="d25", size_factor=2.0)
    base.update(kw)
    return CutoutConfig(**base)


def test_cutouts_are_centred_and_problems_reported(tmp_path, sky):
    images, cat_path, cat = sky
    out = tmp_path / "out"
    report = make_cutouts(images, cat_path, out, split="test", config=_config())
    assert report.n_input == 9 and report.n_written == 4
    assert report.ids.tolist() == [1001, 1002, 1003, 1004]
    reasons = dict(zip(report.skipped["id"], report.skipped["reason"], strict=True))
    assert reasons == {1005: "blank or NaN", 1006: "partially off image", 1007: "off image",
                       1008: "bad coordinates", 1009: "non-finite target"}
    # The CSV lists the same objects and reasons.
    csv = pd.read_csv(out / "cutout_report.csv")
    assert dict(zip(csv["id"], csv["reason"], strict=True)) == reasons
    assert set(csv["split"]) == {"test"}
    text = str(report)
    assert "9 objects" in text and "4 21x21 cutouts" in text and "1  off image" in text

    ds = load_split(out, npix=NPIX, split="test")
    assert ds.ids.tolist() == [1001, 1002, 1003, 1004]
    np.testing.assert_allclose(ds.target, [1.5, 2.5, 0.7, 3.1], rtol=1e-6)
    imgs = np.asarray(ds.images)
    assert imgs.dtype == np.float32 and imgs.min() >= -1 and imgs.max() <= 1
    centre = NPIX // 2
    for img in imgs:
        py, px = np.unravel_index(np.argmax(img), img.shape)
        assert abs(py - centre) <= 1 and abs(px - centre) <= 1
        assert img.max() == 1.0
    labels = np.loadtxt(out / "split" / "test_labels.txt", dtype=np.int64)
    assert labels.tolist() == [1001, 1002, 1003, 1004]


def test_stamp_side_follows_the_size_column(tmp_path):
    w = _wcs(150.0, 2.0)
    a, b = _offset(w, 60.0, 80.0), _offset(w, 140.0, 80.0)
    img = _image(tmp_path / "f.fits", w, [a, b], seed=3, sigma_px=3.5)
    # Same source; stamp sides of 21 px and 42 px: the source is half as wide in the second.
    side = NPIX * PIXSCALE
    cat = pd.DataFrame({"objid": [1, 2], "RA": [a[0], b[0]], "DEC": [a[1], b[1]],
                        "ml": [1.0, 1.0], "d25": [side / 2, side]})
    cat.to_csv(tmp_path / "c.csv", index=False)
    make_cutouts([img], tmp_path / "c.csv", tmp_path / "out", split="val", config=_config())
    imgs = np.asarray(load_split(tmp_path / "out", npix=NPIX, split="val").images)
    # Width from the area above half maximum of the linearised stamp (robust to noise):
    # expected ratio 2, a little less for the anti-aliasing blur of the 2x downsampling.
    widths = []
    for im in imgs:
        lin = inverse_seed_stretch(im)
        widths.append(np.sqrt((lin > lin.max() / 2).sum()))
    assert widths[0] / widths[1] == pytest.approx(2.0, rel=0.15)


def test_fixed_size_fits_catalogue_and_no_target(tmp_path, sky):
    images, _, cat = sky
    table = Table.from_pandas(cat.iloc[:4].drop(columns=["ml", "d25"]))
    table.write(tmp_path / "cat.fits")
    cfg = CutoutConfig(npix=NPIX, id_col="objid", ra_col="RA", dec_col="DEC", size_arcsec=10.0)
    report = make_cutouts(images, tmp_path / "cat.fits", tmp_path / "out", split="test", config=cfg)
    assert report.n_written == 4 and len(report.skipped) == 0
    assert "every object was cut out" in str(report)
    meta = read_metadata(tmp_path / "out" / "metadata" / "metadata.tsv")
    # No target column: every id is listed, with M/L NaN (documented choice).
    assert meta.index.tolist() == [1001, 1002, 1003, 1004]
    assert meta["M/L"].isna().all()
    with pytest.raises(DataError, match="non-finite M/L"):
        load_split(tmp_path / "out", npix=NPIX, split="test")


def test_two_splits_into_one_dataset(tmp_path, sky):
    images, cat_path, cat = sky
    cat.iloc[:2].to_csv(tmp_path / "train.csv", index=False)
    cat.iloc[2:4].to_csv(tmp_path / "val.csv", index=False)
    out = tmp_path / "out"
    make_cutouts(images, tmp_path / "train.csv", out, split="train", config=_config())
    make_cutouts(images, tmp_path / "val.csv", out, split="val", config=_config())
    assert len(load_split(out, npix=NPIX, split="train")) == 2
    assert len(load_split(out, npix=NPIX, split="val")) == 2
    assert read_metadata(out / "metadata" / "metadata.tsv").index.tolist() == [1001, 1002, 1003, 1004]


def test_errors_name_file_and_column(tmp_path, sky):
    images, cat_path, cat = sky
    with pytest.raises(DataError, match=r"catalog\.csv lacks column\(s\) \['size'\]"):
        make_cutouts(images, cat_path, tmp_path / "o", config=_config(size_col="size"))
    bad = cat.copy()
    bad["objid"] = bad["objid"].astype(str)
    bad.loc[2, "objid"] = "gal-3"
    bad.to_csv(tmp_path / "badid.csv", index=False)
    with pytest.raises(DataError, match=r"badid\.csv: column 'objid' must hold integer ids; bad values \['gal-3'\]"):
        read_catalog(tmp_path / "badid.csv", _config())
    fits.PrimaryHDU(np.zeros((10, 10))).writeto(tmp_path / "nowcs.fits")
    with pytest.raises(DataError, match=r"nowcs\.fits has no celestial WCS"):
        make_cutouts([tmp_path / "nowcs.fits"], cat_path, tmp_path / "o", config=_config())
    with pytest.raises(DataError, match="catalogue not found"):
        make_cutouts(images, tmp_path / "nope.csv", tmp_path / "o", config=_config())
    off = cat.iloc[[6]]
    off.to_csv(tmp_path / "off.csv", index=False)
    with pytest.raises(DataError, match=r"no object of .*off\.csv could be cut out .*1 off image"):
        make_cutouts(images, tmp_path / "off.csv", tmp_path / "o2", config=_config())
    assert (tmp_path / "o2" / "cutout_report.csv").is_file()  # still reported


@pytest.mark.parametrize(
    "kw, message",
    [({"npix": 3}, "npix must be"), ({"size_factor": 0}, "size_factor must be positive"),
     ({"size_arcsec": -1.0}, "size_arcsec must be positive"), ({"id_col": ""}, "id_col must name")],
)
def test_config_validation(kw, message):
    with pytest.raises(DataError, match=message):
        CutoutConfig(**kw)


def test_cli_cutout(tmp_path, sky, capsys):
    from featuremass.cli import main

    images, cat_path, _ = sky
    rc = main(["cutout", "--images", *map(str, images), "--catalog", str(cat_path), "--out",
               str(tmp_path / "cli"), "--npix", str(NPIX), "--id-col", "objid", "--ra-col", "RA",
               "--dec-col", "DEC", "--target-col", "ml", "--size-col", "d25"])
    assert rc == 0
    assert "4 21x21 cutouts" in capsys.readouterr().out
