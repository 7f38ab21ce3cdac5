"""Benchmark the native morphology engine against statmorph (issue 3).

On the same simulated galaxies (``featuremass.io.simulate.simulate_survey``)
at each size, single process, in one run:

* median time per galaxy, native vs statmorph, and their ratio;
* agreement: among galaxies both backends flag as good, the fraction within
  C +-0.1, A +-0.03, Gini +-0.02, M20 +-0.1, r_petro +-3 %, Sérsic n +-10 %,
  and the Spearman correlation per column, twice: statmorph with its own
  sky and segmentation (``segmentation="own"``, statmorph's defaults adjusted
  for small stamps) and statmorph given the native sky, segmentation map and
  masks (``segmentation="native"``), which isolates the algorithms; both
  backends always get the very same image array;
* what the seed stretch costs: native features from the seed-stretched
  images (through the inverse stretch) against the same features from the
  linear-flux truth (median absolute difference and Spearman per column);
* the projected wall time of a full 73,627-galaxy 128 px native extraction
  on 2 cores.

Writes ``reports/morphology.md`` and ``reports/morphology_agreement.csv``.

    python benchmarks/bench_morphology.py --n 500 --npix 69 128
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from featuremass import __version__
from featuremass.features.flags import is_good
from featuremass.features.measure import FEATURE_COLUMNS, MorphologyConfig, measure_galaxy
from featuremass.features.statmorph_backend import measure_galaxy_statmorph
from featuremass.io.layout import SeedLayout, load_npy
from featuremass.io.stretch import inverse_seed_stretch

#: (column, tolerance, relative?) for the agreement fractions.
AGREEMENT = [
    ("concentration", 0.1, False),
    ("asymmetry", 0.03, False),
    ("gini", 0.02, False),
    ("m20", 0.1, False),
    ("rpetro_circ", 0.03, True),
    ("sersic_n", 0.10, True),
]
TARGET_COLUMNS = ("concentration", "asymmetry", "gini", "m20", "rpetro_circ")
FULL_N, FULL_CORES = 73_627, 2


def _simulate(root: Path, n: int, npix: list[int], seed: int):
    from featuremass.io.simulate import SurveyConfig, simulate_survey

    cfg = SurveyConfig(n_train=max(1, n // 50), n_val=1, n_test=n, npix=tuple(npix), seed=seed)
    simulate_survey(root, cfg, n_jobs=1, overwrite=True)
    return SeedLayout(root)


def _measure(fn, images, config) -> tuple[pd.DataFrame, np.ndarray]:
    rows, times = [], []
    for img in images:
        t0 = time.perf_counter()
        res = fn(np.asarray(img, dtype=np.float64), config=config)
        times.append(time.perf_counter() - t0)
        rows.append(res)
    return pd.DataFrame(rows), np.asarray(times)


def _agreement(native: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    both = is_good(native["flag"]) & is_good(ref["flag"])
    out = []
    for col in FEATURE_COLUMNS:
        if col not in ref or ref[col].isna().all():
            continue
        a, b = native[col].to_numpy(), ref[col].to_numpy()
        ok = both & np.isfinite(a) & np.isfinite(b)
        rho = stats.spearmanr(a[ok], b[ok]).statistic if ok.sum() > 2 else np.nan
        row = {"column": col, "n_both_good": int(ok.sum()), "spearman": rho,
               "median_abs_diff": float(np.median(np.abs(a[ok] - b[ok]))) if ok.any() else np.nan}
        for name, tol, rel in AGREEMENT:
            if name == col:
                diff = np.abs(a[ok] - b[ok]) / (np.abs(b[ok]) if rel else 1.0)
                row["tolerance"] = f"±{tol * 100:.0f}%" if rel else f"±{tol}"
                row["fraction_within"] = float(np.mean(diff <= tol)) if ok.any() else np.nan
        out.append(row)
    return pd.DataFrame(out)


def _stretch_cost(from_stretch: pd.DataFrame, from_linear: pd.DataFrame) -> pd.DataFrame:
    both = is_good(from_stretch["flag"]) & is_good(from_linear["flag"])
    rows = []
    for col in FEATURE_COLUMNS:
        a, b = from_stretch[col].to_numpy(), from_linear[col].to_numpy()
        ok = both & np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 3:
            continue
        rows.append({"column": col, "n": int(ok.sum()),
                     "median_abs_diff": float(np.median(np.abs(a[ok] - b[ok]))),
                     "spearman": stats.spearmanr(a[ok], b[ok]).statistic})
    return pd.DataFrame(rows)


def _fmt(v, nd=3):
    return "nan" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=500, help="galaxies per size (default 500)")
    p.add_argument("--npix", type=int, nargs="+", default=[69, 128])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--data", type=Path, default=None, help="reuse a simulated survey here")
    args = p.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # single process, single thread: a fair per-core time
    except ImportError:
        pass

    config = MorphologyConfig()
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="featuremass-bench-")
        root = Path(tmp.name) / "survey"
    else:
        root = args.data
    t0 = time.perf_counter()
    layout = _simulate(root, args.n, args.npix, args.seed) if not (root / "images").exists() else SeedLayout(root)
    sim_s = time.perf_counter() - t0

    lines, csv_rows = [], []
    verdicts = []
    for npix in args.npix:
        linear = np.asarray(load_npy(layout.linear_path(npix, "test")))[: args.n]
        stretched = np.asarray(load_npy(layout.image_path(npix, "test")))[: args.n]
        nat, t_nat = _measure(measure_galaxy, linear, config)
        ref, t_ref = _measure(measure_galaxy_statmorph, linear, None)
        ref_nat, _ = _measure(partial(measure_galaxy_statmorph, segmentation="native"), linear, config)
        t_inv0 = time.perf_counter()
        inv = [inverse_seed_stretch(s) for s in stretched]
        t_inv = (time.perf_counter() - t_inv0) / max(len(inv), 1)
        nat_s, _ = _measure(measure_galaxy, inv, config)
        agree = _agreement(nat, ref)
        agree_nat = _agreement(nat, ref_nat).set_index("column")
        agree["n_both_good_native_segmap"] = agree["column"].map(agree_nat["n_both_good"])
        agree["fraction_within_native_segmap"] = agree["column"].map(agree_nat.get("fraction_within"))
        agree["spearman_native_segmap"] = agree["column"].map(agree_nat["spearman"])
        cost = _stretch_cost(nat_s, nat)
        agree.insert(0, "npix", npix)
        csv_rows.append(agree)
        med_nat, med_ref = float(np.median(t_nat)), float(np.median(t_ref))
        ratio = med_ref / med_nat
        verdicts.append((f"{npix} px throughput ≥100× statmorph", ratio >= 100, f"{ratio:.1f}×"))
        lines += [f"## {npix} px ({len(linear)} galaxies)", "",
                  "| | native | statmorph |", "|---|---|---|",
                  f"| median time per galaxy | {med_nat * 1e3:.2f} ms | {med_ref * 1e3:.1f} ms |",
                  f"| mean time per galaxy | {np.mean(t_nat) * 1e3:.2f} ms | {np.mean(t_ref) * 1e3:.1f} ms |",
                  f"| good (no serious flag) | {int(is_good(nat['flag']).sum())} | {int(is_good(ref['flag']).sum())} |",
                  f"| speed-up (median) | {ratio:.1f}× | |", "",
                  f"Inverse stretch: {t_inv * 1e3:.2f} ms per galaxy.", "",
                  "### Agreement with statmorph (both good)", "",
                  "Own: statmorph with its own sky and segmentation. Native segmap: statmorph given the "
                  "native sky level, segmentation map and masks (the algorithms alone).", "",
                  "| column | n | within tolerance (own) | Spearman (own) | median abs diff (own) "
                  "| n (native segmap) | within tolerance (native segmap) | Spearman (native segmap) |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, r in agree.iterrows():
            has_tol = isinstance(r.get("tolerance"), str)
            within = f"{r['fraction_within'] * 100:.1f}% ({r['tolerance']})" if has_tol else ""
            within_nat = (f"{r['fraction_within_native_segmap'] * 100:.1f}%"
                          if has_tol and np.isfinite(r["fraction_within_native_segmap"]) else "")
            n_nat = r["n_both_good_native_segmap"]
            lines.append(f"| {r['column']} | {r['n_both_good']} | {within} | {_fmt(r['spearman'])} "
                         f"| {_fmt(r['median_abs_diff'], 4)} | {'' if pd.isna(n_nat) else int(n_nat)} "
                         f"| {within_nat} | {_fmt(r['spearman_native_segmap'])} |")
            if r["column"] in TARGET_COLUMNS:
                frac = r.get("fraction_within", np.nan)
                frac_nat = r["fraction_within_native_segmap"]
                verdicts.append((f"{npix} px agreement on {r['column']} ≥95% (statmorph own segmap)",
                                 bool(frac >= 0.95), f"{frac * 100:.1f}%"))
                verdicts.append((f"{npix} px agreement on {r['column']} ≥95% (statmorph given native segmap)",
                                 bool(frac_nat >= 0.95), f"{frac_nat * 100:.1f}%"))
        lines += ["", "### What the seed stretch costs (native, stretched→inverse vs linear truth)", "",
                  "| column | n | median abs diff | Spearman |", "|---|---|---|---|"]
        for _, r in cost.iterrows():
            lines.append(f"| {r['column']} | {r['n']} | {_fmt(r['median_abs_diff'], 4)} | {_fmt(r['spearman'])} |")
        lines.append("")
        if npix == 128:
            per_gal = float(np.mean(t_nat)) + t_inv
            proj = FULL_N * per_gal / FULL_CORES / 60
            verdicts.append(("projected 73,627 × 128 px on 2 cores < 10 min", proj < 10, f"{proj:.1f} min"))
            lines.insert(0, f"Projected full 128 px native extraction (73,627 galaxies, 2 cores, mean time "
                            f"incl. inverse stretch): **{proj:.1f} min**.\n")

    head = [
        "# Morphology engine: native vs statmorph", "",
        f"Command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
        f"Machine: {platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs), "
        f"Python {platform.python_version()}  ",
        f"Date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}  ",
        f"featuremass {__version__}; single process, one BLAS thread; simulation took {sim_s:.0f} s.", "",
        "## Targets", "", "| target | result | verdict |", "|---|---|---|",
    ]
    head += [f"| {name} | {val} | {'PASS' if ok else 'MISS'} |" for name, ok, val in verdicts]
    head.append("")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "morphology.md").write_text("\n".join(head + lines) + "\n")
    pd.concat(csv_rows).to_csv(args.out / "morphology_agreement.csv", index=False)
    print(f"wrote {args.out / 'morphology.md'}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
