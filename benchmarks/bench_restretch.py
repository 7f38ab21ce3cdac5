"""Does re-stretching foreign stamps to the training stretch rescue the CNN?

The preprocessing-shift study (``bench_shift.py``, ``reports/shift.md``) found
the CNN, fed stamps as stored, collapsing when the test stamps were stretched
otherwise than its training stamps (R² 0.33 with a clipped log, negative with
asinh or linear), while the classical features with ``scale="auto"`` did not
move. ``featuremass cnn predict --restretch`` applies the classical route's
remedy to the CNN's input: each stamp's stretch is detected and inverted
(:func:`featuremass.features.seedlog.restretch_stack`) and the stamp is
stretched again the seed's way, as the training stamps were.

This script measures it. The CNN of one accuracy-benchmark cell (default
69 px, 30k, image-only, seed 0; trained by ``bench_accuracy.py``) predicts the
first ``--n-test`` test galaxies of the benchmark survey re-rendered under each
stretch of the simulator (the same galaxies: ``bench_shift.render``, each
galaxy from its own random stream), once as stored and once re-stretched
(``kind="auto"``). For each: RMSE and R² with bootstrap 95% intervals, the
paired change in RMSE against the default stamps as stored, the stretches the
detection found and the re-stretch time per stamp.

Writes ``OUT/restretch.md`` and ``OUT/restretch.json``; the rendered stamps are
kept under ``--work`` (reused when rerun).

    python benchmarks/bench_restretch.py --data /path/sim-benchmark
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import bench_accuracy as acc  # noqa: E402  (the accuracy benchmark's cells and CNN cache)
import bench_shift as shift  # noqa: E402  (the survey's config and the per-galaxy re-rendering)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the accuracy benchmark's survey folder")
    p.add_argument("--cell", type=acc.Cell.parse, default=acc.Cell(69, 30000, "image", 0),
                   help="accuracy cell whose CNN is used, NPIX:NTRAIN:image:SEED (default 69:30000:image:0)")
    p.add_argument("--n-test", type=int, default=5000, help="first N test galaxies (default 5000)")
    p.add_argument("--out", type=Path, default=REPO / "reports")
    p.add_argument("--work", type=Path, default=None,
                   help="rendered stamps (default DATA/restretch-work)")
    p.add_argument("--cache", type=Path, default=None, help="accuracy cache (default DATA/bench-cache)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("-j", "--jobs", type=int, default=2, help="processes for rendering")
    args = p.parse_args(argv)
    if args.cell.inputs != "image":
        p.error("--cell must be an image-only cell (the stamps carry no distance or L_g here)")
    args.cache = args.cache or args.data / "bench-cache"
    args.work = args.work or args.data / "restretch-work"
    return args


def stamps_of(args, kind: str, base, indices, ids, stored, base_truth) -> np.ndarray:
    """The test stamps under stretch ``kind`` (the stored ones for the survey's own).

    A new rendering must give the same galaxies: every truth column but the
    stretch equal to the survey's (``bench_shift.same_galaxies``).
    """
    from featuremass.io.layout import atomic_output

    if kind == base.stretch:
        return stored
    path = args.work / f"test_{args.cell.npix}px_{kind}_{len(ids)}.npy"
    if not path.is_file():
        t0 = time.perf_counter()
        config = dataclasses.replace(base, npix=(args.cell.npix,), stretch=kind)
        truth, stamps = shift.render(config, args.cell.npix, indices, args.jobs)
        truth.insert(0, "galaxy_id", ids)
        same = shift.same_galaxies(base_truth, truth, {"stretch": kind})
        if same["unexpected"]:
            raise SystemExit(f"error: the {kind} re-render changed {same['unexpected']}: "
                             "not the same galaxies")
        args.work.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, stamps)
        print(f"{kind}: rendered {len(ids)} galaxies in {time.perf_counter() - t0:.0f} s", flush=True)
    return np.load(path)


def main(argv=None) -> int:
    from featuremass.features.seedlog import restretch_stack
    from featuremass.io.layout import atomic_output, load_split
    from featuremass.io.stretch import STRETCH_CODES, STRETCHES
    from featuremass.models.cnn import CNNRegressor
    from featuremass.models.metrics import paired_difference, regression_report, rmse
    from featuremass.report.provenance import provenance, provenance_markdown

    args = parse_args(argv)
    command = "python benchmarks/bench_restretch.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    t_start = time.perf_counter()
    cnn_dir = acc.cnn_paths(args, args.cell)["model"]
    if not (cnn_dir / "model.json").is_file():
        raise SystemExit(f"error: no trained CNN for {args.cell} in {cnn_dir}; run "
                         f"bench_accuracy.py --cells {args.cell.npix}:{args.cell.n_train}:image:"
                         f"{args.cell.seed} first")
    cnn = CNNRegressor.load(cnn_dir)
    base = shift.base_config(args.data)
    truth_all = pd.read_parquet(args.data / "truth" / "truth.parquet")
    test = load_split(args.data, npix=args.cell.npix, split="test")
    n = min(args.n_test, len(test.ids))
    ids = np.asarray(test.ids[:n])
    y = np.asarray(test.target[:n], dtype=np.float64)
    index_of = pd.Series(np.arange(len(truth_all)), index=truth_all["galaxy_id"])
    indices = index_of.loc[ids].to_numpy()
    base_truth = truth_all.set_index("galaxy_id").loc[ids].reset_index()
    stored = np.asarray(test.images[:n], dtype=np.float32)
    # The re-rendering reproduces the stored stamps (same galaxies, same pixels).
    k = min(20, n)
    _, check = shift.render(dataclasses.replace(base, npix=(args.cell.npix,)), args.cell.npix,
                            indices[:k], 1)
    if not np.array_equal(check, stored[:k]):
        raise SystemExit("error: the simulator does not reproduce the stored test stamps")

    code_names = {code: kind for kind, code in STRETCH_CODES.items()}
    reference = cnn.predict(stored)
    results = []
    for kind in (base.stretch, *[s for s in STRETCHES if s != base.stretch]):
        stamps = stamps_of(args, kind, base, indices, ids, stored, base_truth)
        t0 = time.perf_counter()
        again, codes = restretch_stack(stamps, "shifted-log", kind="auto")
        seconds = time.perf_counter() - t0
        detected = pd.Series([code_names.get(c, "none") for c in codes]).value_counts().to_dict()
        for mode, x in (("as stored", stamps), ("re-stretched", again)):
            pred = reference if (kind == base.stretch and mode == "as stored") else cnn.predict(x)
            rep = regression_report(y, pred, n_boot=args.n_boot)
            diff = paired_difference(rmse, y, pred, reference, n_boot=args.n_boot)
            results.append({
                "stretch": kind, "input": mode,
                "rmse": rep["linear"]["rmse"]["value"], "rmse_ci": rep["linear"]["rmse"]["ci95"],
                "r2": rep["linear"]["r2"]["value"], "r2_ci": rep["linear"]["r2"]["ci95"],
                "d_rmse": diff["value"], "d_rmse_ci": diff["ci95"],
                **({"detected": {str(k_): int(v) for k_, v in detected.items()},
                    "restretch_ms_per_stamp": 1e3 * seconds / n} if mode == "re-stretched" else {}),
            })
            print(f"{kind:12s} {mode:13s} R2 {results[-1]['r2']:.3f}", flush=True)

    out = {"command": command, "provenance": provenance(), "cell": str(args.cell), "n_test": n,
           "survey_stretch": base.stretch, "results": results,
           "seconds": time.perf_counter() - t_start}
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out / "restretch.json") as tmp:
        tmp.write_text(json.dumps(out, indent=1))
    with atomic_output(args.out / "restretch.md") as tmp:
        tmp.write_text(render(out, provenance_markdown()))
    print(args.out / "restretch.md")
    return 0


def render(out: dict, prov: str) -> str:
    lines = ["# Re-stretching the CNN's input: `cnn predict --restretch auto`", "", prov,
             f"- this run took {out['seconds'] / 60:.1f} min", "",
             f"The CNN of the accuracy benchmark's cell *{out['cell']}* (see "
             "[benchmark.md](benchmark.md)), trained on the survey's own stretch "
             f"({out['survey_stretch']}), predicts the first {out['n_test']:,} test galaxies of the "
             "same survey re-rendered under each stretch of the simulator (the same galaxies; "
             "the default re-render is checked to reproduce the stored stamps bit for bit). "
             "*As stored*: the stamps fed to the CNN as they are. *Re-stretched*: each stamp's "
             "stretch detected and inverted, then stretched the seed's way "
             "(`featuremass.features.seedlog.restretch_stack(stamps, 'shifted-log', kind='auto')`, "
             "what `featuremass cnn predict --restretch auto` does); a stamp detected as already "
             "in the seed's stretch passes unchanged. RMSE and R² of linear M/L with bootstrap 95% "
             "intervals; ΔRMSE against the default stamps as stored, with a paired bootstrap "
             "interval.", "",
             "| stretch | input | RMSE | $R^2$ | ΔRMSE vs default | detected as | re-stretch ms/stamp |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in out["results"]:
        det = ", ".join(f"{k} {v}" for k, v in r.get("detected", {}).items()) or "-"
        ms = f"{r['restretch_ms_per_stamp']:.1f}" if "restretch_ms_per_stamp" in r else "-"
        d = ("-" if r["stretch"] == out["survey_stretch"] and r["input"] == "as stored" else
             f"{r['d_rmse']:+.3f} [{r['d_rmse_ci'][0]:+.3f}, {r['d_rmse_ci'][1]:+.3f}]")
        lines.append(f"| {r['stretch']} | {r['input']} | {r['rmse']:.3f} [{r['rmse_ci'][0]:.3f}, "
                     f"{r['rmse_ci'][1]:.3f}] | {r['r2']:.3f} [{r['r2_ci'][0]:.3f}, {r['r2_ci'][1]:.3f}] | "
                     f"{d} | {det} | {ms} |")
    lines += ["", "Re-stretch time is one process, the whole stack at once (detection, inverse "
              "and the new stretch), not counting the CNN.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
