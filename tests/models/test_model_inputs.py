import numpy as np
import pandas as pd
import pytest
from scipy import stats

from featuremass.errors import DataError, SchemaError
from featuremass.models.inputs import (
    NOISE_COLUMN,
    align_columns,
    build_design,
    load_metadata,
    morphology_columns,
    noise_control,
    read_features,
)


def test_noise_control_is_standard_normal_and_pure():
    ids = np.arange(20_000, dtype=np.int64) * 13 + 587_000_000_000
    a = noise_control(ids, seed=3)
    np.testing.assert_array_equal(a, noise_control(ids, seed=3))
    assert not np.array_equal(a, noise_control(ids, seed=4))
    # Kolmogorov-Smirnov against N(0, 1)
    assert stats.kstest(a, "norm").pvalue > 0.01
    # the value of one galaxy does not depend on the others
    assert noise_control(ids[5:6], seed=3)[0] == a[5]


def test_align_columns_reorders_and_names_mismatches():
    X = pd.DataFrame({"a": [1.0], "b": [2.0], "c": [3.0]})
    out = align_columns(X[["c", "a", "b"]], ["a", "b", "c"])
    assert list(out.columns) == ["a", "b", "c"]
    with pytest.raises(SchemaError, match=r"missing column\(s\) \[d\]"):
        align_columns(X, ["a", "b", "c", "d"])
    with pytest.raises(SchemaError, match=r"unexpected column\(s\) \[c\]"):
        align_columns(X, ["a", "b"])


def test_input_sets_columns(synth):
    table, meta = synth.survey(20)
    image = build_design(table, "image", metadata=meta)
    assert list(image.X.columns) == synth.FEATURES
    dl = build_design(table, "image+dl", metadata=meta, noise=True)
    assert list(dl.X.columns) == synth.FEATURES + ["distance_Mpc", "L_g", NOISE_COLUMN]
    size = build_design(table, "image+dl+size", metadata=meta)
    assert list(size.X.columns)[-3:] == ["distance_Mpc", "L_g", "galsize_kpc"]
    extra = build_design(table, "extra", metadata=meta)
    assert list(extra.X.columns) == ["distance_Mpc", "L_g"]
    np.testing.assert_array_equal(extra.X["L_g"], meta["L_g"].to_numpy())
    np.testing.assert_array_equal(image.y, meta["M/L"].to_numpy())


def test_join_uses_ids_not_row_order(synth):
    table, meta = synth.survey(30)
    d = build_design(table, "image+dl", metadata=meta.iloc[::-1])
    np.testing.assert_array_equal(d.X["distance_Mpc"], meta["distance_Mpc"].to_numpy())


def test_missing_ids_named(synth):
    table, meta = synth.survey(10)
    meta.attrs["source"] = "meta.tsv"
    with pytest.raises(DataError, match=r"missing from meta.tsv.*10000007"):
        build_design(table, "image", metadata=meta.drop(index=[10_000_007]))


def test_extra_inputs_need_metadata(synth):
    table, _ = synth.survey(5)
    with pytest.raises(DataError, match="--data"):
        build_design(table, "image+dl")
    with pytest.raises(DataError, match="unknown input set"):
        build_design(table, "pixels")


def test_morphology_columns_skip_ids_flags_metadata(synth):
    table, _ = synth.survey(5)
    table["L_g"] = 1.0
    table[NOISE_COLUMN] = 0.0
    assert morphology_columns(table) == synth.FEATURES


def test_read_features_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_features(tmp_path / "nope.parquet")
    pd.DataFrame({"x": [1.0]}).to_parquet(tmp_path / "noid.parquet")
    with pytest.raises(DataError, match="galaxy_id"):
        read_features(tmp_path / "noid.parquet")
    pd.DataFrame({"galaxy_id": [1, 1], "x": [1.0, 2.0]}).to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"duplicate galaxy_id values \[1\]"):
        read_features(tmp_path / "dup.parquet")


def test_load_metadata(survey_dir):
    meta = load_metadata(survey_dir)
    assert meta.index.name == "SDSS_ID" and len(meta) == 1100
