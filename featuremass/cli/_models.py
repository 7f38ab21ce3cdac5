"""``featuremass train / evaluate / predict / importance``: read the inputs, call the library, write.

Each ``*_cli(args)`` takes the parsed :mod:`argparse` namespace, calls
:mod:`featuremass.models.workflow`, prints a short summary (or JSON), and
raises :class:`~featuremass.errors.FeaturemassError` for user mistakes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass._version import FEATURE_ENGINE_VERSION
from featuremass.errors import DataError, FeaturemassError, SchemaError
from featuremass.models.inputs import (
    align_columns,
    build_design,
    load_metadata,
    morphology_columns,
    read_features,
)
from featuremass.models.workflow import (
    check_compatible,
    check_feature_values,
    evaluate_model,
    fit_model,
    json_safe,
    model_feature_set,
    predict_table,
    table_record,
    valid_target_rows,
)

log = logging.getLogger(__name__)


def _metadata(args, *, required: bool, what: str):
    data = getattr(args, "data", None)
    if data is None:
        if required:
            raise DataError(f"{what} needs the dataset metadata (M/L, distance, L_g): pass --data")
        return None
    return load_metadata(data)


def _training_table(path, meta, args):
    table = read_features(path)
    table = valid_target_rows(table, meta, str(path), drop_invalid=getattr(args, "drop_invalid", False))
    if args.inputs != "extra":
        check_feature_values(table, morphology_columns(table), str(path), training=True)
    return table, table_record(table, path)


def train_cli(args) -> None:
    """``featuremass train``: fit a model on feature tables and save a model directory."""
    from featuremass.io.layout import check_output, output_lock
    from featuremass.models.store import check_model_target, save_model

    overwrite = getattr(args, "overwrite", False)
    check_output(args.out, inputs=[args.features, args.val_features], overwrite=overwrite, folder=True)
    check_model_target(args.out, overwrite=overwrite)
    meta = _metadata(args, required=True, what="training")
    noise = not getattr(args, "no_noise_control", False)
    table, record = _training_table(args.features, meta, args)
    design = build_design(table, args.inputs, metadata=meta, noise=noise, seed=args.seed,
                          require_target=True)
    scheduler = getattr(args, "scheduler", None)
    X_val = y_val = None
    if args.val_features is not None:
        val_table, val_record = _training_table(args.val_features, meta, args)
        for key in ("feature_engine_version", "scale", "feature_set"):
            if record and val_record and record.get(key) != val_record.get(key):
                raise SchemaError(f"{args.features} and {args.val_features} differ in {key} "
                                  f"({record.get(key)!r} vs {val_record.get(key)!r}); measure "
                                  "both with the same featuremass and --scale")
        vdesign = build_design(val_table, args.inputs, metadata=meta, noise=noise, seed=args.seed,
                               require_target=True)
        X_val = align_columns(vdesign.X, list(design.X.columns), source=str(args.val_features))
        y_val = vdesign.y
    uses_features = args.inputs != "extra"
    engine = record.get("feature_engine_version") if record else FEATURE_ENGINE_VERSION
    scheduler = getattr(args, "scheduler", None)
    fit = dict(
        kind=args.model, input_set=args.inputs, X_val=X_val,
        y_val=y_val, loss=args.loss, target=args.target, seed=args.seed,
        n_jobs=getattr(args, "jobs", 2) or 2,
        n_estimators=getattr(args, "n_estimators", 2000),
        learning_rate=getattr(args, "learning_rate", 0.05), cv=args.cv,
        noise_seed=args.seed if noise else None,
        source={"train_table": str(args.features), "val_table": str(args.val_features) if args.val_features else None,
                "data": str(args.data), "scheduler": scheduler},
        scale=record.get("scale") if uses_features else None,
        feature_engine_version=engine if uses_features else None,
        feature_set=(record.get("feature_set") or "full") if uses_features and record else None,
    )
    if scheduler is None:
        model = fit_model(design.X, design.y, design.ids, **fit)
    else:
        from featuremass.features.execution import open_executor, terminate_on_signals

        with terminate_on_signals(), open_executor(getattr(args, "jobs", 2) or 2, scheduler) as ex:
            model = fit_model(design.X, design.y, design.ids, client=ex.client,
                              local_cluster=scheduler == "local", **fit)
    with output_lock(args.out):
        save_model(args.out, model, overwrite=overwrite)
    cal = model.info["metrics"]["calibration"]["linear"]
    line = (f"{args.out}: {args.model} on {args.inputs} ({design.X.shape[1]} features, "
            f"{len(design.X)} galaxies); held-out RMSE {cal['rmse']['value']:.3f}, "
            f"R2 {cal['r2']['value']:.3f}")
    if "cv" in model.info:
        oof = model.info["cv"]["oof_metrics"]["linear"]
        line += f"; {args.cv}-fold CV RMSE {oof['rmse']['value']:.3f}, R2 {oof['r2']['value']:.3f}"
    print(line)


def _format_metric(entry: dict) -> str:
    from featuremass.models.metrics import format_metric

    if not np.isfinite(entry["ci95"]).all():
        return f"{entry['value']:.3f} (no bootstrap interval)"
    return format_metric(entry)


def evaluate_cli(args) -> None:
    """``featuremass evaluate``: metrics of a model on a feature table."""
    from featuremass.models.store import load_model

    model = load_model(args.model)
    meta = _metadata(args, required=True, what="evaluation")
    table = read_features(args.features)
    check_compatible(model, table_record(table, args.features), args.features)
    table = valid_target_rows(table, meta, str(args.features),
                              drop_invalid=getattr(args, "drop_invalid", False))
    if model.input_set != "extra":
        check_feature_values(table, morphology_columns(table), str(args.features), training=False)
    result = evaluate_model(model, table, meta, n_boot=args.n_boot,
                            impute=getattr(args, "impute", False))
    result["model"] = str(args.model)
    result["features"] = str(args.features)
    if args.json:
        # NaN (no bootstrap interval with --n-boot 0) is not JSON; null is
        print(json.dumps(json_safe(result), indent=2))
        return
    m = result["metrics"]
    print(f"{args.model} on {args.features} ({result['n']} galaxies; 95% bootstrap intervals)")
    for name in ("rmse", "r2", "mae", "bias", "nmad"):
        print(f"  {name:<6} linear {_format_metric(m['linear'][name])}   "
              f"log10 {_format_metric(m['log'][name])}")
    print(f"  outlier fraction (|dlog| > {m['outlier_threshold_dex']} dex) "
          f"{_format_metric(m['outlier_fraction'])}")
    for tag, c in result.get("coverage", {}).items():
        print(f"  {tag}% interval coverage {c['empirical']:.3f} (median width {c['median_width']:.3f})")
    if result["n_excluded_flagged"]:
        print(f"  note: {result['n_excluded_flagged']} galaxies with a serious flag were left out "
              "(--impute scores them)")
    floored = result["n_floored"]
    if floored["true"] or floored["predicted"]:
        print(f"  note: log10 metrics floor M/L at {floored['floor']:g}: {floored['predicted']} "
              f"predicted and {floored['true']} true values lay below it")


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write a prediction table as CSV or Parquet (chosen by the suffix), atomically."""
    from featuremass.io.layout import write_frame

    return write_frame(df, path, index=False)


def predict_cli(args) -> None:
    """``featuremass predict``: M/L and intervals from a feature table or raw images.

    Top-down: check the arguments, then load the model, read the table (or
    read the images and measure them), predict, write.
    """
    from featuremass.features.execution import open_executor, terminate_on_signals
    from featuremass.io.layout import guarded_output
    from featuremass.models.store import load_model

    _check_predict_arguments(args)
    scheduler = getattr(args, "scheduler", None)
    with contextlib.ExitStack() as stack:
        stack.enter_context(guarded_output(args.out, inputs=[args.features, args.images, args.names,
                                                             args.data],
                                           folder=scheduler is not None,
                                           overwrite=getattr(args, "overwrite", False)))
        stack.enter_context(terminate_on_signals())
        executor = (None if scheduler is None
                    else stack.enter_context(open_executor(args.jobs, scheduler)))
        model = load_model(args.model)
        meta = _metadata(args, required=False, what="prediction")
        if args.features is not None:
            table = _read_feature_table(model, args.features)
        else:
            table = _measure_images(model, args, executor)
        if model.input_set != "extra":
            check_feature_values(table, morphology_columns(table),
                                 str(args.features or args.images), training=False)
        impute = getattr(args, "impute", False)
        if executor is not None:
            _predict_on_dask(executor, args, table, meta, impute=impute)
            return
        pred = predict_table(model, table, meta, impute=impute)
        path = write_table(pred, args.out)
    n_nan = int(pred["ml_pred"].isna().sum())
    note = f" ({n_nan} with a serious flag get NaN M/L; --impute predicts them)" if n_nan else ""
    print(f"{path}: {len(pred)} galaxies{note}")


def _check_predict_arguments(args) -> None:
    if (args.features is None) == (args.images is None):
        raise FeaturemassError("give exactly one of --features (a table) or --images (an image stack)")
    if args.names is not None and args.images is None:
        raise FeaturemassError("--names goes with --images")
    if getattr(args, "scheduler", None) is not None and Path(args.out).suffix.lower() == ".csv":
        raise FeaturemassError(f"with --scheduler, --out is a folder of Parquet parts, not {args.out}")


def _read_feature_table(model, path) -> pd.DataFrame:
    """A feature table, refused when it was measured otherwise than the model's training table."""
    table = read_features(path)
    check_compatible(model, table_record(table, path), path)
    return table


def _measure_images(model, args, executor) -> pd.DataFrame:
    """The feature table of ``--images``, measured with the scale and feature set the model was trained with."""
    from featuremass.cli._extract import read_images
    from featuremass.features.batch import extract_features

    scale = args.scale if args.scale is not None else model.scale
    if model.scale is not None and scale != model.scale:
        raise SchemaError(f"{args.model} was trained on features measured with --scale "
                          f"{model.scale}; pass --scale {model.scale} (not {scale})")
    source, ids = read_images(args.images, args.names, scale)
    table = extract_features(source, ids, scale=scale, n_jobs=args.jobs, executor=executor,
                             feature_set=model_feature_set(model) or "full")
    table.attrs["source"] = str(args.images)
    return table


def _predict_on_dask(executor, args, table, meta, *, impute: bool) -> None:
    from featuremass.models.dask_gbm import predict_partitions

    n, n_nan, n_parts = predict_partitions(executor.client, args.model, table, Path(args.out),
                                           meta, impute=impute)
    print(f"{args.out}: {n} galaxies in {n_parts} Parquet parts"
          + (f" ({n_nan} with a serious flag get NaN M/L)" if n_nan else ""))


def importance_cli(args) -> None:
    """``featuremass importance``: importance tables and plots of a LightGBM model."""
    from featuremass.inspect import plots
    from featuremass.inspect.importance import importance_study
    from featuremass.io.layout import check_output, output_lock
    from featuremass.models.store import load_model

    out = Path(args.out)
    in_use = out.is_dir() and any(out.iterdir())
    check_output(out, inputs=[args.model, args.features, args.data], folder=True,
                 overwrite=getattr(args, "overwrite", False) or not in_use)
    model = load_model(args.model)
    if model.kind != "lgbm":
        raise FeaturemassError(f"{args.model} is a {model.kind} model; the importance study needs lgbm")
    meta = _metadata(args, required=True, what="the importance study")
    table = read_features(args.features)
    check_compatible(model, table_record(table, args.features), args.features)
    table = valid_target_rows(table, meta, str(args.features), drop_invalid=False)
    design = model.design(table, meta, require_target=True)
    cv = model.sidecar.get("cv") or model.info.get("cv")
    cv_gain = [pd.Series(g, dtype=np.float64) for g in cv["fold_gain"]] if cv else None
    with output_lock(out):
        result = importance_study(model.estimator, design.X, design.y, out=out, cv_gain=cv_gain,
                                  n_repeats=getattr(args, "n_repeats", 5), random_state=args.seed)
        pred = model.estimator.predict(design.X)
        plots.true_vs_predicted(design.y, pred, out / "true_vs_predicted.png",
                                title=f"{model.input_set} ({len(pred)} galaxies)")
        plots.residuals_vs_true(design.y, pred, out / "residuals_vs_true.png")
    top = result["importance"].head(5)
    print(f"{out}: importance of {len(result['importance'])} features on {len(pred)} galaxies")
    print("  top by mean |SHAP|: " + ", ".join(f"{f} ({r.family})" for f, r in top.iterrows()))
    if result["noise_control"]:
        nc = result["noise_control"]["mean_abs_shap"]
        print(f"  noise control rank {nc['rank']:.0f} of {nc['n_features']} by mean |SHAP| "
              f"({'bottom quartile' if nc['bottom_quartile'] else 'NOT in the bottom quartile'})")
