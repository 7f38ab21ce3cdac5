"""The model store: every model kind is saved and loaded here, and only here.

A model is a folder::

    MODEL_DIR/model.json            the sidecar (one schema for every kind)
    MODEL_DIR/model.txt             LightGBM text model (kind 'lgbm')
    MODEL_DIR/quantile_lo68.txt     conformal quantile models (LightGBM text)
    MODEL_DIR/model.keras           Keras model (kind 'cnn')
    MODEL_DIR/cnn/..., lgbm.txt     a hybrid: its CNN in a sub-folder, then the trees

The sidecar holds, for every kind: ``schema_version``, ``kind``,
``featuremass_version``, ``libraries`` (name -> version), ``created_utc``,
``feature_engine_version`` and ``scale`` (how the feature columns were
measured), ``feature_columns``, ``metrics``, and ``files``: the SHA-256 of
every other file in the folder. Kind-specific fields sit beside them.

Guarantees
----------
* **Atomic saves.** A model is written into a temporary sibling folder and
  renamed into place; an existing folder is replaced only with
  ``overwrite=True`` and only once the new one is complete, so a failed save
  (full disk, Ctrl-C) leaves the previous model as it was.
* **Verified loads.** Every file is checked against its checksum before any
  native library (LightGBM, Keras) parses it, so a truncated or altered file
  is one :class:`ModelStoreError` naming it, never a native crash.
* **Confined paths.** Every file a sidecar names must be a plain file inside
  the model folder (no ``..``, no absolute path, no link leading out).
* **Typed sidecar.** Fields of the wrong type are refused by name.

No pickle anywhere: LightGBM text, ``.keras`` (loaded in safe mode) and JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass._version import FEATURE_ENGINE_VERSION, __version__
from featuremass.errors import DataError

log = logging.getLogger(__name__)

SIDECAR = "model.json"
BOOSTER = "model.txt"
#: Version 1 (featuremass <= 0.1.0 before the store) had no checksums and is refused.
SCHEMA_VERSION = 2
TABULAR_KINDS = ("lgbm", "ridge", "mean")
KINDS = (*TABULAR_KINDS, "cnn", "hybrid")
#: Largest sidecar read (a sidecar is a few hundred kB at most; refuse anything absurd).
MAX_SIDECAR_BYTES = 64 * 2**20


class ModelStoreError(DataError):
    """A model folder is missing, damaged, half-saved, or would be overwritten."""


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    """``'sha256:<hex>'`` of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def library_versions(*names: str) -> dict:
    """Versions of numpy, Python and the named libraries that are already imported or importable."""
    import importlib

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in names:
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:  # pragma: no cover - only named when in use
            out[name] = None
    return out


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object",
               list: "a list", bool: "true/false", type(None): "null"}


def _check_type(value, types, where: str, key: str) -> None:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):  # bool is an int to Python, not to a schema
        ok = bool in types
    elif isinstance(value, int):
        ok = int in types or float in types
    else:
        ok = isinstance(value, types)
    if not ok:
        want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ModelStoreError(f"{where}: field {key!r} must be {want}, not {shown}")


#: Fields every sidecar has, and their types.
COMMON_FIELDS = {
    "schema_version": int,
    "kind": str,
    "featuremass_version": str,
    "created_utc": str,
    "libraries": dict,
    "feature_engine_version": (int, type(None)),
    "scale": (str, type(None)),
    "feature_columns": (list, type(None)),
    "files": dict,
    "metrics": dict,
}


def check_fields(sidecar: dict, spec: dict, where: str) -> None:
    """Refuse a sidecar whose ``spec`` fields are missing or of the wrong type."""
    if not isinstance(sidecar, dict):
        raise ModelStoreError(f"{where}: must be an object, not {sidecar!r:.40}")
    for key, types in spec.items():
        if key not in sidecar:
            raise ModelStoreError(f"{where}: field {key!r} is missing")
        _check_type(sidecar[key], types, where, key)


@contextlib.contextmanager
def malformed(where: str, what: str) -> Iterator[None]:
    """Turn the errors of decoding a sidecar section into one :class:`ModelStoreError`."""
    try:
        yield
    except ModelStoreError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelStoreError(f"{where}: malformed {what} ({detail})") from None


def _confined(root: Path, name: str, where: str) -> Path:
    """``root / name`` if ``name`` is a relative path that stays inside ``root``."""
    if not isinstance(name, str) or not name:
        raise ModelStoreError(f"{where}: file name {name!r} must be a non-empty string")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or "\\" in name:
        raise ModelStoreError(f"{where}: file {name!r} lies outside the model folder {root}")
    path = root / rel
    try:
        resolved = path.resolve(strict=False)
        inside = resolved.is_relative_to(root.resolve())
    except OSError:
        inside = False
    if not inside:
        raise ModelStoreError(f"{where}: file {name!r} leads outside the model folder {root}")
    return path


# --------------------------------------------------------------------------- writing


def stage(directory: str | os.PathLike, *, kind: str, write_files: Callable[[Path], None],
          fields: dict, feature_columns=None, scale: str | None = None,
          feature_engine_version: int | None = FEATURE_ENGINE_VERSION,
          metrics: dict | None = None, libraries: tuple[str, ...] = ()) -> dict:
    """Write a model's files and its sidecar into ``directory`` (no atomicity here).

    ``write_files(directory)`` writes the model's own files; every file found
    under ``directory`` afterwards (sub-folders included) is checksummed into
    the sidecar. Used by :func:`save` on a temporary folder, and by kinds that
    nest another model (the hybrid stages its CNN in ``cnn/``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_files(directory)
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p != directory / SIDECAR:
            files[p.relative_to(directory).as_posix()] = sha256_file(p)
    sidecar = {
        **fields,
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "featuremass_version": __version__,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "libraries": library_versions(*libraries),
        "feature_engine_version": feature_engine_version,
        "scale": scale,
        "feature_columns": None if feature_columns is None else [str(c) for c in feature_columns],
        "metrics": dict(metrics or {}),
        "files": files,
    }
    text = json.dumps(sidecar, indent=2, default=_json_default, allow_nan=True)
    tmp = directory / (SIDECAR + ".partial")
    tmp.write_text(text)
    os.replace(tmp, directory / SIDECAR)
    return sidecar


def check_model_target(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse to save over an existing path unless ``overwrite`` (and never over a file)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise ModelStoreError(f"{path} exists and is not a model folder; choose another --out")
        if not overwrite:
            raise ModelStoreError(f"model folder {path} already exists; pass --overwrite to replace it")
        if any(path.iterdir()) and not (path / SIDECAR).is_file():
            raise ModelStoreError(
                f"{path} is a non-empty folder without {SIDECAR}; refusing to replace what is "
                "not a featuremass model"
            )
    return path


def save(path: str | os.PathLike, *, overwrite: bool = False, **stage_kwargs) -> Path:
    """Save a model folder atomically (see :func:`stage` for the arguments).

    The model is staged in a temporary sibling folder and renamed into place.
    An existing model is moved aside only after the new one is complete, and
    removed after the rename; on any failure the temporary folder is removed
    and the previous model stays. Raises :class:`ModelStoreError` naming the
    path for an existing folder without ``overwrite`` and for any OS error
    (permission, full disk).
    """
    path = check_model_target(path, overwrite=overwrite)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.saving-", dir=path.parent))
        sidecar = stage(tmp, **stage_kwargs)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / "model")
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / "model", path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ModelStoreError(f"cannot save the model to {path}: "
                              f"{exc.strerror or exc} ({exc.filename or path})") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    log.debug("saved %s model to %s (%d files)", sidecar["kind"], path, len(sidecar["files"]))
    return path


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class StoredModel:
    """A verified model folder: its sidecar, and its checksummed files."""

    path: Path
    sidecar: dict = field(repr=False)

    @property
    def sidecar_path(self) -> Path:
        return self.path / SIDECAR

    @property
    def kind(self) -> str:
        return self.sidecar["kind"]

    def file(self, name: str) -> Path:
        """The path of a file the sidecar lists (already checksum-verified)."""
        where = str(self.sidecar_path)
        path = _confined(self.path, name, where)
        if name not in self.sidecar["files"]:
            raise ModelStoreError(f"{where}: file {name!r} is not among the model's checksummed files")
        return path

    def read_text(self, name: str) -> str:
        path = self.file(name)
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelStoreError(f"cannot read {path}: {exc}") from None

    def lightgbm_booster(self, name: str):
        """A LightGBM booster from a verified text file (truncation checked before parsing)."""
        import lightgbm as lgb

        text = self.read_text(name)
        # LightGBM aborts (SIGABRT) or crashes (SIGSEGV) on truncated model
        # strings, wherever the cut falls. A complete one has both section ends
        # and a last pandas_categorical line, so refuse before the native parser runs.
        last = text.rstrip("\n").rsplit("\n", 1)[-1]
        for marker in ("end of trees", "end of parameters"):
            if f"\n{marker}\n" not in text:
                raise ModelStoreError(f"{self.path / name} is truncated (no '{marker}' line)")
        if not last.startswith("pandas_categorical:"):
            raise ModelStoreError(f"{self.path / name} is truncated (no final pandas_categorical line)")
        try:
            return lgb.Booster(model_str=text)
        except Exception as exc:  # noqa: BLE001 - LightGBMError and friends
            raise ModelStoreError(f"cannot read LightGBM model {self.path / name}: {exc}") from None


def read_sidecar(path: str | os.PathLike, *, kinds=KINDS, verify: bool = True) -> dict:
    """The sidecar of a model folder, type-checked and (by default) with every file verified."""
    return open_model(path, kinds=kinds, verify=verify).sidecar


def open_model(path: str | os.PathLike, *, kinds=KINDS, verify: bool = True) -> StoredModel:
    """Open a model folder: parse and type-check the sidecar, verify every file.

    Raises :class:`ModelStoreError` naming the file for a missing folder or
    sidecar, invalid JSON, an old schema, an unexpected kind, a field of the
    wrong type, a file outside the folder, or a missing or altered file.
    """
    path = Path(path)
    file = path / SIDECAR
    if not path.is_dir():
        raise ModelStoreError(f"model directory not found: {path}")
    if not file.is_file():
        raise ModelStoreError(f"{path} is not a featuremass model directory (no {SIDECAR})")
    try:
        if file.stat().st_size > MAX_SIDECAR_BYTES:
            raise ModelStoreError(f"{file} is larger than {MAX_SIDECAR_BYTES} bytes; not a sidecar")
        sidecar = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelStoreError(f"{file} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise ModelStoreError(f"cannot read {file}: {exc.strerror or exc}") from None
    where = str(file)
    if not isinstance(sidecar, dict):
        raise ModelStoreError(f"{where}: expected a JSON object, got {type(sidecar).__name__}")
    version = sidecar.get("schema_version")
    if version != SCHEMA_VERSION:
        hint = ("; it was saved by an older featuremass without checksums: train it again"
                if version in (None, 1) else "")
        raise ModelStoreError(f"{where}: unsupported schema_version {version!r}{hint}")
    check_fields(sidecar, COMMON_FIELDS, where)
    columns = sidecar["feature_columns"]
    if columns is not None and not all(isinstance(c, str) for c in columns):
        raise ModelStoreError(f"{where}: field 'feature_columns' must be a list of strings")
    if sidecar["kind"] not in kinds:
        raise ModelStoreError(f"{where}: model kind {sidecar['kind']!r} is not one of {', '.join(kinds)}")
    for name, digest in sidecar["files"].items():
        target = _confined(path, name, where)
        _check_type(digest, str, where, f"files[{name!r}]")
        if not target.is_file() or target.is_symlink():
            raise ModelStoreError(f"{target} is missing (listed in {where}); the model is incomplete")
        if verify and sha256_file(target) != digest:
            raise ModelStoreError(
                f"{target} does not match its checksum in {where}: the file is damaged or was "
                "changed after saving; save the model again"
            )
    return StoredModel(path=path, sidecar=sidecar)


# --------------------------------------------------------------------------- tabular models


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
    scale : str or None
        Scale mode of the feature tables it was trained on (``'auto'``,
        ``'seed-log'``...); None when unknown (hand-made tables).
    feature_engine_version : int or None
        :data:`featuremass._version.FEATURE_ENGINE_VERSION` of those tables.
    feature_set : str or None
        Feature set of those tables (``'full'`` or ``'fast'``, see
        :data:`featuremass.features.batch.FEATURE_SETS`): what ``predict
        --images`` extracts. None when unknown (hand-made tables, no features).
    """

    estimator: object
    input_set: str
    conformal: object | None = None
    noise_seed: int | None = None
    info: dict = field(default_factory=dict)
    scale: str | None = None
    feature_engine_version: int | None = FEATURE_ENGINE_VERSION
    feature_set: str | None = None
    #: The sidecar as read by :func:`load_model` (empty for a model not loaded).
    sidecar: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        from featuremass.models.baselines import MeanRegressor, RidgeRegressor
        from featuremass.models.gbm import GBMRegressor

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
               require_target: bool = False):
        """Model inputs of a feature table, schema-checked against the training columns.

        The noise control (if the model has one) is regenerated from the ids;
        extra inputs come from ``metadata``. Missing or unexpected morphology
        columns raise :class:`SchemaError`; reordered columns are realigned.
        """
        from featuremass.models.inputs import (
            NOISE_COLUMN,
            align_columns,
            build_design,
            morphology_columns,
        )

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
        from featuremass.models.inputs import align_columns

        X = align_columns(X, self.feature_names)
        raw = self.estimator.predict_raw(X)
        out = pd.DataFrame({"ml_pred": self.estimator.predict(X)})
        if self.conformal is not None:
            bounds = self.conformal.predict_intervals(X, raw)
            out = pd.concat([out, bounds.reset_index(drop=True)], axis=1)
        return out


#: Fields of a tabular model's sidecar beyond :data:`COMMON_FIELDS`.
TABULAR_FIELDS = {
    "input_set": str,
    "target": str,
    "feature_names": list,
    "n_features": int,
    "noise_control": (dict, type(None)),
    "params": dict,
    "conformal": (dict, type(None)),
}
_TABULAR_KNOWN = {*COMMON_FIELDS, *TABULAR_FIELDS, "lightgbm_version", "booster_file",
                  "best_iteration", "coefficients", "feature_set"}
#: Feature sets a tabular sidecar may name (``featuremass.features.batch.FEATURE_SETS``).
_FEATURE_SETS = ("full", "fast")


_NUMBER = (int, float)


def _one_of(value, allowed, where: str, key: str) -> None:
    if value not in allowed:
        raise ModelStoreError(f"{where}: field {key!r} must be one of {', '.join(map(str, allowed))}, "
                              f"not {value!r}")


def check_tabular_sidecar(sidecar: dict, where: str) -> None:
    """Type-check the fields of a LightGBM/ridge/mean sidecar that change its predictions."""
    from featuremass.models.conformal import METHODS
    from featuremass.models.gbm import TARGETS
    from featuremass.models.inputs import NOISE_COLUMN

    check_fields(sidecar, TABULAR_FIELDS, where)
    _one_of(sidecar["target"], TARGETS, where, "target")
    if "target" in sidecar["params"]:
        _one_of(sidecar["params"]["target"], (sidecar["target"],), where, "params.target")
    if not all(isinstance(n, str) for n in sidecar["feature_names"]):
        raise ModelStoreError(f"{where}: field 'feature_names' must be a list of strings")
    if sidecar["n_features"] != len(sidecar["feature_names"]):
        raise ModelStoreError(f"{where}: field 'n_features' ({sidecar['n_features']}) differs from "
                              f"the {len(sidecar['feature_names'])} feature_names")
    noise = sidecar["noise_control"]
    if (noise is None) == (NOISE_COLUMN in sidecar["feature_names"]):
        raise ModelStoreError(f"{where}: field 'noise_control' must be set exactly when "
                              f"feature_names hold {NOISE_COLUMN!r}")
    if noise is not None:
        check_fields(noise, {"column": str, "seed": int}, f"{where} noise_control")
        _one_of(noise["column"], (NOISE_COLUMN,), where, "noise_control.column")
    conf = sidecar["conformal"]
    if conf is not None:
        w = f"{where} conformal"
        check_fields(conf, {"method": str, "levels": list, "target": str, "corrections": dict,
                            "quantile_models": dict}, w)
        _one_of(conf["method"], METHODS, w, "method")
        _one_of(conf["target"], (sidecar["target"],), w, "target")
        for i, level in enumerate(conf["levels"]):
            _check_type(level, float, w, f"levels[{i}]")
        for tag, value in conf["corrections"].items():
            _check_type(value, float, w, f"corrections[{tag!r}]")
        for key, info in conf["quantile_models"].items():
            wq = f"{w} quantile_models[{key!r}]"
            check_fields(info, {"file": str, "alpha": float, "best_iteration": int}, wq)
            if not 0 < info["alpha"] < 1 or info["best_iteration"] < 0:
                raise ModelStoreError(f"{wq}: alpha must lie in (0, 1) and best_iteration be >= 0")
    if sidecar.get("best_iteration") is not None:
        _check_type(sidecar["best_iteration"], int, where, "best_iteration")
        if sidecar["best_iteration"] < 0:
            raise ModelStoreError(f"{where}: field 'best_iteration' must be >= 0")


def save_model(path: str | os.PathLike, model: TrainedModel, *, overwrite: bool = True) -> Path:
    """Save a LightGBM, ridge or mean :class:`TrainedModel` (with its conformal intervals).

    The folder is written atomically; an existing model there is replaced
    (only) when ``overwrite`` is true, the library default. The CLI passes its
    ``--overwrite`` flag.
    """
    from featuremass.models.conformal import level_tag
    from featuremass.models.inputs import NOISE_COLUMN

    est = model.estimator
    fields = {
        "input_set": model.input_set,
        "target": model.target,
        "feature_names": model.feature_names,
        "n_features": len(model.feature_names),
        "noise_control": (None if model.noise_seed is None
                          else {"column": NOISE_COLUMN, "seed": int(model.noise_seed)}),
        "params": dict(est.get_params()),
        "conformal": None,
        "feature_set": model.feature_set,
    }
    texts = {}
    if model.kind == "lgbm":
        texts[BOOSTER] = est.model_to_string()
        fields["booster_file"] = BOOSTER
        fields["best_iteration"] = int(est.best_iteration_)
    else:
        fields["coefficients"] = est.to_dict()
    if model.conformal is not None:
        conf = model.conformal.to_dict()
        for (level, side), m in model.conformal.quantile_models_.items():
            texts[conf["quantile_models"][f"{side}{level_tag(level)}"]["file"]] = m.model_to_string()
        fields["conformal"] = conf
    info = dict(model.info)
    metrics = info.pop("metrics", {})
    fields.update({k: v for k, v in info.items() if k not in COMMON_FIELDS})
    import lightgbm

    fields["lightgbm_version"] = lightgbm.__version__

    def write_files(directory: Path) -> None:
        for name, text in texts.items():
            (directory / name).write_text(text)

    return save(path, overwrite=overwrite, kind=model.kind, write_files=write_files, fields=fields,
                feature_columns=model.feature_names, scale=model.scale,
                feature_engine_version=model.feature_engine_version, metrics=metrics,
                libraries=("lightgbm", "sklearn"))


def load_model(path: str | os.PathLike) -> TrainedModel:
    """Load a LightGBM, ridge or mean model folder written by :func:`save_model`."""
    from featuremass.models.baselines import MeanRegressor, RidgeRegressor
    from featuremass.models.conformal import ConformalIntervals
    from featuremass.models.gbm import GBMRegressor
    from featuremass.models.inputs import check_input_set

    stored = open_model(path, kinds=TABULAR_KINDS)
    sidecar, where, path = stored.sidecar, str(stored.sidecar_path), stored.path
    check_tabular_sidecar(sidecar, where)
    names = sidecar["feature_names"]
    kind = sidecar["kind"]
    if kind == "lgbm":
        check_fields(sidecar, {"booster_file": str, "best_iteration": int}, where)
        booster = stored.lightgbm_booster(sidecar["booster_file"])
        if list(booster.feature_name()) != names:
            raise ModelStoreError(
                f"{path / sidecar['booster_file']} features {booster.feature_name()[:5]}... differ "
                f"from {where} feature_names {names[:5]}...; the folder is inconsistent"
            )
        with malformed(where, "params"):
            params = {k: v for k, v in sidecar["params"].items() if k in GBMRegressor().get_params()}
            est = GBMRegressor.from_booster(booster, best_iteration=sidecar["best_iteration"],
                                            **params)
    else:
        check_fields(sidecar, {"coefficients": dict}, where)
        with malformed(where, "coefficients"):
            cls = RidgeRegressor if kind == "ridge" else MeanRegressor
            est = cls.from_dict(sidecar["coefficients"])
            if [str(c) for c in est.feature_names_in_] != names:
                raise ValueError("their feature names differ from 'feature_names'")
    conformal = None
    if sidecar["conformal"]:
        conf = sidecar["conformal"]
        with malformed(where, "conformal section"):
            boosters = {key: stored.lightgbm_booster(info["file"])
                        for key, info in conf.get("quantile_models", {}).items()}
            conformal = ConformalIntervals.from_dict(conf, boosters)
    noise = sidecar["noise_control"]
    with malformed(where, "noise_control"):
        noise_seed = None if noise is None else int(noise["seed"])
    info = {k: v for k, v in sidecar.items() if k not in _TABULAR_KNOWN}
    info["metrics"] = sidecar["metrics"]
    # Older sidecars have no feature_set: a model on fast-tier columns is 'fast'.
    feature_set = sidecar.get("feature_set")
    _check_type(feature_set, (str, type(None)), where, "feature_set")
    if feature_set is not None:
        _one_of(feature_set, _FEATURE_SETS, where, "feature_set")
    elif sidecar["scale"] is not None:
        feature_set = "fast" if any(str(c).startswith("fast_") for c in names) else "full"
    model = TrainedModel(estimator=est, input_set=check_input_set(sidecar["input_set"]),
                         conformal=conformal, noise_seed=noise_seed, info=info,
                         scale=sidecar["scale"],
                         feature_engine_version=sidecar["feature_engine_version"],
                         feature_set=feature_set)
    model.sidecar = sidecar
    return model


def load(path: str | os.PathLike):
    """Load any model folder: a :class:`TrainedModel`, a CNN or a hybrid, by its kind."""
    kind = open_model(path).kind
    if kind in TABULAR_KINDS:
        return load_model(path)
    if kind == "cnn":
        from featuremass.models.cnn import CNNRegressor

        return CNNRegressor.load(path)
    from featuremass.models.hybrid import HybridRegressor

    return HybridRegressor.load(path)
