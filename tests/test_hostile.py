"""Hostile inputs and faults: each ends in one clear message (or a flagged row), never a
traceback, a native crash or a silently wrong output, and no input or earlier output changes.

Each case of :data:`CASES` prepares a hostile situation in its own folder, runs the CLI
in-process (``featuremass.cli.main``), and the runner checks the exit code, the message,
that every file that existed before is byte-for-byte unchanged, and that no temporary
file is left behind. Cases where a native crash is the risk also run in a subprocess.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from featuremass._version import FEATURE_ENGINE_VERSION
from featuremass.cli import main
from featuremass.features.batch import METADATA_KEY
from featuremass.features.flags import MorphFlag
from featuremass.features.measure import FEATURE_COLUMNS, POSITION_COLUMNS, measure_galaxy
from featuremass.io.layout import output_lock, write_metadata, write_split
from featuremass.models.store import sha256_file

FEATURES = [c for c in FEATURE_COLUMNS if c not in POSITION_COLUMNS]
N_TRAIN, N_TEST = 160, 40


# --------------------------------------------------------------------------- the shared world


def write_table(path: Path, df: pd.DataFrame, *, scale="seed-log", engine=FEATURE_ENGINE_VERSION,
                record=True) -> Path:
    """A feature table as ``featuremass extract`` writes it (Parquet + featuremass metadata)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if record:
        meta = {"feature_engine_version": engine, "scale": scale,
                "input": {"mode": "images", "images": "stack.npy", "names": None}}
        if engine is None:
            del meta["feature_engine_version"]
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               METADATA_KEY: json.dumps(meta).encode()})
    pq.write_table(table, path)
    return path


def synthetic(n, seed, offset):
    rng = np.random.default_rng(seed)
    ids = offset + np.arange(n, dtype=np.int64)
    df = pd.DataFrame({"galaxy_id": ids, **{c: rng.normal(size=n) for c in FEATURES},
                       "flag": np.zeros(n, dtype=np.int64)})
    ml = 1.5 * 10 ** (0.2 * np.tanh(df[FEATURES[0]].to_numpy()) + 0.05 * rng.normal(size=n))
    meta = pd.DataFrame({"M/L": ml, "L_g": 10 ** rng.uniform(9, 11, n),
                         "distance_Mpc": rng.uniform(50, 300, n), "galsize_kpc": rng.uniform(2, 20, n)},
                        index=pd.Index(ids, name="SDSS_ID"))
    return df, meta


def run(capsys, *argv):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def snapshot(*roots) -> dict:
    files = {}
    for root in roots:
        for p in Path(root).rglob("*"):
            if p.is_file() and not p.is_symlink():
                files[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset folder, train/test feature tables and a small trained LightGBM model."""
    root = tmp_path_factory.mktemp("world")
    train, meta_tr = synthetic(N_TRAIN, 0, 1_000)
    test, meta_te = synthetic(N_TEST, 1, 5_000)
    data = root / "data"
    write_metadata(data, pd.concat([meta_tr, meta_te]))
    rng = np.random.default_rng(2)
    stamps = np.clip(rng.normal(0, 0.05, size=(2, 16, 16)), -1, 1).astype(np.float32)
    write_split(data, npix=16, split="test", images=stamps, ids=test["galaxy_id"][:2].to_numpy())
    w = SimpleNamespace(root=root, data=data, train=write_table(root / "train.parquet", train),
                        test=write_table(root / "test.parquet", test), test_df=test,
                        meta=pd.concat([meta_tr, meta_te]), model=root / "model")
    rc = main(["train", "--features", str(w.train), "--data", str(data), "--out", str(w.model),
               "--n-estimators", "20", "--learning-rate", "0.3", "-j", "1"])
    assert rc == 0
    return w


class Ctx:
    """What a case gets: its own folder, the world, and helpers to damage copies."""

    def __init__(self, tmp: Path, world, monkeypatch):
        self.tmp, self.w, self.monkeypatch = tmp, world, monkeypatch

    def model(self) -> Path:
        dst = self.tmp / "model"
        shutil.copytree(self.w.model, dst)
        return dst

    def edit_sidecar(self, model: Path, change, *, rehash=False):
        side = json.loads((model / "model.json").read_text())
        change(side)
        if rehash:
            side["files"] = {k: sha256_file(model / k) for k in side["files"] if (model / k).is_file()}
        (model / "model.json").write_text(json.dumps(side))

    def predict(self, model, *extra):
        return ["predict", "--model", model, "--features", self.w.test, "--out", self.tmp / "p.csv", *extra]

    def table(self, name, df=None, **kw) -> Path:
        return write_table(self.tmp / name, self.w.test_df.copy() if df is None else df, **kw)

    def metadata(self, change) -> Path:
        data = self.tmp / "data"
        meta = self.w.meta.copy()
        change(meta)
        meta.to_csv((data / "metadata").mkdir(parents=True) or data / "metadata" / "metadata.tsv",
                    sep="\t")
        return data

    def stack(self, name, arr) -> Path:
        np.save(self.tmp / name, arr, allow_pickle=True)
        return self.tmp / name

    def train(self, table, *extra, data=None):
        return ["train", "--features", table, "--data", data or self.w.data, "--out", self.tmp / "m2",
                "--n-estimators", "5", "-j", "1", *extra]


CASES = {}


def case(name, rc=2, match=""):
    def register(fn):
        CASES[name] = (fn, rc, match)
        return fn
    return register


# --------------------------------------------------------------------------- damaged models


def _truncate(path: Path, frac: float):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * frac)])


@case("model-txt-truncated", match=r"model\.txt does not match its checksum")
def _(c):
    m = c.model()
    _truncate(m / "model.txt", 0.5)
    return c.predict(m)


@case("model-txt-truncated-99pct-checksum-updated", match=r"model\.txt is truncated")
def _(c):
    m = c.model()
    _truncate(m / "model.txt", 0.99)
    c.edit_sidecar(m, lambda s: None, rehash=True)
    return c.predict(m)


@case("model-txt-garbage-checksum-updated", match=r"model\.txt is truncated|cannot read LightGBM")
def _(c):
    m = c.model()
    (m / "model.txt").write_text("tree\nend of trees\nfoo\nend of parameters\npandas_categorical:null\n")
    c.edit_sidecar(m, lambda s: None, rehash=True)
    return c.predict(m)


@case("quantile-file-altered", match=r"quantile_lo68\.txt does not match its checksum")
def _(c):
    m = c.model()
    with open(m / "quantile_lo68.txt", "r+b") as fh:
        fh.seek(100)
        fh.write(b"9")
    return c.predict(m)


@case("quantile-file-missing", match=r"quantile_hi95\.txt is missing")
def _(c):
    m = c.model()
    (m / "quantile_hi95.txt").unlink()
    return c.predict(m)


@case("quantile-path-outside-folder", match="outside the model folder")
def _(c):
    m = c.model()
    shutil.copy(m / "quantile_lo68.txt", c.tmp / "evil.txt")

    def change(s):
        s["conformal"]["quantile_models"]["lo68"]["file"] = "../evil.txt"
        s["files"]["../evil.txt"] = sha256_file(c.tmp / "evil.txt")
    c.edit_sidecar(m, change)
    return c.predict(m)


@case("quantile-path-absolute", match="outside the model folder")
def _(c):
    m = c.model()

    def change(s):
        s["conformal"]["quantile_models"]["lo68"]["file"] = str(m / "quantile_lo68.txt")
    c.edit_sidecar(m, change)
    return c.predict(m)


@case("quantile-path-unlisted", match="not among the model's checksummed files")
def _(c):
    m = c.model()
    shutil.copy(m / "quantile_lo68.txt", m / "extra.txt")
    c.edit_sidecar(m, lambda s: s["conformal"]["quantile_models"]["lo68"].update(file="extra.txt"))
    return c.predict(m)


@case("model-file-symlink-out", match="leads outside the model folder")
def _(c):
    m = c.model()
    shutil.move(m / "model.txt", c.tmp / "outside.txt")
    (m / "model.txt").symlink_to(c.tmp / "outside.txt")
    return c.predict(m)


@case("sidecar-feature-names-wrong-type", match="field 'feature_names' must be a list")
def _(c):
    m = c.model()
    c.edit_sidecar(m, lambda s: s.update(feature_names="gini"))
    return c.predict(m)


@case("sidecar-best-iteration-wrong-type", match="field 'best_iteration' must be an integer")
def _(c):
    m = c.model()
    c.edit_sidecar(m, lambda s: s.update(best_iteration="12"))
    return c.predict(m)


@case("sidecar-noise-control-wrong-type", match="field 'noise_control' must be an object or null")
def _(c):
    m = c.model()
    c.edit_sidecar(m, lambda s: s.update(noise_control=[1, 2]))
    return c.predict(m)


@case("sidecar-conformal-malformed", match=r"model\.json conformal: field .corrections. is missing")
def _(c):
    m = c.model()
    c.edit_sidecar(m, lambda s: s["conformal"].pop("corrections"))
    return c.predict(m)


@case("sidecar-files-wrong-type", match="field 'files' must be an object")
def _(c):
    m = c.model()
    c.edit_sidecar(m, lambda s: s.update(files=["model.txt"]))
    return c.predict(m)


@case("sidecar-not-json", match="model.json is not valid JSON")
def _(c):
    m = c.model()
    (m / "model.json").write_text('{"kind": "lgbm",')
    return c.predict(m)


@case("sidecar-not-an-object", match="expected a JSON object")
def _(c):
    m = c.model()
    (m / "model.json").write_text("[1, 2]")
    return c.predict(m)


@case("sidecar-old-schema", match="older featuremass without checksums")
def _(c):
    m = c.model()
    c.edit_sidecar(m, lambda s: s.update(schema_version=1))
    return c.predict(m)


@case("sidecar-unknown-kind", match="model kind 'xgboost' is not one of")
def _(c):
    m = c.model()
    c.edit_sidecar(m, lambda s: s.update(kind="xgboost"))
    return c.predict(m)


@case("model-folder-missing", match="model directory not found")
def _(c):
    return c.predict(c.tmp / "nothing")


@case("model-half-saved-no-sidecar", match=r"no model\.json")
def _(c):
    m = c.model()
    (m / "model.json").unlink()
    return c.predict(m)


# --------------------------------------------------------------------------- outputs


@case("predict-out-is-the-input", match="is the input")
def _(c):
    t = c.table("t.parquet")
    return ["predict", "--model", c.w.model, "--features", t, "--out", t, "--overwrite"]


@case("predict-out-symlink-to-input", match="is the input")
def _(c):
    t = c.table("t.parquet")
    (c.tmp / "link.parquet").symlink_to(t)
    return ["predict", "--model", c.w.model, "--features", t, "--out", c.tmp / "link.parquet",
            "--overwrite"]


@case("predict-out-exists", match=r"already exists; pass --overwrite")
def _(c):
    (c.tmp / "p.csv").write_text("earlier output\n")
    return c.predict(c.w.model)


@case("predict-out-is-a-directory", match="is an existing directory")
def _(c):
    (c.tmp / "p.csv").mkdir()
    (c.tmp / "p.csv" / "keep.txt").write_text("x")
    return c.predict(c.w.model, "--overwrite")


@case("predict-out-parent-is-a-file", match="is not a directory")
def _(c):
    (c.tmp / "file").write_text("x")
    return ["predict", "--model", c.w.model, "--features", c.w.test, "--out", c.tmp / "file" / "p.csv"]


@case("predict-out-locked-by-another-writer", match=r"another featuremass process \(pid")
def _(c):
    lock = output_lock(c.tmp / "p.csv")
    lock.__enter__()
    c.monkeypatch.setattr(c, "cleanup", lambda: lock.__exit__(None, None, None), raising=False)
    return c.predict(c.w.model)


@case("predict-permission-denied", match=r"cannot write .*/p\.csv: Permission denied; nothing was written")
def _(c):
    def denied(self, path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    c.monkeypatch.setattr(pd.DataFrame, "to_csv", denied)
    return c.predict(c.w.model)


@case("predict-disk-full", match=r"cannot write .*/p\.csv: No space left on device")
def _(c):
    (c.tmp / "p.csv").write_text("earlier output\n")

    def full(self, path, *a, **k):
        Path(path).write_text("galaxy_id,ml_pred\n1,")  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    c.monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    return c.predict(c.w.model, "--overwrite")


@case("extract-out-exists", match="already exists; pass --overwrite")
def _(c):
    imgs = c.stack("s.npy", np.zeros((1, 8, 8), np.float32))
    (c.tmp / "f.parquet").write_bytes(b"earlier table")
    return ["extract", "--images", imgs, "--out", c.tmp / "f.parquet"]


@case("extract-out-links-to-images", match="is the input")
def _(c):
    imgs = c.stack("s.npy", np.zeros((1, 8, 8), np.float32))
    (c.tmp / "f.parquet").symlink_to(imgs)
    return ["extract", "--images", imgs, "--out", c.tmp / "f.parquet", "--overwrite"]


@case("extract-concurrent-writer", match=r"another featuremass process \(pid")
def _(c):
    imgs = c.stack("s.npy", np.zeros((1, 8, 8), np.float32))
    (c.tmp / ".f.parquet.lock").write_text(f"{os.getpid()}\n")
    return ["extract", "--images", imgs, "--out", c.tmp / "f.parquet"]


@case("train-out-existing-model", match="already exists; pass --overwrite")
def _(c):
    m = c.model()
    return ["train", "--features", c.w.train, "--data", c.w.data, "--out", m]


@case("train-out-is-a-file", match="exists and is not a folder")
def _(c):
    (c.tmp / "m").write_text("x")
    return ["train", "--features", c.w.train, "--data", c.w.data, "--out", c.tmp / "m", "--overwrite"]


@case("train-out-foreign-folder", match="not a featuremass model")
def _(c):
    (c.tmp / "m").mkdir()
    (c.tmp / "m" / "thesis.tex").write_text("x")
    return ["train", "--features", c.w.train, "--data", c.w.data, "--out", c.tmp / "m", "--overwrite"]


@case("importance-out-in-use", match="already exists; pass --overwrite")
def _(c):
    (c.tmp / "imp").mkdir()
    (c.tmp / "imp" / "notes.txt").write_text("x")
    return ["importance", "--model", c.w.model, "--features", c.w.test, "--data", c.w.data,
            "--out", c.tmp / "imp"]


def _deny_mkdir(c):
    real = Path.mkdir

    def denied(self, *a, **k):
        if str(self).startswith(str(c.tmp / "locked")):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **k)
    c.monkeypatch.setattr(Path, "mkdir", denied)


@case("extract-unwritable-folder", match=r"Permission denied: .*locked")
def _(c):
    imgs = c.stack("s.npy", np.zeros((1, 8, 8), np.float32))
    (c.tmp / "locked").mkdir()
    _deny_mkdir(c)
    return ["extract", "--images", imgs, "--out", c.tmp / "locked" / "f.parquet"]


@case("train-unwritable-folder", match=r"Permission denied: .*locked")
def _(c):
    _deny_mkdir(c)
    return ["train", "--features", c.w.train, "--data", c.w.data, "--out", c.tmp / "locked" / "m",
            "--n-estimators", "5", "-j", "1"]


@case("importance-unwritable-folder", match=r"Permission denied: .*locked")
def _(c):
    _deny_mkdir(c)
    return ["importance", "--model", c.w.model, "--features", c.w.test, "--data", c.w.data,
            "--out", c.tmp / "locked" / "imp", "--n-repeats", "1"]


@case("report-out-is-a-directory", match=r"is an existing directory")
def _(c):
    (c.tmp / "run").mkdir()
    (c.tmp / "report.html").mkdir()
    return ["report", "--run", c.tmp / "run", "--out", c.tmp / "report.html"]


@case("lock-of-a-live-process", match=r"another featuremass process \(pid \d+\) is writing")
def _(c):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    c.cleanup = lambda: (proc.kill(), proc.wait())
    (c.tmp / ".p.csv.lock").write_text(f"{proc.pid}\n")
    return c.predict(c.w.model)


@case("stale-lock-taken-over", rc=0, match=r"p\.csv: 40 galaxies")
def _(c):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    (c.tmp / ".p.csv.lock").write_text(f"{dead.pid}\n")
    c.expect_log = "removing the stale lock"
    c.allow_removed = [str(c.tmp / ".p.csv.lock")]
    return c.predict(c.w.model)


# --------------------------------------------------------------------------- metadata


@case("metadata-ml-not-a-number", match=r"'M/L' holds a non-numeric value 'abc' on line 4")
def _(c):
    def change(m):
        m["M/L"] = m["M/L"].astype(object)
        m.iloc[2, 0] = "abc"
    return c.train(c.w.train, data=c.metadata(change))


@case("metadata-ml-not-positive", match=r"non-positive M/L: ids \[1000, 1001\].*--drop-invalid")
def _(c):
    return c.train(c.w.train, data=c.metadata(lambda m: m.iloc.__setitem__((slice(0, 2), 0), [0.0, -1.0])))


@case("metadata-ml-nan-in-split", match=r"non-finite M/L.*pass --drop-invalid")
def _(c):
    data = c.tmp / "data"
    shutil.copytree(c.w.data, data)
    meta = c.w.meta.copy()
    meta.loc[int(c.w.test_df["galaxy_id"][0]), "M/L"] = np.nan
    meta.to_csv(data / "metadata" / "metadata.tsv", sep="\t")
    return ["extract", "--data", data, "--npix", 16, "--split", "test", "--out", c.tmp / "f.parquet"]


@case("metadata-ml-not-positive-dropped", rc=0, match="")
def _(c):
    c.expect_log = "dropped 2 of 160 galaxies"
    return c.train(c.w.train, "--drop-invalid",
                   data=c.metadata(lambda m: m.iloc.__setitem__((slice(0, 2), 0), [0.0, -1.0])))


@case("data-info-ml-not-a-number", rc=0, match="non-numeric value 'abc'")
def _(c):
    def change(m):
        m["M/L"] = m["M/L"].astype(object)
        m.iloc[5, 0] = "abc"
    return ["data", "info", "--data", c.metadata(change)]


@case("data-info-ml-not-positive", rc=0, match=r"2 rows with M/L <= 0")
def _(c):
    return ["data", "info", "--data",
            c.metadata(lambda m: m.iloc.__setitem__((slice(0, 2), 0), [0.0, -3.0]))]


@case("evaluate-says-it-floors-log-ml", rc=0, match=r"log10 metrics floor M/L at 0.001: \d+ predicted and 3 true")
def _(c):
    data = c.metadata(lambda m: m.loc.__setitem__(
        (c.w.test_df["galaxy_id"][:3].to_numpy(), "M/L"), 1e-5))
    return ["evaluate", "--model", c.w.model, "--features", c.w.test, "--data", data, "--n-boot", 20]


# --------------------------------------------------------------------------- images and ids


@case("images-complex", match="holds complex values")
def _(c):
    return ["extract", "--images", c.stack("c.npy", np.ones((2, 8, 8), np.complex64)),
            "--out", c.tmp / "f.parquet"]


@case("images-boolean", match="holds boolean values")
def _(c):
    return ["extract", "--images", c.stack("b.npy", np.ones((2, 8, 8), bool)),
            "--out", c.tmp / "f.parquet"]


@case("images-text", match="holds text values")
def _(c):
    return ["extract", "--images", c.stack("t.npy", np.full((2, 8, 8), "a")),
            "--out", c.tmp / "f.parquet"]


@case("images-pickled-objects", match="Python objects")
def _(c):
    return ["extract", "--images", c.stack("o.npy", np.array([None, 1], dtype=object)),
            "--out", c.tmp / "f.parquet"]


@case("images-not-npy", match="not a .npy file")
def _(c):
    (c.tmp / "x.npy").write_text("hello")
    return ["extract", "--images", c.tmp / "x.npy", "--out", c.tmp / "f.parquet"]


@case("images-2d", match=r"expected \(n, ny, nx\)")
def _(c):
    return ["extract", "--images", c.stack("s.npy", np.zeros((8, 8), np.float32)),
            "--out", c.tmp / "f.parquet"]


@case("ids-beyond-int64", match=r"ids of 2\*\*63 or more, beyond int64: \[9223372036854775808\]")
def _(c):
    imgs = c.stack("s.npy", np.zeros((2, 8, 8), np.float32))
    names = c.stack("n.npy", np.array([1, 2**63], dtype=np.uint64))
    return ["extract", "--images", imgs, "--names", names, "--out", c.tmp / "f.parquet"]


@case("ids-wrong-count", match="must hold 2 integer ids")
def _(c):
    imgs = c.stack("s.npy", np.zeros((2, 8, 8), np.float32))
    names = c.stack("n.npy", np.arange(3))
    return ["extract", "--images", imgs, "--names", names, "--out", c.tmp / "f.parquet"]


@case("seed-log-images-out-of-range", match=r"far outside the seed-log stretch.*--scale linear")
def _(c):
    imgs = c.stack("s.npy", np.full((2, 8, 8), 250.0, np.float32))
    return ["extract", "--images", imgs, "--scale", "seed-log", "--out", c.tmp / "f.parquet"]


@case("predict-images-other-scale", match=r"trained on features measured with --scale seed-log")
def _(c):
    imgs = c.stack("s.npy", np.zeros((2, 8, 8), np.float32))
    return ["predict", "--model", c.w.model, "--images", imgs, "--scale", "linear",
            "--out", c.tmp / "p.csv"]


# --------------------------------------------------------------------------- CLI numbers


@case("n-estimators-zero", match=r"--n-estimators: must be an integer >= 1, got 0")
def _(c):
    return c.train(c.w.train, "--n-estimators", "0")


@case("n-estimators-not-a-number", match=r"--n-estimators: 'ten' is not an integer")
def _(c):
    return c.train(c.w.train, "--n-estimators", "ten")


@case("cv-one-fold", match=r"--cv: 1 fold is no cross-validation")
def _(c):
    return c.train(c.w.train, "--cv", "1")


@case("learning-rate-negative", match=r"--learning-rate: must be a finite number > 0, got -0.1")
def _(c):
    return c.train(c.w.train, "--learning-rate=-0.1")


@case("learning-rate-nan", match=r"--learning-rate: must be a finite number > 0, got nan")
def _(c):
    return c.train(c.w.train, "--learning-rate", "nan")


@case("n-boot-negative", match=r"--n-boot: must be an integer >= 0, got -1")
def _(c):
    return ["evaluate", "--model", c.w.model, "--features", c.w.test, "--data", c.w.data,
            "--n-boot", "-1"]


@case("n-boot-zero-no-nan", rc=0, match=r"rmse +linear \d\.\d+ \(no bootstrap interval\)")
def _(c):
    return ["evaluate", "--model", c.w.model, "--features", c.w.test, "--data", c.w.data,
            "--n-boot", "0"]


@case("n-boot-zero-json-is-valid", rc=0, match=r'"ci95": \[\s*null,\s*null\s*\]')
def _(c):
    c.check = lambda: None
    return ["evaluate", "--model", c.w.model, "--features", c.w.test, "--data", c.w.data,
            "--n-boot", "0", "--json"]


@case("jobs-zero", match=r"-j/--jobs: must be an integer >= 1, got 0")
def _(c):
    return ["extract", "--images", c.tmp / "s.npy", "-j", "0", "--out", c.tmp / "f.parquet"]


@case("chunk-size-zero", match=r"--chunk-size: must be an integer >= 1, got 0")
def _(c):
    return ["extract", "--images", c.tmp / "s.npy", "--chunk-size", "0", "--out", c.tmp / "f.parquet"]


# --------------------------------------------------------------------------- feature tables


@case("features-bool-column", match=r"column\(s\) \[is_merger\] are true/false")
def _(c):
    df = c.w.test_df.copy()
    df.insert(3, "is_merger", df["galaxy_id"] % 2 == 0)
    return c.train(c.table("t.parquet", df))


@case("features-infinite-values", match=r"infinite values in column\(s\) gini \(2 rows\)")
def _(c):
    df = c.w.test_df.copy()
    df.loc[:1, "gini"] = [np.inf, -np.inf]
    return c.predict(c.w.model)[:3] + ["--features", c.table("t.parquet", df), "--out", c.tmp / "p.csv"]


@case("features-all-nan-table", match="no usable rows: every feature of all 40 galaxies is NaN")
def _(c):
    df = c.w.test_df.copy()
    df[FEATURES] = np.nan
    return c.train(c.table("t.parquet", df))


@case("features-all-nan-column-warned", rc=0, match="")
def _(c):
    df = c.w.test_df.copy()
    df["gini"] = np.nan
    c.expect_log = r"column\(s\) \[gini\] are NaN for every galaxy"
    return c.train(c.table("t.parquet", df))


@case("features-text-column-warned", rc=0, match="")
def _(c):
    df = c.w.test_df.copy()
    df["comment"] = "looks odd"
    c.expect_log = r"ignoring non-numeric column\(s\) \[comment\]"
    return c.train(c.table("t.parquet", df))


@case("features-other-engine", match=r"feature engine 1, but the model expects feature engine "
      rf"{FEATURE_ENGINE_VERSION}.*featuremass extract --images stack.npy --scale seed-log")
def _(c):
    return c.predict(c.w.model)[:3] + ["--features", c.table("t.parquet", engine=1),
                                       "--out", c.tmp / "p.csv"]


@case("features-unversioned-engine", match=r"measured by an unversioned feature engine.*featuremass extract")
def _(c):
    return c.predict(c.w.model)[:3] + ["--features", c.table("t.parquet", engine=None),
                                       "--out", c.tmp / "p.csv"]


@case("features-other-scale", match=r"measured with --scale linear, but the model was trained on "
      r"--scale seed-log.*--scale seed-log --out")
def _(c):
    return ["evaluate", "--model", c.w.model, "--features", c.table("t.parquet", scale="linear"),
            "--data", c.w.data]


@case("features-duplicate-ids", match="duplicate galaxy_id values")
def _(c):
    df = c.w.test_df.copy()
    df.loc[1, "galaxy_id"] = df.loc[0, "galaxy_id"]
    return c.predict(c.w.model)[:3] + ["--features", c.table("t.parquet", df), "--out", c.tmp / "p.csv"]


@case("features-table-missing", match="feature table not found")
def _(c):
    return c.predict(c.w.model)[:3] + ["--features", c.tmp / "none.parquet", "--out", c.tmp / "p.csv"]


@case("train-without-metadata", match="needs the dataset metadata")
def _(c):
    return ["train", "--features", c.w.train, "--out", c.tmp / "m2"]


# --------------------------------------------------------------------------- unmeasurable galaxies


@case("serious-flag-gets-nan", rc=0, match=r"1 with a serious flag get NaN M/L")
def _(c):
    df = c.w.test_df.copy()
    df.loc[0, "flag"] = int(MorphFlag.NO_SOURCE)
    c.check = lambda: _nan_rows(c.tmp / "p.csv", expect_nan=[0])
    return c.predict(c.w.model)[:3] + ["--features", c.table("t.parquet", df), "--out", c.tmp / "p.csv"]


@case("serious-flag-imputed", rc=0, match=r"p\.csv: 40 galaxies\n")
def _(c):
    df = c.w.test_df.copy()
    df.loc[0, "flag"] = int(MorphFlag.NO_SOURCE)
    c.check = lambda: _nan_rows(c.tmp / "p.csv", expect_nan=[])
    return c.predict(c.w.model)[:3] + ["--features", c.table("t.parquet", df), "--out", c.tmp / "p.csv",
                                       "--impute"]


@case("blank-images-no-confident-ml", rc=0, match=r"2 with a serious flag get NaN M/L")
def _(c):
    imgs = c.stack("s.npy", np.zeros((2, 16, 16), np.float32))
    c.check = lambda: _nan_rows(c.tmp / "p.csv", expect_nan=[0, 1], flag=MorphFlag.BLANK_IMAGE)
    return ["predict", "--model", c.w.model, "--images", imgs, "--scale", "seed-log",
            "--out", c.tmp / "p.csv"]


def _nan_rows(path, expect_nan, flag=None):
    pred = pd.read_csv(path)
    nan_rows = np.flatnonzero(pred["ml_pred"].isna().to_numpy()).tolist()
    assert nan_rows == expect_nan
    assert pred.loc[expect_nan, ["ml_lo68", "ml_hi95"]].isna().all().all()
    if flag is not None:
        assert (pred["flag"].to_numpy() & int(flag)).all()


# --------------------------------------------------------------------------- the runner


@pytest.mark.parametrize("name", list(CASES))
def test_hostile(name, world, tmp_path, capsys, caplog, monkeypatch):
    setup, want_rc, match = CASES[name]
    ctx = Ctx(tmp_path, world, monkeypatch)
    ctx.expect_log = ctx.check = None
    argv = setup(ctx)
    before = snapshot(tmp_path, world.root)
    try:
        _check(ctx, run(capsys, *argv), want_rc, match, before, caplog.text)
    finally:
        if hasattr(ctx, "cleanup"):
            ctx.cleanup()


def _check(ctx, result, want_rc, match, before, log_text):
    import re

    rc, out, err = result
    if os.environ.get("FM_SHOW_HOSTILE"):
        sys.__stdout__.write(f"[{rc}] {err.strip().splitlines()[-1] if err.strip() else out.strip()[-200:]}\n")
    assert "Traceback" not in err
    assert rc == want_rc, f"exit {rc}; stderr: {err}"
    if want_rc:
        assert len(err.strip().splitlines()) == 1 or "usage:" in err, err
    assert re.search(match, out + err), f"{match!r} not in {out + err!r}"
    if ctx.expect_log:
        assert re.search(ctx.expect_log, log_text), log_text
    if ctx.check:
        ctx.check()
    after = snapshot(ctx.tmp, ctx.w.root)
    changed = [p for p, h in before.items() if after.get(p) != h
               and p not in (getattr(ctx, "allow_removed", None) or [])]
    assert not changed, f"modified or removed: {changed}"
    leftovers = [p for p in after if p not in before
                 and (".partial" in p or ".saving-" in p or p.endswith(".lock"))]
    assert not leftovers, leftovers


def test_enough_kinds():
    assert len(CASES) >= 40


# --------------------------------------------------------------------------- beyond the runner


def test_truncated_model_is_a_message_not_a_native_crash(world, tmp_path):
    """Today's SIGABRT/SIGSEGV: a truncated model.txt whose checksum was updated, in a real process."""
    m = tmp_path / "model"
    shutil.copytree(world.model, m)
    text = (m / "model.txt").read_text()
    (m / "model.txt").write_text(text[: int(len(text) * 0.99)])
    side = json.loads((m / "model.json").read_text())
    side["files"]["model.txt"] = sha256_file(m / "model.txt")
    (m / "model.json").write_text(json.dumps(side))
    proc = subprocess.run(
        [sys.executable, "-m", "featuremass.cli", "predict", "--model", str(m), "--features",
         str(world.test), "--out", str(tmp_path / "p.csv")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert proc.returncode == 2, proc.stderr
    assert "model.txt is truncated" in proc.stderr and "Traceback" not in proc.stderr


def test_disk_full_while_replacing_a_model_keeps_the_old_one(world, tmp_path, monkeypatch, capsys):
    """ENOSPC half-way through ``train --overwrite``: the previous model is intact and still loads."""
    from featuremass.models.store import load_model

    m = tmp_path / "model"
    shutil.copytree(world.model, m)
    before = snapshot(m)
    real = Path.write_text

    def full(self, text, *a, **k):
        if self.name.startswith("quantile_hi"):
            real(self, text[: len(text) // 3])
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    rc, _, err = run(capsys, "train", "--features", world.train, "--data", world.data, "--out", m,
                     "--overwrite", "--n-estimators", "5", "-j", "1")
    monkeypatch.undo()
    assert rc == 2 and "No space left on device" in err and str(m) in err
    assert snapshot(m) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left
    from featuremass.models.store import load

    assert load(m).kind == load_model(m).kind == "lgbm"


def test_auto_tables_are_compatible_with_auto_models():
    from featuremass.errors import SchemaError
    from featuremass.models.workflow import check_compatible

    auto = SimpleNamespace(scale="auto", feature_engine_version=FEATURE_ENGINE_VERSION)
    check_compatible(auto, {"scale": "auto", "feature_engine_version": FEATURE_ENGINE_VERSION}, "t")
    with pytest.raises(SchemaError, match="--scale seed-log"):
        check_compatible(auto, {"scale": "seed-log", "feature_engine_version": FEATURE_ENGINE_VERSION}, "t")


finite = st.floats(allow_nan=True, allow_infinity=True, width=32)
special = st.sampled_from([0.0, 1e-38, -1e-38, 1e38, -1e38, np.nan, np.inf, -np.inf, 1.0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
                  elements=st.one_of(finite, special)))
def test_measure_galaxy_never_raises(image):
    """Any 2-D float array, however hostile: one row, a flag, values finite or NaN."""
    row = measure_galaxy(image)
    assert set(row) == {*FEATURE_COLUMNS, "flag"}
    assert isinstance(row["flag"], int) and row["flag"] >= 0
    values = np.array([row[c] for c in FEATURE_COLUMNS], dtype=np.float64)
    assert not np.isinf(values).any()
    if not np.isfinite(image).any() or np.nanmax(image) == np.nanmin(image):
        assert row["flag"] != 0  # nothing to measure is always flagged


def test_no_sidecar_field_of_the_wrong_type_gives_a_traceback(world, tmp_path):
    """Each field (two levels deep) replaced by a value of another type: a clear error or a model
    that still predicts, never another exception."""
    from featuremass.errors import FeaturemassError
    from featuremass.models.store import load_model

    base = json.loads((world.model / "model.json").read_text())
    m = tmp_path / "model"
    shutil.copytree(world.model, m)
    X = load_model(m).design(pd.read_parquet(world.test)).X
    informational = {"metrics", "training_data", "libraries", "created_utc", "featuremass_version",
                     "lightgbm_version", "files"}
    paths = [(k,) for k in base if k not in informational]
    paths += [(k, j) for k in base if k not in informational and isinstance(base[k], dict)
              for j in base[k]]
    refused = 0
    for path in paths:
        side = json.loads(json.dumps(base))
        parent = side if len(path) == 1 else side[path[0]]
        parent[path[-1]] = "x" if isinstance(parent[path[-1]], list) else [1]
        (m / "model.json").write_text(json.dumps(side))
        try:
            model = load_model(m)
        except FeaturemassError as exc:
            assert "model.json" in str(exc)
            refused += 1
            continue
        assert np.isfinite(model.predict_frame(X)["ml_pred"]).all()
    assert refused >= len(paths) // 2
