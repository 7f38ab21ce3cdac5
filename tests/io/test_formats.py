"""PNG/JPG folders, HDF5 and FITS: round trips and clear errors for bad content."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from featuremass.errors import DataError
from featuremass.io import formats

NPIX = 12


@pytest.fixture
def stack():
    rng = np.random.default_rng(42)
    images = rng.uniform(-1, 1, size=(4, NPIX, NPIX)).astype(np.float32)
    images[:, 0, 0] = -1.0
    images[:, 0, 1] = 1.0
    ids = np.array([1237665428637745298, 1237657772313215265, 7, 12], dtype=np.int64)
    return images, ids


def _sorted(images, ids):
    order = np.argsort(ids)
    return images[order], ids[order]


def test_uint8_mapping_is_the_seed_convention():
    # v / 127.5 - 1: 0 -> -1, 255 -> 1, and round trip of every level is exact.
    levels = np.arange(256, dtype=np.uint8)
    values = formats.from_uint8(levels)
    assert values[0] == -1.0 and values[-1] == 1.0
    np.testing.assert_allclose(values, levels / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(formats.to_uint8(values), levels)


def test_png_round_trip(tmp_path, stack):
    images, ids = stack
    written = formats.write_image_folder(tmp_path / "png", images, ids, fmt="png")
    assert sorted(p.name for p in written) == sorted(f"{i}.png" for i in ids)
    got, got_ids = formats.read_image_folder(tmp_path / "png")
    exp, exp_ids = _sorted(images, ids)
    np.testing.assert_array_equal(got_ids, exp_ids)
    assert got.dtype == np.float32 and got_ids.dtype == np.int64
    # 8-bit quantisation: half a level of 2/255.
    np.testing.assert_allclose(got, exp, atol=1.0 / 255 + 1e-6)
    assert formats.detect_format(tmp_path / "png") == "png"


def test_jpg_round_trip_is_lossy_but_close(tmp_path):
    # A smooth image (JPEG is meant for those): a Gaussian blob.
    yy, xx = np.mgrid[:32, :32]
    blob = np.exp(-((xx - 15.5) ** 2 + (yy - 15.5) ** 2) / (2 * 6.0**2))
    images = (2 * blob - 1)[None].astype(np.float32)
    formats.write_image_folder(tmp_path, images, np.array([5]), fmt="jpg", quality=95)
    got, ids = formats.read_images(tmp_path)
    assert ids.tolist() == [5]
    assert np.abs(got - images).max() < 0.05
    assert np.abs(got - images).mean() < 0.01


def test_hdf5_round_trip(tmp_path, stack):
    images, ids = stack
    path = formats.write_hdf5(tmp_path / "cut.h5", images, ids)
    with h5py.File(path) as fh:
        assert set(fh) == {"data", "sdss_id"}
    got, got_ids = formats.read_images(path)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(got_ids, ids)


def test_fits_cube_round_trip(tmp_path, stack):
    images, ids = stack
    path = formats.write_fits(tmp_path / "cube.fits", images, ids)
    got, got_ids = formats.read_images(path)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(got_ids, ids)


def test_fits_folder_round_trip_ids_from_header_or_name(tmp_path, stack):
    images, ids = stack
    formats.write_fits_folder(tmp_path, images, ids)
    got, got_ids = formats.read_fits(tmp_path)
    exp, exp_ids = _sorted(images, ids)
    np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(got_ids, exp_ids)
    # Without the header keyword the file name gives the id.
    other = tmp_path / "byname"
    other.mkdir()
    fits.PrimaryHDU(images[0]).writeto(other / "99.fits")
    got, got_ids = formats.read_fits(other)
    assert got_ids.tolist() == [99]


def test_fits_stretch_option(tmp_path):
    rng = np.random.default_rng(1)
    linear = rng.normal(0, 1, (2, 20, 20)).astype(np.float32)
    linear[:, 8:12, 8:12] += 100
    path = formats.write_fits(tmp_path / "lin.fits", linear, np.array([1, 2]))
    got, _ = formats.read_fits(path, stretch=True)
    assert got.min() == -1.0 and got.max() == 1.0


# --------------------------------------------------------------------------- bad content


def test_png_non_integer_name(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "galaxy_a.png")
    with pytest.raises(DataError, match=r"galaxy_a\.png.*integer galaxy id"):
        formats.read_image_folder(tmp_path)


def test_png_mixed_sizes(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "1.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "2.png")
    with pytest.raises(DataError, match=r"mixes image sizes.*2\.png"):
        formats.read_image_folder(tmp_path)


def test_png_colour_and_16_bit_refused(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "1.png")
    with pytest.raises(DataError, match=r"1\.png.*colour"):
        formats.read_image_folder(tmp_path)
    (tmp_path / "1.png").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "2.png")
    with pytest.raises(DataError, match=r"2\.png.*mode"):
        formats.read_image_folder(tmp_path)


def test_png_grey_saved_as_rgb_is_accepted(tmp_path):
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(tmp_path / "3.png")
    got, ids = formats.read_image_folder(tmp_path)
    np.testing.assert_allclose(got[0], grey / 127.5 - 1, atol=1e-6)


def test_png_unreadable_and_duplicate(tmp_path):
    (tmp_path / "4.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot read image .*4\.png"):
        formats.read_image_folder(tmp_path)
    (tmp_path / "4.png").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "4.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "4.jpg")
    with pytest.raises(DataError, match=r"several files for ids \[4\]"):
        formats.read_image_folder(tmp_path)


def test_hdf5_bad_content(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as fh:
        fh["data"] = np.zeros((3, 4, 5), np.float32)
        fh["sdss_id"] = np.arange(3)
    with pytest.raises(DataError, match=r"bad\.h5:data has shape \(3, 4, 5\)"):
        formats.read_hdf5(path)
    with h5py.File(path, "w") as fh:
        fh["data"] = np.zeros((3, 4, 4), np.float32)
        fh["sdss_id"] = np.arange(2)
    with pytest.raises(DataError, match=r"bad\.h5: 2 ids"):
        formats.read_hdf5(path)
    with h5py.File(path, "w") as fh:
        fh["data"] = np.zeros((3, 4, 4), np.float32)
        fh["sdss_id"] = np.arange(3) + 0.5
    with pytest.raises(DataError, match=r"bad\.h5:sdss_id must be a 1-D integer"):
        formats.read_hdf5(path)
    with h5py.File(path, "w") as fh:
        fh["images"] = np.zeros((3, 4, 4), np.float32)
    with pytest.raises(DataError, match=r"bad\.h5 has no dataset 'data'"):
        formats.read_hdf5(path)


def test_hdf5_truncated(tmp_path, stack):
    path = formats.write_hdf5(tmp_path / "t.h5", *stack)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match=r"t\.h5"):
        formats.read_hdf5(path)


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_fits_bad_content(tmp_path, stack):
    images, ids = stack
    fits.PrimaryHDU(images).writeto(tmp_path / "noids.fits")
    with pytest.raises(DataError, match=r"noids\.fits has no 'SDSS_ID' table"):
        formats.read_fits(tmp_path / "noids.fits")
    fits.PrimaryHDU(images[:, :, :5]).writeto(tmp_path / "rect.fits")
    with pytest.raises(DataError, match=r"rect\.fits image HDU has shape"):
        formats.read_fits(tmp_path / "rect.fits")
    path = formats.write_fits(tmp_path / "trunc.fits", images, ids)
    raw = path.read_bytes()
    path.write_bytes(raw[:3000])
    with pytest.raises(DataError, match=r"trunc\.fits"):
        formats.read_fits(path)
    folder = tmp_path / "folder"
    folder.mkdir()
    fits.PrimaryHDU(images[0]).writeto(folder / "abc.fits")
    with pytest.raises(DataError, match=r"abc\.fits.*integer galaxy id"):
        formats.read_fits(folder)


def test_writers_refuse_bad_input(tmp_path):
    with pytest.raises(DataError, match="duplicate ids"):
        formats.write_hdf5(tmp_path / "x.h5", np.zeros((2, 4, 4)), np.array([1, 1]))
    with pytest.raises(DataError, match=r"shape \(2, 4, 5\)"):
        formats.write_fits(tmp_path / "x.fits", np.zeros((2, 4, 5)), np.array([1, 2]))
    with pytest.raises(DataError, match="unknown raster format"):
        formats.write_image_folder(tmp_path, np.zeros((1, 4, 4)), np.array([1]), fmt="gif")
    with pytest.raises(DataError, match="cannot tell the image format"):
        formats.detect_format(tmp_path / "x.gif")
