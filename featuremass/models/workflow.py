"""Fit, evaluate and predict on feature tables: what the model commands do, as a library.

Every function takes DataFrames, arrays and paths (never an argparse
namespace): :mod:`featuremass.cli.models` reads the command line and calls
them, as do the demo and the benchmarks. User mistakes raise
:class:`~featuremass.errors.FeaturemassError`.
"""

from __future__ import annotations

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
)

log = logging.getLogger(__name__)

#: Fraction of the validation split that calibrates the conformal intervals;
#: the rest early-stops the models. Keeping them apart keeps the coverage guarantee.
CALIBRATION_FRACTION = 0.5
#: Without ``--val``, this fraction of the training table becomes the validation split.
AUTO_VAL_FRACTION = 0.2


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


def model_feature_set(model) -> str | None:
    """The feature set a model was trained on (``'full'``, ``'fast'``), None when unknown.

    Models without the field (saved before it existed, or kinds without a
    feature table such as the CNN) give None.
    """
    return getattr(model, "feature_set", None)


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
    f_set, t_set = model_feature_set(model), record.get("feature_set")
    if f_set is not None and t_set is not None and t_set != f_set:
        raise SchemaError(
            f"{source} holds the {t_set!r} feature set, but the model was trained on the "
            f"{f_set!r} set. Measure the galaxies again: {fix} --feature-set {f_set}"
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
              local_cluster: bool = False, feature_set: str | None = None):
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
    from featuremass.models.conformal import ConformalIntervals
    from featuremass.models.gbm import cross_validate, holdout_split
    from featuremass.models.metrics import regression_report
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
                        feature_engine_version=feature_engine_version, feature_set=feature_set)


# =========================================================================== train


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
    from featuremass.models.conformal import interval_columns, interval_coverage, level_tag
    from featuremass.models.metrics import LOG_FLOOR, regression_report

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


def json_safe(value):
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# =========================================================================== predict


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


# =========================================================================== importance


