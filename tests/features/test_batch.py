"""Batch extraction: one row per galaxy, resume, atomic output, metadata, n_jobs."""

from __future__ import annotations

import json

import galsim
import numpy as np
import pandas as pd
import pytest

from featuremass import __version__
from featuremass.cli import main
from featuremass.errors import DataError, FeaturemassError
from featuremass.features import batch
from featuremass.features.batch import extract_features, read_feature_table
from featuremass.features.flags import MorphFlag
from featuremass.features.measure import FEATURE_COLUMNS
from featuremass.io.stretch import STRETCH_COLUMNS

NPIX = 40


def _stack(n=7, seed=0):
    rng = np.random.default_rng(seed)
    out = np.empty((n, NPIX, NPIX), dtype=np.float32)
    for i in range(n):
        gal = galsim.Sersic(n=rng.uniform(0.8, 3.0), half_light_radius=rng.uniform(2.5, 5.0), flux=5e3)
        gal = gal.shear(q=rng.uniform(0.5, 1.0), beta=rng.uniform(0, np.pi) * galsim.radians)
        out[i] = gal.drawImage(nx=NPIX, ny=NPIX, scale=1.0).array + rng.normal(0, 1.0, (NPIX, NPIX))
    return out


@pytest.fixture(scope="module")
def stack():
    imgs = _stack()
    imgs[1] = np.nan  # garbage: all NaN
    imgs[3] = 0.0  # blank
    imgs[5] = -5.0  # all negative
    return imgs


def test_one_row_per_galaxy_even_for_garbage(stack):
    ids = np.arange(100, 100 + len(stack))
    df = extract_features(stack, ids, chunk_size=3)
    assert list(df.columns) == ["galaxy_id", *FEATURE_COLUMNS, *STRETCH_COLUMNS, "flag"]
    assert df["galaxy_id"].tolist() == ids.tolist()
    assert df["galaxy_id"].dtype == np.int64 and df["flag"].dtype == np.int64
    assert all(df[c].dtype == np.float64 for c in FEATURE_COLUMNS)
    for bad in (1, 3, 5):
        assert df["flag"].iloc[bad] != 0
        assert df[list(FEATURE_COLUMNS)].iloc[bad].isna().all()
    assert np.isfinite(df["concentration"].iloc[0])


def test_an_exception_in_measure_never_stops_the_batch(stack, monkeypatch):
    def flaky(image, *, config=None):
        if np.any(image > 1e30):
            raise RuntimeError("boom")
        return {"concentration": 1.0, "flag": 0}

    monkeypatch.setattr(batch, "_measure_function", lambda backend: flaky)
    imgs = np.array(stack[:4])
    imgs[2, 0, 0] = 1e38
    df = extract_features(imgs)
    assert len(df) == 4
    assert df["flag"].iloc[2] == MorphFlag.BACKEND_ERROR
    assert np.isnan(df["concentration"].iloc[2]) and df["concentration"].iloc[0] == 1.0


def test_n_jobs_1_equals_n_jobs_2(stack, tmp_path):
    path = tmp_path / "imgs.npy"
    np.save(path, stack)
    mm = np.load(path, mmap_mode="r")
    one = extract_features(stack, chunk_size=3, n_jobs=1)
    two = extract_features(mm, chunk_size=3, n_jobs=2)  # workers memory-map the file
    pd.testing.assert_frame_equal(one, two)


def test_output_metadata_and_atomic_write(stack, tmp_path):
    out = tmp_path / "feat.parquet"
    df = extract_features(stack, chunk_size=3, out=out, input_description={"what": "test"})
    got, meta = read_feature_table(out)
    pd.testing.assert_frame_equal(got, df)
    assert meta["featuremass_version"] == __version__
    assert meta["backend"] == "native" and meta["scale"] == "auto"
    assert meta["n_galaxies"] == len(stack) and meta["input"] == {"what": "test"}
    assert "eta" in meta["parameters"]["config"] and "date" in meta
    assert meta["n_measured"] == len(stack) and meta["n_jobs"] == 1 and meta["seconds"] >= 0
    # No temporary files and no parts left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feat.parquet"]


class _Interrupt(BaseException):
    """Simulates a killed run (like KeyboardInterrupt, not caught per galaxy)."""


def _counting_measure(calls, interrupt_at=None):
    def measure(image, *, config=None):
        calls.append(1)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise _Interrupt
        return {"gini": float(np.nansum(image)), "flag": 0}

    return measure


def test_resume_skips_finished_chunks(stack, tmp_path, monkeypatch):
    out = tmp_path / "feat.parquet"
    calls = []
    monkeypatch.setattr(batch, "_measure_function", lambda backend: _counting_measure(calls, 5))
    with pytest.raises(_Interrupt):  # interrupted in the third chunk (chunk size 2)
        extract_features(stack, chunk_size=2, out=out, scale="linear")
    assert not out.exists()  # never a half-written final table
    parts_dir = tmp_path / "feat.parquet.parts"
    parts = sorted(parts_dir.glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-000000.parquet", "part-000001.parquet"]
    assert not list(tmp_path.glob(".*tmp*")) and not list(parts_dir.glob(".*tmp*"))

    # The matching parts are reused: only chunks 2 and 3 are measured.
    calls.clear()
    monkeypatch.setattr(batch, "_measure_function", lambda backend: _counting_measure(calls))
    df = extract_features(stack, chunk_size=2, out=out, scale="linear")
    assert len(calls) == len(stack) - 4
    assert read_feature_table(out)[1]["n_measured"] == len(stack) - 4
    assert len(df) == len(stack) and out.exists() and not parts_dir.exists()
    expected = [float(np.nansum(img)) for img in stack]
    np.testing.assert_allclose(df["gini"].to_numpy(), expected, rtol=1e-6)

    # Parts made with other parameters (another fingerprint) are not reused.
    calls.clear()
    monkeypatch.setattr(batch, "_measure_function", lambda backend: _counting_measure(calls, 5))
    with pytest.raises(_Interrupt):
        extract_features(stack, chunk_size=2, out=out, scale="linear")
    assert len(list(parts_dir.glob("part-*.parquet"))) == 2
    calls.clear()
    monkeypatch.setattr(batch, "_measure_function", lambda backend: _counting_measure(calls))
    extract_features(stack, chunk_size=2, out=out, scale="seed-log")
    assert len(calls) == len(stack)

    # resume=False recomputes everything.
    calls.clear()
    extract_features(stack, chunk_size=2, out=out, resume=False)
    assert len(calls) == len(stack)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": "log"}, "scale"),
        ({"backend": "sextractor"}, "backend"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"ids": [1, 1, 2]}, "duplicate"),
        ({"ids": [1, 2]}, "one id per image"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, match):
    with pytest.raises(FeaturemassError, match=match):
        extract_features(np.zeros((3, 10, 10)), **kwargs)


def test_read_feature_table_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_feature_table(tmp_path / "nope.parquet")


def test_cli_extract_images(stack, tmp_path, capsys):
    imgs, names = tmp_path / "imgs.npy", tmp_path / "names.npy"
    np.save(imgs, stack[:3])
    np.save(names, np.array([7, 8, 9], dtype=np.int64))
    out = tmp_path / "f.parquet"
    assert main(["extract", "--images", str(imgs), "--names", str(names), "--out", str(out)]) == 0
    df, meta = read_feature_table(out)
    assert df["galaxy_id"].tolist() == [7, 8, 9]
    assert meta["input"]["mode"] == "images"
    assert "3 galaxies" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["extract", "--out", "x.parquet"],
        ["extract", "--images", "a.npy", "--data", "d", "--out", "x.parquet"],
        ["extract", "--data", "d", "--out", "x.parquet"],
        ["extract", "--images", "a.npy", "--out", "x.csv"],
    ],
)
def test_cli_extract_rejects_bad_input_modes(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_metadata_is_json(stack, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "f.parquet"
    extract_features(stack[:2], out=out)
    raw = pq.read_schema(out).metadata[b"featuremass"]
    assert json.loads(raw)["n_galaxies"] == 2
