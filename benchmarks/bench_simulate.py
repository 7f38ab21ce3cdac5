"""Benchmark the simulated survey: throughput, target distribution, oracle R².

Every number in the report is computed here::

    python benchmarks/bench_simulate.py --n 10000 --npix 69 128 -j 2

writes ``reports/simulation.md`` and ``reports/simulation_ml_hist.png``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass.report.provenance import provenance_markdown


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="galaxies in all (60%% train, 15%% val, 25%% test)")
    p.add_argument("--npix", type=int, nargs="+", default=[69, 128])
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--single", type=int, default=50,
                   help="galaxies timed one by one in this process (per-galaxy render time)")
    p.add_argument("--data", type=Path, default=None, help="keep the survey here (default: a temp folder)")
    p.add_argument("--reports", type=Path, default=Path("reports"))
    return p.parse_args(argv)


def oracle(truth: pd.DataFrame, columns) -> dict:
    """LightGBM on the latent parameters: train on train, score on test."""
    import lightgbm as lgb
    from sklearn.metrics import mean_squared_error, r2_score

    train, test = truth[truth.split == "train"], truth[truth.split == "test"]
    x_tr, x_te = train[list(columns)].astype(float), test[list(columns)].astype(float)
    model = lgb.LGBMRegressor(n_estimators=600, learning_rate=0.03, num_leaves=31,
                              min_child_samples=10, subsample=0.8, subsample_freq=1,
                              random_state=0, verbose=-1, n_jobs=1)
    model.fit(x_tr, train["M/L"])
    pred = model.predict(x_te)
    return {"r2": float(r2_score(test["M/L"], pred)),
            "rmse": float(np.sqrt(mean_squared_error(test["M/L"], pred))),
            "n_train": len(train), "n_test": len(test)}


def main(argv=None) -> int:
    args = parse_args(argv)
    provenance_md = provenance_markdown()  # load average before the run starts
    from featuremass.io.simulate import (
        ORACLE_COLUMNS,
        SurveyConfig,
        simulate_galaxy,
        simulate_survey,
    )

    n_val, n_test = int(round(0.15 * args.n)), int(round(0.25 * args.n))
    cfg = SurveyConfig(n_train=args.n - n_val - n_test, n_val=n_val, n_test=n_test,
                       npix=tuple(args.npix), seed=args.seed)

    # Per-galaxy time on one core, after one warm-up galaxy (GalSim's tables).
    simulate_galaxy(cfg, 0)
    single = []
    for i in range(1, args.single + 1):
        t0 = time.perf_counter()
        simulate_galaxy(cfg, i)
        single.append(time.perf_counter() - t0)
    single = np.array(single)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.data or Path(tmp) / "survey"
        t0 = time.perf_counter()
        simulate_survey(out, cfg, n_jobs=args.jobs, overwrite=args.data is not None)
        wall = time.perf_counter() - t0
        truth = pd.read_parquet(out / "truth" / "truth.parquet")

    rate = args.n / wall
    ml = truth["M/L"].to_numpy()
    pct = {q: float(np.percentile(ml, q)) for q in (1, 5, 25, 50, 75, 95, 99)}
    orc = oracle(truth, ORACLE_COLUMNS)
    orc_lum = oracle(truth.assign(log_L_g=np.log10(truth["L_g"])),
                     [*ORACLE_COLUMNS, "log_L_g", "distance_Mpc"])

    args.reports.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(ml, bins=60, color="0.3")
    ax.set_xlabel("M/L (g band, solar)")
    ax.set_ylabel("galaxies")
    ax.set_title(f"simulated survey, n = {args.n}, seed {args.seed}")
    fig.tight_layout()
    hist = args.reports / "simulation_ml_hist.png"
    fig.savefig(hist, dpi=100)
    plt.close(fig)

    npix_txt = " and ".join(map(str, cfg.npix))
    lines = [
        "# Simulated survey benchmark",
        "",
        provenance_md,
        f"- worker processes: {args.jobs}",
        f"- survey: {args.n} galaxies ({cfg.n_train} train / {cfg.n_val} val / {cfg.n_test} test) "
        f"at {npix_txt} px, seed {args.seed}",
        "",
        "## Throughput",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| wall time, {args.jobs} processes | {wall:.1f} s |",
        f"| galaxies / s | {rate:.1f} |",
        f"| projected time for 10,000 galaxies at {npix_txt} px | {1e4 / rate / 60:.1f} min |",
        f"| one core, per galaxy (mean of {len(single)}) | {1e3 * single.mean():.0f} ms |",
        f"| one core, per galaxy (median / 95th percentile) | {1e3 * np.median(single):.0f} / "
        f"{1e3 * np.percentile(single, 95):.0f} ms |",
        "",
        "## Target distribution (M/L, g band, solar units)",
        "",
        "| mean | std | p1 | p5 | p25 | p50 | p75 | p95 | p99 | max | fraction > 4 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {ml.mean():.2f} | {ml.std():.2f} | "
        + " | ".join(f"{pct[q]:.2f}" for q in (1, 5, 25, 50, 75, 95, 99))
        + f" | {ml.max():.2f} | {(ml > 4).mean():.3f} |",
        "",
        f"![M/L histogram]({hist.name})",
        "",
        "## Oracle: LightGBM on the latent parameters",
        "",
        "Trained on the train split, scored on the test split. The morphology columns are "
        f"`{', '.join(ORACLE_COLUMNS)}`; colours, dust optical depth and M/L stay hidden.",
        "",
        "| inputs | test R² | test RMSE | n train / test |",
        "|---|---|---|---|",
        f"| morphology + observing conditions | {orc['r2']:.3f} | {orc['rmse']:.3f} | "
        f"{orc['n_train']} / {orc['n_test']} |",
        f"| ... + log L_g + distance | {orc_lum['r2']:.3f} | {orc_lum['rmse']:.3f} | "
        f"{orc_lum['n_train']} / {orc_lum['n_test']} |",
        "",
    ]
    report = args.reports / "simulation.md"
    report.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {report} and {hist}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
