"""CLI glue of ``featuremass train / evaluate / predict / importance``.

Each ``*_cli(args)`` takes the parsed :mod:`argparse` namespace, calls the
library, prints a short summary (or JSON), and raises
:class:`~featuremass.errors.FeaturemassError` for user mistakes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass.errors import DataError, FeaturemassError
from featuremass.models.inputs import (
    ID_COLUMN,
    align_columns,
    build_design,
    load_metadata,
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
              source: dict | None = None, client=None, local_cluster: bool = False):
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
    from featuremass.models.persistence import TrainedModel, data_fingerprint

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
                        noise_seed=noise_seed, info=info)


# =========================================================================== train


def train_cli(args) -> None:
    """``featuremass train``: fit a model on feature tables and save a model directory."""
    from featuremass.models.persistence import save_model

    meta = _metadata(args, required=True, what="training")
    noise = not getattr(args, "no_noise_control", False)
    table = read_features(args.train)
    design = build_design(table, args.inputs, metadata=meta, noise=noise, seed=args.seed,
                          require_target=True)
    scheduler = getattr(args, "scheduler", None)
    X_val = y_val = None
    if args.val is not None:
        val_table = read_features(args.val)
        vdesign = build_design(val_table, args.inputs, metadata=meta, noise=noise, seed=args.seed,
                               require_target=True)
        X_val = align_columns(vdesign.X, list(design.X.columns), source=str(args.val))
        y_val = vdesign.y
    fit = dict(
        kind=args.model, input_set=args.inputs, X_val=X_val,
        y_val=y_val, loss=args.loss, target=args.target, seed=args.seed,
        n_jobs=getattr(args, "jobs", 2) or 2,
        n_estimators=getattr(args, "n_estimators", 2000),
        learning_rate=getattr(args, "learning_rate", 0.05), cv=args.cv,
        noise_seed=args.seed if noise else None,
        source={"train_table": str(args.train), "val_table": str(args.val) if args.val else None,
                "data": str(args.data), "scheduler": scheduler},
    )
    if scheduler is None:
        model = fit_model(design.X, design.y, design.ids, **fit)
    else:
        from featuremass.features.execution import open_executor, terminate_on_signals

        with terminate_on_signals(), open_executor(getattr(args, "jobs", 2) or 2, scheduler) as ex:
            model = fit_model(design.X, design.y, design.ids, client=ex.client,
                              local_cluster=scheduler == "local", **fit)
    save_model(args.out, model)
    cal = model.info["metrics"]["calibration"]["linear"]
    line = (f"{args.out}: {args.model} on {args.inputs} ({design.X.shape[1]} features, "
            f"{len(design.X)} galaxies); held-out RMSE {cal['rmse']['value']:.3f}, "
            f"R2 {cal['r2']['value']:.3f}")
    if "cv" in model.info:
        oof = model.info["cv"]["oof_metrics"]["linear"]
        line += f"; {args.cv}-fold CV RMSE {oof['rmse']['value']:.3f}, R2 {oof['r2']['value']:.3f}"
    print(line)


# =========================================================================== evaluate


def evaluate_model(model, table: pd.DataFrame, metadata: pd.DataFrame, *, n_boot: int = 1000,
                   seed: int = 0) -> dict:
    """Metrics (both spaces, bootstrap intervals) and interval coverage on one table."""
    from featuremass.inspect.metrics import regression_report
    from featuremass.models.conformal import interval_columns, interval_coverage, level_tag

    design = model.design(table, metadata, require_target=True)
    pred = model.predict_frame(design.X)
    out = {
        "model_kind": model.kind,
        "input_set": model.input_set,
        "target": model.target,
        "n": int(len(design.ids)),
        "metrics": regression_report(design.y, pred["ml_pred"].to_numpy(), n_boot=n_boot,
                                     random_state=seed),
    }
    if model.conformal is not None:
        cov = {}
        for level in sorted(model.conformal.corrections_):
            lo, hi = interval_columns(level)
            cov[level_tag(level)] = {
                "nominal": float(level),
                "empirical": interval_coverage(design.y, pred[lo], pred[hi]),
                "median_width": float(np.median(pred[hi] - pred[lo])),
            }
        out["coverage"] = cov
    return out


def evaluate_cli(args) -> None:
    """``featuremass evaluate``: metrics of a model on a feature table."""
    from featuremass.inspect.metrics import format_metric
    from featuremass.models.persistence import load_model

    model = load_model(args.model)
    meta = _metadata(args, required=True, what="evaluation")
    table = read_features(args.features)
    result = evaluate_model(model, table, meta, n_boot=args.n_boot)
    result["model"] = str(args.model)
    result["features"] = str(args.features)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    m = result["metrics"]
    print(f"{args.model} on {args.features} ({result['n']} galaxies; 95% bootstrap intervals)")
    for name in ("rmse", "r2", "mae", "bias", "nmad"):
        print(f"  {name:<6} linear {format_metric(m['linear'][name])}   "
              f"log10 {format_metric(m['log'][name])}")
    print(f"  outlier fraction (|dlog| > {m['outlier_threshold_dex']} dex) "
          f"{format_metric(m['outlier_fraction'])}")
    for tag, c in result.get("coverage", {}).items():
        print(f"  {tag}% interval coverage {c['empirical']:.3f} (median width {c['median_width']:.3f})")


# =========================================================================== predict


def _write_table(df: pd.DataFrame, path: Path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise FeaturemassError(f"output {path} must end in .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    if suffix == ".csv":
        df.to_csv(tmp, index=False)
    else:
        df.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def features_from_images(images_path: Path, names_path: Path | None, *, scale: str = "seed-log",
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


def predict_table(model, table: pd.DataFrame, metadata: pd.DataFrame | None = None) -> pd.DataFrame:
    """``galaxy_id, ml_pred, ml_lo68, ml_hi68, ml_lo95, ml_hi95[, stellar_mass][, flag]``.

    ``stellar_mass = ml_pred * L_g`` when the metadata (with ``L_g``) is given.
    """
    design = model.design(table, metadata)
    pred = model.predict_frame(design.X)
    pred.insert(0, ID_COLUMN, design.ids)
    if design.metadata is not None and "L_g" in design.metadata.columns:
        pred["stellar_mass"] = pred["ml_pred"].to_numpy() * design.metadata["L_g"].to_numpy(np.float64)
    if design.flags is not None:
        pred["flag"] = design.flags
    return pred


def predict_cli(args) -> None:
    """``featuremass predict``: M/L and intervals from a feature table or raw images."""
    from featuremass.models.persistence import load_model

    if (args.features is None) == (args.images is None):
        raise FeaturemassError("give exactly one of --features (a table) or --images (a .npy stack)")
    if args.names is not None and args.images is None:
        raise FeaturemassError("--names goes with --images")
    model = load_model(args.model)
    meta = _metadata(args, required=False, what="prediction")
    if getattr(args, "scheduler", None) is not None:
        _predict_on_dask(args, meta)
        return
    if args.features is not None:
        table = read_features(args.features)
    else:
        from featuremass.features.execution import terminate_on_signals

        with terminate_on_signals():
            table = features_from_images(args.images, args.names, scale=args.scale,
                                         n_jobs=args.jobs)
    pred = predict_table(model, table, meta)
    path = _write_table(pred, args.out)
    print(f"{path}: {len(pred)} galaxies")


def _predict_on_dask(args, meta) -> None:
    """``predict --scheduler``: the model mapped over partitions, one Parquet file each."""
    from featuremass.features.execution import open_executor, terminate_on_signals
    from featuremass.models.dask_gbm import predict_partitions

    out = Path(args.out)
    if out.suffix.lower() == ".csv":
        raise FeaturemassError(f"with --scheduler, --out is a folder of Parquet parts, not {out}")
    if out.exists():
        raise FeaturemassError(f"{out} exists; with --scheduler, --out is a new folder of Parquet parts")
    if not out.parent.is_dir():
        raise FeaturemassError(f"output folder does not exist: {out.parent}")
    with terminate_on_signals(), open_executor(args.jobs, args.scheduler) as ex:
        if args.features is not None:
            table = args.features
            if not Path(table).exists():
                raise DataError(f"feature table not found: {table}")
        else:
            table = features_from_images(args.images, args.names, scale=args.scale, executor=ex)
        n = predict_partitions(ex.client, args.model, table, out, meta)
    print(f"{out}: {n} galaxies in {len(list(out.glob('*.parquet')))} Parquet parts")


# =========================================================================== importance


def importance_cli(args) -> None:
    """``featuremass importance``: importance tables and plots of a LightGBM model."""
    from featuremass.inspect import plots
    from featuremass.inspect.importance import importance_study
    from featuremass.models.persistence import load_model

    model = load_model(args.model)
    if model.kind != "lgbm":
        raise FeaturemassError(f"{args.model} is a {model.kind} model; the importance study needs lgbm")
    meta = _metadata(args, required=True, what="the importance study")
    table = read_features(args.features)
    design = model.design(table, meta, require_target=True)
    cv = model.sidecar.get("cv") or model.info.get("cv")
    cv_gain = [pd.Series(g, dtype=np.float64) for g in cv["fold_gain"]] if cv else None
    out = Path(args.out)
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
