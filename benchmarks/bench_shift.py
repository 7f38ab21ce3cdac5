"""Preprocessing-shift study: models trained on one preprocessing, tested on the same galaxies under another.

Users apply a model trained on one survey's preprocessing to stamps prepared
another way. This study trains every model on the default preprocessing (the
seed's shifted-log stretch, crop factor 2.5, the survey's PSF range) and
scores it on the *same test galaxies* re-rendered under:

* each other stretch of the simulator (``featuremass simulate --stretch``:
  clipped-log, asinh, linear);
* a tighter crop (``--crop-factor 2.0``: the R90 diameter fills the whole frame);
* a broader PSF (``SurveyConfig.psf_fwhm_range`` scaled by 1.4, i.e. 1.54-2.52
  arcsec instead of 1.1-1.8: worse seeing; the simulator crops by the
  PSF-broadened size, so the crop follows the PSF as a survey pipeline's would).

The test galaxies are re-rendered with the simulator's own per-galaxy function
(:func:`featuremass.io.simulate.simulate_galaxy` with galaxy index ``i`` of the
base survey and the changed setting): the galaxy's parameters come from its own
random stream, so the galaxy is the same and only the preprocessing changes.
The script checks this: every latent parameter and the M/L in the variant's
truth rows must equal the base survey's (only the changed setting and what it
determines may differ), and re-rendering the default reproduces the stored
test stamps bit for bit.

Models (those of the accuracy benchmark's 69 px, 10k, image-only, seed-0 cell):
the CNN is the cell's trained CNN, loaded from the accuracy cache and fed the
stamps as stored (that is how CNNs are used); LightGBM on the full feature set,
LightGBM on the fast tier and the hybrid (the same CNN, ``prefit``) are refitted
with the cell's seed on the cell's data (deterministic: their default-test
predictions are checked against the cached ones) and see features measured
with ``scale="auto"``. Each gets RMSE and R² with bootstrap 95% intervals, the
change in RMSE against the default with a paired bootstrap interval, and the
empirical coverage of its 68% and 95% conformal intervals
(:mod:`featuremass.models.conformal`: CQR for the two LightGBM models, split
conformal on absolute residuals for the CNN and the hybrid), calibrated on
training-split galaxies the models never saw (those after the first N).

Writes ``OUT/shift.md`` and ``OUT/shift.json``; the re-rendered stamps, their
truth and features are kept under ``--work`` (reused when rerun).

    python benchmarks/bench_shift.py --data /path/sim-benchmark

Smoke run (after ``bench_accuracy.py --quick --out /tmp/bench``)::

    python benchmarks/bench_shift.py --quick --out /tmp/bench
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import bench_accuracy as acc  # noqa: E402  (the accuracy benchmark's cache and features)

MODELS = ("lgbm", "fast", "cnn", "hybrid")
PSF_SCALE = 1.4
TIGHT_CROP = 2.0
LEVELS = (0.68, 0.95)


def variants(base) -> dict[str, dict]:
    """Name -> SurveyConfig overrides of each preprocessing; the first is the training one."""
    out = {f"default ({base.stretch})": {}}
    from featuremass.io.stretch import STRETCHES

    for stretch in STRETCHES:
        if stretch != base.stretch:
            out[f"stretch {stretch}"] = {"stretch": stretch}
    out[f"crop factor {TIGHT_CROP:g}"] = {"crop_factor": TIGHT_CROP}
    lo, hi = base.psf_fwhm_range
    out[f"PSF ×{PSF_SCALE:g}"] = {"psf_fwhm_range": (round(lo * PSF_SCALE, 4), round(hi * PSF_SCALE, 4))}
    return out


# Truth columns a variant may change: its own settings and what the crop and PSF set.
VARIANT_COLUMNS = {"stretch", "stretch_softening", "crop_factor", "noise_correlation_px",
                   "star_residual"}
# The crop's size, and the foreground stars that fall in it (drawn after the galaxy).
CROP_COLUMNS = {"crop_native_px", "frame_fill", "crop_clipped", "center_dx_px", "center_dy_px",
                "n_stars", "n_stars_removed", "n_stars_kept", "star_flux_kept_nmgy",
                "star_flux_removed_nmgy", "star_residual_abs_nmgy"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "sim-benchmark",
                   help="the accuracy benchmark's simulated survey")
    p.add_argument("--cache", type=Path, default=None, help="accuracy cache (default DATA/bench-cache)")
    p.add_argument("--cell", type=acc.Cell.parse, default=acc.Cell(69, 10000, "image", 0),
                   help="the accuracy cell whose models are shifted (image-only)")
    p.add_argument("--work", type=Path, default=None,
                   help="re-rendered test sets and their features (default DATA/shift)")
    p.add_argument("--out", type=Path, default=REPO / "reports")
    p.add_argument("--n-test", type=int, default=None, help="first N test galaxies (default all)")
    p.add_argument("--n-cal", type=int, default=5000, help="calibration galaxies (unused training rows)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("-j", "--jobs", type=int, default=None)
    p.add_argument("--prepare", action="store_true",
                   help="only render the shifted test sets and measure their features and the "
                        "calibration galaxies' (needs no trained model; run it while the CNN trains)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run on bench_accuracy.py --quick's survey and cell")
    args = p.parse_args(argv)
    if args.quick:
        args.cell, args.n_test, args.n_cal, args.n_boot = acc.Cell(32, 150, "image", 0), 60, 100, 200
        if args.data == REPO / "data" / "sim-benchmark":
            args.data = args.out / "sim-quick"
    if args.cell.inputs != "image":
        p.error("--cell must be an image-only cell (the shifted stamps carry no D and L_g change)")
    args.jobs = args.jobs or os.cpu_count() or 1
    args.cache = args.cache or args.data / "bench-cache"
    args.work = args.work or args.data / "shift"
    return args


def base_config(data: Path):
    import pyarrow.parquet as pq

    from featuremass.io.simulate import SurveyConfig

    meta = json.loads(pq.read_schema(data / "truth" / "truth.parquet").metadata[b"featuremass"])
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
    return SurveyConfig(**cfg)


def _render_chunk(config, npix: int, indices) -> tuple[list[dict], np.ndarray]:
    from featuremass.io.simulate import simulate_galaxy

    rows, stamps = [], []
    for i in indices:
        truth, images = simulate_galaxy(config, int(i))
        rows.append(truth)
        stamps.append(images[npix][1])
    return rows, np.stack(stamps).astype(np.float32)


def render(config, npix: int, indices, jobs: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Truth rows and ``npix`` stretched stamps of galaxies ``indices`` under ``config``."""
    chunks = [indices[a:a + 50] for a in range(0, len(indices), 50)]
    if jobs == 1:
        parts = [_render_chunk(config, npix, c) for c in chunks]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            parts = list(pool.map(_render_chunk, [config] * len(chunks), [npix] * len(chunks), chunks))
    rows = [r for part in parts for r in part[0]]
    return pd.DataFrame(rows), np.concatenate([part[1] for part in parts])


def variant_set(args, name: str, overrides: dict, base, npix: int, indices, ids, stored) -> dict:
    """Stamps, truth and feature tables of one variant (rendered once, then read back).

    The default preprocessing (no ``overrides``) is the survey's stored test split,
    ``stored = (stamps, truth)`` (re-rendering it is checked to be bit-identical).
    """
    from featuremass.features.batch import extract_features, read_feature_table
    from featuremass.io.layout import atomic_output

    folder = args.work / name.replace(" ", "_").replace("×", "x").replace("(", "").replace(")", "")
    folder.mkdir(parents=True, exist_ok=True)
    images_path, truth_path = folder / f"test_{npix}px.npy", folder / "truth.parquet"
    config = dataclasses.replace(base, npix=(npix,), **overrides)
    if not overrides:
        images_path = None
    elif not (images_path.is_file() and truth_path.is_file()
            and np.array_equal(pd.read_parquet(truth_path, columns=["galaxy_id"])["galaxy_id"], ids)):
        t0 = time.perf_counter()
        truth, stamps = render(config, npix, indices, args.jobs)
        truth.insert(0, "galaxy_id", ids)
        with atomic_output(images_path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, stamps)
        with atomic_output(truth_path) as tmp:
            truth.to_parquet(tmp)
        print(f"{name}: rendered {len(ids)} galaxies in {time.perf_counter() - t0:.0f} s", flush=True)
    out = {"images": stored[0] if images_path is None else np.load(images_path, mmap_mode="r"),
           "truth": stored[1] if images_path is None else pd.read_parquet(truth_path),
           "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items()}}
    for feature_set in ("full", "fast"):
        path = folder / f"features_{feature_set}_auto.parquet"
        table = None
        if path.is_file():
            table, _ = read_feature_table(path)
            if not np.array_equal(table["galaxy_id"].to_numpy(), ids):
                table = None
        if table is None:
            table = extract_features(out["images"], ids, scale="auto", feature_set=feature_set,
                                     n_jobs=args.jobs, out=path)
        out[feature_set] = table.set_index("galaxy_id").loc[ids].reset_index()
    return out


def same_galaxies(base_truth: pd.DataFrame, variant_truth: pd.DataFrame, overrides: dict) -> dict:
    """Compare a variant's truth with the base survey's, column by column, galaxy by galaxy."""
    allowed = set(VARIANT_COLUMNS)
    if "crop_factor" in overrides or "psf_fwhm_range" in overrides:
        allowed |= CROP_COLUMNS
    if "psf_fwhm_range" in overrides:
        allowed |= {"psf_fwhm_arcsec", "psf_beta"}
    common = [c for c in base_truth.columns if c in variant_truth.columns and c != "split"]
    differ = []
    for c in common:
        a, b = base_truth[c].to_numpy(), variant_truth[c].to_numpy()
        try:
            same = np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        except TypeError:
            same = all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))
        if not same:
            differ.append(c)
    unexpected = [c for c in differ if c not in allowed]
    return {"columns_compared": len(common), "differ": differ, "unexpected": unexpected}


class FixedPoint:
    """A point model whose predictions are given (``X`` *is* the prediction), for split conformal."""

    target = "linear"

    def predict_raw(self, X):
        return np.asarray(X, dtype=np.float64).ravel()


def main(argv=None) -> int:
    from featuremass._version import FEATURE_ENGINE_VERSION
    from featuremass.io.layout import atomic_output, load_split
    from featuremass.models.cnn import CNNRegressor
    from featuremass.models.conformal import ConformalIntervals
    from featuremass.models.gbm import GBMRegressor
    from featuremass.models.hybrid import HybridRegressor
    from featuremass.models.metrics import paired_difference, regression_report, rmse
    from featuremass.report.provenance import provenance, provenance_markdown

    args = parse_args(argv)
    command = "python benchmarks/bench_shift.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    t_start = time.perf_counter()
    cell, npix, n = args.cell, args.cell.npix, args.cell.n_train
    cnn_dir = acc.cnn_paths(args, cell)["model"]
    if not args.prepare and not (cnn_dir / "model.json").is_file():
        raise SystemExit(f"error: no trained CNN for {cell} in {cnn_dir}; run "
                         f"bench_accuracy.py --cells {npix}:{n}:image:{cell.seed} first")
    base = base_config(args.data)
    truth_all = pd.read_parquet(args.data / "truth" / "truth.parquet")
    test = load_split(args.data, npix=npix, split="test")
    n_test = min(args.n_test or len(test.ids), len(test.ids))
    ids = np.asarray(test.ids[:n_test])
    y = np.asarray(test.target[:n_test], dtype=np.float64)
    index_of = pd.Series(np.arange(len(truth_all)), index=truth_all["galaxy_id"])
    indices = index_of.loc[ids].to_numpy()  # galaxy i of the survey: its own random stream
    base_truth = truth_all.set_index("galaxy_id").loc[ids].reset_index()

    # Re-rendering the default must reproduce the stored stamps exactly.
    k = min(20, n_test)
    _, check = render(dataclasses.replace(base, npix=(npix,)), npix, indices[:k], 1)
    reproduced = bool(np.array_equal(check, np.asarray(test.images[:k], dtype=np.float32)))
    print(f"default re-render of {k} test galaxies bit-identical to the stored stamps: {reproduced}",
          flush=True)
    if not reproduced:
        raise SystemExit("error: the simulator does not reproduce the stored test stamps; "
                         "the survey was made by another version")

    stored = (np.asarray(test.images[:n_test]), base_truth)
    checks = {}
    for vname, overrides in variants(base).items():
        vs = variant_set(args, vname, overrides, base, npix, indices, ids, stored)
        checks[vname] = same_galaxies(base_truth, vs["truth"], overrides)
        if checks[vname]["unexpected"]:
            raise SystemExit(f"error: {vname} changed galaxy parameters "
                             f"{checks[vname]['unexpected']}: not the same galaxies")
    train = load_split(args.data, npix=npix, split="train")
    n_cal = min(args.n_cal, len(train.ids) - n)
    if n_cal < 50:
        raise SystemExit(f"error: only {n_cal} training galaxies after the first {n} to calibrate on")
    cal = slice(n, n + n_cal)

    def cal_table(fs, cols=None):  # the unused training galaxies, measured into the shift folder
        sub = argparse.Namespace(ids=train.ids[cal], images=train.images[cal])
        path_args = argparse.Namespace(data=args.work / "calibration", jobs=args.jobs)
        table = acc.feature_table(path_args, npix, "train_unused", sub, n_cal, fs)
        return table if cols is None else table[cols[fs]]

    if args.prepare:
        for fs in ("full", "fast"):
            cal_table(fs)
        print("prepared: variants rendered, their features and the calibration features measured")
        return 0

    # Training data of the cell, as the accuracy benchmark sees it.
    acc_args = argparse.Namespace(data=args.data, jobs=args.jobs, cache=args.cache)
    data = acc.SurveyData(acc_args, npix)
    cols = {fs: data.columns(fs) for fs in ("full", "fast")}
    y_train, y_val = data.y["train"][:n], data.y["val"]
    y_cal = data.y["train"][cal]

    def table(split, fs, rows=None):
        return data.table(split, fs, rows)[cols[fs]]

    seed = cell.seed
    models = {}
    for fs, name in (("full", "lgbm"), ("fast", "fast")):
        gbm = GBMRegressor(random_state=seed, n_jobs=args.jobs).fit(
            table("train", fs, n), y_train, X_val=table("val", fs), y_val=y_val)
        ci = ConformalIntervals(method="cqr", levels=LEVELS,
                                quantile_params={"random_state": seed, "n_jobs": args.jobs})
        ci.fit(table("train", fs, n), y_train, X_cal=cal_table(fs, cols), y_cal=y_cal, point_model=gbm,
               X_val=table("val", fs), y_val=y_val)
        models[name] = {"kind": fs, "model": gbm, "conformal": ci}
    cnn = CNNRegressor.load(cnn_dir)
    hyb = HybridRegressor(npix=npix, cnn=cnn, prefit=True, n_components=16, seed=seed,
                          gbm_params={"n_jobs": args.jobs})
    hyb.fit(data.ds["train"].images[:n], y_train, features=table("train", "full", n),
            val=(data.ds["val"].images, table("val", "full"), y_val))
    cal_images = data.ds["train"].images[cal]
    for name, predict in (("cnn", lambda im, feats: cnn.predict(im)),
                          ("hybrid", lambda im, feats: hyb.predict(im, feats))):
        p_cal = predict(cal_images, cal_table("full", cols))
        ci = ConformalIntervals(method="split", levels=LEVELS).fit(
            None, None, X_cal=p_cal, y_cal=y_cal, point_model=FixedPoint())
        models[name] = {"kind": "image", "predict": predict, "conformal": ci}

    results, preds = [], {}
    for vname, overrides in variants(base).items():
        vs = variant_set(args, vname, overrides, base, npix, indices, ids, stored)
        for name in MODELS:
            m = models[name]
            if name in ("lgbm", "fast"):
                X = vs[m["kind"]][cols[m["kind"]]]
                p = m["model"].predict(X)
                cov = m["conformal"].coverage(X, y, m["model"].predict_raw(X))
            else:
                p = m["predict"](vs["images"], vs["full"][cols["full"]])
                cov = m["conformal"].coverage(p, y, p)
            preds[(vname, name)] = p
            rep = regression_report(y, p, n_boot=args.n_boot, random_state=0)
            row = {"variant": vname, "model": name, "overrides": vs["config"],
                   "rmse": rep["linear"]["rmse"]["value"], "rmse_ci": rep["linear"]["rmse"]["ci95"],
                   "r2": rep["linear"]["r2"]["value"], "r2_ci": rep["linear"]["r2"]["ci95"],
                   "coverage68": cov["68"], "coverage95": cov["95"]}
            first = next(iter(variants(base)))
            if vname != first:
                d = paired_difference(rmse, y, p, preds[(first, name)], n_boot=args.n_boot,
                                      random_state=0)
                row["delta_rmse"], row["delta_rmse_ci"] = d["value"], d["ci95"]
            results.append(row)
            print(f"{vname:<22} {name:<7} RMSE {row['rmse']:.3f} R2 {row['r2']:.3f} "
                  f"cov68 {cov['68']:.3f} cov95 {cov['95']:.3f}", flush=True)

    # The refitted models must be the accuracy cell's (its default-test predictions).
    first = next(iter(variants(base)))
    consistency = {}
    for name in MODELS:
        path = args.cache / cell.key / f"{name}.json"
        if path.is_file():
            cached = np.asarray(json.loads(path.read_text())["pred"])[:n_test]
            consistency[name] = float(np.max(np.abs(cached - preds[(first, name)])))

    write_outputs(args, command, results, checks, consistency, reproduced, n_test, n_cal,
                  time.perf_counter() - t_start, FEATURE_ENGINE_VERSION, provenance,
                  provenance_markdown, atomic_output)
    return 0


def verdict_lines(results: list[dict]) -> list[str]:
    """Which model degrades least, per shift and over all shifts, from the measured ΔRMSE."""
    df = pd.DataFrame([r for r in results if "delta_rmse" in r])
    lines = []
    for vname, g in df.groupby("variant", sort=False):
        g = g.sort_values("delta_rmse")
        best, second = g.iloc[0], g.iloc[1]
        separated = best["delta_rmse_ci"][1] < second["delta_rmse_ci"][0]
        lines.append(f"- **{vname}**: least degraded: {best['model']} (ΔRMSE "
                     f"{best['delta_rmse']:+.3f} [{best['delta_rmse_ci'][0]:+.3f}, "
                     f"{best['delta_rmse_ci'][1]:+.3f}]); next {second['model']} "
                     f"({second['delta_rmse']:+.3f}){'' if separated else ', intervals overlap'}; "
                     f"most degraded: {g.iloc[-1]['model']} ({g.iloc[-1]['delta_rmse']:+.3f}); "
                     f"lowest shifted RMSE: {g.sort_values('rmse').iloc[0]['model']} "
                     f"({g['rmse'].min():.3f})")
    mean = df.groupby("model")["delta_rmse"].mean().sort_values()
    worst = df.groupby("model")["delta_rmse"].max().sort_values()
    lines += ["", f"Over the {df.variant.nunique()} shifts, mean ΔRMSE: "
              + ", ".join(f"{m} {v:+.3f}" for m, v in mean.items())
              + "; worst case: " + ", ".join(f"{m} {v:+.3f}" for m, v in worst.items())
              + f". **Least degraded on average: {mean.index[0]}; smallest worst case: "
              f"{worst.index[0]}.**"]
    cov = df.groupby("model")["coverage95"].min().sort_values(ascending=False)
    lines += ["", "ΔRMSE measures robustness alone (a model close to the mean predictor has "
              "little to lose), so read it beside the shifted RMSE, which says which model is "
              "still best under the shift."]
    lines += ["", "Lowest 95%-interval coverage under any shift: "
              + ", ".join(f"{m} {v:.3f}" for m, v in cov.items()) + "."]
    return lines


def write_outputs(args, command, results, checks, consistency, reproduced, n_test, n_cal, seconds,
                  engine, provenance, provenance_markdown, atomic_output) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "provenance": provenance(), "cell": str(args.cell),
               "n_test": n_test, "n_calibration": n_cal, "feature_engine_version": engine,
               "feature_scale": "auto", "default_rerender_bit_identical": reproduced,
               "same_galaxies": checks, "refit_vs_cached_max_abs_diff": consistency,
               "rows": results, "seconds": seconds}
    with atomic_output(args.out / "shift.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=1))
    lines = ["# Preprocessing shift: trained on one preprocessing, tested on another", "",
             provenance_markdown(), f"- this run took {seconds / 60:.1f} min", "",
             f"Models of the accuracy benchmark's cell *{args.cell}* (see "
             "[benchmark.md](benchmark.md)), trained on the default preprocessing, scored on "
             f"the first {n_test:,} test galaxies of the same survey re-rendered under each "
             "preprocessing. The CNN sees the stamps as stored; LightGBM (full feature set), "
             f"the fast tier and the hybrid see features of feature engine {engine} measured "
             "with `scale=\"auto\"`. RMSE and R² (linear M/L) with bootstrap 95% intervals "
             f"({args.n_boot} resamples); ΔRMSE is the change against the default "
             "preprocessing on the same galaxies, with a paired bootstrap interval. Coverage: "
             "fraction of test galaxies inside their 68% / 95% conformal interval (CQR for "
             "lgbm and fast, split conformal for cnn and hybrid), calibrated on "
             f"{n_cal:,} training-split galaxies that no model was trained on, under the "
             "default preprocessing.", "",
             "**Same galaxies.** Re-rendering the default preprocessing reproduced the stored "
             f"test stamps bit for bit: {'yes' if reproduced else 'NO'}. Truth tables, "
             "variant against base (columns compared; those that differ, all expected):", ""]
    for vname, c in checks.items():
        lines.append(f"- {vname}: {c['columns_compared']} columns, differ: "
                     f"{', '.join(c['differ']) or 'none'}")
    if consistency:
        lines += ["", "Refitted models against the accuracy cell's cached default-test "
                  "predictions, max |difference|: "
                  + ", ".join(f"{m} {v:.2g}" for m, v in consistency.items()) + "."]
    lines += ["", "| preprocessing | model | RMSE | $R^2$ | ΔRMSE vs default | coverage 68% | "
              "coverage 95% |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        d = (f"{r['delta_rmse']:+.3f} [{r['delta_rmse_ci'][0]:+.3f}, {r['delta_rmse_ci'][1]:+.3f}]"
             if "delta_rmse" in r else "-")
        lines.append(f"| {r['variant']} | {r['model']} | {r['rmse']:.3f} [{r['rmse_ci'][0]:.3f}, "
                     f"{r['rmse_ci'][1]:.3f}] | {r['r2']:.3f} [{r['r2_ci'][0]:.3f}, "
                     f"{r['r2_ci'][1]:.3f}] | {d} | {r['coverage68']:.3f} | {r['coverage95']:.3f} |")
    lines += ["", "## Which degrades least", "", *verdict_lines(results), "",
              "Variants: " + "; ".join(
                  f"{r['variant']}: {json.dumps(r['overrides']) if r['overrides'] else 'as trained'}"
                  for r in results if r["model"] == MODELS[0]) + ".", ""]
    with atomic_output(args.out / "shift.md") as tmp:
        tmp.write_text("\n".join(lines))
    print(args.out / "shift.md")


if __name__ == "__main__":
    sys.exit(main())
