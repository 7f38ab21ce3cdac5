"""Dask scale-out on a real LocalCluster of 2 worker processes (no mocks).

One cluster serves the module. Checked: the distributed table equals the local
one value for value and resumes chunk by chunk; a worker killed mid-run leaves
the table complete and identical; a model trained with lightgbm.dask is saved
like a local one and predicted with and without the cluster; everything the
cluster opens listens on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import dask.dataframe as dd
import distributed
import galsim
import numpy as np
import pandas as pd
import psutil
import pytest

from featuremass.cli import main
from featuremass.features.batch import extract_features, read_feature_table
from featuremass.features.execution import DaskExecutor
from featuremass.io.layout import write_metadata


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  silence_logs=logging.ERROR) as lc:
        yield lc


def _stamps(n, npix=36, seed=0):
    rng = np.random.default_rng(seed)
    out = np.empty((n, npix, npix), dtype=np.float32)
    for i in range(n):
        gal = galsim.Sersic(n=rng.uniform(0.8, 3.0), half_light_radius=rng.uniform(2.0, 4.5), flux=5e3)
        gal = gal.shear(q=rng.uniform(0.5, 1.0), beta=rng.uniform(0, np.pi) * galsim.radians)
        out[i] = gal.drawImage(nx=npix, ny=npix, scale=1.0).array + rng.normal(0, 1.0, (npix, npix))
    return out


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dask_stack") / "stack.npy"
    stack = _stamps(24)
    stack[5] = np.nan  # garbage still gets its row, on the cluster too
    np.save(path, stack)
    return path


@pytest.fixture(scope="module")
def local_table(stack_file):
    return extract_features(stack_file, chunk_size=4)


def test_distributed_table_equals_local_and_resumes(cluster, stack_file, local_table, tmp_path):
    out = tmp_path / "features"
    with DaskExecutor(cluster.scheduler_address) as ex:
        df = extract_features(stack_file, chunk_size=4, out=out, partitioned=True, executor=ex)
    pd.testing.assert_frame_equal(df, local_table)
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 6
    table, meta = read_feature_table(out)
    pd.testing.assert_frame_equal(table, local_table)
    assert meta["executor"] == "DaskExecutor" and meta["n_measured"] == 24
    pd.testing.assert_frame_equal(pd.read_parquet(out), local_table)
    pd.testing.assert_frame_equal(dd.read_parquet(str(out)).compute().reset_index(drop=True),
                                  local_table)

    # an interrupted run (two parts and the run record missing) resumes chunk by chunk
    parts[1].unlink()
    parts[4].unlink()
    (out / "_featuremass.json").unlink()
    with DaskExecutor(cluster.scheduler_address) as ex:
        extract_features(stack_file, chunk_size=4, out=out, partitioned=True, executor=ex)
    table, meta = read_feature_table(out)
    assert meta["n_measured"] == 8
    pd.testing.assert_frame_equal(table, local_table)


def test_a_worker_killed_mid_run_leaves_the_table_complete(cluster, tmp_path):
    stack = _stamps(40, npix=44, seed=1)
    np.save(tmp_path / "s.npy", stack)
    expected = extract_features(tmp_path / "s.npy", chunk_size=2)
    out, result, killed = tmp_path / "features", {}, []
    with DaskExecutor(cluster.scheduler_address) as ex:
        pids = ex.client.run(os.getpid)

        def run():
            result["df"] = extract_features(tmp_path / "s.npy", chunk_size=2, out=out,
                                            partitioned=True, executor=ex)

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 30
        while not killed and time.monotonic() < deadline and worker.is_alive():
            busy = [w for w, tasks in ex.client.processing().items() if tasks]
            if busy and list(out.glob("part-*.parquet")):
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])
            time.sleep(0.02)
        worker.join(timeout=60)
        ex.client.wait_for_workers(2, timeout=30)  # the nanny restarts it for the next tests
    assert killed, "the run ended before a worker could be killed"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == "zombie"
    pd.testing.assert_frame_equal(result["df"], expected)
    pd.testing.assert_frame_equal(read_feature_table(out)[0], expected)


def _survey(n, seed, offset):
    rng = np.random.default_rng(seed)
    ids = offset + np.arange(n, dtype=np.int64)
    feats = {name: rng.normal(size=n) for name in ("concentration", "asymmetry", "gini", "m20")}
    log_ml = 0.2 * feats["concentration"] - 0.1 * feats["gini"] ** 2 + rng.normal(0, 0.03, n)
    table = pd.DataFrame({"galaxy_id": ids, **feats, "flag": np.zeros(n, dtype=np.int64)})
    meta = pd.DataFrame({"M/L": 1.5 * 10**log_ml, "L_g": 10 ** rng.uniform(9, 11, n),
                         "distance_Mpc": rng.uniform(50, 300, n), "galsize_kpc": rng.uniform(2, 20, n)},
                        index=pd.Index(ids, name="SDSS_ID"))
    return table, meta


def test_train_on_the_cluster_predict_without_it(cluster, tmp_path, capsys):
    (train, m1), (test, m2) = _survey(400, 0, 1_000_000), _survey(150, 1, 2_000_000)
    write_metadata(tmp_path, pd.concat([m1, m2]))
    train.to_parquet(tmp_path / "train.parquet", index=False)
    test.to_parquet(tmp_path / "test.parquet", index=False)
    addr = cluster.scheduler_address
    model = tmp_path / "model"
    # every socket listening while the cluster trains: LightGBM's network would
    # listen on 0.0.0.0, so on a loopback cluster it must not be used at all
    with distributed.Client(addr) as client:
        pids = {os.getpid(), *client.run(os.getpid).values()}
    seen, training = set(), threading.Event()
    training.set()

    def watch():
        while training.is_set():
            seen.update(c.laddr.ip for c in psutil.net_connections(kind="inet")
                        if c.status == psutil.CONN_LISTEN and c.pid in pids)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert main(["train", "--features", str(tmp_path / "train.parquet"), "--data", str(tmp_path),
                     "--out", str(model), "--n-estimators", "80", "--scheduler", addr]) == 0
    finally:
        training.clear()
        watcher.join()
    assert seen == {"127.0.0.1"}
    assert (model / "model.txt").is_file() and (model / "model.json").is_file()
    assert main(["predict", "--model", str(model), "--features", str(tmp_path / "test.parquet"),
                 "--data", str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 0
    local = pd.read_csv(tmp_path / "p.csv")
    assert len(local) == 150 and local["ml_pred"].notna().all()
    truth = m2.loc[local["galaxy_id"], "M/L"].to_numpy()
    r2 = 1 - np.sum((local["ml_pred"] - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert r2 > 0.5  # the cluster's model has learnt the signal

    assert main(["predict", "--model", str(model), "--features", str(tmp_path / "test.parquet"),
                 "--data", str(tmp_path), "--out", str(tmp_path / "p_dask"), "--scheduler", addr]) == 0
    parts = sorted((tmp_path / "p_dask").glob("*.parquet"))
    assert len(parts) == 2  # one per worker
    on_cluster = pd.read_parquet(tmp_path / "p_dask").sort_values("galaxy_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(on_cluster, local.sort_values("galaxy_id").reset_index(drop=True),
                                  check_dtype=False)
    capsys.readouterr()

    # LightGBM's machines list is built from the worker hosts: loopback only;
    # and every socket the cluster's processes listen on is on 127.0.0.1
    from featuremass.models.dask_gbm import lightgbm_machines

    with distributed.Client(addr) as client:
        assert lightgbm_machines(client) == ["127.0.0.1"]
        pids = [os.getpid(), *client.run(os.getpid).values()]
    listening = [c.laddr.ip for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening and set(listening) == {"127.0.0.1"}


def test_a_lost_scheduler_is_one_clear_error_and_keeps_finished_chunks(cluster, stack_file,
                                                                       local_table, tmp_path):
    from featuremass.errors import FeaturemassError

    # a cluster of its own (threads in this process) that the test can take down
    lc = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  silence_logs=logging.ERROR)
    out, caught = tmp_path / "features", {}
    ex = DaskExecutor(lc.scheduler_address)

    def run():
        try:
            extract_features(stack_file, chunk_size=1, out=out, partitioned=True, executor=ex)
        except FeaturemassError as exc:
            caught["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and worker.is_alive() and not list(out.glob("part-*.parquet")):
        time.sleep(0.02)
    lc.close()
    worker.join(timeout=60)
    ex.close()
    assert not worker.is_alive()
    message = str(caught.get("error", ""))
    assert "lost the Dask scheduler" in message and "run the same command again" in message
    assert "\n" not in message
    kept = sorted(out.glob("part-*.parquet"))
    assert 1 <= len(kept) < 24 and not (out / "_featuremass.json").exists()
    with pytest.raises(FeaturemassError, match="not a finished"):
        read_feature_table(out)

    # "the same command again", on a working cluster, measures only what is missing
    assert main(["extract", "--images", str(stack_file), "--out", str(out), "--chunk-size", "1",
                 "--scheduler", cluster.scheduler_address]) == 0
    table, meta = read_feature_table(out)
    assert meta["n_measured"] == 24 - len(kept)
    pd.testing.assert_frame_equal(table, local_table)
