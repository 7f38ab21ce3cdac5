"""Accuracy benchmark: classical features vs the CNN vs the hybrid, on identical splits.

On one simulated survey (``featuremass simulate``), the grid of issue 15 is run
cell by cell; a *cell* is (image size, training size, input set, model seed).
In every cell each model is trained on the same first-N training galaxies,
early-stopped on the same validation split and scored on the same test split.
Models:

* ``mean``        the training mean (the R² = 0 reference);
* ``extra only``  LightGBM on distance and L_g alone (image+dl cells);
* ``ridge``       ridge regression on the standardised morphology features;
* ``lgbm``        LightGBM on the full morphology feature set;
* ``fast``        LightGBM on the fast tier (``feature_set="fast"``);
* ``cnn``         the seed's CNN (:class:`featuremass.models.cnn.CNNRegressor`);
* ``hybrid``      the cell's own trained CNN, embedded (16 PCs) + morphology ->
                  LightGBM (``HybridRegressor(prefit=True)``: no second CNN is trained);
* ``oracle``      LightGBM on the simulation's true latent parameters that an image
                  can show (``featuremass.io.simulate.ORACLE_COLUMNS``), plus distance
                  and L_g for the image+dl inputs: the floor an image model could reach.

Features are measured with the current feature engine and ``scale="auto"``
(the stretch of each stamp is detected and inverted, as ``featuremass extract``
does by default), once per (npix, split); smaller training sets use the first N
rows. Every model gets the test RMSE and R² with bootstrap 95% intervals.

**CNN training: converged and resumable.** The CNN trains with an epoch cap of
``--epochs`` (default 200, far above where any cell stops) and early stopping
on the validation loss with ``--patience`` (default 10) epochs, the best
epoch's weights restored; the learning rate still drops by 0.3 after 3 epochs
without improvement, so patience 10 lets the schedule reduce the rate about
three times before training is declared converged (the seed's patience 6
allowed one or two). The training state is backed up after every epoch under
the cell's cache folder (``cnn-backup/``): killing the job and rerunning the
same command continues that CNN from its last completed epoch, with the same
result as an uninterrupted run. Finished cells are never recomputed. Each CNN
row in ``benchmark.json`` records ``epochs_run``, ``best_epoch``,
``stopped_early``, ``seed``, the wall and CPU seconds per epoch and the device.

The report (``OUT/benchmark.md``, ``OUT/benchmark.json``, figures in
``OUT/figures/``) is rendered from the cache after every finished cell, and
with ``--report-only`` from the cache alone: cells not finished are listed as
missing, never filled in.

Issue-15 grid (CPU, about a day of CPU time; run it in the background)::

    python benchmarks/bench_accuracy.py --data /path/sim-benchmark

One cell only::

    python benchmarks/bench_accuracy.py --cells 69:10000:image:0

Re-render the report from whatever is finished::

    python benchmarks/bench_accuracy.py --report-only

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
MODEL_ORDER = ("mean", "extra only", "ridge", "lgbm", "fast", "cnn", "hybrid", "oracle")
INPUT_SETS = ("image", "image+dl")


@dataclass(frozen=True)
class Cell:
    npix: int
    n_train: int
    inputs: str
    seed: int

    @classmethod
    def parse(cls, text: str) -> Cell:
        try:
            npix, n, inputs, seed = text.split(":")
            cell = cls(int(npix), int(n), inputs, int(seed))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"a cell is NPIX:NTRAIN:INPUTS:SEED (e.g. 69:10000:image:0), got {text!r}") from None
        if inputs not in INPUT_SETS:
            raise argparse.ArgumentTypeError(f"inputs must be one of {INPUT_SETS}, got {inputs!r}")
        return cell

    @property
    def key(self) -> str:
        return f"{self.npix}px-{self.n_train}-{self.inputs.replace('+', '_')}-s{self.seed}"

    def __str__(self) -> str:
        return f"{self.npix} px, {self.n_train:,} train, {self.inputs}, seed {self.seed}"


# Issue 15's grid, in the order it is run (most informative first).
PLAN = (
    Cell(69, 10000, "image", 0),
    Cell(69, 1000, "image", 0), Cell(69, 1000, "image+dl", 0),
    Cell(69, 3000, "image", 0), Cell(69, 3000, "image+dl", 0),
    Cell(69, 10000, "image+dl", 0),
    Cell(69, 10000, "image", 1),
    Cell(69, 30000, "image", 0),
    Cell(128, 10000, "image", 0),
)
QUICK_PLAN = (Cell(32, 150, "image", 0), Cell(32, 300, "image+dl", 0), Cell(32, 150, "image", 1))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "sim-benchmark",
                   help="simulated survey folder (created when missing)")
    p.add_argument("--out", type=Path, default=REPO / "reports")
    p.add_argument("--cells", type=Cell.parse, nargs="+", default=None,
                   help="cells to run, NPIX:NTRAIN:INPUTS:SEED (default: the issue-15 grid)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: render the report from the cells finished in the cache")
    p.add_argument("--n-val", type=int, default=2500)
    p.add_argument("--n-test", type=int, default=5000)
    p.add_argument("--sim-seed", type=int, default=0, help="seed of the simulated survey")
    p.add_argument("--models", nargs="+", default=list(MODEL_ORDER), choices=MODEL_ORDER)
    p.add_argument("--epochs", type=int, default=200,
                   help="CNN epoch cap (set far above where early stopping ends training)")
    p.add_argument("--patience", type=int, default=10, help="CNN early-stopping patience")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("-j", "--jobs", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--tf-threads", type=int, default=2,
                   help="TensorFlow intra- and inter-op threads (default 2)")
    p.add_argument("--cache", type=Path, default=None,
                   help="per-cell results, trained CNNs and training backups (default "
                        "DATA/bench-cache); a finished cell is never recomputed")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 32 px, 150/300 training galaxies, 3 CNN epochs")
    p.add_argument("--previous", type=Path, default=None,
                   help="benchmark.json of an earlier run on the same survey and feature engine: "
                        "its rows fill (cell, model) pairs missing from the cache, marked as "
                        "carried over (default: none)")
    args = p.parse_args(argv)
    args.plan = QUICK_PLAN if args.quick else PLAN
    if args.quick:
        args.n_val, args.n_test, args.epochs, args.patience, args.n_boot = 80, 150, 3, 2, 200
        if args.data == REPO / "data" / "sim-benchmark":
            args.data = args.out / "sim-quick"
    args.cells = list(args.cells or args.plan)
    args.jobs = args.jobs or os.cpu_count() or 1
    args.cache = args.cache or args.data / "bench-cache"
    return args


def write_json(path: Path, obj) -> None:
    from featuremass.io.layout import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


def ensure_survey(args) -> Path:
    from featuremass.io.layout import SeedLayout
    from featuremass.io.simulate import SurveyConfig, simulate_survey

    npix = tuple(sorted({c.npix for c in args.plan}))
    n_train = max(c.n_train for c in args.plan)
    layout = SeedLayout(args.data)
    if all(layout.image_path(p, "test").is_file() for p in npix) and layout.truth_path.is_file():
        truth = pd.read_parquet(layout.truth_path, columns=["split"])
        counts = truth["split"].value_counts()
        if (counts.get("train", 0) >= n_train and counts.get("test", 0) == args.n_test
                and counts.get("val", 0) == args.n_val and survey_seed(args.data) == args.sim_seed):
            print(f"reusing survey {args.data}", flush=True)
            return args.data
    if args.report_only:
        raise SystemExit(f"error: {args.data} holds no survey matching the plan "
                         f"({n_train} train, {args.n_val} val, {args.n_test} test, seed {args.sim_seed})")
    cfg = SurveyConfig(n_train=n_train, n_val=args.n_val, n_test=args.n_test, npix=npix,
                       seed=args.sim_seed)
    print(simulate_survey(args.data, cfg, n_jobs=args.jobs, overwrite=args.data.exists(),
                          progress=True), flush=True)
    return args.data


def feature_table(args, npix: int, split: str, ds, n: int, feature_set: str) -> pd.DataFrame:
    """The ``feature_set`` table of the first ``n`` galaxies of ``ds``, scale ``auto``.

    Kept under ``DATA/features`` and named by the feature engine version; a
    stored table is reused when it starts with the same galaxies, and an
    interrupted extraction resumes from its finished chunks.
    """
    from featuremass._version import FEATURE_ENGINE_VERSION
    from featuremass.features.batch import extract_features, read_feature_table

    path = (args.data / "features"
            / f"{npix}px_{split}_{feature_set}_auto_engine{FEATURE_ENGINE_VERSION}.parquet")
    ids = np.asarray(ds.ids[:n])
    if path.is_file():
        table, _ = read_feature_table(path)
        if len(table) >= n and np.array_equal(table["galaxy_id"].to_numpy()[:n], ids):
            return table.iloc[:n].reset_index(drop=True)
    print(f"measuring {feature_set} features of {n:,} {split} galaxies at {npix} px", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = extract_features(ds.images[:n], ids, scale="auto", feature_set=feature_set,
                             n_jobs=args.jobs, out=path, progress=False)
    return table.set_index("galaxy_id").loc[ids].reset_index()


def extraction_rate(args, npix: int, ds) -> dict:
    """Wall time of the full and fast tiers on 500 test galaxies, timed once per npix (cached)."""
    from featuremass.features.batch import extract_features

    path = args.cache / f"extraction-{npix}px.json"
    if path.is_file():
        return json.loads(path.read_text())
    n = min(500, len(ds.ids))
    out = {"n": n, "jobs": args.jobs}
    for feature_set in ("full", "fast"):
        t0 = time.perf_counter()
        extract_features(ds.images[:n], ds.ids[:n], scale="auto", feature_set=feature_set,
                         n_jobs=args.jobs)
        out[f"{feature_set}_seconds"] = time.perf_counter() - t0
    write_json(path, out)
    return out


def design_matrix(table: pd.DataFrame, columns, extra=None) -> pd.DataFrame:
    """Morphology columns of ``table``, plus log distance and log L_g when ``extra`` is given
    (the CNN's extra inputs, so every model sees the same transformed values)."""
    X = table[columns].reset_index(drop=True)
    if extra is not None:
        X = X.assign(log_distance=extra[:, 0], log_L_g=extra[:, 1])
    return X


def score(y, p, args) -> dict:
    from featuremass.models.metrics import regression_report

    rep = regression_report(y, p, n_boot=args.n_boot, random_state=0)
    return {"rmse": rep["linear"]["rmse"]["value"], "rmse_ci": rep["linear"]["rmse"]["ci95"],
            "r2": rep["linear"]["r2"]["value"], "r2_ci": rep["linear"]["r2"]["ci95"]}


class SurveyData:
    """Splits, targets, extra inputs, truth and feature tables of one image size, loaded lazily."""

    def __init__(self, args, npix: int):
        from featuremass.io.layout import load_split
        from featuremass.io.simulate import ORACLE_COLUMNS
        from featuremass.models.cnn import extra_inputs_from_metadata

        self.args, self.npix = args, npix
        self.ds = {s: load_split(args.data, npix=npix, split=s) for s in ("train", "val", "test")}
        self.extra = {s: extra_inputs_from_metadata(d.metadata) for s, d in self.ds.items()}
        self.y = {s: np.asarray(d.target, dtype=np.float64) for s, d in self.ds.items()}
        truth = pd.read_parquet(args.data / "truth" / "truth.parquet").set_index("galaxy_id")
        self.truth_X = {s: truth.loc[d.ids, list(ORACLE_COLUMNS)].astype(np.float64)
                        .reset_index(drop=True) for s, d in self.ds.items()}
        self._tables = {}

    def table(self, split: str, feature_set: str, n: int | None = None) -> pd.DataFrame:
        n = len(self.ds[split].ids) if n is None else n
        key = (split, feature_set)
        if key not in self._tables or len(self._tables[key]) < n:
            self._tables[key] = feature_table(self.args, self.npix, split, self.ds[split], n,
                                              feature_set)
        return self._tables[key].iloc[:n].reset_index(drop=True)

    def columns(self, feature_set: str) -> list[str]:
        from featuremass.models.inputs import morphology_columns

        return morphology_columns(self.table("val", feature_set))


class EpochClock:
    """Wall and process CPU seconds of every CNN epoch, appended to a JSON file (survives resumes)."""

    def __init__(self, path: Path):
        import keras

        clock = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock.start = (time.perf_counter(), time.process_time())

            def on_epoch_end(self, epoch, logs=None):
                wall, cpu = time.perf_counter() - clock.start[0], time.process_time() - clock.start[1]
                clock.epochs = [e for e in clock.epochs if e["epoch"] < epoch + 1]
                clock.epochs.append({"epoch": epoch + 1, "wall_s": wall, "cpu_s": cpu})
                write_json(clock.path, clock.epochs)

        self.path = path
        self.epochs = json.loads(path.read_text()) if path.is_file() else []
        self.callback = _Callback()


def cnn_paths(args, cell: Cell) -> dict[str, Path]:
    folder = args.cache / cell.key
    return {"model": folder / "cnn-model", "backup": folder / "cnn-backup",
            "epochs": folder / "cnn-epochs.json"}


def train_cnn(args, cell: Cell, data: SurveyData):
    """The cell's CNN: loaded when saved, else trained (resuming its backup); test predictions."""
    from featuremass.models.cnn import CNNRegressor

    paths = cnn_paths(args, cell)
    use_extra = cell.inputs == "image+dl"
    n = cell.n_train
    e = (lambda s, k=None: data.extra[s][:k]) if use_extra else (lambda s, k=None: None)
    if (paths["model"] / "model.json").is_file():
        cnn = CNNRegressor.load(paths["model"])
    else:
        clock = EpochClock(paths["epochs"])
        cnn = CNNRegressor(npix=cell.npix, extra_inputs=use_extra, epochs=args.epochs,
                           patience=args.patience, seed=cell.seed, verbose=2)
        cnn.fit(data.ds["train"].images[:n], data.y["train"][:n], extra=e("train", n),
                val=(data.ds["val"].images, data.y["val"], e("val")),
                callbacks=[clock.callback], backup_dir=paths["backup"], keep_backup=True)
        cnn.save(paths["model"])
        cnn.remove_backup()  # only once the model is safely saved
    t0 = time.perf_counter()
    pred = cnn.predict(data.ds["test"].images, e("test"))
    return cnn, pred, time.perf_counter() - t0


def cnn_row_fields(args, cell: Cell, cnn) -> dict:
    epochs = json.loads(cnn_paths(args, cell)["epochs"].read_text()) \
        if cnn_paths(args, cell)["epochs"].is_file() else []
    val = cnn.history_.get("val_loss", [])
    ran = len(val)
    return {"epochs_run": ran, "epochs_max": int(cnn.epochs), "best_epoch": int(cnn.best_epoch_),
            "stopped_early": bool(ran < int(cnn.epochs)), "patience": int(cnn.patience),
            "seed": int(cnn.seed),
            "val_loss_first": float(val[0]) if val else None,
            "val_loss_best": float(min(val)) if val else None,
            "fit_seconds": float(cnn.fit_seconds_),
            "seconds_per_epoch_wall": float(np.mean([r["wall_s"] for r in epochs])) if epochs else None,
            "seconds_per_epoch_cpu": float(np.mean([r["cpu_s"] for r in epochs])) if epochs else None,
            "epochs_timed": len(epochs),
            "device": f"{gpus()}; TensorFlow devices {list(cnn.devices_)}"}


def run_cell(args, cell: Cell, data: SurveyData) -> None:
    """Compute and cache every model of ``cell`` not yet in the cache (the CNN first)."""
    from featuremass.models.baselines import MeanRegressor, RidgeRegressor
    from featuremass.models.gbm import GBMRegressor
    from featuremass.models.hybrid import HybridRegressor

    n, use_extra, seed = cell.n_train, cell.inputs == "image+dl", cell.seed
    folder = args.cache / cell.key
    y_train, y_val, y_test = data.y["train"][:n], data.y["val"], data.y["test"]
    if n > len(data.y["train"]):
        raise SystemExit(f"error: {cell} needs {n} training galaxies; {args.data} has "
                         f"{len(data.y['train'])}")
    order = ["cnn", *(m for m in args.models if m != "cnn")] if "cnn" in args.models else list(args.models)
    cnn = None
    for model in order:
        path = folder / f"{model.replace(' ', '_')}.json"
        if path.is_file() or (model == "extra only" and not use_extra):
            continue
        needs = {"ridge": ("full",), "lgbm": ("full",), "hybrid": ("full",), "fast": ("fast",)}
        for fs in needs.get(model, ()):  # measured or read outside the model's time
            data.table("train", fs, n), data.table("val", fs), data.table("test", fs)
        t0 = time.perf_counter()
        extra_fields = {}

        def design(split, feature_set, rows=None):
            X = design_matrix(data.table(split, feature_set, rows), data.columns(feature_set),
                              data.extra[split][:rows] if use_extra else None)
            return X

        def gbm():
            return GBMRegressor(random_state=seed, n_jobs=args.jobs)

        if model == "mean":
            p = MeanRegressor().fit(np.zeros((n, 1)), y_train).predict(np.zeros((len(y_test), 1)))
        elif model == "extra only":
            Xe = {s: pd.DataFrame(data.extra[s], columns=["log_distance", "log_L_g"]) for s in data.ds}
            p = gbm().fit(Xe["train"].iloc[:n], y_train, X_val=Xe["val"], y_val=y_val).predict(Xe["test"])
        elif model == "ridge":
            p = RidgeRegressor().fit(design("train", "full", n), y_train).predict(design("test", "full"))
        elif model in ("lgbm", "fast"):
            fs = "full" if model == "lgbm" else "fast"
            p = gbm().fit(design("train", fs, n), y_train, X_val=design("val", fs),
                          y_val=y_val).predict(design("test", fs))
        elif model == "oracle":
            def oracle_X(s):
                X = data.truth_X[s]
                return X.assign(log_distance=data.extra[s][:, 0], log_L_g=data.extra[s][:, 1]) \
                    if use_extra else X
            p = gbm().fit(oracle_X("train").iloc[:n], y_train, X_val=oracle_X("val"),
                          y_val=y_val).predict(oracle_X("test"))
        elif model == "cnn":
            cnn, p, predict_s = train_cnn(args, cell, data)
            extra_fields = cnn_row_fields(args, cell, cnn)
            extra_fields["predict_seconds"] = predict_s
        elif model == "hybrid":
            if cnn is None:
                from featuremass.models.cnn import CNNRegressor

                model_dir = cnn_paths(args, cell)["model"]
                if not (model_dir / "model.json").is_file():
                    print(f"{cell}: hybrid skipped (the cell's CNN is not trained yet)", flush=True)
                    continue
                cnn = CNNRegressor.load(model_dir)
            ex = (lambda s, k=None: data.extra[s][:k]) if use_extra else (lambda s, k=None: None)
            cols = data.columns("full")
            hyb = HybridRegressor(npix=cell.npix, cnn=cnn, prefit=True, n_components=16,
                                  extra_inputs=use_extra, seed=seed, gbm_params={"n_jobs": args.jobs})
            val = (data.ds["val"].images, data.table("val", "full")[cols], y_val)
            hyb.fit(data.ds["train"].images[:n], y_train, features=data.table("train", "full", n)[cols],
                    extra=ex("train", n), val=(*val, ex("val")) if use_extra else val)
            p = hyb.predict(data.ds["test"].images, data.table("test", "full")[cols], ex("test"))
        seconds = time.perf_counter() - t0
        if model == "cnn":
            seconds = extra_fields["fit_seconds"] + extra_fields["predict_seconds"]
        row = {"npix": cell.npix, "n_train": n, "inputs": cell.inputs, "seed": seed, "model": model,
               **score(y_test, p, args), "seconds": seconds, **extra_fields}
        write_json(path, {"row": row, "pred": np.asarray(p, dtype=float).tolist()})
        print(f"{cell}: {model:<10} RMSE {row['rmse']:.3f} R2 {row['r2']:.3f} ({seconds:.0f} s)",
              flush=True)


def load_cache(args, cells) -> tuple[list[dict], dict, list[str]]:
    """Rows and test predictions of every finished (cell, model); the missing ones named."""
    rows, panels, missing = [], {}, []
    for cell in cells:
        for model in MODEL_ORDER:
            if model == "extra only" and cell.inputs != "image+dl":
                continue
            path = args.cache / cell.key / f"{model.replace(' ', '_')}.json"
            if not path.is_file():
                missing.append((cell, model))
                continue
            cached = json.loads(path.read_text())
            rows.append(cached["row"])
            panels[(cell.npix, cell.n_train, cell.inputs, cell.seed, model)] = np.asarray(cached["pred"])
    return rows, panels, missing


PREDICTIONS = "benchmark_predictions.parquet"


def panel_column(key: tuple) -> str:
    """Column name of one (npix, n_train, inputs, seed, model) panel in the predictions table."""
    npix, n, inputs, seed, model = key
    return f"{npix}px:{n}:{inputs}:s{seed}:{model}"


def write_predictions(path: Path, panels: dict, ids) -> None:
    """Test predictions of every finished (cell, model), one column each (parquet, float64)."""
    from featuremass.io.layout import atomic_output

    table = pd.DataFrame({"galaxy_id": np.asarray(ids)})
    for key in sorted(panels, key=lambda k: (k[0], k[1], INPUT_SETS.index(k[2]), k[3],
                                             MODEL_ORDER.index(k[4]))):
        table[panel_column(key)] = np.asarray(panels[key], dtype=np.float64)
    with atomic_output(path) as tmp:
        table.to_parquet(tmp, index=False)


def merge_previous(args, rows: list[dict], panels: dict, missing: list, test_ids) -> dict:
    """Fill (cell, model) pairs missing from the cache with the rows of ``args.previous``.

    Only a previous run on the same survey (simulation seed, split sizes, test galaxies)
    and the same feature engine is accepted. Carried-over rows are marked with
    ``carried_over`` (the earlier run's command and date); their test predictions come
    from the earlier run's predictions table when it has one, so the paired comparisons
    can use them. Rows present in both are compared, as a reproducibility check.
    """
    from featuremass._version import FEATURE_ENGINE_VERSION

    info = {"from": None, "carried": 0, "compared": []}
    if args.previous is None:
        return info
    prev = json.loads(args.previous.read_text())
    if prev.get("feature_engine_version") != FEATURE_ENGINE_VERSION:
        raise SystemExit(f"error: --previous {args.previous} was made with feature engine "
                         f"{prev.get('feature_engine_version')}, this checkout has "
                         f"{FEATURE_ENGINE_VERSION}; its rows cannot be carried over")
    meta = prev.get("survey", {})
    want = {"seed": survey_seed(args.data), "n_val": args.n_val, "n_test": args.n_test}
    for k, v in want.items():
        if k in meta and meta[k] != v:
            raise SystemExit(f"error: --previous {args.previous} was run on a survey with "
                             f"{k}={meta[k]}, this one has {v}")
    pred_path = args.previous.parent / PREDICTIONS
    prev_preds = pd.read_parquet(pred_path) if pred_path.is_file() else None
    if prev_preds is not None and not np.array_equal(prev_preds["galaxy_id"], test_ids):
        raise SystemExit(f"error: {pred_path} holds other test galaxies than {args.data}")
    origin = {"command": prev.get("command"), "date": prev.get("provenance", {}).get("date"),
              "file": args.previous.name}
    info["from"] = origin
    index = {(r["npix"], r["n_train"], r["inputs"], r["seed"], r["model"]): r for r in prev["rows"]}
    for r in rows:
        key = (r["npix"], r["n_train"], r["inputs"], r["seed"], r["model"])
        if key in index:
            info["compared"].append({"cell": panel_column(key), "r2_now": r["r2"],
                                     "r2_previous": index[key]["r2"]})
    still = []
    for cell, model in missing:
        key = (cell.npix, cell.n_train, cell.inputs, cell.seed, model)
        if key not in index:
            still.append((cell, model))
            continue
        # A row the previous run had itself carried over keeps its first origin.
        rows.append({**index[key], "carried_over": index[key].get("carried_over", origin)})
        info["carried"] += 1
        if prev_preds is not None and panel_column(key) in prev_preds:
            panels[key] = prev_preds[panel_column(key)].to_numpy()
    missing[:] = still
    return info


def cnn_training_lines(rows: list[dict], args) -> list[str]:
    """How each CNN's training ended, from its row."""
    lines = []
    for r in rows:
        if r["model"] != "cnn":
            continue
        ended = "early stopping" if r["stopped_early"] else "EPOCH CAP (not converged)"
        wall = r.get("seconds_per_epoch_wall")
        cpu = r.get("seconds_per_epoch_cpu")
        lines.append(f"| {r['npix']} | {r['n_train']:,} | {r['inputs']} | {r['seed']} | "
                     f"{r['epochs_run']} / {r['epochs_max']} | {r['best_epoch']} | {r['patience']} | "
                     f"{r['val_loss_first']:.3f} → {r['val_loss_best']:.3f} | "
                     f"{'-' if wall is None else f'{wall:.0f}'} | {'-' if cpu is None else f'{cpu:.0f}'} | "
                     f"{ended} |")
    if not lines:
        return []
    return ["## How far the CNNs trained", "",
            "Validation loss is the MSE on the validation split. *Stopped early*: the "
            "validation loss had not improved for `patience` epochs, and the best epoch's "
            "weights were restored. Seconds per epoch are the mean over the epochs of that "
            "training (validation pass included; wall and process CPU time, which counts both "
            "TensorFlow threads); they depend on what else ran on the shared machine.", "",
            "| npix | ntrain | inputs | seed | epochs run / cap | best epoch | patience "
            "| val loss first → best | wall s / epoch | CPU s / epoch | ended by |",
            "| ---- | ------ | ------ | ---- | ---------------- | ---------- | -------- "
            "| -------------------- | ------------- | ------------- | -------- |", *lines, ""]


def paired_lines(panels: dict, y_test, args) -> list[str]:
    """CNN, hybrid and fast tier against LightGBM on the same test galaxies (paired bootstrap)."""
    from featuremass.models.metrics import paired_difference, rmse

    lines = []
    for key in sorted(panels, key=lambda k: (k[0], k[1], k[2], k[3], MODEL_ORDER.index(k[4]))):
        npix, n, inputs, seed, model = key
        base = (npix, n, inputs, seed, "lgbm")
        if model not in ("fast", "cnn", "hybrid") or base not in panels:
            continue
        d = paired_difference(rmse, y_test, panels[key], panels[base], n_boot=args.n_boot,
                              random_state=0)
        lo, hi = d["ci95"]
        verdict = ("better" if hi < 0 else "worse" if lo > 0 else "no significant difference")
        lines.append(f"| {npix} | {n:,} | {inputs} | {seed} | {model} − lgbm | {d['value']:+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}] | {d['p_a_better']:.2f} | {verdict} |")
    if not lines:
        return []
    return ["## Against LightGBM on the full feature set, paired", "",
            "Difference in test RMSE on the same galaxies (negative: better than LightGBM), "
            f"with a paired bootstrap 95% interval ({args.n_boot} resamples of the test "
            "galaxies, both models scored on each resample); *P(better)* is the fraction of "
            "resamples in which it beats LightGBM.", "",
            "| npix | ntrain | inputs | seed | comparison | ΔRMSE | P(better) | verdict |",
            "| ---- | ------ | ------ | ---- | ---------- | ----- | --------- | ------- |", *lines, ""]


def seed_lines(rows: list[dict]) -> list[str]:
    """Spread between model seeds of cells run with more than one seed."""
    df = pd.DataFrame(rows)
    if df.empty:
        return []
    lines = []
    for (npix, n, inputs, model), g in df.groupby(["npix", "n_train", "inputs", "model"], sort=False):
        if g.seed.nunique() < 2:
            continue
        g = g.sort_values("seed")
        per = ", ".join(f"seed {s}: {r2:.3f}" for s, r2 in zip(g.seed, g.r2, strict=True))
        lines.append(f"| {npix} | {n:,} | {inputs} | {model} | {per} | {g.r2.max() - g.r2.min():.3f} "
                     f"| {g.rmse.max() - g.rmse.min():.3f} |")
    if not lines:
        return []
    return ["## Seed spread", "",
            "The same cell trained with different model seeds (the survey and the splits are "
            "the same; the seed drives the CNN's initialisation, shuffling and augmentation and "
            "LightGBM's bagging). The spread is max − min over the seeds run.", "",
            "| npix | ntrain | inputs | model | test R² per seed | R² spread | RMSE spread |",
            "| ---- | ------ | ------ | ----- | ---------------- | --------- | ----------- |",
            *lines, ""]


def missing_lines(missing, args) -> list[str]:
    if not missing:
        return []
    by_cell = {}
    for cell, model in missing:
        by_cell.setdefault(cell, []).append(model)
    lines = []
    for cell, models in by_cell.items():
        backup = cnn_paths(args, cell)["epochs"]
        done = len(json.loads(backup.read_text())) if backup.is_file() else 0
        state = (f" (CNN: {done} epochs done so far; still running, or resumes from its backup "
                 f"in `{cnn_paths(args, cell)['backup']}` where that cache is kept)") \
            if "cnn" in models and done else ""
        lines.append(f"- {cell}: {', '.join(models)}{state}")
    return ["## Not measured yet", "",
            "Cells of the issue-15 grid without a finished result in the cache when this report "
            "was rendered (not estimated, not filled in):", "", *lines, ""]


def figures(rows: list[dict], panels: dict, y_test, out: Path) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from featuremass.io.layout import atomic_output

    df = pd.DataFrame([r for r in rows if r["seed"] == 0])
    if df.empty:
        return []
    paths = []
    groups = sorted({(r["npix"], r["inputs"]) for r in df.to_dict("records")})
    fig = Figure(figsize=(5 * len(groups), 4))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)[0])
    for ax, (npix, inputs) in zip(axes, groups, strict=True):
        sub = df[(df.npix == npix) & (df.inputs == inputs)]
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
    with atomic_output(paths[-1]) as tmp:
        fig.savefig(tmp, dpi=110, format="png")

    # True vs predicted in the largest finished seed-0 cell of the smallest npix.
    keys = [k for k in panels if k[3] == 0]
    if keys:
        best = max(((k[0], k[1], k[2]) for k in keys), key=lambda t: (t[1], -t[0], t[2] == "image"))
        chosen = sorted((k for k in keys if k[:3] == best), key=lambda k: MODEL_ORDER.index(k[4]))
        ncol = min(4, len(chosen))
        nrow = int(np.ceil(len(chosen) / ncol))
        fig = Figure(figsize=(3.4 * ncol, 3.3 * nrow))
        FigureCanvasAgg(fig)
        axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
        for ax, k in zip(axes, chosen, strict=False):
            p = panels[k]
            lim = (float(min(y_test.min(), p.min())), float(max(y_test.max(), p.max())))
            ax.hexbin(y_test, p, gridsize=35, bins="log", mincnt=1, extent=lim + lim)
            ax.plot(lim, lim, "k--", lw=1)
            ax.set(title=k[4], xlabel="true M/L", ylabel="predicted M/L")
            ax.text(0.04, 0.95, f"RMSE {np.sqrt(np.mean((p - y_test) ** 2)):.3f}",
                    transform=ax.transAxes, va="top", fontsize=8)
        for ax in axes[len(chosen):]:
            ax.set_axis_off()
        fig.suptitle(f"{best[0]} px, {best[1]:,} training galaxies, {best[2]} (test split)")
        fig.tight_layout()
        paths.append(out / "benchmark_true_vs_predicted.png")
        with atomic_output(paths[-1]) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    return paths


def gpus() -> str:
    try:
        import tensorflow as tf  # only to report GPUs when present

        found = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception:  # TensorFlow missing or broken: report CPU only
        found = []
    return f"GPUs {found}" if found else "CPU only (no GPU)"


def survey_seed(data: Path):
    """The seed the survey was simulated with, from its truth table's metadata."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(data / "truth" / "truth.parquet").metadata or {}
        return json.loads(meta[b"featuremass"])["config"]["seed"]
    except (OSError, KeyError, ValueError):  # not a featuremass simulation: say so
        return "unknown"


def render(args, command: str) -> Path:
    """benchmark.md / .json and figures from the cached cells of the plan."""
    from featuremass._version import FEATURE_ENGINE_VERSION
    from featuremass.io.layout import atomic_output, load_split
    from featuremass.report.provenance import provenance, provenance_markdown

    cells = list(dict.fromkeys([*args.plan, *args.cells]))
    rows, panels, missing = load_cache(args, cells)
    npix0 = min(c.npix for c in cells)
    test = load_split(args.data, npix=npix0, split="test")
    y_test = np.asarray(test.target, dtype=np.float64)
    previous = merge_previous(args, rows, panels, missing, np.asarray(test.ids))
    rows.sort(key=lambda r: (r["npix"], r["n_train"], INPUT_SETS.index(r["inputs"]), r["seed"],
                             MODEL_ORDER.index(r["model"])))
    args.out.mkdir(parents=True, exist_ok=True)
    figs = figures(rows, panels, y_test, args.out / "figures")
    extraction = {c.npix: json.loads(p.read_text()) for c in cells
                  if (p := args.cache / f"extraction-{c.npix}px.json").is_file()}
    write_predictions(args.out / PREDICTIONS, panels, test.ids)
    write_json(args.out / "benchmark.json", {
        "rows": rows, "missing": [{"cell": str(c), "model": m} for c, m in missing],
        "command": command, "provenance": provenance(), "gpus": gpus(),
        "survey": {"seed": survey_seed(args.data), "n_val": args.n_val, "n_test": args.n_test},
        "previous": previous,
        "feature_engine_version": FEATURE_ENGINE_VERSION, "feature_scale": "auto",
        "cnn": {"epoch_cap": args.epochs, "patience": args.patience},
        "feature_extraction": {str(k): v for k, v in extraction.items()}})

    lines = ["# Accuracy benchmark: classical features vs CNN", "",
             provenance_markdown(), f"- device: {gpus()}",
             f"- rendered from the per-cell cache `{args.cache}`: each cell's numbers (times "
             "included) are from the run that computed it; this report lists every cell of "
             "the issue-15 grid, finished or not",
             f"- features: engine {FEATURE_ENGINE_VERSION}, `scale=\"auto\"` (stretch detected "
             "and inverted per stamp); `fast` is LightGBM on `feature_set=\"fast\"`",
             f"- CNN: epoch cap {args.epochs}, early stopping on the validation loss with "
             f"patience {args.patience} (best weights restored), learning rate × 0.3 after 3 "
             "epochs without improvement; training backed up every epoch and resumed after an "
             "interruption", "",
             f"Simulated survey `{args.data}` (simulation seed {survey_seed(args.data)}): the "
             f"same validation ({args.n_val}) and test ({args.n_test}) galaxies for every model "
             "and cell; a training set of N galaxies is the first N of the survey's training "
             "split. RMSE and R² (linear M/L) on the test split with bootstrap 95% intervals "
             f"({args.n_boot} resamples). Time is wall-clock training plus prediction; the "
             "CNN's is its training time summed over resumed runs; the hybrid reuses its "
             "cell's CNN, so its time is the embedding, PCA and LightGBM only; feature "
             "extraction is listed separately below the table.", "",
             "| npix | ntrain | add $D$ & $L_g$? | seed | model | RMSE | $R^2$ | time [s] |",
             "| ---- | ------ | ---------------- | ---- | ----- | ---- | ----- | -------- |"]
    for r in rows:
        dl = {"image": "no", "image+dl": "yes"}[r["inputs"]]
        name = r["model"] + (f" ({r['epochs_run']} ep., best {r['best_epoch']})"
                             if r["model"] == "cnn" else "") + (" †" if "carried_over" in r else "")
        lines.append(f"| {r['npix']} | {r['n_train']:,} | {dl} | {r['seed']} | {name} | "
                     f"{r['rmse']:.3f} [{r['rmse_ci'][0]:.3f}, {r['rmse_ci'][1]:.3f}] | "
                     f"{r['r2']:.3f} [{r['r2_ci'][0]:.3f}, {r['r2_ci'][1]:.3f}] | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "`oracle` is LightGBM on the simulation's latent parameters an image can show "
              "(`featuremass.io.simulate.ORACLE_COLUMNS`; no colours, dust optical depth, M/L "
              "or mass; plus distance and L_g for the D & L_g rows): roughly the floor any "
              "image-based model can reach.", ""]
    if previous["from"]:
        origins = {}
        for r in rows:
            if "carried_over" in r:
                o = r["carried_over"]
                origins.setdefault((o["file"], o["date"], o["command"]), []).append(r)
        sources = "; ".join(
            f"{len(rs)} rows from `{file}` ({date}; command `{command}`)"
            for (file, date, command), rs in origins.items())
        lines += [f"† carried over from earlier runs of this script on the same survey and "
                  f"feature engine, read through `--previous {previous['from']['file']}`: "
                  f"{sources}. Their per-cell cache was not kept, so these "
                  f"{previous['carried']} rows are those runs' numbers, not recomputed. "
                  "Carried-over rows without stored test predictions are left out of the "
                  "paired comparisons below (the earlier run's report has them). From now on "
                  f"every finished model's test predictions are kept in `{PREDICTIONS}` "
                  "beside this report, so a later run can carry rows over with them.", ""]
        if previous["compared"]:
            diffs = [abs(c["r2_now"] - c["r2_previous"]) for c in previous["compared"]]
            lines += [f"Reproducibility: {len(diffs)} rows were recomputed here and also exist "
                      f"in that run; the largest test-R² difference between the two is "
                      f"{max(diffs):.2g}.", ""]
    if extraction:
        lines += ["**Feature extraction** (paid once per galaxy, shared by ridge, lgbm and "
                  "hybrid; not in their time column), timed once per image size on the test "
                  "split:", ""]
        for npix, e in sorted(extraction.items()):
            lines.append(f"- {npix} px: full {1e3 * e['full_seconds'] / e['n']:.1f} ms, fast "
                         f"{1e3 * e['fast_seconds'] / e['n']:.2f} ms per galaxy on {e['jobs']} "
                         f"process(es) ({e['n']} galaxies, pool start-up included)")
        lines.append("")
    lines += paired_lines(panels, y_test, args)
    lines += seed_lines(rows)
    lines += cnn_training_lines(rows, args)
    lines += missing_lines(missing, args)
    if (args.out / "shift.md").is_file():
        lines += ["## Preprocessing shift", "",
                  "How each model trained on the default preprocessing survives a change of "
                  "stretch, crop and PSF on the same test galaxies: [shift.md](shift.md).", ""]
        if (args.out / "restretch.md").is_file():
            lines[-1:] = ["How much of a stretch shift the CNN recovers when its input is "
                          "re-stretched to its training stretch (`cnn predict --restretch "
                          "auto`): [restretch.md](restretch.md).", ""]
    for f in figs:
        lines.append(f"![{f.stem}](figures/{f.name})")
    lines += ["", "Run or resume the grid (finished cells are reused, an interrupted CNN "
              "continues from its last completed epoch); with `--report-only` it only "
              "re-renders this report from the cache:", "", "```",
              command.replace(" --report-only", ""), "```", ""]
    path = args.out / "benchmark.md"
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/bench_accuracy.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    command = command.strip()
    ensure_survey(args)
    if not args.report_only:
        if "cnn" in args.models or "hybrid" in args.models:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.tf_threads)
        data = {}
        for cell in args.cells:
            if cell.npix not in data:
                data[cell.npix] = SurveyData(args, cell.npix)
                if {"ridge", "lgbm", "fast", "hybrid"} & set(args.models):
                    extraction_rate(args, cell.npix, data[cell.npix].ds["test"])
            print(f"=== {cell}", flush=True)
            run_cell(args, cell, data[cell.npix])
            print(render(args, command), flush=True)
    print(render(args, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
