"""The issue's manual check, scripted: a hand-started Dask cluster and the CLI.

Starts ``dask scheduler`` and ``dask worker --nworkers 2`` (everything on
127.0.0.1) as separate processes, then runs, as a user would:

1. ``featuremass extract --scheduler tcp://...`` and the same extract with ``-j 2``
   and no Dask, and compares the two tables value for value;
2. ``featuremass train --scheduler tcp://...`` then ``featuremass predict`` without
   a scheduler;
3. an extract whose scheduler is killed (SIGKILL) after a few chunks, then the same
   command again once a new scheduler is up: it must measure only the missing
   chunks and give the same table;
4. lists the sockets the cluster listens on, then stops every process it started.

Writes ``reports/dask_by_hand.md``::

    python benchmarks/check_dask_by_hand.py --n 400
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from featuremass.report.provenance import provenance_markdown  # noqa: E402

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _start_scheduler(work: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", "127.0.0.1:0"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=open(work / "scheduler.log", "a"))
    time.sleep(3)
    return proc


def _start_workers(work: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
         "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=open(work / "workers.log", "a"))


def _wait_for_workers(address: str, n: int = 2) -> None:
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(n, timeout=60)


def _fm(*args, cwd: Path) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    res = subprocess.run([str(BIN / "featuremass"), *args], env=ENV, cwd=cwd, capture_output=True,
                         text=True)
    lines = [ln for ln in (res.stdout + res.stderr).splitlines()
             if ln.strip() and not ln.startswith(("extract (native)", "simulate:", "[LightGBM]"))]
    return res.returncode, "\n".join(lines), time.perf_counter() - t0


def _family(pids) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            out += [pid, *(c.pid for c in proc.children(recursive=True))]
        except psutil.Error:
            continue
    return out


def _listening(pids) -> list[str]:
    import psutil

    return sorted({f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.net_connections(kind="inet")
                   if c.status == psutil.CONN_LISTEN and c.pid in set(pids)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="training galaxies (default 400)")
    ap.add_argument("--port", type=int, default=8797)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "dask_by_hand.md")
    args = ap.parse_args(argv)
    import pandas as pd

    from featuremass.features.batch import read_feature_table

    address = f"tcp://127.0.0.1:{args.port}"
    log = []
    procs: list[subprocess.Popen] = []

    def step(title, *cmd, cwd):
        rc, text, seconds = _fm(*cmd, cwd=cwd)
        log.append(f"$ featuremass {' '.join(cmd)}    # {title}: exit {rc}, {seconds:.1f} s\n{text}")
        return rc

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        step("simulate", "simulate", "--out", "sim", "--n-train", str(args.n), "--n-val",
             str(max(args.n // 4, 40)), "--n-test", str(max(args.n // 4, 40)), "--npix", "69",
             "-j", "2", cwd=work)
        try:
            procs.append(_start_scheduler(work, args.port))
            procs.append(_start_workers(work, address))
            _wait_for_workers(address)
            cluster = _family([p.pid for p in procs])
            sockets = _listening(cluster)

            data = ["--data", "sim", "--npix", "69", "--split", "train"]
            step("on Dask", "extract", *data, "--out", "train_dask", "--chunk-size", "50",
                 "--scheduler", address, cwd=work)
            step("local, no Dask", "extract", *data, "--out", "train_local.parquet", "-j", "2",
                 "--chunk-size", "50", cwd=work)
            local = read_feature_table(work / "train_local.parquet")[0]
            dask_table = read_feature_table(work / "train_dask")[0]
            identical = local.equals(dask_table)
            step("test table", "extract", "--data", "sim", "--npix", "69", "--split", "test",
                 "--out", "test.parquet", "-j", "2", cwd=work)
            step("train on Dask", "train", "--features", "train_dask", "--data", "sim", "--out", "model",
                 "--scheduler", address, cwd=work)
            rc_predict = step("predict without Dask", "predict", "--model", "model", "--features",
                              "test.parquet", "--data", "sim", "--out", "pred.csv", cwd=work)
            pred = pd.read_csv(work / "pred.csv") if rc_predict == 0 else None

            # the scheduler dies mid-run
            lost_cmd = [str(BIN / "featuremass"), "extract", *data, "--out", "train_lost",
                        "--chunk-size", "20", "--scheduler", address]
            run = subprocess.Popen(lost_cmd, env=ENV, cwd=work, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            while run.poll() is None and len(list((work / "train_lost").glob("part-*.parquet"))) < 3:
                time.sleep(0.2)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
            _, err = run.communicate(timeout=120)
            err_lines = [ln for ln in err.splitlines() if ln.strip() and "extract (native)" not in ln]
            log.append(f"$ featuremass extract ... --out train_lost --chunk-size 20 --scheduler {address}"
                       f"    # scheduler killed with SIGKILL after 3 parts: exit {run.returncode}\n"
                       + "\n".join(err_lines))
            kept = len(list((work / "train_lost").glob("part-*.parquet")))
            # a new cluster at the same address (workers of a lost scheduler may or may
            # not outlive it, depending on timing)
            procs[1].send_signal(signal.SIGTERM)
            procs[1].wait(timeout=60)
            procs[0] = _start_scheduler(work, args.port)
            procs[1] = _start_workers(work, address)
            _wait_for_workers(address)
            step("the same command again", "extract", *data, "--out", "train_lost", "--chunk-size",
                 "20", "--scheduler", address, cwd=work)
            resumed, meta = read_feature_table(work / "train_lost")
        finally:
            everything = _family([p.pid for p in procs])
            t_stop = time.perf_counter()
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        import psutil

        def alive(pid):
            try:
                return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                return False

        while any(alive(p) for p in everything) and time.perf_counter() - t_stop < 30:
            time.sleep(0.2)
        stop_seconds = time.perf_counter() - t_stop
        left = [p for p in everything if alive(p)]

    results = [
        f"- extract on the hand-started cluster equals `extract -j 2` value for value: **{identical}** "
        f"({len(local)} galaxies x {local.shape[1]} columns)",
        f"- `predict` without a scheduler loaded the model trained with `--scheduler`: exit "
        f"{rc_predict}, {0 if pred is None else len(pred)} predictions, "
        f"{0 if pred is None else int(pred['ml_pred'].notna().sum())} finite",
        f"- scheduler killed mid-run: exit status {run.returncode}, {kept} parts kept; the rerun "
        f"measured {meta['n_measured']} of {meta['n_galaxies']} galaxies and equals the local table: "
        f"**{resumed.equals(local)}**",
        f"- sockets the scheduler and workers listened on: {', '.join(sockets)}",
        f"- the {len(everything)} processes of the cluster, sent SIGTERM: {len(left)} left after "
        f"{stop_seconds:.1f} s (counted from the signal)",
    ]
    text = ("# The Dask check by hand (issue 14), scripted\n\n"
            + provenance_markdown(["benchmarks/check_dask_by_hand.py",
                                   *(argv if argv is not None else sys.argv[1:])])
            + "\n\n## Results\n\n" + "\n".join(results)
            + "\n\n## Transcript\n\n```\n" + "\n\n".join(log) + "\n```\n")
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
