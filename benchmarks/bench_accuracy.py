"""Accuracy benchmark: classical features vs the CNN vs the hybrid, on identical splits.

On the simulated survey (``featuremass simulate``), for every training size,
image size and input set, every model is trained on the same first-N training
galaxies, early-stopped on the same validation split, and scored on the same
test split. Models:

* ``mean``        the training mean (the R² = 0 reference);
* ``extra only``  LightGBM on distance and L_g alone (no image);
* ``ridge``       ridge regression on the standardised morphology features;
* ``lgbm``        LightGBM on the morphology features;
* ``cnn``         the seed's CNN (:class:`featuremass.models.cnn.CNNRegressor`);
* ``hybrid``      CNN embedding (16 PCs) + morphology -> LightGBM;
* ``oracle``      LightGBM on the simulation's true latent parameters that an image
                  can show (``featuremass.io.simulate.ORACLE_COLUMNS``: structure and
                  observing conditions; not the colours, dust optical depth, M/L or
                  mass), plus distance and L_g for the image+dl inputs: the floor an
                  image model could reach.

Each gets the test RMSE and R² with bootstrap 95% intervals, and its wall time.
Features are measured once per (npix, split) on the largest training set;
smaller training sets are its first N rows. Writes ``OUT/benchmark.md`` (table
shaped like the seed's results table), ``OUT/benchmark.json`` and figures in
``OUT/figures/``.

Default (CPU-feasible) grid::

    python benchmarks/bench_accuracy.py                 # 69 px at 1k, 3k, 10k; 128 px at 10k

Full grid (GPU recommended)::

    python benchmarks/bench_accuracy.py --sizes 1000 3000 10000 30000 --large-sizes 1000 3000 10000 30000

Smoke run::

    python benchmarks/bench_accuracy.py --quick --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
MODEL_ORDER = ("mean", "extra only", "ridge", "lgbm", "cnn", "hybrid", "oracle")
FULL_SIZES = (1000, 3000, 10000, 30000)  # the full grid, at both image sizes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "sim-benchmark",
                   help="simulated survey folder (created when missing)")
    p.add_argument("--out", type=Path, default=REPO / "reports")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000],
                   help="training sizes at --npix")
    p.add_argument("--npix", type=int, default=69)
    p.add_argument("--large-npix", type=int, default=128)
    p.add_argument("--large-sizes", type=int, nargs="*", default=[10000],
                   help="training sizes at --large-npix (none: skip)")
    p.add_argument("--n-val", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=5000)
    p.add_argument("--inputs", nargs="+", default=["image", "image+dl"],
                   choices=["image", "image+dl"])
    p.add_argument("--models", nargs="+", default=list(MODEL_ORDER), choices=MODEL_ORDER)
    p.add_argument("--epochs", type=int, default=50, help="CNN epochs (early stopping applies)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-j", "--jobs", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--cache", type=Path, default=None,
                   help="per-cell results and trained CNNs (default DATA/bench-cache); a cell "
                        "already there is not recomputed, so a long grid can be run in parts")
    p.add_argument("--cached-cnn-only", action="store_true",
                   help="skip cnn/hybrid cells whose CNN is not in the cache (report what exists)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 32 px, 150/300 training galaxies, 2 CNN epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.npix, args.large_sizes = [150, 300], 32, []
        args.n_val, args.n_test, args.epochs, args.n_boot = 80, 150, 2, 200
        if args.data == REPO / "data" / "sim-benchmark":
            args.data = args.out / "sim-quick"
    args.jobs = args.jobs or os.cpu_count() or 1
    args.cache = args.cache or args.data / "bench-cache"
    args.skipped = []  # grid cells left out (cnn/hybrid without a cached CNN)
    return args


def ensure_survey(args) -> Path:
    from featuremass.io.layout import SeedLayout
    from featuremass.io.simulate import SurveyConfig, simulate_survey

    npix = tuple(sorted({args.npix} | ({args.large_npix} if args.large_sizes else set())))
    n_train = max(args.sizes + list(args.large_sizes))
    layout = SeedLayout(args.data)
    if all(layout.image_path(p, "test").is_file() for p in npix) and layout.truth_path.is_file():
        truth = pd.read_parquet(layout.truth_path, columns=["split"])
        counts = truth["split"].value_counts()
        if counts.get("train", 0) >= n_train and counts.get("test", 0) == args.n_test:
            print(f"reusing survey {args.data}", flush=True)
            return args.data
    cfg = SurveyConfig(n_train=n_train, n_val=args.n_val, n_test=args.n_test, npix=npix,
                       seed=args.seed)
    print(simulate_survey(args.data, cfg, n_jobs=args.jobs, overwrite=args.data.exists(),
                          progress=True), flush=True)
    return args.data


def features(args, npix: int, split: str, ds) -> pd.DataFrame:
    from featuremass.features.batch import extract_features

    path = args.data / "features" / f"{npix}px_{split}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():  # measured by an earlier run on the same galaxies: reuse
        table = pd.read_parquet(path)
        if np.array_equal(table["galaxy_id"].to_numpy(), ds.ids):
            print(f"reusing features {path}", flush=True)
            return table
    table = extract_features(ds.images, ds.ids, scale="seed-log", n_jobs=args.jobs, out=path,
                             progress=True)
    return table.set_index("galaxy_id").loc[ds.ids].reset_index()


def design_matrix(table: pd.DataFrame, columns, extra=None, rows=None) -> pd.DataFrame:
    """Morphology columns of ``table``, plus log distance and log L_g when ``extra`` is given
    (the CNN's extra inputs, so every model sees the same transformed values); first ``rows``."""
    X = table[columns].reset_index(drop=True)
    if extra is not None:
        X = X.assign(log_distance=extra[:, 0], log_L_g=extra[:, 1])
    return X if rows is None else X.iloc[:rows]


def score(y, p, args) -> dict:
    from featuremass.models.metrics import regression_report

    rep = regression_report(y, p, n_boot=args.n_boot, random_state=args.seed)
    return {"rmse": rep["linear"]["rmse"]["value"], "rmse_ci": rep["linear"]["rmse"]["ci95"],
            "r2": rep["linear"]["r2"]["value"], "r2_ci": rep["linear"]["r2"]["ci95"]}


def run_grid(args) -> tuple[list[dict], dict]:
    from featuremass.compat import has_module
    from featuremass.io.layout import load_split
    from featuremass.io.simulate import ORACLE_COLUMNS
    from featuremass.models.baselines import MeanRegressor, RidgeRegressor
    from featuremass.models.cnn import CNNRegressor, extra_inputs_from_metadata
    from featuremass.models.gbm import GBMRegressor
    from featuremass.models.hybrid import HybridRegressor
    truth = pd.read_parquet(args.data / "truth" / "truth.parquet").set_index("galaxy_id")
    oracle_cols = list(ORACLE_COLUMNS)
    models = list(args.models)
    if ("cnn" in models or "hybrid" in models) and not has_module("tensorflow"):
        print("TensorFlow missing: skipping cnn and hybrid", file=sys.stderr)
        models = [m for m in models if m not in ("cnn", "hybrid")]
    grid = [(args.npix, n) for n in args.sizes] + [(args.large_npix, n) for n in args.large_sizes]
    rows, panels = [], {}
    args.extraction = {}
    for npix in sorted({g[0] for g in grid}):
        ds = {s: load_split(args.data, npix=npix, split=s) for s in ("train", "val", "test")}
        tables = LazyFeatures(args, npix, ds)
        if {"ridge", "lgbm", "hybrid"} & set(models):
            # Measured (or read) once per image size, outside every model's time;
            # the cost per galaxy is timed separately on a subset in this run.
            for s in ds:
                tables[s]
            args.extraction[npix] = extraction_rate(ds["test"], args)
        extra = {s: extra_inputs_from_metadata(d.metadata) for s, d in ds.items()}
        y = {s: d.target for s, d in ds.items()}
        truth_X = {s: truth.loc[d.ids, oracle_cols].astype(np.float64).reset_index(drop=True)
                   for s, d in ds.items()}
        for n in sorted(n for p, n in grid if p == npix):
            n = min(n, len(ds["train"]))
            for inputs in args.inputs:
                use_extra = inputs == "image+dl"

                def design(s, rows_=None, use_extra=use_extra, tables=tables, extra=extra):
                    return design_matrix(tables[s], tables.columns,
                                         extra[s] if use_extra else None, rows_)

                for model in models:
                    if model == "extra only" and not use_extra:
                        continue
                    if model == "mean" and inputs != args.inputs[0]:
                        continue  # independent of the input set: one row per (npix, n)
                    label = inputs if model != "mean" else "-"
                    cell = args.cache / f"{npix}px-{n}-{label.replace('+', '_')}-{model.replace(' ', '_')}.json"
                    cnn_dir = cnn_cache_dir(args, npix, n, inputs)
                    if cell.is_file():
                        cached = json.loads(cell.read_text())
                        row, p = cached["row"], np.asarray(cached["pred"])
                        rows.append(row)
                        panels[(npix, n, row["inputs"], model)] = (y["test"], p)
                        print(f"{npix:>4} px {n:>6} {row['inputs']:<9} {model:<10} (cached) RMSE "
                              f"{row['rmse']:.3f} R2 {row['r2']:.3f}", flush=True)
                        continue
                    if (args.cached_cnn_only and model in ("cnn", "hybrid")
                            and not (cnn_dir / "model.keras").is_file()):
                        print(f"{npix:>4} px {n:>6} {inputs:<9} {model:<10} skipped (no cached CNN)",
                              flush=True)
                        args.skipped.append(f"{npix} px, {n:,} train, {inputs}, {model}")
                        continue
                    t0 = time.perf_counter()
                    if model == "mean":
                        p = MeanRegressor().fit(np.zeros((n, 1)), y["train"][:n]).predict(np.zeros((len(y["test"]), 1)))
                    elif model == "extra only":
                        Xe = {s: pd.DataFrame(extra[s], columns=["log_distance", "log_L_g"]) for s in ds}
                        p = GBMRegressor(random_state=args.seed, n_jobs=args.jobs).fit(
                            Xe["train"].iloc[:n], y["train"][:n], X_val=Xe["val"], y_val=y["val"]
                        ).predict(Xe["test"])
                    elif model == "ridge":
                        p = RidgeRegressor().fit(design("train", n), y["train"][:n]).predict(design("test"))
                    elif model == "lgbm":
                        p = GBMRegressor(random_state=args.seed, n_jobs=args.jobs).fit(
                            design("train", n), y["train"][:n], X_val=design("val"), y_val=y["val"]
                        ).predict(design("test"))
                    elif model == "oracle":
                        def oracle_X(s, use_extra=use_extra, truth_X=truth_X, extra=extra):
                            X = truth_X[s]
                            if use_extra:
                                X = X.assign(log_distance=extra[s][:, 0], log_L_g=extra[s][:, 1])
                            return X
                        p = GBMRegressor(random_state=args.seed, n_jobs=args.jobs).fit(
                            oracle_X("train").iloc[:n], y["train"][:n], X_val=oracle_X("val"),
                            y_val=y["val"]).predict(oracle_X("test"))
                    elif model == "cnn":
                        e = (lambda s, k=None, extra=extra: extra[s][:k]) if use_extra else (lambda s, k=None: None)
                        cnn = CNNRegressor(npix=npix, extra_inputs=use_extra, epochs=args.epochs,
                                           seed=args.seed, verbose=2)  # one log line per epoch
                        cnn.fit(ds["train"].images[:n], y["train"][:n], extra=e("train", n),
                                val=(ds["val"].images, y["val"], e("val")))
                        p = cnn.predict(ds["test"].images, e("test"))
                        cnn.save(cnn_dir)
                    elif model == "hybrid":
                        cnn = CNNRegressor.load(cnn_dir) if (cnn_dir / "model.keras").is_file() else None
                        hyb = HybridRegressor(npix=npix, cnn=cnn, prefit=cnn is not None, n_components=16,
                                              extra_inputs=use_extra, epochs=args.epochs,
                                              seed=args.seed, gbm_params={"n_jobs": args.jobs})
                        ex = (lambda s, k=None, extra=extra: extra[s][:k]) if use_extra else (lambda s, k=None: None)
                        cols = tables.columns
                        hyb.fit(ds["train"].images[:n], y["train"][:n], features=tables["train"][cols].iloc[:n],
                                extra=ex("train", n),
                                val=(ds["val"].images, tables["val"][cols], y["val"], ex("val"))
                                if use_extra else (ds["val"].images, tables["val"][cols], y["val"]))
                        p = hyb.predict(ds["test"].images, tables["test"][cols], ex("test"))
                    seconds = time.perf_counter() - t0
                    row = {"npix": npix, "n_train": n, "inputs": label, "model": model,
                           **score(y["test"], p, args), "seconds": seconds}
                    if model == "cnn":
                        row["epochs_max"] = args.epochs
                    rows.append(row)
                    cell.parent.mkdir(parents=True, exist_ok=True)
                    cell.write_text(json.dumps({"row": row, "pred": np.asarray(p).tolist()}))
                    panels[(npix, n, row["inputs"], model)] = (y["test"], p)
                    print(f"{npix:>4} px {n:>6} {row['inputs']:<9} {model:<10} RMSE "
                          f"{row['rmse']:.3f} R2 {row['r2']:.3f} ({seconds:.0f} s)", flush=True)
    return rows, panels


def extraction_rate(ds, args, n: int = 1000) -> dict:
    """Wall time of the native engine on the first ``n`` galaxies of ``ds``, this run."""
    from featuremass.features.batch import extract_features

    n = min(n, len(ds.ids))
    t0 = time.perf_counter()
    extract_features(ds.images[:n], ds.ids[:n], scale="seed-log", n_jobs=args.jobs)
    seconds = time.perf_counter() - t0
    print(f"feature extraction: {1e3 * seconds / n:.1f} ms per galaxy on {args.jobs} processes",
          flush=True)
    return {"n": n, "seconds": seconds, "jobs": args.jobs}


class LazyFeatures:
    """Feature tables per split, measured only when a model first needs them."""

    def __init__(self, args, npix, ds):
        self._args, self._npix, self._ds, self._tables = args, npix, ds, {}

    def __getitem__(self, split: str) -> pd.DataFrame:
        if split not in self._tables:
            self._tables[split] = features(self._args, self._npix, split, self._ds[split])
        return self._tables[split]

    @property
    def columns(self) -> list[str]:
        from featuremass.models.inputs import morphology_columns

        return morphology_columns(self["train"])


def cnn_cache_dir(args, npix: int, n: int, inputs: str) -> Path:
    return args.cache / f"cnn-{npix}px-{n}-{inputs.replace('+', '_')}"


def cnn_training_lines(rows: list[dict], args) -> list[str]:
    """How far each CNN trained, from the history in its saved sidecar.

    A CNN whose validation loss was still falling at the epoch cap is
    under-trained, and its row is a lower bound on what the architecture can do.
    """
    lines = []
    for r in rows:
        if r["model"] != "cnn":
            continue
        sidecar = cnn_cache_dir(args, r["npix"], r["n_train"], r["inputs"]) / "model.json"
        if not sidecar.is_file():
            continue
        meta = json.loads(sidecar.read_text())
        val = meta.get("history", {}).get("val_loss", [])
        if not val:
            continue
        ran, best = len(val), int(meta.get("best_epoch", int(np.argmin(val)) + 1))
        if ran < int(meta["params"]["epochs"]):
            ended = "early stopping"
        elif best == ran:
            ended = "epoch cap, still improving"
        else:
            ended = "epoch cap, before early stopping"
        lines.append(f"| {r['npix']} | {r['n_train']:,} | {r['inputs']} | {ran} / "
                     f"{meta['params']['epochs']} | {best} | {val[0]:.3f} → {min(val):.3f} | "
                     f"{meta['fit_seconds'] / ran:.0f} | {ended} |")
    if not lines:
        return []
    return ["## How far the CNNs trained", "",
            "From each saved CNN's training history (`model.json` in the cache). "
            "Validation loss is the MSE on the validation split. A CNN whose training was "
            "ended by the epoch cap rather than by early stopping (patience 6) may improve "
            "with more epochs, so its row is a lower bound (*still improving*: the best epoch "
            "was the last one; `reports/cnn_budget.md` trains one longer). Seconds per epoch "
            "depend on what else ran on the machine at the time.", "",
            "| npix | ntrain | inputs | epochs run / cap | best epoch | val loss first → best "
            "| s per epoch | ended by |",
            "| ---- | ------ | ------ | ---------------- | ---------- | -------------------- "
            "| ----------- | -------- |", *lines, ""]


def paired_lines(panels: dict, args) -> list[str]:
    """CNN and hybrid against LightGBM on the same test galaxies (paired bootstrap)."""
    from featuremass.models.metrics import paired_difference, rmse

    lines = []
    for npix, n, inputs, model in sorted(panels, key=lambda k: (k[0], k[1], k[2])):
        if model not in ("cnn", "hybrid") or (npix, n, inputs, "lgbm") not in panels:
            continue
        y, p = panels[(npix, n, inputs, model)]
        d = paired_difference(rmse, y, p, panels[(npix, n, inputs, "lgbm")][1],
                              n_boot=args.n_boot, random_state=args.seed)
        lo, hi = d["ci95"]
        verdict = ("better" if hi < 0 else "worse" if lo > 0 else "no significant difference")
        lines.append(f"| {npix} | {n:,} | {inputs} | {model} − lgbm | {d['value']:+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}] | {d['p_a_better']:.2f} | {verdict} |")
    if not lines:
        return []
    return ["## CNN and hybrid against LightGBM, paired", "",
            "Difference in test RMSE on the same galaxies (negative: the CNN-based model is "
            f"better), with a paired bootstrap 95% interval ({args.n_boot} resamples of the "
            "test galaxies, both models scored on each resample); *P(better)* is the fraction "
            "of resamples in which it beats LightGBM.", "",
            "| npix | ntrain | inputs | comparison | ΔRMSE | P(better) | verdict |",
            "| ---- | ------ | ------ | ---------- | ----- | --------- | ------- |", *lines, ""]


def not_measured_lines(rows: list[dict], args) -> list[str]:
    """The cells of the full grid (both image sizes, FULL_SIZES, both input sets) not run."""
    if args.quick:
        return []
    done = {(r["npix"], r["n_train"]) for r in rows}
    missing = [f"{npix} px at {n:,} training galaxies"
               for npix in (args.npix, args.large_npix) for n in FULL_SIZES
               if (npix, n) not in done]
    lines = [f"- {cell} (all models)" for cell in missing]
    lines += [f"- {cell} (no trained CNN in the cache)" for cell in args.skipped]
    return ["## Not measured in this report", "", *lines, ""] if lines else []


def figures(rows: list[dict], panels: dict, out: Path) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    paths = []
    groups = sorted({(r["npix"], r["inputs"]) for r in rows if r["inputs"] != "-"})
    fig = Figure(figsize=(5 * max(1, len(groups)), 4))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(groups)), squeeze=False)[0])
    for ax, (npix, inputs) in zip(axes, groups, strict=False):
        sub = df[(df.npix == npix) & ((df.inputs == inputs) | (df.inputs == "-"))]
        for model in MODEL_ORDER:
            g = sub[sub.model == model].sort_values("n_train")
            if g.empty:
                continue
            ci = np.array(g["rmse_ci"].tolist(), dtype=float)
            ax.errorbar(g.n_train, g.rmse, yerr=np.abs(ci.T - g.rmse.to_numpy()), marker="o",
                        capsize=2, label=model, color=f"C{MODEL_ORDER.index(model)}")
        ax.set_xscale("log")
        ax.set(xlabel="training galaxies", ylabel="test RMSE (M/L)", title=f"{npix} px, {inputs}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "benchmark_learning_curves.png")
    fig.savefig(paths[-1], dpi=110)

    # Image size: RMSE of each model at the largest training size run at both sizes.
    sizes = sorted(set(df.npix))
    common = [n for n in sorted(set(df.n_train)) if df[df.n_train == n].npix.nunique() > 1]
    if len(sizes) > 1 and common:
        n = common[-1]
        sub = df[df.n_train == n]
        inputs_sets = [i for i in ("image", "image+dl") if i in set(sub.inputs)]
        fig = Figure(figsize=(5.5 * len(inputs_sets), 3.8))
        FigureCanvasAgg(fig)
        axes = np.atleast_1d(fig.subplots(1, len(inputs_sets), squeeze=False)[0])
        width = 0.8 / len(sizes)
        for ax, inputs in zip(axes, inputs_sets, strict=True):
            models = [m for m in MODEL_ORDER
                      if not sub[(sub.model == m) & sub.inputs.isin([inputs, "-"])].empty]
            for j, npix in enumerate(sizes):
                vals, errs = [], []
                for m in models:
                    g = sub[(sub.model == m) & sub.inputs.isin([inputs, "-"]) & (sub.npix == npix)]
                    if g.empty:
                        vals.append(np.nan)
                        errs.append((0.0, 0.0))
                        continue
                    lo, hi = g.rmse_ci.iloc[0]
                    vals.append(g.rmse.iloc[0])
                    errs.append((g.rmse.iloc[0] - lo, hi - g.rmse.iloc[0]))
                x = np.arange(len(models)) + (j - (len(sizes) - 1) / 2) * width
                ax.bar(x, vals, width, yerr=np.array(errs).T, capsize=2, label=f"{npix} px",
                       color=f"C{j}")
            ax.set_xticks(np.arange(len(models)), models, rotation=30, fontsize=8)
            ax.set(ylabel="test RMSE (M/L)", title=f"{n:,} training galaxies, {inputs}")
            ax.grid(alpha=0.3, axis="y")
            ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "benchmark_image_size.png")
        fig.savefig(paths[-1], dpi=110)

    # True vs predicted at the largest training size of the main npix.
    key = max(((k[0], k[1]) for k in panels), key=lambda t: (t[1], -t[0]))
    chosen = [k for k in panels if (k[0], k[1]) == key]
    chosen.sort(key=lambda k: (MODEL_ORDER.index(k[3]), k[2]))
    ncol = min(4, len(chosen))
    nrow = int(np.ceil(len(chosen) / ncol))
    fig = Figure(figsize=(3.4 * ncol, 3.3 * nrow))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax, k in zip(axes, chosen, strict=False):
        y, p = panels[k]
        lim = (float(min(y.min(), p.min())), float(max(y.max(), p.max())))
        ax.hexbin(y, p, gridsize=35, bins="log", mincnt=1, extent=lim + lim)
        ax.plot(lim, lim, "k--", lw=1)
        rmse = float(np.sqrt(np.mean((p - y) ** 2)))
        ax.set(title=f"{k[3]} ({k[2]})", xlabel="true M/L", ylabel="predicted M/L")
        ax.text(0.04, 0.95, f"RMSE {rmse:.3f}", transform=ax.transAxes, va="top", fontsize=8)
    for ax in axes[len(chosen):]:
        ax.set_axis_off()
    fig.suptitle(f"{key[0]} px, {key[1]} training galaxies (test split)")
    fig.tight_layout()
    paths.append(out / "benchmark_true_vs_predicted.png")
    fig.savefig(paths[-1], dpi=110)
    return paths


def gpus() -> str:
    try:
        import tensorflow as tf  # only to report GPUs when present

        found = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception:  # TensorFlow missing or broken: report CPU only
        found = []
    return f"GPUs {found}" if found else "no GPU (CNN trained on the CPU)"


def survey_seed(data: Path):
    """The seed the survey was simulated with, from its truth table's metadata."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(data / "truth" / "truth.parquet").metadata or {}
        return json.loads(meta[b"featuremass"])["config"]["seed"]
    except (OSError, KeyError, ValueError):  # not a featuremass simulation: say so
        return "unknown"


def write_markdown(rows, panels, figs, args, command, seconds, out: Path) -> Path:
    from featuremass.report.provenance import provenance_markdown

    cnn_epochs = sorted({r["epochs_max"] for r in rows if "epochs_max" in r})
    lines = ["# Accuracy benchmark: classical features vs CNN", "",
             provenance_markdown(), f"- {gpus()}; this invocation took {seconds / 60:.1f} min",
             f"- per-cell results are cached in `{args.cache}`: a cell computed by an earlier "
             "invocation on the same survey is reused, and its time is from that run",
             f"- CNN: at most {', '.join(map(str, cnn_epochs)) or '-'} epochs, early stopping "
             "(patience 6) and reduce-LR-on-plateau on the validation split", "",
             f"Simulated survey `{args.data}` (simulation seed {survey_seed(args.data)}; "
             f"model seed {args.seed}): the same validation "
             f"({args.n_val}) and test ({args.n_test}) galaxies for every model; a training set "
             "of N galaxies is the first N of the largest. RMSE and R² on the test split "
             f"with bootstrap 95% intervals ({args.n_boot} resamples); time is wall-clock "
             "training plus prediction on the test split (the hybrid reuses the CNN of its row, "
             "so its time is the embedding and LightGBM only; feature extraction is listed "
             "separately below the table).", "",
             "| npix | ntrain | add $D$ & $L_g$? | model | RMSE | $R^2$ | time [s] |",
             "| ---- | ------ | ------------ | ----- | ---- | ----- | -------- |"]
    for r in rows:
        dl = {"image": "no", "image+dl": "yes"}.get(r["inputs"], "-")
        name = r["model"] + (f" (≤{r['epochs_max']} epochs)" if "epochs_max" in r else "")
        lines.append(f"| {r['npix']} | {r['n_train']:,} | {dl} | {name} | "
                     f"{r['rmse']:.3f} [{r['rmse_ci'][0]:.3f}, {r['rmse_ci'][1]:.3f}] | "
                     f"{r['r2']:.3f} [{r['r2_ci'][0]:.3f}, {r['r2_ci'][1]:.3f}] | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "`oracle` is LightGBM on the simulation's latent parameters an image can show "
              "(`featuremass.io.simulate.ORACLE_COLUMNS`; no colours, dust optical depth, M/L "
              "or mass; plus distance and L_g for the D & L_g rows): roughly the floor any "
              "image-based model can reach; the rest of its error is the hidden colour scatter "
              "and the SED-fit scatter.", ""]
    if args.extraction:
        lines += ["**Feature extraction** (native engine, paid once per galaxy and shared by "
                  "ridge, lgbm and hybrid; not included in their time column):", ""]
        n_eval = args.n_val + args.n_test
        for npix, e in sorted(args.extraction.items()):
            per = e["seconds"] / e["n"]
            n_max = max(r["n_train"] for r in rows if r["npix"] == npix)
            procs = f"{e['jobs']} process" + ("es" if e["jobs"] > 1 else "")
            lines.append(f"- {npix} px: {1e3 * per:.1f} ms per galaxy on {procs} "
                         f"(timed on {e['n']:,} test galaxies in this run, process-pool "
                         "start-up included), i.e. about "
                         f"{per * (n_max + n_eval) / 60:.1f} min for {n_max:,} training + "
                         f"{n_eval:,} validation and test galaxies")
        lines.append("")
    lines += paired_lines(panels, args)
    lines += cnn_training_lines(rows, args)
    lines += not_measured_lines(rows, args)
    for f in figs:
        lines.append(f"![{f.stem}](figures/{f.name})")
    lines += ["", "Full grid (GPU recommended):", "", "```",
              "python benchmarks/bench_accuracy.py --sizes 1000 3000 10000 30000 "
              "--large-sizes 1000 3000 10000 30000", "```", ""]
    path = out / "benchmark.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    from featuremass.report.provenance import provenance

    args = parse_args(argv)
    command = "python benchmarks/bench_accuracy.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    t0 = time.perf_counter()
    ensure_survey(args)
    rows, panels = run_grid(args)
    args.out.mkdir(parents=True, exist_ok=True)
    figs = figures(rows, panels, args.out / "figures")
    seconds = time.perf_counter() - t0
    (args.out / "benchmark.json").write_text(json.dumps(
        {"rows": rows, "command": command.strip(), "provenance": provenance(), "gpus": gpus(),
         "seconds": seconds,
         "feature_extraction": {str(k): v for k, v in args.extraction.items()}},
        indent=2))
    print(write_markdown(rows, panels, figs, args, command.strip(), seconds, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
