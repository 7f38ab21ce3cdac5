"""Is the CNN under-trained? Its test error against the epoch budget.

The accuracy benchmark (``bench_accuracy.py``) caps CNN training to what two
CPU cores allow, and at 10k training galaxies the validation loss is still
falling at the cap. This script trains the same CNN on the same splits with a
larger cap (early stopping and the learning-rate schedule unchanged), and
compares it with LightGBM on the morphology features and with the hybrid built
on the longer-trained CNN:

* the validation RMSE after every epoch (the CNN's learning curve in epochs),
  against LightGBM's and the hybrid's validation RMSE;
* test RMSE and R² with bootstrap intervals, and the paired difference
  CNN − LightGBM and hybrid − LightGBM on the same test galaxies.

Writes ``OUT/cnn_budget.md``, ``OUT/cnn_budget.json`` and
``OUT/figures/cnn_budget.png``. The trained CNN is kept in the cache folder, so
a second invocation only rescores it.

    python benchmarks/bench_cnn_budget.py --data /work/simdata/sim17k --epochs 20
    python benchmarks/bench_cnn_budget.py --quick --out /tmp/budget      # smoke run
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy import REPO, Cell, design_matrix, ensure_survey, feature_table, score  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "bench-sim")
    p.add_argument("--out", type=Path, default=REPO / "reports")
    p.add_argument("--npix", type=int, default=69)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-val", type=int, default=2500)
    p.add_argument("--n-test", type=int, default=5000)
    p.add_argument("--inputs", choices=("image", "image+dl"), default="image")
    p.add_argument("--epochs", type=int, default=20, help="epoch cap (early stopping applies)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--cache", type=Path, default=None, help="default DATA/bench-cache")
    p.add_argument("--quick", action="store_true", help="smoke run: 32 px, 300 galaxies, 3 epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.npix, args.n_train, args.n_val, args.n_test = 32, 300, 80, 150
        args.epochs, args.n_boot = 3, 200
        if args.data == p.get_default("data"):
            args.data = args.out / "sim-quick"
    args.cache = args.cache or args.data / "bench-cache"
    # ensure_survey's interface (the accuracy benchmark's arguments)
    args.plan = (Cell(args.npix, args.n_train, args.inputs, args.seed),)
    args.sim_seed, args.report_only = args.seed, False
    return args


def epoch_clock():
    """A Keras callback recording the wall time at the end of every epoch (``.ends``)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t0, self.ends = time.perf_counter(), []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter() - self.t0)

    return EpochClock()


def run(args) -> dict:
    from featuremass.io.layout import load_split
    from featuremass.models.cnn import CNNRegressor, extra_inputs_from_metadata
    from featuremass.models.gbm import GBMRegressor
    from featuremass.models.hybrid import HybridRegressor
    from featuremass.models.inputs import morphology_columns
    from featuremass.models.metrics import paired_difference, rmse

    ds = {s: load_split(args.data, npix=args.npix, split=s) for s in ("train", "val", "test")}
    n = min(args.n_train, len(ds["train"]))
    use_extra = args.inputs == "image+dl"
    extra = {s: extra_inputs_from_metadata(d.metadata) if use_extra else None for s, d in ds.items()}

    def ex(s, k=None):
        return None if extra[s] is None else extra[s][:k]

    y = {s: d.target for s, d in ds.items()}
    tables = {s: feature_table(args, args.npix, s, d, len(d.ids), "full") for s, d in ds.items()}
    cols = morphology_columns(tables["train"])

    def design(s, k=None):
        X = design_matrix(tables[s], cols, extra[s])
        return X if k is None else X.iloc[:k]

    result = {"models": {}}
    t0 = time.perf_counter()
    gbm = GBMRegressor(random_state=args.seed, n_jobs=args.jobs).fit(
        design("train", n), y["train"][:n], X_val=design("val"), y_val=y["val"])
    pred = {"lgbm": {s: gbm.predict(design(s)) for s in ("val", "test")}}
    result["models"]["lgbm"] = {"seconds": time.perf_counter() - t0}

    cnn_dir = args.cache / f"cnn-budget-{args.npix}px-{n}-{args.inputs.replace('+', '_')}-e{args.epochs}"
    reused = (cnn_dir / "model.keras").is_file()
    if reused:  # the sidecar restores the history, training time and epoch clock
        print(f"reusing the trained CNN in {cnn_dir}", flush=True)
        cnn = CNNRegressor.load(cnn_dir)
        epoch_ends = cnn.metrics_.get("epoch_end_seconds", [])
    else:
        clock = epoch_clock()
        cnn = CNNRegressor(npix=args.npix, extra_inputs=use_extra, epochs=args.epochs,
                           seed=args.seed, verbose=2)
        cnn.fit(ds["train"].images[:n], y["train"][:n], extra=ex("train", n),
                val=(ds["val"].images, y["val"], ex("val")), callbacks=[clock])
        epoch_ends = clock.ends
        cnn.save(cnn_dir, metrics={"epoch_end_seconds": epoch_ends})
    t1 = time.perf_counter()
    pred["cnn"] = {s: cnn.predict(ds[s].images, ex(s)) for s in ("val", "test")}
    # training (as recorded when it was trained) plus predicting now
    seconds = cnn.fit_seconds_ + time.perf_counter() - t1
    result["models"]["cnn"] = {"seconds": seconds, "fit_seconds": cnn.fit_seconds_,
                               "history": cnn.history_, "epoch_end_seconds": epoch_ends,
                               "epochs_cap": args.epochs, "dir": str(cnn_dir), "reused": reused}

    t0 = time.perf_counter()
    hyb = HybridRegressor(npix=args.npix, cnn=cnn, prefit=True, n_components=16, extra_inputs=use_extra,
                          seed=args.seed, gbm_params={"n_jobs": args.jobs})
    val = (ds["val"].images, tables["val"][cols], y["val"]) + ((ex("val"),) if use_extra else ())
    hyb.fit(ds["train"].images[:n], y["train"][:n], features=tables["train"][cols].iloc[:n],
            extra=ex("train", n), val=val)
    pred["hybrid"] = {s: hyb.predict(ds[s].images, tables[s][cols], ex(s)) for s in ("val", "test")}
    result["models"]["hybrid"] = {"seconds": time.perf_counter() - t0}

    for name, p in pred.items():
        result["models"][name].update(
            val_rmse=float(rmse(y["val"], p["val"])), test=score(y["test"], p["test"], args))
    result["paired"] = {
        f"{m} - lgbm": paired_difference(rmse, y["test"], pred[m]["test"], pred["lgbm"]["test"],
                                         n_boot=args.n_boot, random_state=args.seed)
        for m in ("cnn", "hybrid")}
    result.update(npix=args.npix, n_train=n, n_val=len(y["val"]), n_test=len(y["test"]),
                  inputs=args.inputs)
    return result


def figure(result: dict, out: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    m = result["models"]
    hist = m["cnn"]["history"]
    epochs = np.arange(1, len(hist["val_loss"]) + 1)
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(epochs, np.sqrt(hist["val_loss"]), "o-", color="C4", label="CNN, validation")
    ax.plot(epochs, np.sqrt(hist["loss"]), "o--", color="C4", alpha=0.5,
            label="CNN, training (augmented)")
    for name, color in (("lgbm", "C3"), ("hybrid", "C5")):
        ax.axhline(m[name]["val_rmse"], color=color, ls=":", label=f"{name}, validation")
    best = int(np.argmin(hist["val_loss"])) + 1
    ax.axvline(best, color="grey", lw=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="RMSE (M/L)",
           title=f"{result['npix']} px, {result['n_train']:,} training galaxies, {result['inputs']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cnn_budget.png"
    fig.savefig(path, dpi=110)
    return path


def write_markdown(result: dict, fig: Path, args, command: str, seconds: float) -> Path:
    from featuremass.report.provenance import provenance_markdown

    m = result["models"]
    hist = m["cnn"]["history"]
    ran, best = len(hist["val_loss"]), int(np.argmin(hist["val_loss"])) + 1
    stopped = "stopped early" if ran < args.epochs else "reached the cap"
    per_epoch = m["cnn"]["fit_seconds"] / ran
    lines = ["# CNN training budget: is the CNN under-trained?", "", provenance_markdown(),
             f"- this invocation took {seconds / 60:.1f} min"
             + (f"; the CNN was trained by an earlier invocation (kept in `{m['cnn']['dir']}`), "
                "so its training time and seconds per epoch are from that run"
                if m["cnn"].get("reused") else ""), "",
             f"Simulated survey `{args.data}`, {result['npix']} px, {result['n_train']:,} training, "
             f"{result['n_val']:,} validation and {result['n_test']:,} test galaxies (the splits "
             f"`bench_accuracy.py` uses on this survey), inputs `{result['inputs']}`. The CNN "
             "trained for "
             f"{ran} epochs (cap {args.epochs}, {stopped}; best validation loss at epoch {best}; "
             f"{per_epoch:.0f} s per epoch on this machine); early stopping (patience 6, best "
             "weights restored) and reduce-LR-on-plateau as everywhere else. The hybrid uses "
             "this CNN's embedding.", "",
             "| model | validation RMSE | test RMSE | test $R^2$ | time [s] |",
             "| ----- | --------------- | --------- | ---------- | -------- |"]
    for name in ("lgbm", "cnn", "hybrid"):
        t = m[name]["test"]
        label = f"cnn (≤{args.epochs} epochs)" if name == "cnn" else name
        lines.append(f"| {label} | {m[name]['val_rmse']:.3f} | {t['rmse']:.3f} "
                     f"[{t['rmse_ci'][0]:.3f}, {t['rmse_ci'][1]:.3f}] | {t['r2']:.3f} "
                     f"[{t['r2_ci'][0]:.3f}, {t['r2_ci'][1]:.3f}] | {m[name]['seconds']:.0f} |")
    lines += ["", "Paired difference in test RMSE on the same galaxies (negative: better than "
              f"LightGBM; {args.n_boot} paired bootstrap resamples):", "",
              "| comparison | ΔRMSE | 95% interval | P(better) |", "| --- | --- | --- | --- |"]
    for name, d in result["paired"].items():
        lines.append(f"| {name} | {d['value']:+.3f} | [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] "
                     f"| {d['p_a_better']:.2f} |")
    lines += ["", "Validation RMSE of the CNN after each epoch, and each epoch's wall time "
              "(it varies with what else ran on the machine):", "",
              "| epoch | " + " | ".join(str(e) for e in range(1, ran + 1)) + " |",
              "| --- " * (ran + 1) + "|",
              "| RMSE | " + " | ".join(f"{np.sqrt(v):.3f}" for v in hist["val_loss"]) + " |",
              *(["| seconds | " + " | ".join(f"{t:.0f}" for t in np.diff([0.0, *ends])) + " |"]
                if (ends := m["cnn"].get("epoch_end_seconds")) else []), "",
              f"![cnn_budget](figures/{fig.name})", ""]
    path = args.out / "cnn_budget.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    from featuremass.report.provenance import provenance

    args = parse_args(argv)
    command = "python benchmarks/bench_cnn_budget.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    t0 = time.perf_counter()
    ensure_survey(args)
    result = run(args)
    fig = figure(result, args.out / "figures")
    seconds = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cnn_budget.json").write_text(json.dumps(
        {**result, "command": command.strip(), "provenance": provenance(), "seconds": seconds},
        indent=2))
    print(write_markdown(result, fig, args, command.strip(), seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
