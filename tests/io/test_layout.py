"""The seed layout: exact file conventions, loader validation, memory mapping."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from featuremass.errors import DataError
from featuremass.io import layout
from featuremass.io.layout import SeedLayout, load_split

NPIX = 10


def _meta(ids, rng, target=None):
    n = len(ids)
    return pd.DataFrame(
        {
            "M/L": rng.uniform(0.2, 4.0, n) if target is None else target,
            "L_g": rng.uniform(1e9, 1e11, n),
            "distance_Mpc": rng.uniform(80, 400, n),
            "galsize_kpc": rng.uniform(3, 40, n),
        },
        index=pd.Index(np.asarray(ids, dtype=np.int64), name="SDSS_ID"),
    )


@pytest.fixture
def dataset(tmp_path):
    """A tiny complete dataset: train (all, 10000-style subset), val, test."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    ids = {
        "train": np.arange(1237665428637745000, 1237665428637745012, dtype=np.int64),
        "val": np.arange(500, 505, dtype=np.int64),
        "test": np.arange(900, 906, dtype=np.int64),
    }
    images = {s: rng.uniform(-1, 1, (len(v), NPIX, NPIX)).astype(np.float32) for s, v in ids.items()}
    for split in ids:
        layout.write_split(root, npix=NPIX, split=split, images=images[split], ids=ids[split])
        layout.write_split_labels(root, split, ids[split])
    layout.write_split(root, npix=NPIX, split="train", images=images["train"][:8],
                       ids=ids["train"][:8], train_size="8")
    meta = _meta(np.concatenate(list(ids.values())), rng)
    layout.write_metadata(root, meta)
    return root, ids, images, meta


def test_seed_conventions_on_disk(dataset):
    """What the seed's own code does: np.load and pd.read_csv(sep='\\t', index_col=0)."""
    root, ids, images, meta = dataset
    d = root / "images" / f"{NPIX}pix_npy"
    expected = {"train_images_all.npy", "train_names_all.npy", "train_images_8.npy",
                "train_names_8.npy", "val_images.npy", "val_names.npy", "test_images.npy",
                "test_names.npy"}
    assert {p.name for p in d.iterdir()} == expected
    for split, stem in [("train", "train_{}_all"), ("val", "val_{}"), ("test", "test_{}")]:
        img = np.load(d / f"{stem.format('images')}.npy")
        names = np.load(d / f"{stem.format('names')}.npy")
        assert img.dtype == np.float32 and img.shape == (len(ids[split]), NPIX, NPIX)
        assert names.dtype == np.int64
        np.testing.assert_array_equal(names, ids[split])
        np.testing.assert_array_equal(img, images[split])
        labels = np.loadtxt(root / "split" / f"{split}_labels.txt", dtype=np.int64)
        np.testing.assert_array_equal(labels, ids[split])
    df = pd.read_csv(root / "metadata" / "metadata.tsv", sep="\t", index_col=0)
    assert df.index.name == "SDSS_ID"
    assert list(df.columns) == ["M/L", "L_g", "distance_Mpc", "galsize_kpc"]
    assert df.index.dtype == np.int64
    np.testing.assert_array_equal(df.index.to_numpy(), meta.index.to_numpy())
    np.testing.assert_allclose(df.to_numpy(), meta.to_numpy(), rtol=1e-5)


def test_load_split_joins_metadata_and_memory_maps(dataset):
    root, ids, images, meta = dataset
    ds = load_split(root, npix=NPIX, split="val")
    assert isinstance(ds.images, np.memmap)
    assert len(ds) == len(ids["val"]) and ds.npix == NPIX and ds.split == "val"
    np.testing.assert_array_equal(ds.ids, ids["val"])
    np.testing.assert_array_equal(np.asarray(ds.images), images["val"])
    np.testing.assert_allclose(ds.target, meta.loc[ids["val"], "M/L"].to_numpy(), rtol=1e-5)
    assert list(ds.metadata.index) == list(ids["val"])
    assert ds.dropped == {}
    ds2 = load_split(root, npix=NPIX, split="test", mmap=False)
    assert not isinstance(ds2.images, np.memmap)


def test_train_sizes(dataset):
    root, ids, images, _ = dataset
    assert SeedLayout(root).available_train_sizes(NPIX) == ["8", "all"]
    assert len(load_split(root, npix=NPIX, split="train")) == 12  # default: the largest
    assert len(load_split(root, npix=NPIX, split="train", train_size="8")) == 8
    five = load_split(root, npix=NPIX, split="train", train_size=5)  # first rows of a larger file
    np.testing.assert_array_equal(five.ids, ids["train"][:5])
    with pytest.raises(DataError, match=r"train size 50 .*holds only 12"):
        load_split(root, npix=NPIX, split="train", train_size=50)
    with pytest.raises(DataError, match=r"'big' not in"):
        load_split(root, npix=NPIX, split="train", train_size="big")
    with pytest.raises(DataError, match="unknown split"):
        load_split(root, npix=NPIX, split="dev")


def test_missing_ids_in_metadata(dataset, caplog):
    root, ids, _, meta = dataset
    layout.write_metadata(root, meta.drop(index=[ids["val"][1], ids["val"][3]]))
    with pytest.raises(DataError, match=r"val_names\.npy: 2 galaxies with missing from metadata: ids \[501, 503\]"):
        load_split(root, npix=NPIX, split="val")
    with caplog.at_level(logging.WARNING):
        ds = load_split(root, npix=NPIX, split="val", drop_invalid=True)
    assert ds.dropped == {"missing from metadata": 2}
    assert ds.ids.tolist() == [500, 502, 504]
    assert "dropped 2 of 5" in caplog.text


def test_duplicate_ids(dataset, caplog):
    root, ids, images, _ = dataset
    dup = ids["test"].copy()
    dup[4] = dup[1]
    layout.write_split(root, npix=NPIX, split="test", images=images["test"], ids=dup)
    with pytest.raises(DataError, match=r"test_names\.npy: 1 galaxies with duplicate id: ids \[901\]"):
        load_split(root, npix=NPIX, split="test")
    with caplog.at_level(logging.WARNING):
        ds = load_split(root, npix=NPIX, split="test", drop_invalid=True)
    assert ds.dropped == {"duplicate id": 1}
    assert len(ds) == 5 and len(set(ds.ids.tolist())) == 5
    assert "dropped 1 of 6" in caplog.text


def test_non_finite_targets(dataset, caplog):
    root, ids, _, meta = dataset
    bad = meta.copy()
    bad.loc[ids["test"][0], "M/L"] = np.nan
    bad.loc[ids["test"][2], "M/L"] = np.inf
    layout.write_metadata(root, bad)
    with pytest.raises(DataError, match=r"metadata\.tsv: 2 galaxies with non-finite M/L: ids \[900, 902\]"):
        load_split(root, npix=NPIX, split="test")
    with caplog.at_level(logging.WARNING):
        ds = load_split(root, npix=NPIX, split="test", drop_invalid=True)
    assert ds.dropped == {"non-finite M/L": 2}
    assert np.isfinite(ds.target).all() and len(ds) == 4


def test_wrong_shapes_and_dtypes(dataset):
    root, ids, images, _ = dataset
    lay = SeedLayout(root)
    np.save(lay.image_path(NPIX, "val"), images["val"].astype(np.float64))
    with pytest.raises(DataError, match=r"val_images\.npy has dtype float64"):
        load_split(root, npix=NPIX, split="val")
    np.save(lay.image_path(NPIX, "val"), images["val"][:, :, :-1])
    with pytest.raises(DataError, match=r"val_images\.npy has shape \(5, 10, 9\)"):
        load_split(root, npix=NPIX, split="val")
    np.save(lay.image_path(NPIX, "val"), images["val"][:4])
    with pytest.raises(DataError, match=r"val_names\.npy has 5 ids but .*val_images\.npy has 4 images"):
        load_split(root, npix=NPIX, split="val")
    np.save(lay.image_path(NPIX, "val"), images["val"])
    np.save(lay.names_path(NPIX, "val"), ids["val"].astype(np.float64))
    with pytest.raises(DataError, match=r"val_names\.npy must be a 1-D integer array"):
        load_split(root, npix=NPIX, split="val")
    with pytest.raises(DataError, match="holds 10 px images but 12 px"):
        layout.validate_images(images["val"], lay.image_path(NPIX, "val"), 12)
    with pytest.raises(DataError, match=r"no train_images_\*\.npy"):
        load_split(root, npix=64, split="train")


def test_truncated_and_foreign_files(dataset):
    root, ids, images, _ = dataset
    lay = SeedLayout(root)
    path = lay.image_path(NPIX, "test")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"test_images\.npy is truncated"):
        load_split(root, npix=NPIX, split="test")
    with pytest.raises(DataError, match=r"test_images\.npy is truncated"):
        load_split(root, npix=NPIX, split="test", mmap=False)
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"test_images\.npy is empty"):
        load_split(root, npix=NPIX, split="test")
    path.write_bytes(b"SDSS_ID\n1\n2\n")
    with pytest.raises(DataError, match=r"test_images\.npy is not a \.npy file"):
        load_split(root, npix=NPIX, split="test")
    np.save(path, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"test_images\.npy holds Python objects"):
        load_split(root, npix=NPIX, split="test")
    lay.names_path(NPIX, "val").unlink()
    with pytest.raises(DataError, match=r"file not found: .*val_names\.npy"):
        load_split(root, npix=NPIX, split="val")


def test_bad_metadata(dataset):
    root, ids, _, meta = dataset
    path = SeedLayout(root).metadata_path
    meta.drop(columns=["L_g"]).to_csv(path, sep="\t")
    with pytest.raises(DataError, match=r"metadata\.tsv lacks column\(s\) \['L_g'\]"):
        layout.read_metadata(path)
    pd.concat([meta, meta.iloc[:2]]).to_csv(path, sep="\t")
    with pytest.raises(DataError, match=r"metadata\.tsv has duplicate SDSS_ID"):
        load_split(root, npix=NPIX, split="val")
    m = meta.copy()
    m.index = m.index.astype(str)
    m.index = ["abc"] + list(m.index[1:])
    m.to_csv(path, sep="\t")
    with pytest.raises(DataError, match=r"metadata\.tsv has non-integer SDSS_ID values \['abc'\]"):
        layout.read_metadata(path)
    path.unlink()
    with pytest.raises(DataError, match="metadata file not found"):
        load_split(root, npix=NPIX, split="val")


def test_split_labels(tmp_path):
    path = layout.write_split_labels(tmp_path, "train", np.array([3, 1237665428637745298]))
    assert path.read_text().split() == ["3", "1237665428637745298"]
    np.testing.assert_array_equal(layout.read_split_labels(path), [3, 1237665428637745298])
    path.write_text("1\nx\n")
    with pytest.raises(DataError, match=r"train_labels\.txt holds a non-integer id"):
        layout.read_split_labels(path)
    path.write_text("\n")  # an empty split: no ids, and no loadtxt warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = layout.read_split_labels(path)
    assert empty.dtype == np.int64 and empty.size == 0


def test_write_split_validates(tmp_path):
    with pytest.raises(DataError, match="3 ids for 2 images"):
        layout.write_split(tmp_path, npix=4, split="val", images=np.zeros((2, 4, 4)), ids=[1, 2, 3])
    with pytest.raises(DataError, match="expected \\(n, npix, npix\\)"):
        layout.write_split(tmp_path, npix=4, split="val", images=np.zeros((2, 4, 5)), ids=[1, 2])
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").rglob("*.npy"))


def test_stream_writer_is_atomic(tmp_path):
    path = tmp_path / "big.npy"
    with layout.NpyStreamWriter(path, (4, 3, 3)) as out:
        out[:2] = 1.0
        out[2:] = 2.0
    np.testing.assert_array_equal(np.load(path)[:, 0, 0], [1, 1, 2, 2])
    with pytest.raises(RuntimeError), layout.NpyStreamWriter(tmp_path / "fail.npy", (2, 3, 3)) as out:
        out[0] = 1.0
        raise RuntimeError("interrupted")
    assert not (tmp_path / "fail.npy").exists()
    assert not list(tmp_path.glob("*.partial"))


def test_other_formats_convert_to_the_layout(tmp_path, dataset):
    """Images read from any format can be written in the seed layout and loaded back."""
    from featuremass.io import formats

    root, ids, images, _ = dataset
    formats.write_hdf5(tmp_path / "val.h5", images["val"], ids["val"])
    img, got_ids = formats.read_images(tmp_path / "val.h5")
    layout.write_split(root, npix=NPIX, split="val", images=img, ids=got_ids)
    ds = load_split(root, npix=NPIX, split="val")
    np.testing.assert_array_equal(np.asarray(ds.images), images["val"])
