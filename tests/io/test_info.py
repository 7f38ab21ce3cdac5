"""dataset_info / format_info on complete, partial and faulty datasets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from featuremass.errors import DataError
from featuremass.io import layout
from featuremass.io.info import dataset_info, format_info

NPIX = 8


def _write(root, split, ids, npix=NPIX, train_size=None):
    rng = np.random.default_rng(len(ids))
    layout.write_split(root, npix=npix, split=split, train_size=train_size,
                       images=rng.uniform(-1, 1, (len(ids), npix, npix)), ids=np.asarray(ids))


def _meta(root, ids, target):
    df = pd.DataFrame({"M/L": target, "L_g": 1e10, "distance_Mpc": 200.0, "galsize_kpc": 10.0},
                      index=pd.Index(np.asarray(ids, dtype=np.int64), name="SDSS_ID"))
    layout.write_metadata(root, df)


def test_partial_dataset_val_test_only(tmp_path):
    _write(tmp_path, "val", [1, 2, 3])
    _write(tmp_path, "test", [10, 11, 12, 13])
    target = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 8.0])
    _meta(tmp_path, [1, 2, 3, 10, 11, 12, 13], target)
    info = dataset_info(tmp_path)
    json.dumps(info)  # serialisable
    assert info["npix"] == [NPIX]
    assert info["train_sizes"] == {str(NPIX): []}
    assert info["splits"] == {"val": {str(NPIX): 3}, "test": {str(NPIX): 4}}
    assert info["problems"] == []
    t = info["metadata"]["target"]
    # Expected values straight from numpy on the values written.
    assert t["count"] == 7 and t["n_finite"] == 7
    assert t["mean"] == pytest.approx(target.mean(), rel=1e-5)
    assert t["std"] == pytest.approx(target.std(ddof=1), rel=1e-5)
    assert t["min"] == pytest.approx(0.5) and t["max"] == pytest.approx(8.0)
    assert t["p50"] == pytest.approx(2.0)
    text = format_info(info)
    assert "val_images.npy" in text and "test_images.npy" in text
    assert "train sizes at 8 px: none" in text
    assert "M/L: 7 finite of 7" in text and "problems: none" in text


def test_missing_ids_and_label_mismatches_are_reported(tmp_path):
    _write(tmp_path, "train", np.arange(100, 110), train_size="10")
    _write(tmp_path, "train", np.arange(100, 120), train_size="all")
    _write(tmp_path, "test", [5, 6, 6, 7])
    _write(tmp_path, "val", [1, 2], npix=12)
    ids = [i for i in range(100, 120) if i not in (103, 117)] + [1, 2, 5, 6]
    target = np.linspace(0.1, 4, len(ids))
    target[-1] = np.nan
    _meta(tmp_path, ids, target)
    layout.write_split_labels(tmp_path, "train", np.arange(100, 125))
    layout.write_split_labels(tmp_path, "test", [5, 6, 7])
    layout.write_split_labels(tmp_path, "val", [1, 2, 3, 4])
    info = dataset_info(tmp_path)
    assert info["npix"] == [NPIX, 12]
    assert info["train_sizes"][str(NPIX)] == ["10", "all"]
    by_name = {(r["npix"], r["split"], r["train_size"]): r for r in info["files"]}
    assert by_name[(NPIX, "train", "all")]["n_missing_from_metadata"] == 2
    assert by_name[(NPIX, "train", "all")]["missing_from_metadata"] == [103, 117]
    assert by_name[(NPIX, "train", "10")]["n_missing_from_metadata"] == 1
    assert by_name[(NPIX, "test", None)]["n_missing_from_metadata"] == 1
    assert by_name[(NPIX, "test", None)]["n_duplicate_ids"] == 1
    assert info["split_labels"]["train"]["n_not_in_images"] == 5
    assert info["split_labels"]["train"]["not_in_images"] == [120, 121, 122, 123, 124]
    assert info["split_labels"]["val"]["n_not_in_images"] == 2
    assert info["split_labels"]["test"]["n_not_in_images"] == 0
    assert info["metadata"]["target"]["n_finite"] == len(ids) - 1
    problems = "\n".join(info["problems"])
    assert "train_names_all.npy: 2 ids missing from the metadata, e.g. [103, 117]" in problems
    assert "test_names.npy: 1 duplicate ids [6]" in problems
    assert "1 rows with non-finite M/L: ids [6]" in problems
    text = format_info(info)
    assert "2 missing from metadata" in text
    assert "split/train_labels.txt: 25 ids, 5 not in any train image file" in text


def test_no_metadata_and_corrupt_file(tmp_path):
    _write(tmp_path, "val", [1, 2, 3])
    _write(tmp_path, "test", [4, 5])
    path = layout.SeedLayout(tmp_path).image_path(NPIX, "test")
    path.write_bytes(path.read_bytes()[:200])
    info = dataset_info(tmp_path)
    assert info["metadata"] is None
    assert any("no metadata file" in p for p in info["problems"])
    assert any("test_images.npy is truncated" in p for p in info["problems"])
    text = format_info(info)
    assert "metadata: none" in text and "unreadable" in text


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        dataset_info(tmp_path / "nope")
    with pytest.raises(DataError, match="not a dataset in the seed layout"):
        dataset_info(tmp_path)
