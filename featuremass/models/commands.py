"""CLI glue of ``featuremass train / evaluate / predict / importance``.

Each ``*_cli(args)`` takes the parsed :mod:`argparse` namespace, calls the
library, prints a short summary (or JSON), and raises
:class:`~featuremass.errors.FeaturemassError` for user mistakes.
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
from featuremass.features.flags import SERIOUS_FLAGS
from featuremass.io.layout import TARGET_COLUMN
from featuremass.models.inputs import (
    ID_COLUMN,
    NON_FEATURE_COLUMNS,
    align_columns,
    build_design,
    load_metadata,
    morphology_columns,
    read_features,
)

log = logging.getLogger(__name__)

#: Fraction of the validation split that calibrates the conformal intervals;
#: the rest early-stops the models. Keeping them apart keeps the coverage guarantee.
CALIBRATION_FRACTION = 0.5
#: Without ``--val``, this fraction of the training table becomes the validation split.
AUTO_VAL_FRACTION = 0.2


def _metadata(args, *, required: bool, what: str):
    data = getattr(args, "data", None)
    if data is None:
        if required:
            raise DataError(f"{what} needs the dataset metadata (M/L, distance, L_g): pass --data")
        return None
    return load_metadata(data)


def _fmt(values, limit: int = 5) -> str:
    values = list(values)
    more = f" ... ({len(values)} in all)" if len(values) > limit else ""
    return "[" + ", ".join(str(v) for v in values[:limit]) + more + "]"


# --------------------------------------------------------------------------- input checks


def table_record(table: pd.DataFrame, path=None) -> dict:
    """What a feature table says about how it was measured (its ``featuremass`` metadata).

    Empty for a hand-made table (CSV, or Parquet written by pandas).
    """
    if "featuremass" in table.attrs:
        return dict(table.attrs["featuremass"])
    path = Path(path) if path is not None else None
    if path is None or path.suffix.lower() not in (".parquet", ".pq") or not path.is_file():
        return {}
    import pyarrow.parquet as pq

    from featuremass.features.batch import METADATA_KEY

    try:
        raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
        return json.loads(raw) if raw else {}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read its featuremass metadata: {exc}") from None


def _remeasure_command(record: dict, scale: str | None, source) -> str:
    """The ``featuremass extract`` command that measures a table's galaxies again."""
    inp = record.get("input") or {}
    scale_opt = f" --scale {scale}" if scale else ""
    out = Path(str(source)).with_suffix("").name + f".engine{FEATURE_ENGINE_VERSION}.parquet"
    if inp.get("mode") == "dataset":
        split = f" --split {inp.get('split')}"
        size = f" --train-size {inp['train_size']}" if inp.get("train_size") else ""
        return (f"featuremass extract --data {inp.get('data')} --npix {inp.get('npix')}{split}{size}"
                f"{scale_opt} --out {out}")
    if inp.get("mode") == "images":
        names = f" --names {inp['names']}" if inp.get("names") else ""
        return f"featuremass extract --images {inp.get('images')}{names}{scale_opt} --out {out}"
    return f"featuremass extract (on the images of {source}){scale_opt} --out {out}"


def check_compatible(model, record: dict, source) -> None:
    """Refuse a feature table measured by another feature engine or at another fixed scale.

    Scales are compared as names: ``'auto'`` tables match ``'auto'`` models
    (their features are all on linear flux). A hand-made table without
    featuremass metadata is accepted with a warning.
    """
    engine = getattr(model, "feature_engine_version", None)
    scale = getattr(model, "scale", None)
    if not record:
        if engine is not None or scale is not None:
            log.warning("%s has no featuremass metadata (hand-made?): its feature engine and "
                        "scale cannot be checked against the model's", source)
        return
    t_engine = record.get("feature_engine_version")
    t_scale = record.get("scale")
    fix = _remeasure_command(record, scale or t_scale, source)
    if engine is not None and t_engine != engine:
        t_name = ("an unversioned feature engine (before 2)" if t_engine is None
                  else f"feature engine {t_engine}")
        raise SchemaError(
            f"{source} was measured by {t_name}, but the model expects feature engine "
            f"{engine}; its features are not comparable. Measure the galaxies again: {fix}"
        )
    if scale is not None and t_scale is not None and t_scale != scale:
        raise SchemaError(
            f"{source} was measured with --scale {t_scale}, but the model was trained on "
            f"--scale {scale} features. Measure the galaxies again: {fix}"
        )


def check_feature_values(table: pd.DataFrame, columns, source, *, training: bool) -> None:
    """Refuse boolean or infinite feature columns; warn about ignored and all-NaN ones, by name."""
    ignored = [c for c in table.columns if c not in NON_FEATURE_COLUMNS and c not in columns
               and not pd.api.types.is_numeric_dtype(table[c])]
    if ignored:
        log.warning("%s: ignoring non-numeric column(s) %s", source, _fmt(ignored))
    flags = [c for c in columns if c in table.columns and pd.api.types.is_bool_dtype(table[c])]
    if flags:
        raise DataError(f"{source}: column(s) {_fmt(flags)} are true/false, not measurements; "
                        "store them as numbers (0/1) if they are meant as features, or drop them")
    values = {c: table[c].to_numpy(dtype=np.float64) for c in columns if c in table.columns}
    infinite = {c: int(np.isinf(v).sum()) for c, v in values.items() if np.isinf(v).any()}
    if infinite:
        shown = ", ".join(f"{c} ({n} rows)" for c, n in list(infinite.items())[:5])
        raise DataError(f"{source}: infinite values in column(s) {shown}; featuremass writes "
                        "NaN for what it cannot measure, so this table was altered or hand-made")
    all_nan = [c for c, v in values.items() if len(v) and np.isnan(v).all()]
    if all_nan and training:
        log.warning("%s: column(s) %s are NaN for every galaxy and carry no information",
                    source, _fmt(all_nan))
    if training and values:
        usable = np.zeros(len(table), dtype=bool)
        for v in values.values():
            usable |= np.isfinite(v)
        if not usable.any():
            raise DataError(f"{source}: no usable rows: every feature of all {len(table)} galaxies "
                            "is NaN (blank or unmeasurable images?); nothing to train on")


def valid_target_rows(table: pd.DataFrame, metadata: pd.DataFrame, source, *,
                      drop_invalid: bool) -> pd.DataFrame:
    """Rows of ``table`` whose M/L is finite and positive; others raise, or are dropped with a count."""
    ids = table[ID_COLUMN].to_numpy(dtype=np.int64)
    known = np.isin(ids, metadata.index.to_numpy())
    target = np.full(len(ids), np.nan)
    target[known] = metadata[TARGET_COLUMN].reindex(ids[known]).to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = known & ~(np.isfinite(target) & (target > 0))
    if not bad.any():
        return table
    meta_source = metadata.attrs.get("source", "the metadata")
    if not drop_invalid:
        raise DataError(
            f"{meta_source}: {int(bad.sum())} galaxies of {source} have a non-finite or "
            f"non-positive {TARGET_COLUMN}: ids {_fmt(ids[bad])}. Fix the metadata, or pass "
            "--drop-invalid to leave them out"
        )
    log.warning("%s: dropped %d of %d galaxies whose %s is non-finite or <= 0 (--drop-invalid)",
                source, int(bad.sum()), len(ids), TARGET_COLUMN)
    kept = table.loc[~bad].reset_index(drop=True)
    kept.attrs = dict(table.attrs)
    if not len(kept):
        raise DataError(f"{source}: no galaxy with a valid {TARGET_COLUMN} is left")
    return kept


def make_estimator(kind: str, *, loss: str = "l2", target: str = "linear", seed: int = 0,
                   n_jobs: int = 2, n_estimators: int = 2000, learning_rate: float = 0.05):
    """The point estimator for ``--model`` (``lgbm``, ``ridge`` or ``mean``)."""
    from featuremass.models.baselines import MeanRegressor, RidgeRegressor
    from featuremass.models.gbm import GBMRegressor

    if kind == "lgbm":
        return GBMRegressor(loss=loss, target=target, random_state=seed, n_jobs=n_jobs,
                            n_estimators=n_estimators, learning_rate=learning_rate)
    if kind == "ridge":
        return RidgeRegressor(target=target)
    if kind == "mean":
        return MeanRegressor(target=target)
    raise FeaturemassError(f"unknown model kind {kind!r}; expected lgbm, ridge or mean")


def fit_model(X, y, ids, *, kind: str = "lgbm", input_set: str = "image", X_val=None, y_val=None,
              loss: str = "l2", target: str = "linear", seed: int = 0, n_jobs: int = 2,
              n_estimators: int = 2000, learning_rate: float = 0.05, cv: int = 0,
              noise_seed: int | None = None, intervals: bool = True, n_boot: int = 200,
              source: dict | None = None, scale: str | None = None,
              feature_engine_version: int | None = FEATURE_ENGINE_VERSION, client=None,
              local_cluster: bool = False):
    """Fit a point model, its conformal intervals and (optionally) K-fold CV.

    With a Dask ``client`` the LightGBM point model is trained on the cluster
    (:func:`featuremass.models.dask_gbm.fit_gbm_dask`, on the same splits) and
    the intervals are split-conformal on its residuals, which needs no further
    training; ``local_cluster`` says the cluster runs on 127.0.0.1 only.

    The validation split is divided (seeded) into an early-stopping half and a
    calibration half; without one, :data:`AUTO_VAL_FRACTION` of the training
    rows is held out first.

    Returns
    -------
    TrainedModel
        With ``info`` holding ``metrics`` (train and calibration),
        ``training_data`` (fingerprint, sizes) and ``cv`` (when ``cv >= 2``).
    """
    from featuremass.inspect.metrics import regression_report
    from featuremass.models.conformal import ConformalIntervals
    from featuremass.models.gbm import cross_validate, holdout_split
    from featuremass.models.store import TrainedModel, data_fingerprint

    y = np.asarray(y, dtype=np.float64)
    fingerprint = data_fingerprint(ids, X)
    if X_val is None:
        if len(X) < 10:
            raise DataError(f"{len(X)} training galaxies are too few to hold out a validation split")
        fit_rows, val_rows = holdout_split(len(X), AUTO_VAL_FRACTION, seed)
        X_fit, y_fit = X.iloc[fit_rows].reset_index(drop=True), y[fit_rows]
        X_val, y_val = X.iloc[val_rows].reset_index(drop=True), y[val_rows]
    else:
        X_fit, y_fit = X, y
        y_val = np.asarray(y_val, dtype=np.float64)
    if len(X_val) < 4:
        raise DataError(f"the validation split has {len(X_val)} galaxies; at least 4 are needed")
    stop_rows, cal_rows = holdout_split(len(X_val), CALIBRATION_FRACTION, seed + 1)
    X_stop, y_stop = X_val.iloc[stop_rows], y_val[stop_rows]
    X_cal, y_cal = X_val.iloc[cal_rows], y_val[cal_rows]
    est = make_estimator(kind, loss=loss, target=target, seed=seed, n_jobs=n_jobs,
                         n_estimators=n_estimators, learning_rate=learning_rate)
    if client is not None:
        if kind != "lgbm" or cv:
            raise FeaturemassError("--scheduler trains --model lgbm without --cv")
        from featuremass.models.dask_gbm import fit_gbm_dask

        est = fit_gbm_dask(client, est, X_fit, y_fit, X_stop, y_stop, local_cluster=local_cluster)
    else:
        est.fit(X_fit, y_fit, X_val=X_stop, y_val=y_stop)
    conformal = None
    if intervals:
        if kind == "lgbm" and client is None:
            qparams = {k: v for k, v in est.get_params().items() if k not in ("loss", "alpha")}
            conformal = ConformalIntervals(method="cqr", quantile_params=qparams)
        else:
            conformal = ConformalIntervals(method="split")
        conformal.fit(X_fit, y_fit, X_cal=X_cal, y_cal=y_cal, point_model=est,
                      X_val=X_stop, y_val=y_stop)
    metrics = {
        "train": regression_report(y_fit, est.predict(X_fit), n_boot=n_boot, random_state=seed),
        "calibration": regression_report(y_cal, est.predict(X_cal), n_boot=n_boot,
                                         random_state=seed),
    }
    info = {
        "metrics": metrics,
        "training_data": {"fingerprint": fingerprint, "n_train": int(len(X_fit)),
                          "n_early_stopping": int(len(X_stop)), "n_calibration": int(len(X_cal)),
                          **(source or {})},
    }
    if cv and cv >= 2:
        cv_est = make_estimator(kind, loss=loss, target=target, seed=seed, n_jobs=n_jobs,
                                n_estimators=n_estimators, learning_rate=learning_rate)
        res = cross_validate(cv_est, X, y, n_splits=cv, random_state=seed)
        info["cv"] = {
            "n_splits": int(cv),
            "oof_metrics": regression_report(y, res.oof_pred, n_boot=n_boot, random_state=seed),
            "fold_gain": [g.to_dict() for g in res.gain],
        }
    return TrainedModel(estimator=est, input_set=input_set, conformal=conformal,
                        noise_seed=noise_seed, info=info, scale=scale,
                        feature_engine_version=feature_engine_version)


# =========================================================================== train


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
    check_output(args.out, inputs=[args.train, args.val], overwrite=overwrite, folder=True)
    check_model_target(args.out, overwrite=overwrite)
    meta = _metadata(args, required=True, what="training")
    noise = not getattr(args, "no_noise_control", False)
    table, record = _training_table(args.train, meta, args)
    design = build_design(table, args.inputs, metadata=meta, noise=noise, seed=args.seed,
                          require_target=True)
    scheduler = getattr(args, "scheduler", None)
    X_val = y_val = None
    if args.val is not None:
        val_table, val_record = _training_table(args.val, meta, args)
        for key in ("feature_engine_version", "scale"):
            if record and val_record and record.get(key) != val_record.get(key):
                raise SchemaError(f"{args.train} and {args.val} differ in {key} "
                                  f"({record.get(key)!r} vs {val_record.get(key)!r}); measure "
                                  "both with the same featuremass and --scale")
        vdesign = build_design(val_table, args.inputs, metadata=meta, noise=noise, seed=args.seed,
                               require_target=True)
        X_val = align_columns(vdesign.X, list(design.X.columns), source=str(args.val))
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
        source={"train_table": str(args.train), "val_table": str(args.val) if args.val else None,
                "data": str(args.data), "scheduler": scheduler},
        scale=record.get("scale") if uses_features else None,
        feature_engine_version=engine if uses_features else None,
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


# =========================================================================== evaluate


def _serious(flags) -> np.ndarray:
    return (np.asarray(flags, dtype=np.int64) & int(SERIOUS_FLAGS)) != 0


def evaluate_model(model, table: pd.DataFrame, metadata: pd.DataFrame, *, n_boot: int = 1000,
                   seed: int = 0, impute: bool = False) -> dict:
    """Metrics (both spaces, bootstrap intervals) and interval coverage on one table.

    Galaxies with a serious flag are left out (and counted in
    ``n_excluded_flagged``) unless ``impute``, which scores them through
    LightGBM's missing-value path like any other.
    """
    from featuremass.inspect.metrics import LOG_FLOOR, regression_report
    from featuremass.models.conformal import interval_columns, interval_coverage, level_tag

    design = model.design(table, metadata, require_target=True)
    pred = model.predict_frame(design.X)
    y = design.y
    excluded = 0
    if not impute and design.flags is not None:
        serious = _serious(design.flags)
        excluded = int(serious.sum())
        if excluded == len(y):
            raise DataError(f"every galaxy of {table.attrs.get('source', 'the table')} has a serious "
                            "flag; nothing to evaluate (pass --impute to score them anyway)")
        pred, y = pred.loc[~serious].reset_index(drop=True), y[~serious]
    ml = pred["ml_pred"].to_numpy()
    out = {
        "model_kind": model.kind,
        "input_set": model.input_set,
        "target": model.target,
        "n": int(len(y)),
        "n_excluded_flagged": excluded,
        "n_floored": {"true": int((y < LOG_FLOOR).sum()), "predicted": int((ml < LOG_FLOOR).sum()),
                      "floor": LOG_FLOOR},
        "metrics": regression_report(y, ml, n_boot=n_boot, random_state=seed),
    }
    if model.conformal is not None:
        cov = {}
        for level in sorted(model.conformal.corrections_):
            lo, hi = interval_columns(level)
            cov[level_tag(level)] = {
                "nominal": float(level),
                "empirical": interval_coverage(y, pred[lo], pred[hi]),
                "median_width": float(np.median(pred[hi] - pred[lo])),
            }
        out["coverage"] = cov
    return out


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _format_metric(entry: dict) -> str:
    from featuremass.inspect.metrics import format_metric

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
        print(json.dumps(_json_safe(result), indent=2))
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


# =========================================================================== predict


def _write_table(df: pd.DataFrame, path: Path) -> Path:
    from featuremass.io.layout import atomic_output

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise FeaturemassError(f"output {path} must end in .csv or .parquet")
    with atomic_output(path) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return path


def features_from_images(images_path: Path, names_path: Path | None, *, scale: str = "auto",
                         n_jobs: int = 1, executor=None) -> pd.DataFrame:
    """Measure the feature table of an ``(n, ny, nx)`` image stack."""
    from featuremass.features.batch import extract_features
    from featuremass.io.layout import load_npy

    images = load_npy(images_path, mmap=True)
    if images.ndim != 3:
        raise DataError(f"{images_path} has shape {images.shape}; expected (n, ny, nx)")
    if names_path is not None:
        ids = np.asarray(load_npy(names_path, mmap=False))
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"{names_path} must be a 1-D integer array of ids, got {ids.dtype} {ids.shape}")
        if len(ids) != len(images):
            raise DataError(f"{names_path} has {len(ids)} ids but {images_path} has {len(images)} images")
    else:
        ids = np.arange(len(images), dtype=np.int64)
    table = extract_features(images, ids.astype(np.int64), scale=scale, n_jobs=n_jobs,
                             executor=executor)
    table.attrs["source"] = str(images_path)
    return table


def predict_table(model, table: pd.DataFrame, metadata: pd.DataFrame | None = None, *,
                  impute: bool = False) -> pd.DataFrame:
    """``galaxy_id, ml_pred, ml_lo68, ml_hi68, ml_lo95, ml_hi95[, stellar_mass][, flag]``.

    ``stellar_mass = ml_pred * L_g`` when the metadata (with ``L_g``) is given.
    A galaxy with a serious flag (blank image, no source...) gets NaN M/L and
    keeps its flag, unless ``impute`` asks for LightGBM's missing-value path.
    """
    design = model.design(table, metadata)
    pred = model.predict_frame(design.X)
    if not impute and design.flags is not None:
        pred.loc[_serious(design.flags), :] = np.nan
    pred.insert(0, ID_COLUMN, design.ids)
    if design.metadata is not None and "L_g" in design.metadata.columns:
        pred["stellar_mass"] = pred["ml_pred"].to_numpy() * design.metadata["L_g"].to_numpy(np.float64)
    if design.flags is not None:
        pred["flag"] = design.flags
    return pred


def predict_cli(args) -> None:
    """``featuremass predict``: M/L and intervals from a feature table or raw images."""
    from featuremass.features.execution import open_executor, terminate_on_signals
    from featuremass.io.layout import check_image_stack, guarded_output, load_npy
    from featuremass.models.store import load_model

    if (args.features is None) == (args.images is None):
        raise FeaturemassError("give exactly one of --features (a table) or --images (a .npy stack)")
    if args.names is not None and args.images is None:
        raise FeaturemassError("--names goes with --images")
    inputs = [args.features, args.images, args.names, args.data]
    scheduler = getattr(args, "scheduler", None)
    if scheduler is not None and Path(args.out).suffix.lower() == ".csv":
        raise FeaturemassError(f"with --scheduler, --out is a folder of Parquet parts, not {args.out}")
    folder = scheduler is not None  # a Dask run writes a folder of parts
    with contextlib.ExitStack() as stack:
        stack.enter_context(guarded_output(args.out, inputs=inputs, folder=folder,
                                           overwrite=getattr(args, "overwrite", False)))
        stack.enter_context(terminate_on_signals())
        executor = None
        if scheduler is not None:
            executor = stack.enter_context(open_executor(args.jobs, scheduler))
        model = load_model(args.model)
        meta = _metadata(args, required=False, what="prediction")
        if args.features is not None:
            table = read_features(args.features)
            check_compatible(model, table_record(table, args.features), args.features)
        else:
            scale = args.scale if args.scale is not None else model.scale
            if model.scale is not None and scale != model.scale:
                raise SchemaError(f"{args.model} was trained on features measured with --scale "
                                  f"{model.scale}; pass --scale {model.scale} (not {scale})")
            check_image_stack(load_npy(args.images, mmap=True), args.images, scale)
            table = features_from_images(args.images, args.names, scale=scale, n_jobs=args.jobs,
                                         executor=executor)
        if model.input_set != "extra":
            check_feature_values(table, morphology_columns(table),
                                 str(args.features or args.images), training=False)
        impute = getattr(args, "impute", False)
        if executor is not None:
            from featuremass.models.dask_gbm import predict_partitions

            n, n_nan, n_parts = predict_partitions(executor.client, args.model, table, Path(args.out),
                                                   meta, impute=impute)
            print(f"{args.out}: {n} galaxies in {n_parts} Parquet parts"
                  + (f" ({n_nan} with a serious flag get NaN M/L)" if n_nan else ""))
            return
        pred = predict_table(model, table, meta, impute=impute)
        path = _write_table(pred, args.out)
    n_nan = int(pred["ml_pred"].isna().sum())
    note = f" ({n_nan} with a serious flag get NaN M/L; --impute predicts them)" if n_nan else ""
    print(f"{path}: {len(pred)} galaxies{note}")


# =========================================================================== importance


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
