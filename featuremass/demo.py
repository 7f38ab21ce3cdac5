"""``featuremass demo``: the whole pipeline on a small simulated survey, ending in a report.

Steps (each printed as it starts, on stderr):

1. simulate a small SDSS-like survey (:func:`featuremass.io.simulate.simulate_survey`),
   or reuse the one in ``OUT/survey`` when its configuration matches;
2. measure the morphology features of every split (all cores);
3. train and evaluate LightGBM on the image-only and image + distance + L_g input
   sets (early stopping and conformal intervals on the validation split), plus
   the mean and ridge baselines;
4. the importance study of the image-only model (with a random-noise control);
5. when TensorFlow is installed (and ``cnn=True``): the seed's CNN for a few
   epochs, and the hybrid (CNN embedding + features -> LightGBM);
6. the HTML report.

``OUT`` becomes a run folder in the layout of :mod:`featuremass.report.html`,
with the survey in ``OUT/survey`` and the models in ``OUT/models``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass._version import __version__
from featuremass.errors import FeaturemassError
from featuremass.io.layout import save_figure, write_frame, write_json


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and budgets of one demo run."""

    n_train: int
    n_val: int
    n_test: int
    npix: int
    cnn_epochs: int
    n_boot: int
    n_repeats: int

    @classmethod
    def for_mode(cls, fast: bool) -> DemoPlan:
        if fast:
            return cls(n_train=60, n_val=20, n_test=40, npix=48, cnn_epochs=1, n_boot=100,
                       n_repeats=1)
        return cls(n_train=2000, n_val=500, n_test=1000, npix=69, cnn_epochs=4, n_boot=1000,
                   n_repeats=3)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"featuremass": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "pandas", "scikit-learn", "scikit-image", "lightgbm", "galsim",
                "statmorph", "photutils", "astropy", "matplotlib", "tensorflow", "keras"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _survey(out: Path, config, *, n_jobs: int, echo) -> Path:
    """Simulate into ``out/survey`` unless a survey with the same config is there."""
    from featuremass.io.simulate import simulate_survey

    root = out / "survey"
    stamp = out / "survey_config.json"
    wanted = json.loads(json.dumps(asdict(config), default=list))
    if root.is_dir() and stamp.is_file():
        try:
            have = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            have = None
        if have == wanted:
            echo(f"      reusing the simulated survey in {root}")
            return root
    summary = simulate_survey(root, config, n_jobs=n_jobs, overwrite=root.exists())
    write_json(stamp, wanted)
    echo("      " + str(summary).replace("\n", "\n      "))
    return root


def run_demo(out, *, fast: bool = False, seed: int = 0, cnn: bool = True,
             n_jobs: int | None = None, echo=None) -> str:
    """Run the demo pipeline into the folder ``out`` and return the report's path.

    Parameters
    ----------
    out : path
        Run folder (created). A survey simulated there before with the same
        configuration is reused.
    fast : bool
        A tiny survey (60/20/40 galaxies at 48 px) and one CNN epoch: for tests.
        The default is 2000/500/1000 galaxies at 69 px and 4 CNN epochs, which
        finishes in under 10 minutes on 2 cores.
    seed : int
        Seed of the survey, the models and the bootstrap.
    cnn : bool
        Train the CNN (and the hybrid) when TensorFlow is installed.
    n_jobs : int, optional
        Worker processes for simulation and feature extraction (default: all cores).
    echo : callable, optional
        Receives progress lines (default: print to stderr).

    Returns
    -------
    str
        Path of ``report.html``.
    """
    from featuremass.compat import has_module
    from featuremass.report.html import build_report

    if echo is None:
        def echo(line):
            print(line, file=sys.stderr, flush=True)
    n_jobs = int(n_jobs or os.cpu_count() or 1)
    if n_jobs < 1:
        raise FeaturemassError(f"n_jobs must be positive, got {n_jobs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = DemoPlan.for_mode(fast)
    use_cnn = bool(cnn) and has_module("tensorflow")
    run = _RunLog(echo, n_steps=6 if use_cnn else 5)

    run.start(1, "simulate", f"simulating {plan.n_train}/{plan.n_val}/{plan.n_test} galaxies at {plan.npix} px")
    root, splits, meta = _simulate_step(out, plan, seed, n_jobs, run)
    run.start(2, "extract", f"measuring morphology features ({n_jobs} processes)")
    tables = _extract_step(out, root, splits, plan, n_jobs, run)
    run.start(3, "train", "training LightGBM (image, image+dl) and baselines")
    metrics, pred, models = _train_step(out, root, splits, tables, meta, plan, seed, n_jobs, run)
    run.start(4, "importance", "importance study of the image-only LightGBM")
    _importance_step(out, root, models["lgbm_image"], tables["test"], meta, plan, seed, run)
    if use_cnn:
        run.start(5, "cnn", f"training the CNN for {plan.cnn_epochs} epoch(s), then the hybrid")
        _cnn_and_hybrid(out, splits, tables, plan, seed, n_jobs, metrics, pred, echo)
        run.command("cnn", f"featuremass cnn train --data {root} --npix {plan.npix} --epochs "
                           f"{plan.cnn_epochs} --seed {seed} --out {out / 'models/cnn_image'}")
    elif cnn:
        echo("      (CNN skipped: TensorFlow is not installed; pip install 'featuremass[cnn]')")
    run.stop()
    write_frame(pred, out / "predictions.parquet", index=False)
    write_json(out / "metrics.json", metrics)

    run.start(run.n_steps, "report", "writing the HTML report")
    run.seconds["total"] = time.perf_counter() - run.t_all
    run.commands.insert(0, {"step": "demo (all of the below)", "command":
                            f"featuremass demo --out {out} --seed {seed}" + (" --fast" if fast else "")
                            + ("" if cnn else " --no-cnn") + f" -j {n_jobs}"})
    run.command("report", f"featuremass report --run {out}")
    write_json(out / "commands.json", {
        "commands": run.commands, "versions": _versions(), "seconds": run.seconds,
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, "
                   f"{platform.system()} {platform.release()})",
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    })
    report = build_report(out)
    echo(f"done in {time.perf_counter() - run.t_all:.0f} s")
    return str(report)


class _RunLog:
    """Progress lines, the equivalent CLI command of each step and the seconds each took."""

    def __init__(self, echo, n_steps: int):
        self.echo, self.n_steps = echo, n_steps
        self.commands: list[dict] = []
        self.seconds: dict[str, float] = {}
        self.t_all = time.perf_counter()
        self._current: tuple[str, float] | None = None

    def start(self, k: int, name: str, text: str) -> None:
        """Close the running step (its time is kept) and announce step ``k``."""
        self.stop()
        self.echo(f"[{k}/{self.n_steps}] {text}")
        self._current = (name, time.perf_counter())

    def stop(self) -> None:
        if self._current is not None:
            name, t0 = self._current
            self.seconds[name] = time.perf_counter() - t0
            self._current = None

    def command(self, step: str, command: str) -> None:
        self.commands.append({"step": step, "command": command})


def _simulate_step(out: Path, plan: DemoPlan, seed: int, n_jobs: int, run: _RunLog):
    """The survey (simulated or reused), its splits, metadata and ``dataset.json``."""
    from featuremass.io.layout import load_split
    from featuremass.io.simulate import SurveyConfig
    from featuremass.models.inputs import load_metadata

    config = SurveyConfig(n_train=plan.n_train, n_val=plan.n_val, n_test=plan.n_test,
                          npix=(plan.npix,), seed=seed)
    root = _survey(out, config, n_jobs=n_jobs, echo=run.echo)
    run.command("simulate", f"featuremass simulate --out {root} --n-train {plan.n_train} --n-val "
                            f"{plan.n_val} --n-test {plan.n_test} --npix {plan.npix} --seed {seed}")
    splits = {s: load_split(root, npix=plan.npix, split=s) for s in ("train", "val", "test")}
    y_all = np.concatenate([splits[s].target for s in splits])
    write_json(out / "dataset.json", {
        "name": "featuremass simulated survey", "root": "survey", "npix": plan.npix,
        "simulated": True, "splits": {s: len(d) for s, d in splits.items()},
        "target": {"column": "M/L", "mean": float(y_all.mean()), "std": float(y_all.std()),
                   "min": float(y_all.min()), "median": float(np.median(y_all)),
                   "max": float(y_all.max())},
        "config": json.loads(json.dumps(asdict(config), default=list)),
    })
    return root, splits, load_metadata(root)


def _extract_step(out: Path, root: Path, splits: dict, plan: DemoPlan, n_jobs: int, run: _RunLog) -> dict:
    """Feature table of every split, written to ``features/<split>.parquet``."""
    from featuremass.features.batch import extract_features
    from featuremass.features.flags import is_good

    tables = {}
    (out / "features").mkdir(exist_ok=True)
    for s, ds in splits.items():
        path = out / "features" / f"{s}.parquet"
        table = extract_features(ds.images, ds.ids, scale="seed-log", n_jobs=n_jobs, out=path)
        table = table.set_index("galaxy_id").loc[ds.ids].reset_index()
        table.attrs["source"] = str(path)
        tables[s] = table
        n_good = int(is_good(table["flag"]).sum())
        n_warn = int(((table["flag"] != 0) & is_good(table["flag"])).sum())
        run.echo(f"      {s}: {len(table)} galaxies, {n_good} measured without a serious flag "
                 f"({n_warn} of them with warning bits such as EDGE_TOUCH)")
        run.command(f"extract {s}", f"featuremass extract --data {root} --npix {plan.npix} --split {s} "
                                    f"--out {path} -j {n_jobs}")
    return tables


#: The demo's models: (label, kind, input set).
_DEMO_MODELS = (("lgbm_image", "lgbm", "image"), ("lgbm_image+dl", "lgbm", "image+dl"),
                ("ridge_image", "ridge", "image"), ("mean", "mean", "image"))


def _train_step(out, root, splits, tables, meta, plan: DemoPlan, seed: int, n_jobs: int, run: _RunLog):
    """Train, save, evaluate and predict every model of :data:`_DEMO_MODELS`: ``(metrics, pred, models)``."""
    from featuremass.models.inputs import build_design
    from featuremass.models.metrics import format_metric
    from featuremass.models.store import save_model
    from featuremass.models.workflow import evaluate_model, fit_model

    metrics: dict[str, dict] = {}
    pred = pd.DataFrame({"galaxy_id": splits["test"].ids, "ml_true": splits["test"].target})
    models = {}
    for label, kind, input_set in _DEMO_MODELS:
        noise = kind == "lgbm" and input_set == "image"
        d_train, d_val = (build_design(tables[s], input_set, metadata=meta, noise=noise, seed=seed,
                                       require_target=True) for s in ("train", "val"))
        tm = fit_model(d_train.X, d_train.y, d_train.ids, kind=kind, input_set=input_set,
                       X_val=d_val.X, y_val=d_val.y, seed=seed, n_jobs=min(n_jobs, 2),
                       noise_seed=seed if noise else None, intervals=kind != "mean",
                       n_boot=plan.n_boot)
        mdir = save_model(out / "models" / label, tm)
        ev = evaluate_model(tm, tables["test"], meta, n_boot=plan.n_boot, seed=seed, impute=True)
        rep = ev["metrics"]
        if "coverage" in ev:
            rep["coverage"] = {k: v["empirical"] for k, v in ev["coverage"].items()}
        metrics[label] = rep
        _add_predictions(pred, tm, tables["test"], meta, label)
        models[label] = tm
        run.echo(f"      {label:<14} test RMSE {format_metric(rep['linear']['rmse'])}  "
                 f"R2 {format_metric(rep['linear']['r2'])}")
        run.command(f"train {label}",
                    f"featuremass train --features {out / 'features/train.parquet'} --val-features "
                    f"{out / 'features/val.parquet'} --data {root} --inputs {input_set} "
                    f"--model {kind} --seed {seed} --out {mdir}")
    return metrics, pred, models


def _add_predictions(pred: pd.DataFrame, tm, table, meta, label: str) -> None:
    """The model's test predictions (and 68/95 % intervals when it has them) as columns of ``pred``."""
    from featuremass.models.workflow import predict_table

    p = predict_table(tm, table, meta, impute=True)
    pred[f"ml_pred_{label}"] = p["ml_pred"].to_numpy()
    for lo, hi, tag in (("ml_lo68", "ml_hi68", "68"), ("ml_lo95", "ml_hi95", "95")):
        if lo in p:
            pred[f"ml_lo{tag}_{label}"] = p[lo].to_numpy()
            pred[f"ml_hi{tag}_{label}"] = p[hi].to_numpy()


def _importance_step(out: Path, root: Path, tm, test_table, meta, plan: DemoPlan, seed: int, run: _RunLog) -> None:
    """The importance study of the image-only LightGBM into ``importance/``."""
    from featuremass.inspect.importance import importance_study

    d_test = tm.design(test_table, meta, require_target=True)
    study = importance_study(tm.estimator, d_test.X, d_test.y, out=out / "importance",
                             n_repeats=plan.n_repeats, random_state=seed)
    run.echo(f"      top features by mean |SHAP|: {', '.join(study['importance'].index[:5])}")
    run.command("importance", f"featuremass importance --model {out / 'models/lgbm_image'} --features "
                              f"{out / 'features/test.parquet'} --data {root} --out {out / 'importance'}")


def _cnn_and_hybrid(out, splits, tables, plan, seed, n_jobs, metrics, pred, echo) -> None:
    from featuremass.models.cnn import CNNRegressor
    from featuremass.models.hybrid import HybridRegressor
    from featuremass.models.inputs import morphology_columns
    from featuremass.models.metrics import format_metric, regression_report

    tr, va, te = splits["train"], splits["val"], splits["test"]
    model = CNNRegressor(npix=plan.npix, epochs=plan.cnn_epochs, seed=seed)
    model.fit(tr.images, tr.target, val=(va.images, va.target))
    p = model.predict(te.images)
    rep = regression_report(te.target, p, n_boot=plan.n_boot, random_state=seed)
    model.save(out / "models" / "cnn_image", metrics={"test": rep})
    metrics["cnn_image"] = rep
    pred["ml_pred_cnn_image"] = p
    echo(f"      {'cnn_image':<14} test RMSE {format_metric(rep['linear']['rmse'])}  "
         f"R2 {format_metric(rep['linear']['r2'])}  ({len(model.history_['loss'])} epochs, "
         f"{model.fit_seconds_:.0f} s)")
    _history_figure(model.history_, out / "figures" / "cnn_training.png")

    cols = morphology_columns(tables["train"])
    hybrid = HybridRegressor(npix=plan.npix, cnn=model, prefit=True, n_components=16, seed=seed,
                             gbm_params={"n_jobs": min(n_jobs, 2)})
    hybrid.fit(tr.images, tr.target, features=tables["train"][cols],
               val=(va.images, tables["val"][cols], va.target))
    ph = hybrid.predict(te.images, features=tables["test"][cols])
    rep = regression_report(te.target, ph, n_boot=plan.n_boot, random_state=seed)
    hybrid.save(out / "models" / "hybrid_image", metrics={"test": rep})
    metrics["hybrid_image"] = rep
    pred["ml_pred_hybrid_image"] = ph
    echo(f"      {'hybrid_image':<14} test RMSE {format_metric(rep['linear']['rmse'])}  "
         f"R2 {format_metric(rep['linear']['r2'])}")


def _history_figure(history: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5, 3.4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        if key in history:
            ax.plot(epochs, history[key], marker="o", label=label)
    ax.set(xlabel="epoch", ylabel="MSE (M/L²)", title="CNN training")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
