"""Execution layer: image sources, resume by pixel content, workers ending with their command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import galsim
import numpy as np
import pandas as pd
import pytest

from featuremass.features import batch
from featuremass.features.batch import extract_features, read_feature_table
from featuremass.features.execution import ImageSource, LocalExecutor, pixel_digest

REPO = Path(__file__).resolve().parents[2]


def _stamps(n, npix=32, seed=0):
    rng = np.random.default_rng(seed)
    out = np.empty((n, npix, npix), dtype=np.float32)
    for i in range(n):
        gal = galsim.Sersic(n=rng.uniform(0.8, 3.0), half_light_radius=rng.uniform(2.0, 4.0), flux=4e3)
        out[i] = gal.drawImage(nx=npix, ny=npix, scale=1.0).array + rng.normal(0, 1.0, (npix, npix))
    return out


class _Interrupt(BaseException):  # not caught per galaxy, as Ctrl-C is not
    pass


def _sum_measure(calls, interrupt_at=None):
    def measure(image, *, config=None):
        calls.append(1)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise _Interrupt
        return {"gini": float(np.nansum(image)), "flag": 0}

    return measure


def test_every_source_reads_the_same_rows(tmp_path):
    import h5py

    stack = _stamps(5)
    np.save(tmp_path / "s.npy", stack)
    with h5py.File(tmp_path / "s.h5", "w") as fh:
        fh["data"] = stack
    (tmp_path / "dir").mkdir()
    for i, img in enumerate(stack):
        np.save(tmp_path / "dir" / f"{i:03d}.npy", img)
    sources = [ImageSource.npy(tmp_path / "s.npy"), ImageSource.hdf5(tmp_path / "s.h5"),
               ImageSource.npy_dir(tmp_path / "dir"), ImageSource.of(stack),
               ImageSource.of(np.load(tmp_path / "s.npy", mmap_mode="r"))]
    assert sources[-1].kind == "npy"  # a memory map is read by path, not shipped
    for src in sources:
        assert src.stack_shape() == stack.shape
        np.testing.assert_array_equal(src.read(1, 4), stack[1:4])
        np.testing.assert_array_equal(src.window(2, 5).read(2, 5), stack[2:5])
        assert pixel_digest(src.read(0, 5)) == pixel_digest(stack)
    assert pixel_digest(stack[:2]) != pixel_digest(stack[1:3])


def test_views_of_a_memory_map_are_read_as_given(tmp_path):
    # a view keeps its parent's file name: reading "the file" would add rows
    stack = _stamps(6)
    np.save(tmp_path / "s.npy", stack)
    mapped = np.load(tmp_path / "s.npy", mmap_mode="r")
    for view in (mapped[:3], mapped[2:5], mapped[::2], mapped[::-1]):
        source = ImageSource.of(view)
        assert source.kind == "array"
        assert source.stack_shape() == view.shape
        np.testing.assert_array_equal(source.read(0, len(view)), np.asarray(view))
    df = extract_features(mapped[:3], scale="linear", chunk_size=2)
    assert len(df) == 3


@pytest.mark.parametrize("same_path", [False, True])
def test_resume_never_reuses_rows_of_other_pixels(tmp_path, monkeypatch, same_path):
    """Interrupt with A.npy, resume with B.npy (same shape, same names): nothing of A is reused.

    ``same_path``: B replaces A under the same file name between the two runs.
    """
    a = _stamps(6, seed=1)
    b = a[::-1].copy()
    b[0] += 1.0  # B's chunks hold A's pixels reordered, and row 0 changed
    first, second = ((tmp_path / "in.npy",) * 2 if same_path
                     else (tmp_path / "A.npy", tmp_path / "B.npy"))
    out = tmp_path / "f.parquet"
    np.save(first, a)
    calls = []
    monkeypatch.setattr(batch, "_measure_function", lambda backend: _sum_measure(calls, 5))
    with pytest.raises(_Interrupt):
        extract_features(first, chunk_size=2, out=out, scale="linear")
    assert len(list((tmp_path / "f.parquet.parts").glob("part-*.parquet"))) == 2
    np.save(second, b)
    calls.clear()
    monkeypatch.setattr(batch, "_measure_function", lambda backend: _sum_measure(calls))
    df = extract_features(second, chunk_size=2, out=out, scale="linear")
    assert len(calls) == len(b)  # every chunk measured again
    assert read_feature_table(out)[1]["n_measured"] == len(b)
    np.testing.assert_allclose(df["gini"], [np.nansum(img) for img in b], rtol=1e-6)

    # the same pixels under the same path are reused chunk by chunk
    calls.clear()
    monkeypatch.setattr(batch, "_measure_function", lambda backend: _sum_measure(calls, 3))
    with pytest.raises(_Interrupt):
        extract_features(second, chunk_size=2, out=tmp_path / "g.parquet", scale="linear")
    calls.clear()
    monkeypatch.setattr(batch, "_measure_function", lambda backend: _sum_measure(calls))
    extract_features(second, chunk_size=2, out=tmp_path / "g.parquet", scale="linear")
    assert len(calls) == len(b) - 2


def test_one_pool_serves_several_calls_and_matches_in_process(tmp_path):
    stack = _stamps(6, seed=2)
    np.save(tmp_path / "s.npy", stack)
    src = ImageSource.npy(tmp_path / "s.npy")
    serial = extract_features(stack, chunk_size=3)
    with LocalExecutor(2) as ex:
        first = extract_features(src, chunk_size=3, executor=ex)
        pool = ex._pool
        second = extract_features(stack, chunk_size=2, executor=ex)  # in-memory: slices travel
        assert ex._pool is pool  # started once, kept for the command
    assert ex._pool is None
    pd.testing.assert_frame_equal(first, serial)
    pd.testing.assert_frame_equal(second, serial)


def _descendants(pid):
    """Pids of every living process below ``pid`` (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
@pytest.mark.parametrize(("extra", "sig", "n_procs"), [
    ([], signal.SIGTERM, 2),  # the local pool: the command stops its workers
    ([], signal.SIGKILL, 2),  # the local pool: workers notice the command is gone
    (["--scheduler", "local"], signal.SIGKILL, 2),  # a LocalCluster: workers notice they are alone
])
def test_no_process_of_the_run_survives_it(tmp_path, extra, sig, n_procs):
    stack = np.tile(_stamps(8, npix=40, seed=3), (50, 1, 1))
    np.save(tmp_path / "s.npy", stack)
    out = tmp_path / ("out" if extra else "out.parquet")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "featuremass.cli", "extract", "--images", str(tmp_path / "s.npy"),
         "--out", str(out), "-j", "2", "--chunk-size", "4", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    parts = out if extra else tmp_path / "out.parquet.parts"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        # the pool is stopped with a chunk written; the cluster as soon as its workers exist
        if len(_descendants(proc.pid)) >= n_procs and (extra or list(parts.glob("part-*.parquet"))):
            break
        time.sleep(0.05)
    family = _descendants(proc.pid)
    assert proc.poll() is None and len(family) >= n_procs, "the run ended before it could be stopped"
    os.kill(proc.pid, sig)
    proc.wait(timeout=30)
    # generous: on a loaded machine a worker's self-check can lag by seconds
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in family):
        time.sleep(0.1)
    assert not [p for p in family if _alive(p)]
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and b"interrupted" in proc.stderr.read()
    if not extra:  # finished chunks stay for a resumed run, each a readable part
        done = sorted(parts.glob("part-*.parquet"))
        assert done and all(len(read_feature_table(p)[0]) == 4 for p in done)
