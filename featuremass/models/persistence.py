"""Model directories: LightGBM text models plus a JSON sidecar, never pickle.

::

    MODEL_DIR/model.json           the sidecar (below)
    MODEL_DIR/model.txt            LightGBM native text model (kind 'lgbm')
    MODEL_DIR/quantile_lo68.txt    conformal quantile models (method 'cqr')
    ...

The sidecar holds the model kind, the feature names in order, the input set,
the target transform, the featuremass and LightGBM versions, a fingerprint of
the training data (SHA-256 of the ids, column names and feature values),
metrics, and the conformal calibration. Ridge and mean baselines keep their
coefficients in the sidecar itself.

Loading checks the schema: a table with missing or unexpected columns is
refused with a :class:`~featuremass.errors.SchemaError` naming them, and one
whose columns are only reordered is realigned.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass._version import __version__
from featuremass.errors import DataError, SchemaError
from featuremass.models.baselines import MeanRegressor, RidgeRegressor
from featuremass.models.conformal import ConformalIntervals, level_tag
from featuremass.models.gbm import GBMRegressor
from featuremass.models.inputs import (
    NOISE_COLUMN,
    Design,
    align_columns,
    build_design,
    check_input_set,
    morphology_columns,
)

SIDECAR = "model.json"
BOOSTER = "model.txt"
SCHEMA_VERSION = 1
KINDS = ("lgbm", "ridge", "mean")


def data_fingerprint(ids, X: pd.DataFrame) -> str:
    """SHA-256 of the ids, the column names and the float64 feature values.

    NaNs are canonicalised so that equal tables always hash alike.
    """
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in X.columns]).encode())
    h.update(np.ascontiguousarray(np.asarray(ids, dtype=np.int64)).tobytes())
    values = np.ascontiguousarray(X.to_numpy(np.float64))
    values = np.where(np.isnan(values), np.nan, values)
    h.update(values.tobytes())
    return "sha256:" + h.hexdigest()


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _lightgbm_version() -> str | None:
    try:
        import lightgbm
    except ImportError:  # pragma: no cover - a core dependency
        return None
    return lightgbm.__version__


@dataclass
class TrainedModel:
    """A fitted point model, its conformal intervals, and what it was trained on.

    Parameters
    ----------
    estimator : GBMRegressor, RidgeRegressor or MeanRegressor (fitted)
    input_set : str
    conformal : ConformalIntervals or None
    noise_seed : int or None
        Seed of the noise-control column when the model has one.
    info : dict
        Extra sidecar content (metrics, training fingerprint, CV summary...).
    """

    estimator: object
    input_set: str
    conformal: ConformalIntervals | None = None
    noise_seed: int | None = None
    info: dict = field(default_factory=dict)
    #: The sidecar as read by :func:`load_model` (empty for a model not loaded).
    sidecar: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if isinstance(self.estimator, GBMRegressor):
            return "lgbm"
        if isinstance(self.estimator, RidgeRegressor):
            return "ridge"
        if isinstance(self.estimator, MeanRegressor):
            return "mean"
        raise TypeError(f"unsupported estimator {type(self.estimator).__name__}")

    @property
    def feature_names(self) -> list[str]:
        return [str(c) for c in self.estimator.feature_names_in_]

    @property
    def target(self) -> str:
        return self.estimator.target

    def design(self, table: pd.DataFrame, metadata: pd.DataFrame | None = None, *,
               require_target: bool = False) -> Design:
        """Model inputs of a feature table, schema-checked against the training columns.

        The noise control (if the model has one) is regenerated from the ids;
        extra inputs come from ``metadata``. Missing or unexpected morphology
        columns raise :class:`SchemaError`; reordered columns are realigned.
        """
        source = table.attrs.get("source", "the feature table")
        has_noise = NOISE_COLUMN in self.feature_names
        columns = None
        if self.input_set != "extra":
            columns = morphology_columns(table)
        design = build_design(table, self.input_set, metadata=metadata, noise=has_noise,
                              seed=self.noise_seed or 0, require_target=require_target,
                              columns=columns)
        design.X = align_columns(design.X, self.feature_names, source=source)
        return design

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """``ml_pred`` plus the interval bounds (when calibrated) for aligned ``X``."""
        X = align_columns(X, self.feature_names)
        raw = self.estimator.predict_raw(X)
        out = pd.DataFrame({"ml_pred": self.estimator.predict(X)})
        if self.conformal is not None:
            bounds = self.conformal.predict_intervals(X, raw)
            out = pd.concat([out, bounds.reset_index(drop=True)], axis=1)
        return out


def save_model(path: str | os.PathLike, model: TrainedModel) -> Path:
    """Write ``model`` into the directory ``path`` (created; existing files replaced)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    est = model.estimator
    sidecar = {
        "schema_version": SCHEMA_VERSION,
        "kind": model.kind,
        "featuremass_version": __version__,
        "lightgbm_version": _lightgbm_version(),
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "input_set": model.input_set,
        "target": model.target,
        "feature_names": model.feature_names,
        "n_features": len(model.feature_names),
        "noise_control": (None if model.noise_seed is None
                          else {"column": NOISE_COLUMN, "seed": int(model.noise_seed)}),
        "params": {k: v for k, v in est.get_params().items()},
    }
    if model.kind == "lgbm":
        (path / BOOSTER).write_text(est.model_to_string())
        sidecar["booster_file"] = BOOSTER
        sidecar["best_iteration"] = int(est.best_iteration_)
    else:
        sidecar["coefficients"] = est.to_dict()
    if model.conformal is not None:
        conf = model.conformal.to_dict()
        for (level, side), m in model.conformal.quantile_models_.items():
            info = conf["quantile_models"][f"{side}{level_tag(level)}"]
            (path / info["file"]).write_text(m.model_to_string())
        sidecar["conformal"] = conf
    sidecar.update(model.info)
    tmp = path / (SIDECAR + ".partial")
    tmp.write_text(json.dumps(sidecar, indent=2, default=_json_default, allow_nan=True))
    os.replace(tmp, path / SIDECAR)
    return path


def _load_booster(file: Path):
    import lightgbm as lgb

    if not file.is_file():
        raise DataError(f"model file not found: {file}")
    try:
        return lgb.Booster(model_str=file.read_text())
    except Exception as exc:  # LightGBM raises LightGBMError for corrupt files
        raise DataError(f"cannot read LightGBM model {file}: {exc}") from None


def read_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar JSON of a model directory, with clear errors."""
    path = Path(path)
    file = path / SIDECAR
    if not path.is_dir():
        raise DataError(f"model directory not found: {path}")
    if not file.is_file():
        raise DataError(f"{path} is not a featuremass model directory (no {SIDECAR})")
    try:
        sidecar = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{file} is not valid JSON: {exc}") from None
    if sidecar.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{file}: unsupported schema_version {sidecar.get('schema_version')!r}")
    if sidecar.get("kind") not in KINDS:
        raise DataError(f"{file}: unknown model kind {sidecar.get('kind')!r}")
    return sidecar


def load_model(path: str | os.PathLike) -> TrainedModel:
    """Load a model directory written by :func:`save_model`."""
    path = Path(path)
    sidecar = read_sidecar(path)
    names = list(sidecar["feature_names"])
    kind = sidecar["kind"]
    if kind == "lgbm":
        booster = _load_booster(path / sidecar.get("booster_file", BOOSTER))
        if list(booster.feature_name()) != names:
            raise SchemaError(
                f"{path / BOOSTER} features {booster.feature_name()[:5]}... differ from "
                f"{path / SIDECAR} feature_names {names[:5]}...; the directory is inconsistent"
            )
        params = {k: v for k, v in sidecar.get("params", {}).items()
                  if k in GBMRegressor().get_params()}
        est = GBMRegressor.from_booster(booster, best_iteration=sidecar.get("best_iteration"),
                                        **params)
    elif kind == "ridge":
        est = RidgeRegressor.from_dict(sidecar["coefficients"])
    else:
        est = MeanRegressor.from_dict(sidecar["coefficients"])
    conformal = None
    if sidecar.get("conformal"):
        conf = sidecar["conformal"]
        boosters = {key: _load_booster(path / info["file"])
                    for key, info in conf.get("quantile_models", {}).items()}
        conformal = ConformalIntervals.from_dict(conf, boosters)
    noise = sidecar.get("noise_control")
    known = {"schema_version", "kind", "featuremass_version", "lightgbm_version", "created_utc",
             "input_set", "target", "feature_names", "n_features", "noise_control", "params",
             "booster_file", "best_iteration", "coefficients", "conformal"}
    info = {k: v for k, v in sidecar.items() if k not in known}
    model = TrainedModel(estimator=est, input_set=check_input_set(sidecar["input_set"]),
                         conformal=conformal,
                         noise_seed=None if noise is None else int(noise["seed"]), info=info)
    model.sidecar = sidecar
    return model
