"""What limits image-only R² on the independent hold-out (issue 10).

``bench_robustness.py`` measures the hold-out's image-only LightGBM R² (goal
0.60) next to two yardsticks: an oracle on the generator's latent parameters
and 20 pixel statistics. This script asks where the gap to the oracle lies,
on the same hold-out stamps (``benchmarks/holdout_generator.py``, shared cache
under ``--work``):

1. **Oracles**: LightGBM on the latent parameters that the generator calls
   visible (``holdout_generator.VISIBLE``); on what a *resized crop* still
   shows (bulge fraction, bulge index, disk axis ratio, clump fraction, bulge-
   to-disk size ratio, and the PSF and disk sizes in units of the crop); on the
   bulge fraction alone.
2. **Feature sets**: the engine's default image inputs (what ``featuremass
   train --inputs image`` uses), the fast tier (``--feature-set fast``), the 20
   pixel statistics, their unions, and the default inputs extracted with each
   galaxy's true PSF (``--psf-table``, FWHM in stamp pixels from the truth
   table), each fitted with several LightGBM seeds.
3. **What the features recover**: R² of LightGBM predicting each latent
   parameter from the default inputs, and the rank correlation of the Sérsic
   index and the bulge + disk B/T with the true bulge fraction, without and
   with the PSF.
4. Optionally (``--cnn-epochs N``), the project's CNN
   (:class:`featuremass.models.cnn.CNNRegressor`) trained on the same
   training stamps (10 % of them held out for early stopping) and scored on
   the same test stamps.

Writes ``reports/holdout_limits.md`` and ``.json``::

    python benchmarks/holdout_limits.py --holdout-train 10000 --holdout-test 3000 --cnn-epochs 40
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_robustness as B  # noqa: E402
import holdout_generator as H  # noqa: E402

#: Latent parameters a resized crop still shows (derived in :func:`resized_visible`).
RESIZED_VISIBLE = ("bulge_fraction", "bulge_n", "disk_q", "clump_fraction", "bulge_to_disk_size",
                   "psf_over_crop", "disk_over_crop")
RECOVER = ("bulge_fraction", "bulge_n", "disk_q", "clump_fraction", "bulge_to_disk_size", "psf_over_crop")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "bench-work" / "robustness",
                   help="cache shared with bench_robustness.py")
    p.add_argument("--holdout-train", type=int, default=B.DEFAULT_SIZES[2])
    p.add_argument("--holdout-test", type=int, default=B.DEFAULT_SIZES[3])
    p.add_argument("--seed", type=int, default=0, help="hold-out seed offset, as bench_robustness.py")
    p.add_argument("--gbm-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cnn-epochs", type=int, default=0, help="train the CNN for at most N epochs (0: skip)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "reports" / "holdout_limits.md")
    return p.parse_args(argv)


def resized_visible(truth: pd.DataFrame) -> pd.DataFrame:
    """The latent parameters in the units a resized crop keeps (sizes relative to the crop)."""
    crop_arcsec = truth["native_side_px"] * H.NATIVE_SCALE
    return pd.DataFrame({
        "bulge_fraction": truth["bulge_fraction"], "bulge_n": truth["bulge_n"], "disk_q": truth["disk_q"],
        "clump_fraction": truth["clump_fraction"],
        "bulge_to_disk_size": truth["bulge_hlr_kpc"] / truth["disk_hlr_kpc"],
        "psf_over_crop": truth["psf_fwhm_arcsec"] / crop_arcsec,
        "disk_over_crop": truth["disk_hlr_kpc"] / truth["kpc_per_arcsec"] / crop_arcsec,
    }).reset_index(drop=True)


def psf_px(truth: pd.DataFrame, npix: int = 69) -> np.ndarray:
    """Each stamp's PSF FWHM in stamp pixels: native FWHM scaled by the resize."""
    return (truth["psf_fwhm_arcsec"] / H.NATIVE_SCALE * npix / truth["native_side_px"]).to_numpy(float)


def r2_seeds(X: pd.DataFrame, y, is_test, seeds, cache) -> dict:
    r = [B.gbm_r2(X.astype(float).reset_index(drop=True), y, is_test, s, cache)["r2"] for s in seeds]
    return {"mean": float(np.mean(r)), "min": float(np.min(r)), "max": float(np.max(r)), "n_inputs": X.shape[1],
            "seeds": list(seeds)}


def spearman(a, b) -> float:
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(stats.spearmanr(a[ok], b[ok])[0]) if ok.sum() > 10 else float("nan")


def cnn_r2(images: np.ndarray, y, is_test, epochs: int, seed: int = 0) -> dict:
    from sklearn.metrics import r2_score

    from featuremass.models.cnn import CNNRegressor

    train = np.flatnonzero(~is_test)
    rng = np.random.default_rng(seed)
    val = np.sort(rng.choice(train, max(len(train) // 10, 1), replace=False))
    fit = np.setdiff1d(train, val)
    x = np.asarray(images, dtype=np.float32)
    t0 = time.perf_counter()
    model = CNNRegressor(npix=x.shape[-1], epochs=epochs, seed=seed).fit(x[fit], y[fit], val=(x[val], y[val]))
    pred = model.predict(x[is_test])
    hist = getattr(model, "history_", None) or {}
    return {"r2": float(r2_score(y[is_test], pred)), "rmse": float(np.sqrt(np.mean((y[is_test] - pred) ** 2))),
            "n_fit": int(len(fit)), "n_val": int(len(val)), "n_test": int(is_test.sum()), "max_epochs": epochs,
            "epochs_run": int(len(hist.get("val_loss", []))) or None, "minutes": (time.perf_counter() - t0) / 60}


def run(args) -> dict:
    root = B.ensure_holdout(args)
    st = B.variant_stamps("hold-out (independent)", "holdout", None, root)
    truth = B.survey_truth(root).loc[st["ids"]]
    y = truth["M/L"].to_numpy(float)
    is_test = st["is_test"]
    images = np.load(st["images"], mmap_mode="r")
    _, key = B.engine_id(REPO)
    ids_key = hashlib.blake2b(np.asarray(st["ids"], np.int64).tobytes(), digest_size=6).hexdigest()
    tables_dir = args.work / "tables" / key
    gbm_cache = args.work / "gbm"
    stats = {"cached": 0, "extracted": 0, "seconds": 0.0}

    def table(suffix: str, extra=()):
        path = tables_dir / f"{st['slug']}-{ids_key}{suffix}.parquet"
        t = B.extract(REPO, st["images"], st["names"], "auto", path, args.jobs, stats, tuple(extra))
        return path, t.set_index("galaxy_id").loc[st["ids"]].reset_index()

    default_path, default = table("")
    cols = B.input_columns(REPO, default_path)
    _, fast = table("-fast", ("--feature-set", "fast"))
    fast_cols = [c for c in fast.columns if c.startswith("fast_")]
    psf_file = tables_dir / f"{st['slug']}-{ids_key}-psf.csv"
    psf_file.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"galaxy_id": st["ids"], "psf_fwhm_px": psf_px(truth)}).to_csv(psf_file, index=False)
    _, with_psf = table("-truepsf", ("--psf-table", str(psf_file)))
    pix = pd.DataFrame(B.pixel_statistics(np.asarray(images)), columns=[f"pix{i}" for i in range(20)])

    visible = resized_visible(truth)
    out = {"n_train": int((~is_test).sum()), "n_test": int(is_test.sum()), "engine": B.engine_id(REPO)[0],
           "extraction": stats}
    seeds = args.gbm_seeds
    B.log("oracles")
    out["oracles"] = {
        "generator VISIBLE": r2_seeds(truth[list(H.VISIBLE)].reset_index(drop=True), y, is_test, seeds, gbm_cache),
        "what a resized crop shows": r2_seeds(visible, y, is_test, seeds, gbm_cache),
        "bulge fraction alone": r2_seeds(visible[["bulge_fraction"]], y, is_test, seeds, gbm_cache),
    }
    B.log("feature sets")
    d, f = default[cols], fast[fast_cols]
    out["feature_sets"] = {
        "default image inputs": r2_seeds(d, y, is_test, seeds, gbm_cache),
        "fast tier": r2_seeds(f, y, is_test, seeds, gbm_cache),
        "20 pixel statistics": r2_seeds(pix, y, is_test, seeds, gbm_cache),
        "default + fast tier": r2_seeds(pd.concat([d, f], axis=1), y, is_test, seeds, gbm_cache),
        "default + pixel statistics": r2_seeds(pd.concat([d, pix], axis=1), y, is_test, seeds, gbm_cache),
        "default + fast + pixel": r2_seeds(pd.concat([d, f, pix], axis=1), y, is_test, seeds, gbm_cache),
        "default image inputs, true PSF given": r2_seeds(with_psf[cols], y, is_test, seeds, gbm_cache),
    }
    B.log("recovery of the latent parameters")
    out["recovery_r2"] = {c: B.gbm_r2(d.astype(float), visible[c].to_numpy(float), is_test, seeds[0],
                                      gbm_cache)["r2"] for c in RECOVER}
    bt = truth["bulge_fraction"].to_numpy(float)
    out["bulge_fraction_spearman"] = {
        c: {"no PSF": spearman(default[c], bt), "true PSF": spearman(with_psf[c], bt)}
        for c in ("sersic_n", "bd_bulge_to_total", "concentration", "gini", "r20")
    }
    out["psf_fwhm_px_percentiles"] = dict(zip(("5", "50", "95"), np.percentile(psf_px(truth), [5, 50, 95]).tolist(),
                                              strict=True))
    if args.cnn_epochs:
        B.log(f"CNN, at most {args.cnn_epochs} epochs")
        out["cnn"] = cnn_r2(images, y, is_test, args.cnn_epochs)
    return out


def _r(e: dict) -> str:
    return f"{e['mean']:.3f} | {e['min']:.3f}-{e['max']:.3f} | {e['n_inputs']}"


def write(out: dict, args, provenance_md: str, seconds: float) -> None:
    fs, orc = out["feature_sets"], out["oracles"]
    lines = [
        "# What limits image-only R² on the independent hold-out (issue 10)",
        "",
        provenance_md,
        f"- wall time {seconds / 60:.1f} min; engine `{out['engine']}`; hold-out {out['n_train']} train / "
        f"{out['n_test']} test galaxies (`benchmarks/holdout_generator.py`, cached under `{args.work}`); "
        f"feature tables: {out['extraction']['extracted']} extracted now, {out['extraction']['cached']} cached",
        f"- LightGBM: featuremass's `GBMRegressor` defaults, seeds {args.gbm_seeds} (mean, range); test R² of "
        "linear M/L, as in `reports/robustness.md`",
        "",
        "## Oracles",
        "",
        "| inputs | R² mean | range | inputs |",
        "|---|---|---|---|",
        *[f"| {k} | {_r(v)} |" for k, v in orc.items()],
        "",
        "## Image features",
        "",
        "| inputs | R² mean | range | inputs |",
        "|---|---|---|---|",
        *[f"| {k} | {_r(v)} |" for k, v in fs.items()],
    ]
    if "cnn" in out:
        c = out["cnn"]
        lines += [f"| CNN (`CNNRegressor`, {c['n_fit']} fit / {c['n_val']} early-stopping stamps, at most "
                  f"{c['max_epochs']} epochs; {c['minutes']:.0f} min) | {c['r2']:.3f} | one seed | pixels |"]
    best = max(fs.values(), key=lambda e: e["mean"])["mean"]
    lines += [
        "",
        f"Best feature set: R² {best:.3f}; the resized-crop oracle: {orc['what a resized crop shows']['mean']:.3f}; "
        f"the bulge fraction alone: {orc['bulge fraction alone']['mean']:.3f}.",
        "",
        "## What the default inputs recover",
        "",
        "LightGBM R² of each latent parameter (in resized-crop units) from the default image inputs (seed "
        f"{args.gbm_seeds[0]}):",
        "",
        "| parameter | R² |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in out["recovery_r2"].items()],
        "",
        "Spearman correlation with the true bulge fraction (test and training stamps), extracted without and with "
        "each galaxy's PSF (`--psf-table`, FWHM in stamp pixels; its 5/50/95th percentiles here: "
        + " / ".join(f"{v:.1f}" for v in out["psf_fwhm_px_percentiles"].values()) + " px):",
        "",
        "| column | no PSF | true PSF |",
        "|---|---|---|",
        *[f"| `{k}` | {v['no PSF']:.3f} | {v['true PSF']:.3f} |" for k, v in out["bulge_fraction_spearman"].items()],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
    B.log(f"wrote {args.out}")


def main(argv=None) -> int:
    from featuremass.report.provenance import provenance_markdown

    args = parse_args(argv)
    t0 = time.perf_counter()
    out = run(args)
    write(out, args, provenance_markdown(sys.argv if argv is None else ["holdout_limits.py", *argv]),
          time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
