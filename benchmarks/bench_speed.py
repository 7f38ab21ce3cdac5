"""How fast featuremass measures and predicts (issue 13): writes ``reports/performance.md``.

Sections, each in this one run (timings on a shared machine are noisy, so
every comparison is a ratio within the run):

* ``baseline``: this tree's ``measure_galaxy`` against the one at
  ``--baseline`` (a git commit, checked out in a temporary worktree), each in
  its own process on the same stamps, alternated ``--rounds`` times.
* ``ratio``: native engine against statmorph 0.7.2 (its defaults, Sérsic fit
  included; ours includes bulge + disk), one process, one BLAS thread, the
  same linear-flux arrays: simulated stamps at each ``--npix`` and the ten real
  AEGIS HST stamps of ``/work/shared/realdata``. Median time per galaxy.
* ``scaling``: :func:`~featuremass.features.batch.extract_features` per galaxy
  against npix, on 1 and 2 processes (worker start-up included).
* ``fast``: the fast tier's stamps per second on one core, on linear stamps
  (the features alone) and through ``extract_features(scale="seed-log")``
  (the per-stamp inverse stretch and the table included).
* ``accuracy``: what the expensive features buy: the same LightGBM settings
  trained on the full and on the fast features of the seed-stretched train
  split (through the inverse stretch), test R² and per-galaxy extraction time.
* ``compile``: numba's cold compile: the first ``measure_galaxy`` call in a
  fresh process with an empty numba cache, against the same with the cache filled.
* ``predict``: ``featuremass predict --images`` (a full-feature LightGBM model)
  against ``featuremass cnn predict`` on the same seed-stretched test stamps, as
  whole commands, alternated ``--rounds`` times; wall and CPU seconds.

* ``archive``: whole extractions of ``--archive`` n 128 px stamps (default 1000
  and 10000) from a memory map in a fresh process, two workers: wall and CPU
  seconds, galaxies per second and the summed peak resident memory. The full
  archive on its own (simulated once into ``--archive-data``, 2 x 4.8 GB):

    python benchmarks/bench_speed.py --sections archive --archive 1000 10000 73627 \\
        --archive-data bench-work/archive73k --name archive.md

Everything else:

    python benchmarks/bench_speed.py --npix 69 128 --n-ratio 40 --n-predict 1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from featuremass.features.batch import extract_features
from featuremass.features.fast import fast_features
from featuremass.features.measure import measure_galaxy
from featuremass.io.layout import SeedLayout, load_npy
from featuremass.report.provenance import provenance_markdown

SECTIONS = ("baseline", "ratio", "scaling", "fast", "accuracy", "compile", "predict", "archive")
REALDATA = Path("/work/shared/realdata")


def _times(fn, images, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU seconds of each call (CPU time is what one core spends, whatever the load)."""
    wall, cpu = [], []
    for img in images:
        img = np.asarray(img, dtype=np.float64)
        t0, c0 = time.perf_counter(), time.process_time()
        fn(img, **kw)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return np.asarray(wall), np.asarray(cpu)


def _aegis_stamps() -> list[np.ndarray]:
    from astropy.io import fits

    stamps = []
    for band in ("F606w", "F814w"):
        cat = fits.getdata(REALDATA / f"AEGIS_{band}_catalog.fits")
        for row in cat:
            img = fits.getdata(REALDATA / str(row["GAL_FILENAME"]).strip(), ext=int(row["GAL_HDU"]))
            stamps.append(np.asarray(img, dtype=np.float64))
    return stamps


def section_ratio(layout, args) -> list[str]:
    from featuremass.features.statmorph_backend import measure_galaxy_statmorph

    sets = [(f"simulated {npix} px", np.asarray(load_npy(layout.linear_path(npix, "test")))[: args.n_ratio])
            for npix in args.npix]
    if REALDATA.is_dir():
        sets.append(("real AEGIS (10 HST stamps, 39-156 px)", _aegis_stamps()))
    lines = ["## Native engine against statmorph (one process, same stamps)", "",
             "Per galaxy, native then statmorph on each stamp in turn; CPU time (`time.process_time`, "
             "one BLAS thread) is what one core spends and moves less with the machine's load than wall time.",
             "", "| stamps | n | native median CPU ms | statmorph median CPU ms | ratio (CPU medians) "
             "| ratio (CPU means) | ratio (wall medians) |", "|---|---|---|---|---|---|---|"]
    for name, stamps in sets:
        measure_galaxy(np.asarray(stamps[0], dtype=np.float64))  # compile / import outside the timing
        w_nat, c_nat, w_sm, c_sm = [], [], [], []
        for img in stamps:  # interleaved, so that load changes hit both alike
            w, c = _times(measure_galaxy, [img])
            w_nat.append(w[0]), c_nat.append(c[0])
            w, c = _times(measure_galaxy_statmorph, [img])
            w_sm.append(w[0]), c_sm.append(c[0])
        ratio = np.median(c_sm) / np.median(c_nat)
        lines.append(f"| {name} | {len(stamps)} | {np.median(c_nat) * 1e3:.2f} | {np.median(c_sm) * 1e3:.1f} "
                     f"| **{ratio:.1f}×** | {np.mean(c_sm) / np.mean(c_nat):.1f}× "
                     f"| {np.median(w_sm) / np.median(w_nat):.1f}× |")
        print(f"ratio {name}: {ratio:.1f}x (CPU)", flush=True)
    return lines + [""]


def section_scaling(layout, args) -> list[str]:
    lines = ["## Per-galaxy time of `extract_features` against npix and processes", "",
             f"Linear-flux simulated test stamps, {args.n_scaling} per size, chunks of "
             f"{max(1, args.n_scaling // 8)}; wall time of the call (worker start-up included) per galaxy.", "",
             "| npix | processes | ms per galaxy | galaxies/s |", "|---|---|---|---|"]
    for npix in args.npix:
        stack = np.asarray(load_npy(layout.linear_path(npix, "test")))[: args.n_scaling]
        for jobs in (1, 2):
            t0 = time.perf_counter()
            extract_features(stack, n_jobs=jobs, chunk_size=max(1, len(stack) // 8))
            dt = time.perf_counter() - t0
            lines.append(f"| {npix} | {jobs} | {dt / len(stack) * 1e3:.2f} | {len(stack) / dt:.0f} |")
            print(f"scaling {npix}px x{jobs}: {dt / len(stack) * 1e3:.2f} ms", flush=True)
    return lines + [""]


def section_fast(layout, args) -> list[str]:
    lines = ["## Fast tier: stamps per second on one core", "",
             "Stamps per CPU second (`time.process_time`, one BLAS thread), and per wall second in brackets; "
             "one chunk, one process.", "",
             "| npix | n | features alone (linear stack) | through `extract_features(scale=\"seed-log\", "
             "feature_set=\"fast\")` | through `extract_features(scale=\"auto\", feature_set=\"fast\")` |",
             "|---|---|---|---|---|"]
    for npix in args.npix:
        linear = np.asarray(load_npy(layout.linear_path(npix, "test")))[: args.n_fast]
        stretched = np.asarray(load_npy(layout.image_path(npix, "test")))[: args.n_fast]
        fast_features(linear[:10])
        for scale in ("seed-log", "auto"):  # compiled kernels loaded from numba's cache before timing
            extract_features(stretched[:10], scale=scale, feature_set="fast")
        t0, c0 = time.perf_counter(), time.process_time()
        fast_features(linear)
        wall_alone, cpu_alone = len(linear) / (time.perf_counter() - t0), len(linear) / (time.process_time() - c0)
        row = [f"**{cpu_alone:.0f}** ({wall_alone:.0f})"]
        for scale in ("seed-log", "auto"):
            t0, c0 = time.perf_counter(), time.process_time()
            extract_features(stretched, scale=scale, feature_set="fast", chunk_size=len(stretched))
            wall_ex, cpu_ex = len(linear) / (time.perf_counter() - t0), len(linear) / (time.process_time() - c0)
            row.append(f"**{cpu_ex:.0f}** ({wall_ex:.0f})")
            print(f"fast {npix}px {scale}: {cpu_ex:.0f}/CPU s via extract", flush=True)
        lines.append(f"| {npix} | {len(linear)} | {' | '.join(row)} |")
        print(f"fast {npix}px: {cpu_alone:.0f}/CPU s alone", flush=True)
    lines += ["", "`seed-log` inverts the whole chunk in one compiled pass "
              "(`featuremass.features.seedlog.seed_log_inverse_stack`: one batched sort, the dynamic range "
              "found with the map evaluated lazily); `auto` detects and inverts each stamp's stretch for the "
              "whole chunk (`featuremass.features.seedlog.invert_stretch_stack`: one batched sort, the level "
              "bins by selection and the detection compiled, reading each candidate inverse lazily; clipped "
              "skies, stamps with bad pixels or outside [-1, 1] go through `invert_stretch`, per stamp). "
              "Both give the per-stamp inverse's numbers (tests/io/test_stretch_kernels.py)."]
    return lines + [""]


def section_accuracy(layout, args) -> list[str]:
    import lightgbm as lgb
    from sklearn.metrics import r2_score

    from featuremass.io.layout import load_split

    npix = args.npix[0]
    train = load_split(layout.root, npix=npix, split="train", mmap=True)
    test = load_split(layout.root, npix=npix, split="test", mmap=True)
    n_test = min(len(test), args.n_predict)
    lines = ["## Fast tier against the full set: accuracy and cost", "",
             f"Seed-stretched {npix} px stamps (`scale=\"seed-log\"`), {len(train)} train / {n_test} test; "
             "LightGBM (300 trees, learning rate 0.05, 31 leaves, seed 0) on the feature columns alone "
             "(flag excluded); target the g-band M/L. Extraction time: one process.", "",
             "| feature set | columns | extraction ms per galaxy | test R² |", "|---|---|---|---|"]
    for feature_set in ("full", "fast"):
        t0 = time.perf_counter()
        f_train = extract_features(train.images, scale="seed-log", feature_set=feature_set)
        f_test = extract_features(test.images[:n_test], scale="seed-log", feature_set=feature_set)
        per_gal = (time.perf_counter() - t0) / (len(train) + n_test)
        cols = [c for c in f_train.columns if c not in ("galaxy_id", "flag")]
        model = lgb.LGBMRegressor(n_estimators=300, learning_rate=0.05, num_leaves=31, random_state=0,
                                  n_jobs=1, verbose=-1)
        model.fit(f_train[cols].to_numpy(), train.target)
        r2 = r2_score(test.target[:n_test], model.predict(f_test[cols].to_numpy()))
        lines.append(f"| {feature_set} | {len(cols)} | {per_gal * 1e3:.2f} | {r2:.3f} |")
        print(f"accuracy {feature_set}: R2 {r2:.3f}, {per_gal * 1e3:.2f} ms/gal", flush=True)
    return lines + [""]


_COMPILE_SNIPPET = """
import json, time, numpy as np
t0 = time.perf_counter()
from featuremass.features.measure import measure_galaxy
t_import = time.perf_counter() - t0
img = np.asarray(np.load({path!r}, mmap_mode="r")[{index}], dtype=np.float64)
t0 = time.perf_counter(); measure_galaxy(img); first = time.perf_counter() - t0
t0 = time.perf_counter(); measure_galaxy(img); second = time.perf_counter() - t0
print(json.dumps({{"import": t_import, "first": first, "second": second}}))
"""


def section_compile(layout, args) -> list[str]:
    path = str(layout.linear_path(args.npix[0], "test"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="featuremass-numba-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold (empty numba cache)", "warm (cache filled)", "warm (cache filled)"):
            out = subprocess.run([sys.executable, "-c", _COMPILE_SNIPPET.format(path=path, index=0)],
                                 env=env, capture_output=True, text=True, check=True)
            rows.append((label, json.loads(out.stdout.strip().splitlines()[-1])))
    cold, warm = rows[0][1], rows[2][1]
    lines = ["## numba: cold compile", "",
             "A fresh process measures one galaxy twice; the numba cache (`NUMBA_CACHE_DIR`) starts empty.", "",
             "| run | import s | first call s | second call s |", "|---|---|---|---|"]
    lines += [f"| {label} | {r['import']:.2f} | {r['first']:.3f} | {r['second'] * 1e3:.1f} ms |" for label, r in rows]
    lines += ["", f"Cold compile cost (first call, cold minus warm): **{cold['first'] - warm['first']:.1f} s**, "
              "paid once per machine (the cache lives in `__pycache__` beside the modules, or "
              "`NUMBA_CACHE_DIR`).", ""]
    print(f"compile: cold first call {cold['first']:.1f}s, warm {warm['first']:.2f}s", flush=True)
    return lines


_BASELINE_SNIPPET = """
import json, time, numpy as np
from featuremass.features.measure import FEATURE_COLUMNS, measure_galaxy
stack = np.asarray(np.load({path!r}, mmap_mode="r")[:{n}], dtype=np.float64)
measure_galaxy(stack[0])
rows = []
t0, c0 = time.perf_counter(), time.process_time()
for img in stack:
    rows.append(measure_galaxy(img))
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
np.save({save!r}, np.array([[r[c] for c in (*FEATURE_COLUMNS, "flag")] for r in rows], dtype=np.float64))
print(json.dumps({{"seconds": seconds, "cpu": cpu}}))
"""


def section_baseline(layout, args) -> list[str]:
    repo = Path(__file__).resolve().parents[1]
    lines = ["## This tree against the baseline commit (same stamps, separate processes, alternated)", "",
             f"Baseline: `{args.baseline}`; linear-flux simulated test stamps, {args.n_baseline} per size, "
             f"{args.rounds} rounds; median of the rounds.", "",
             "Same values: for each column, the largest absolute difference between the two trees' "
             "features over the stamps (NaN where both are NaN counts as equal).", "",
             "| npix | baseline CPU ms per galaxy | this tree CPU ms per galaxy | speed-up (CPU) "
             "| speed-up (wall) | flags equal | columns differing by > 1e-9 (largest difference) |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="featuremass-base-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(base), args.baseline],
                       check=True, capture_output=True)
        try:
            for npix in args.npix:
                got = {"base": [], "this": []}
                cpu = {"base": [], "this": []}
                for _ in range(args.rounds):
                    for key, tree in (("base", base), ("this", repo)):
                        snippet = _BASELINE_SNIPPET.format(path=str(layout.linear_path(npix, "test")),
                                                           n=args.n_baseline, save=str(Path(tmp) / f"{key}.npy"))
                        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1",
                               "OPENBLAS_NUM_THREADS": "1"}
                        out = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True,
                                             text=True, check=True, cwd=tmp)
                        res = json.loads(out.stdout.strip().splitlines()[-1])
                        got[key].append(res["seconds"])
                        cpu[key].append(res["cpu"])
                b, t = (float(np.median(got[k])) / args.n_baseline for k in ("base", "this"))
                bc, tc = (float(np.median(cpu[k])) / args.n_baseline for k in ("base", "this"))
                vb, vt = np.load(Path(tmp) / "base.npy"), np.load(Path(tmp) / "this.npy")
                flags_equal = bool(np.array_equal(vb[:, -1], vt[:, -1]))
                with np.errstate(invalid="ignore"):
                    diff = np.where(np.isnan(vb) & np.isnan(vt), 0.0, np.abs(vb - vt))[:, :-1]
                diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only
                from featuremass.features.measure import FEATURE_COLUMNS

                worst = diff.max(axis=0)
                moved = [f"{c} ({w:.2g})" for c, w in zip(FEATURE_COLUMNS, worst, strict=True) if w > 1e-9]
                lines.append(f"| {npix} | {bc * 1e3:.2f} | {tc * 1e3:.2f} | **{bc / tc:.2f}×** | {b / t:.2f}× "
                             f"| {flags_equal} "
                             f"| {', '.join(moved) if moved else 'none'} |")
                print(f"baseline {npix}px: {bc / tc:.2f}x (CPU)", flush=True)
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(base)],
                           check=False, capture_output=True)
    return lines + [""]


def _run(cmd: list[str], log: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def section_predict(layout, args, work: Path) -> list[str]:
    exe = str(Path(sys.executable).with_name("featuremass"))
    root = str(layout.root)
    npix = args.npix[0]
    log = work / "commands.log"
    lgbm, lgbm_fast, cnn = work / "lgbm", work / "lgbm_fast", work / "cnn"
    setup = [
        [exe, "extract", "--data", root, "--npix", str(npix), "--split", "train", "-j", "2",
         "--out", str(work / "train.parquet")],
        [exe, "train", "--features", str(work / "train.parquet"), "--data", root, "-j", "2", "--out", str(lgbm)],
        # a fast-tier model: its sidecar records feature_set 'fast', which predict --images extracts
        [exe, "extract", "--data", root, "--npix", str(npix), "--split", "train", "--feature-set", "fast",
         "--out", str(work / "train_fast.parquet")],
        [exe, "train", "--features", str(work / "train_fast.parquet"), "--data", root, "-j", "2",
         "--out", str(lgbm_fast)],
        [exe, "cnn", "train", "--data", root, "--npix", str(npix), "--epochs", str(args.cnn_epochs),
         "--out", str(cnn)],
    ]
    for cmd in setup:
        _run(cmd, log)
    images = layout.image_path(npix, "test")
    n = len(load_npy(images))
    commands = {
        "featuremass predict --images (full features, LightGBM)":
            # the default --scale auto, as the model's training table was extracted
            [exe, "predict", "--model", str(lgbm), "--images", str(images), "-j", "2",
             "--out", str(work / "pred_lgbm.csv"), "--overwrite"],
        "featuremass predict --images (fast-tier model, LightGBM)":
            [exe, "predict", "--model", str(lgbm_fast), "--images", str(images),
             "--out", str(work / "pred_fast.csv"), "--overwrite"],
        "featuremass cnn predict": [exe, "cnn", "predict", "--model", str(cnn), "--data", root, "--npix",
                                    str(npix), "--split", "test", "--out", str(work / "pred_cnn.csv"),
                                    "--overwrite"],
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
    for _ in range(args.rounds):
        for name, cmd in commands.items():
            times[name].append(_run(cmd, log))
    lines = ["## `predict --images` against `cnn predict` (whole commands, same stamps)", "",
             f"{n} seed-stretched {npix} px test stamps; {args.rounds} alternated rounds; the LightGBM model "
             f"was trained on {layout.image_path(npix, 'train').name} full features, the CNN for "
             f"{args.cnn_epochs} epoch(s) (prediction cost does not depend on training quality). "
             "`predict` (full set) runs 2 extraction processes, the fast-tier model one (it is batched NumPy); "
             "TensorFlow uses every core.", "",
             "| command | median wall s | median CPU s | ms per galaxy (wall) |", "|---|---|---|---|"]
    med = {}
    for name, tt in times.items():
        wall = float(np.median([t[0] for t in tt]))
        cpu = float(np.median([t[1] for t in tt]))
        med[name] = wall
        lines.append(f"| {name} | {wall:.1f} | {cpu:.1f} | {wall / n * 1e3:.1f} |")
    a, f, b = med.values()
    lines += ["", f"`predict --images` (full set) / `cnn predict` wall-time ratio: **{a / b:.2f}** "
              f"(≤ 1 is the target); the fast-tier model (one process): **{f / b:.2f}**.", ""]
    print(f"predict: lgbm/cnn wall ratio {a / b:.2f}, fast/cnn {f / b:.2f}", flush=True)
    return lines


_ARCHIVE_SNIPPET = """
import json, time
from featuremass.features.batch import extract_features
from featuremass.io.layout import load_npy
images = load_npy({path!r}, mmap=True)[:{n}]
t0 = time.perf_counter()
extract_features(images, scale={scale!r}, n_jobs={jobs}, chunk_size={chunk}, out={out!r})
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""


def _tree_rss(proc) -> tuple[int, int]:
    """Resident memory (bytes) of a process and all its descendants: all of it, and without
    file-backed pages (``rss - shared``: the memory-mapped stamps read so far are resident
    but clean, and the kernel drops them under pressure)."""
    import psutil

    total = anon = 0
    with contextlib.suppress(psutil.Error):
        for p in (proc, *proc.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                info = p.memory_info()
                total += info.rss
                anon += info.rss - getattr(info, "shared", 0)
    return total, anon


def _measure_tree(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; wall and CPU seconds (children included) and the peak summed RSS, sampled every 0.2 s."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = peak_anon = 0
    while proc.poll() is None:
        rss, anon = _tree_rss(ps)
        peak, peak_anon = max(peak, rss), max(peak_anon, anon)
        time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed: {err[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "peak_rss": peak, "peak_anon": peak_anon, "stdout": out}


def section_archive(layout, args, work: Path) -> list[str]:
    """Whole extractions of n stamps at 128 px from a memory map (time against n, peak memory).

    The stamps are the seed-stretched test split of ``--archive-data`` (simulated
    there with ``max(--archive)`` test galaxies at 128 px when missing), read
    through a memory map in a fresh process running
    ``extract_features(..., n_jobs=--archive-jobs, out=table.parquet)``.
    """
    root = args.archive_data if args.archive_data is not None else Path("bench-work") / "archive"
    n_max = max(args.archive)
    if not (root / "images").exists():
        from featuremass.io.simulate import SurveyConfig, simulate_survey

        t0 = time.perf_counter()
        cfg = SurveyConfig(n_train=1, n_val=1, n_test=n_max, npix=(128,), seed=args.seed)
        simulate_survey(root, cfg, n_jobs=args.archive_jobs, overwrite=True)
        print(f"archive: simulated {n_max} stamps in {time.perf_counter() - t0:.0f} s", flush=True)
    path = SeedLayout(root).image_path(128, "test")
    have = len(load_npy(path, mmap=True))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    lines = ["## Whole extractions at 128 px: time against n, peak memory", "",
             f"Seed-stretched simulated 128 px stamps ({path}), read through a memory map in a fresh "
             f"process: `extract_features(images[:n], scale=\"{args.archive_scale}\", "
             f"n_jobs={args.archive_jobs}, chunk_size={args.archive_chunk}, out=table.parquet)` "
             "(start-up of the workers and the Parquet write included). Peak memory is the summed "
             "resident memory of the process and its workers, sampled every 0.2 s; without file-backed pages "
             "(`rss - shared`) it leaves out the memory-mapped stamps already read, which stay resident but "
             "clean (the kernel drops them under pressure).", "",
             "| n | wall s | CPU s (all processes) | ms per galaxy (wall) | galaxies/s | peak RSS (GB) "
             "| peak RSS without file-backed pages (GB) | extrapolated to 73,627 (min, wall) |",
             "|---|---|---|---|---|---|---|---|"]
    for n in args.archive:
        if n > have:
            lines.append(f"| {n} | (only {have} stamps in {path}) | | | | | | |")
            continue
        out = work / f"archive_{n}.parquet"
        snippet = _ARCHIVE_SNIPPET.format(path=str(path), n=n, scale=args.archive_scale, jobs=args.archive_jobs,
                                          chunk=args.archive_chunk, out=str(out))
        try:
            r = _measure_tree([sys.executable, "-c", snippet], env)
        except RuntimeError as exc:  # one failed (or killed) size keeps the others' rows
            lines.append(f"| {n} | failed: {str(exc)[-200:]} | | | | | | |")
            continue
        per = r["wall"] / n
        lines.append(f"| {n} | {r['wall']:.1f} | {r['cpu']:.1f} | {per * 1e3:.2f} | {n / r['wall']:.0f} "
                     f"| {r['peak_rss'] / 1e9:.2f} | {r['peak_anon'] / 1e9:.2f} | {per * 73627 / 60:.1f} |")
        print(f"archive n={n}: {r['wall']:.1f} s wall, peak {r['peak_rss'] / 1e9:.2f} GB", flush=True)
        with contextlib.suppress(OSError):
            out.unlink()
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--npix", type=int, nargs="+", default=[69, 128])
    p.add_argument("--n-ratio", type=int, default=40, help="simulated stamps per size for the statmorph ratio")
    p.add_argument("--n-scaling", type=int, default=400)
    p.add_argument("--n-fast", type=int, default=2000)
    p.add_argument("--n-predict", type=int, default=1000, help="test stamps for the predict comparison")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--cnn-epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--baseline", default="84bb0c8", help="git commit the baseline section compares with")
    p.add_argument("--n-baseline", type=int, default=200)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=None, help="reuse (or create) a simulated survey here")
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--name", default="performance.md",
                   help="report file inside --out (e.g. archive.md for a run of the archive section alone)")
    p.add_argument("--archive", type=int, nargs="+", default=[1000, 10000],
                   help="section archive: numbers of 128 px stamps to extract whole (e.g. 1000 10000 73627)")
    p.add_argument("--archive-data", type=Path, default=None,
                   help="section archive: a survey with max(--archive) 128 px test stamps "
                        "(simulated there if missing; default bench-work/archive)")
    p.add_argument("--archive-jobs", type=int, default=2, help="section archive: worker processes (default 2)")
    p.add_argument("--archive-chunk", type=int, default=1000, help="section archive: chunk size (default 1000)")
    p.add_argument("--archive-scale", default="auto", help="section archive: scale mode (default auto)")
    args = p.parse_args(argv)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # one BLAS thread: per-core timings; subprocesses set their own
    provenance = provenance_markdown(None if argv is None else [f"benchmarks/{Path(__file__).name}", *argv])
    tmp = tempfile.TemporaryDirectory(prefix="featuremass-speed-")
    root = args.data if args.data is not None else Path(tmp.name) / "survey"
    n_test = max(args.n_ratio, args.n_scaling, args.n_fast, args.n_predict)
    t0 = time.perf_counter()
    needs_survey = any(name != "archive" for name in args.sections)  # archive has its own stamps
    if needs_survey and not (root / "images").exists():
        from featuremass.io.simulate import SurveyConfig, simulate_survey

        cfg = SurveyConfig(n_train=args.n_train, n_val=max(1, args.n_train // 10), n_test=n_test,
                           npix=tuple(args.npix), seed=args.seed)
        simulate_survey(root, cfg, n_jobs=2, overwrite=True)
    layout = SeedLayout(root) if needs_survey else None
    sim_s = time.perf_counter() - t0
    lines = ["# Performance", "", provenance]
    if needs_survey:
        lines.append(f"- simulated survey: {root} ({n_test} test stamps per size; {sim_s:.0f} s to simulate or find)")
    lines.append("")
    for name in args.sections:
        t0 = time.perf_counter()
        if name in ("predict", "archive"):
            lines += globals()[f"section_{name}"](layout, args, Path(tmp.name))
        else:
            lines += globals()[f"section_{name}"](layout, args)
        lines.append(f"_(section {name}: {time.perf_counter() - t0:.0f} s)_\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.name).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / args.name}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
