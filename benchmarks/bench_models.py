"""Benchmark M/L regression on the simulated survey: accuracy, intervals, importance, speed.

Every number in the report is computed here::

    python benchmarks/bench_models.py                      # 10k / 2.5k / 5k at 69 px
    python benchmarks/bench_models.py --n-train 300 --n-val 100 --n-test 200   # a smoke run

Simulates the survey (or reuses ``--data``), measures the morphology
features (``-j`` processes), then for the input sets ``image`` and
``image+dl``: LightGBM test RMSE and R² with bootstrap 95% intervals beside
the baselines (mean, ridge on standardised features, extra inputs only), the
coverage of the conformal 68% / 95% intervals on the test split, the
importance study with its plots, the rank of the noise control, and the time
of quick CPU predictions (raw images → features → M/L). Writes
``reports/models.md`` and ``reports/figures/models_*.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

INPUT_SETS = ("image", "image+dl")
#: The quick model skips the bulge + disk fit (half the extraction time): its columns.
FAST_DROP_PREFIX = "bd_"


def _chunk(n: int, jobs: int) -> int:
    """Chunks small enough that every worker process gets several."""
    return int(max(25, min(1000, -(-n // (4 * max(1, jobs))))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-val", type=int, default=2500)
    p.add_argument("--n-test", type=int, default=5000)
    p.add_argument("--npix", type=int, default=69)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-j", "--jobs", type=int, default=2,
                   help="processes for simulation / features, threads for LightGBM (default 2)")
    p.add_argument("--data", type=Path, default=None,
                   help="existing simulated survey to reuse (simulated into --work when absent)")
    p.add_argument("--work", type=Path, default=Path("bench-work/models"),
                   help="folder for the survey, feature tables, models and CSV tables")
    p.add_argument("--cv", type=int, default=5, help="CV folds for the rank stability (0: off)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--timing-n", type=int, default=10000,
                   help="galaxies for the quick-prediction timing (fewer available: extrapolated)")
    p.add_argument("--reports", type=Path, default=Path("reports"))
    return p.parse_args(argv)


# --------------------------------------------------------------------------- steps


def get_survey(args) -> Path:
    from featuremass.io.simulate import SurveyConfig, simulate_survey

    if args.data is not None:
        if not args.data.is_dir():
            raise SystemExit(f"--data {args.data} does not exist")
        return args.data
    root = args.work / "survey"
    marker = args.work / "survey.json"
    want = {"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
            "npix": args.npix, "seed": args.seed}
    if root.is_dir() and marker.is_file() and json.loads(marker.read_text()) == want:
        print(f"reusing {root}")
        return root
    cfg = SurveyConfig(n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                       npix=(args.npix,), seed=args.seed)
    t0 = time.perf_counter()
    simulate_survey(root, cfg, n_jobs=args.jobs, overwrite=True, progress=True)
    print(f"simulated {root} in {time.perf_counter() - t0:.0f} s")
    marker.write_text(json.dumps(want))
    return root


def get_features(args, root: Path) -> dict:
    """Feature tables of each split (cached in --work), and the extraction rate."""
    from featuremass.features.batch import extract_features
    from featuremass.io.layout import load_split
    from featuremass.models.inputs import read_features

    tables = {}
    feat_dir = args.work / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        ds = load_split(root, npix=args.npix, split=split)
        path = feat_dir / f"{split}_{args.npix}px.parquet"
        if path.is_file():
            table = read_features(path)
            if np.array_equal(table["galaxy_id"].to_numpy(), ds.ids):
                tables[split] = table
                continue
        extract_features(ds.images, ds.ids, scale="seed-log", n_jobs=args.jobs, out=path,
                         chunk_size=_chunk(len(ds.ids), args.jobs), progress=True)
        tables[split] = read_features(path)
    return tables


def fit_and_score(name, kind, input_set, tables, meta, args, *, noise=True, cv=0):
    """Fit one model on train (+ val), score on test. Returns (model, row, test arrays)."""
    from featuremass.models.inputs import align_columns, build_design
    from featuremass.models.metrics import regression_report
    from featuremass.models.workflow import evaluate_model, fit_model

    t0 = time.perf_counter()
    tr = build_design(tables["train"], input_set, metadata=meta, noise=noise, seed=args.seed,
                      require_target=True)
    va = build_design(tables["val"], input_set, metadata=meta, noise=noise, seed=args.seed,
                      require_target=True)
    model = fit_model(tr.X, tr.y, tr.ids, kind=kind, input_set=input_set,
                      X_val=align_columns(va.X, list(tr.X.columns)), y_val=va.y, seed=args.seed,
                      n_jobs=args.jobs, cv=cv, noise_seed=args.seed if noise else None, n_boot=200)
    fit_s = time.perf_counter() - t0
    result = evaluate_model(model, tables["test"], meta, n_boot=args.n_boot, seed=args.seed,
                            impute=True)
    te = model.design(tables["test"], meta, require_target=True)
    pred = model.predict_frame(te.X)
    assert np.allclose(regression_report(te.y, pred["ml_pred"].to_numpy(), n_boot=0)["linear"]
                       ["rmse"]["value"], result["metrics"]["linear"]["rmse"]["value"])
    row = {"model": name, "input_set": input_set,
           "n_features": 0 if kind == "mean" else len(model.feature_names),
           "fit_s": fit_s, **result}
    return model, row, (te, pred)


def quick_prediction_timing(args, root: Path, model, *, fast: bool = False) -> dict:
    """Raw images → features → M/L (with intervals) on ``--jobs`` processes.

    ``fast``: features without the bulge + disk fit, for the model trained
    without those columns.
    """
    from featuremass.features.batch import extract_features
    from featuremass.features.measure import MorphologyConfig
    from featuremass.io.layout import load_split

    pools = [load_split(root, npix=args.npix, split=s) for s in ("test", "train", "val")]
    n_avail = sum(len(p.ids) for p in pools)
    n = min(args.timing_n, n_avail)
    images = np.concatenate([np.asarray(p.images) for p in pools])[:n]
    ids = np.concatenate([p.ids for p in pools])[:n]
    config = MorphologyConfig(fit_bulge_disk=False) if fast else MorphologyConfig()
    t0 = time.perf_counter()
    table = extract_features(images, ids, scale="seed-log", n_jobs=args.jobs, config=config,
                             chunk_size=_chunk(n, args.jobs))
    t_feat = time.perf_counter() - t0
    t1 = time.perf_counter()
    if fast:
        table = table.drop(columns=[c for c in table.columns if c.startswith(FAST_DROP_PREFIX)])
    model.predict_frame(model.design(table).X)
    t_model = time.perf_counter() - t1
    total = t_feat + t_model
    return {"n": n, "features_s": t_feat, "model_s": t_model, "total_s": total,
            "per_galaxy_ms": 1e3 * total / n, "extrapolated_s": total / n * args.timing_n,
            "measured_all": n == args.timing_n}


# --------------------------------------------------------------------------- report


def _cell(entry, digits=3):
    lo, hi = entry["ci95"]
    return f"{entry['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def main(argv=None) -> int:
    args = parse_args(argv)
    from featuremass.inspect import plots
    from featuremass.inspect.importance import importance_study
    from featuremass.models.inputs import NOISE_COLUMN, load_metadata
    from featuremass.report.provenance import provenance_markdown

    provenance_md = provenance_markdown()  # load average before the run starts

    t_start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    fig_dir = args.reports / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    root = get_survey(args)
    meta = load_metadata(root)
    tables = get_features(args, root)
    n_split = {k: len(v) for k, v in tables.items()}

    rows, studies, coverage, figures = [], {}, {}, []
    main_models = {}
    _, extra_row, _ = fit_and_score("LightGBM, extra inputs only", "lgbm", "extra",
                                              tables, meta, args, noise=False)
    for input_set in INPUT_SETS:
        tag = input_set.replace("+", "_")
        model, row, (te, pred) = fit_and_score("LightGBM", "lgbm", input_set, tables, meta, args,
                                               cv=args.cv)
        main_models[input_set] = model
        model.info["test_metrics"] = row["metrics"]
        from featuremass.models.store import save_model

        save_model(args.work / "models" / f"lgbm_{tag}", model)
        rows.append(row)
        coverage[input_set] = row["coverage"]
        for name, kind in (("mean", "mean"), ("ridge (standardised)", "ridge")):
            _, brow, _ = fit_and_score(name, kind, input_set, tables, meta, args, noise=False)
            rows.append(brow)

        y, p = te.y, pred["ml_pred"].to_numpy()
        lin = row["metrics"]["linear"]
        figures.append(plots.true_vs_predicted(
            y, p, fig_dir / f"models_{tag}_true_vs_pred.png", rmse=lin["rmse"]["value"],
            r2=lin["r2"]["value"], title=f"LightGBM, {input_set}, test ({len(y)} galaxies)"))
        figures.append(plots.residuals_vs_true(y, p, fig_dir / f"models_{tag}_residuals.png",
                                               title=f"LightGBM, {input_set}"))
        cov = row["coverage"]
        figures.append(plots.coverage_plot([c["nominal"] for c in cov.values()],
                                           [c["empirical"] for c in cov.values()],
                                           fig_dir / f"models_{tag}_coverage.png",
                                           title=f"conformal intervals, {input_set}"))
        cv_gain = ([pd.Series(g, dtype=np.float64) for g in model.info["cv"]["fold_gain"]]
                   if "cv" in model.info else None)
        study_dir = args.work / f"importance_{tag}"
        study = importance_study(model.estimator, te.X, te.y, out=study_dir, cv_gain=cv_gain,
                                 random_state=args.seed)
        studies[input_set] = study
        for png in sorted(study_dir.glob("*.png")):
            dest = fig_dir / f"models_{tag}_{png.name}"
            shutil.copyfile(png, dest)
            figures.append(dest)

    rows.append(extra_row)
    fast_tables = {k: v.drop(columns=[c for c in v.columns if c.startswith(FAST_DROP_PREFIX)])
                   for k, v in tables.items()}
    fast_model, fast_row, _ = fit_and_score("LightGBM, no bulge+disk columns", "lgbm", "image",
                                            fast_tables, meta, args)
    rows.append(fast_row)
    timing = {"full": quick_prediction_timing(args, root, main_models["image"]),
              "fast": quick_prediction_timing(args, root, fast_model, fast=True)}
    wall = time.perf_counter() - t_start

    # ----------------------------------------------------------------- markdown
    L = [
        "# M/L regression on the simulated survey",
        "",
        provenance_md,
        f"- processes / LightGBM threads: {args.jobs}",
        f"- survey: `{root}`, {n_split['train']} train / {n_split['val']} val / "
        f"{n_split['test']} test galaxies at {args.npix} px, seed {args.seed}",
        f"- total wall time of this script: {wall / 60:.1f} min",
        "",
        "Models are trained on the train split; the val split is divided (seeded) into an "
        "early-stopping half and a conformal-calibration half; all numbers below are on the "
        "test split. Brackets: bootstrap 95% intervals "
        f"({args.n_boot} resamples of the test galaxies). M/L is fitted linearly (as in the seed); "
        "`log` columns are the same predictions scored in log10 M/L (dex). Outliers: "
        "|Δ log10 M/L| > 0.3 dex (a factor of two).",
        "",
        "## Accuracy on the test split",
        "",
        "| model | inputs | features | RMSE | R² | RMSE (dex) | NMAD (dex) | bias | outliers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        L.append(f"| {r['model']} | {r['input_set']} | {r['n_features']} | "
                 f"{_cell(m['linear']['rmse'])} | {_cell(m['linear']['r2'])} | "
                 f"{_cell(m['log']['rmse'])} | {_cell(m['log']['nmad'])} | "
                 f"{_cell(m['linear']['bias'])} | {_cell(m['outlier_fraction'])} |")
    L += ["", "The LightGBM feature sets include the random-noise control column "
          f"`{NOISE_COLUMN}`; the baselines do not.", ""]
    for input_set in INPUT_SETS:
        tag = input_set.replace("+", "_")
        L.append(f"![true vs predicted, {input_set}](figures/models_{tag}_true_vs_pred.png) "
                 f"![residuals, {input_set}](figures/models_{tag}_residuals.png)")
    L += ["", "## Calibrated intervals (conformalized quantile regression)", "",
          "| inputs | nominal | empirical coverage (test) | median width (M/L) |",
          "|---|---|---|---|"]
    for input_set, cov in coverage.items():
        for tag, c in cov.items():
            L.append(f"| {input_set} | {tag}% | {100 * c['empirical']:.1f}% | "
                     f"{c['median_width']:.3f} |")
    L += ["", "Target: within ±3 points of nominal.", ""]

    L += ["## Feature importance", ""]
    for input_set, study in studies.items():
        tag = input_set.replace("+", "_")
        imp = study["importance"]
        L += [f"### {input_set}", "",
              "Top 12 features by mean |SHAP| (fitted space), with permutation importance "
              "(test RMSE increase when shuffled, mean of 5) and gain share:", "",
              "| rank | feature | family | mean abs SHAP | permutation ΔRMSE | gain share |",
              "|---|---|---|---|---|---|"]
        for i, (feat, r) in enumerate(imp.head(12).iterrows(), 1):
            L.append(f"| {i} | `{feat}` | {r.family} | {r.mean_abs_shap:.4f} | "
                     f"{r.importance_mean:.4f} ± {r.importance_std:.4f} | {r.gain_frac:.3f} |")
        fam = study["families"]
        L += ["", "By family (sums over the family's features):", "",
              "| family | features | mean abs SHAP | permutation ΔRMSE | gain |", "|---|---|---|---|---|"]
        for f, r in fam.iterrows():
            L.append(f"| {f} | {int(r.n_features)} | {r.mean_abs_shap:.4f} | "
                     f"{r.importance_mean:.4f} | {r.gain:.0f} |")
        nc = study["noise_control"] or {}
        L += ["", f"Noise control `{NOISE_COLUMN}`:", ""]
        for col, label in (("mean_abs_shap", "mean |SHAP|"), ("importance_mean", "permutation"),
                           ("gain", "gain"), ("split", "split count")):
            if col in nc:
                c = nc[col]
                L.append(f"- by {label}: rank {c['rank']:.0f} of {c['n_features']} "
                         f"(rank quantile {c['quantile']:.2f}; "
                         f"{'bottom quartile' if c['bottom_quartile'] else 'NOT in the bottom quartile'})")
        if "cv_gain_mean_rank" in nc:
            c = nc["cv_gain_mean_rank"]
            L.append(f"- by gain, mean rank over {args.cv} CV folds: {c['mean_rank']:.1f} of "
                     f"{c['n_features']} (quantile {c['quantile']:.2f})")
        stab = study["stability"]
        if stab is not None:
            L += ["", f"Rank stability of the top 8 (gain rank across {args.cv} CV folds, "
                  "mean ± std):", ""]
            L.append(", ".join(f"`{f}` {r.mean_rank:.1f} ± {r.std_rank:.1f}"
                               for f, r in stab.head(8).iterrows()))
        L += ["", f"![SHAP summary](figures/models_{tag}_shap_summary.png) "
              f"![families](figures/models_{tag}_importance_families.png)",
              f"![permutation](figures/models_{tag}_importance_permutation.png) "
              f"![partial dependence](figures/models_{tag}_partial_dependence.png)", ""]

    L += ["## Quick CPU predictions (raw images → features → M/L with intervals)", "",
          "The full model needs every feature; the quick model is the same LightGBM trained "
          "without the bulge + disk columns, so its images are measured with "
          "`MorphologyConfig(fit_bulge_disk=False)` (its test accuracy is in the table above).",
          "", "| quantity | full features | no bulge+disk fit |", "|---|---|---|"]
    tf, tq = timing["full"], timing["fast"]

    def both(fmt):
        return f"| {fmt(tf)} | {fmt(tq)} |"

    L += [f"| galaxies timed ({args.npix} px, {args.jobs} processes) " + both(lambda t: str(t["n"])),
          "| feature extraction " + both(lambda t: f"{t['features_s']:.1f} s"),
          "| LightGBM point + interval models " + both(lambda t: f"{t['model_s']:.2f} s"),
          "| per galaxy " + both(lambda t: f"{t['per_galaxy_ms']:.1f} ms"),
          f"| {args.timing_n} galaxies "
          + both(lambda t: f"{t['extrapolated_s']:.0f} s "
                 f"({'measured' if t['measured_all'] else 'extrapolated linearly'})"),
          "| under 1 minute? " + both(lambda t: "yes" if t["extrapolated_s"] < 60 else "no"),
          ""]
    args.reports.mkdir(parents=True, exist_ok=True)
    report = args.reports / "models.md"
    report.write_text("\n".join(L))
    (args.work / "models_results.json").write_text(json.dumps(
        {"rows": rows, "timing": timing, "coverage": coverage,
         "noise_control": {k: v["noise_control"] for k, v in studies.items()}},
        indent=2, default=float))
    print("\n".join(L))
    print(f"wrote {report} and {len(figures)} figures in {fig_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
