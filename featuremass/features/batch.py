"""Batch extraction: every galaxy of an image stack to one row of a Parquet table.

:func:`extract_features` streams an ``(n, ny, nx)`` stack (a memory map is
never read whole) in chunks, measures each galaxy with the chosen backend in
this process, a local pool or on a Dask cluster (the executors of
:mod:`featuremass.features.execution`, which all call one chunk function), and
writes one row per input galaxy, keyed by ``galaxy_id``, with every feature
column and the integer ``flag``.

Robustness rules
----------------
* One galaxy's failure never stops the batch: any exception while measuring
  it gives a row of NaN with ``MorphFlag.BACKEND_ERROR``.
* With ``out``, each finished chunk is written to ``OUT.parts/part-NNNNNN.parquet``
  holding a fingerprint of its galaxy ids, of a BLAKE2b hash of its pixels, of
  the source and of every parameter that affects the result. An interrupted
  run, started again, hashes each finished chunk's pixels anew, reuses the
  parts whose fingerprint matches and recomputes the rest. The final table is
  written to a temporary file and moved into place with :func:`os.replace`
  (atomic on POSIX), then the parts are removed.
* A partitioned output (``partitioned=True``, what ``--scheduler`` writes) is a
  folder of the same part files, kept, plus ``_featuremass.json`` written last;
  ``pandas.read_parquet`` and ``dask.dataframe.read_parquet`` read it, and so
  does :func:`read_feature_table`, in chunk order.
* The Parquet key-value metadata ``featuremass`` holds JSON with the
  featuremass version, backend, parameters, input description, number of
  galaxies and date; :func:`read_feature_table` returns it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass._version import FEATURE_ENGINE_VERSION, __version__
from featuremass.errors import DataError, FeaturemassError
from featuremass.features.flags import SERIOUS_FLAGS, MorphFlag

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "FEATURE_SETS", "METADATA_KEY", "SCALES", "extract_features",
           "feature_columns", "read_feature_table", "summarize"]

#: Parquet key-value metadata key holding the run description (JSON).
METADATA_KEY = b"featuremass"
BACKENDS = ("native", "statmorph")
#: "full": every feature of the backend; "fast": :mod:`featuremass.features.fast`.
FEATURE_SETS = ("full", "fast")
#: Scale modes (see :data:`featuremass.io.stretch.SCALE_MODES`); ``auto`` is the default.
SCALES = ("auto", "seed-log", "linear", "shifted-log", "clipped-log", "asinh")
ID_COLUMN = "galaxy_id"
#: The run description of a partitioned table, beside its part files (the
#: leading underscore keeps Parquet readers from taking it for data).
DATASET_METADATA = "_featuremass.json"


# --------------------------------------------------------------------------- measuring one galaxy


def feature_columns(feature_set: str = "full") -> tuple[str, ...]:
    """The columns of a table between ``galaxy_id`` and ``flag``.

    The features (both backends share the native schema; ``"fast"``: the fast
    tier's), then the per-stamp preparation metadata
    :data:`featuremass.io.stretch.STRETCH_COLUMNS`.
    """
    from featuremass.io.stretch import STRETCH_COLUMNS

    if feature_set == "fast":
        from featuremass.features.fast import FAST_COLUMNS

        return tuple(FAST_COLUMNS) + tuple(STRETCH_COLUMNS)
    from featuremass.features.measure import FEATURE_COLUMNS

    return tuple(FEATURE_COLUMNS) + tuple(STRETCH_COLUMNS)


def _measure_function(backend: str):
    if backend == "native":
        from featuremass.features.measure import measure_galaxy

        return measure_galaxy
    from featuremass.features.statmorph_backend import measure_galaxy_statmorph

    return measure_galaxy_statmorph


def _measure_chunk(images, backend, scale, config, columns, psf_fwhm=None, masks=None,
                   weights=None) -> np.ndarray:
    """Measure a chunk; returns an (n, len(columns) + 1) float array (flag last).

    ``psf_fwhm`` (optional, one value per image, px) replaces the config's
    PSF FWHM galaxy by galaxy; ``masks`` and ``weights`` (optional, one map
    per image) go to the backend with their image.
    """
    from featuremass.io.stretch import invert_stretch

    fn = _measure_function(backend)
    out = np.full((len(images), len(columns) + 1), np.nan)
    for i in range(len(images)):
        try:
            img = np.asarray(images[i], dtype=np.float64)
            meta = {}
            extra_flag = 0
            if scale != "linear":
                with np.errstate(all="ignore"):
                    inv = invert_stretch(img, scale)
                img, meta = inv.image, inv.metadata()
                if inv.uncertain:
                    extra_flag = int(MorphFlag.STRETCH_UNCERTAIN)
            cfg = config
            if psf_fwhm is not None and np.isfinite(psf_fwhm[i]):
                cfg = with_psf(config, float(psf_fwhm[i]))
            maps = {} if masks is None else {"mask": masks[i]}
            if weights is not None:
                maps["weights"] = weights[i]
            with np.errstate(all="ignore"):
                res = fn(img, config=cfg, **maps)
            res = {**res, **meta}
            out[i, :-1] = [float(res.get(c, np.nan)) for c in columns]
            out[i, -1] = int(res.get("flag", 0)) | extra_flag
        except Exception as exc:  # noqa: BLE001 - one galaxy never stops the batch
            log.debug("galaxy %d of chunk failed: %r", i, exc)
            out[i, :-1] = np.nan
            out[i, -1] = int(MorphFlag.BACKEND_ERROR)
    return out


def _fast_chunk(images, scale) -> np.ndarray:
    """The fast tier on a chunk: the inverse of ``_measure_chunk`` for the whole chunk, then one batched call.

    Columns: :data:`~featuremass.features.fast.FAST_COLUMNS`, the stretch
    metadata, then the flag.
    """
    from featuremass.features.fast import fast_features
    from featuremass.io.stretch import STRETCH_COLUMNS

    meta = np.full((len(images), len(STRETCH_COLUMNS)), np.nan)
    extra = np.zeros(len(images), dtype=np.int64)
    if scale == "seed-log":  # one compiled pass over the chunk (featuremass.features.seedlog)
        from featuremass.features.seedlog import seed_log_inverse_stack
        from featuremass.io.stretch import STRETCH_CODES

        linear, meta[:, 1] = seed_log_inverse_stack(np.asarray(images))
        meta[:, 0], meta[:, 2] = STRETCH_CODES["shifted-log"], 0.0
    elif scale == "linear":
        linear = np.array(images, dtype=np.float64)
    else:  # the whole chunk at once (compiled for 'auto'), each stamp as invert_stretch(stamp, scale)
        from featuremass.features.seedlog import invert_stretch_stack

        linear, meta, uncertain = invert_stretch_stack(np.asarray(images), scale)
        extra[uncertain] = int(MorphFlag.STRETCH_UNCERTAIN)
    values, flags = fast_features(linear)
    flags = np.asarray(flags, dtype=np.int64) | extra
    return np.concatenate([values, meta, flags[:, None].astype(np.float64)], axis=1)


def _measure_rows(images, *, feature_set, backend, scale, config, columns, psf_fwhm=None,
                  masks=None, weights=None):
    """The measuring function every executor calls on a chunk's pixels.

    ``psf_fwhm`` is the chunk's own slice of the per-galaxy PSF table (or
    None); ``masks`` and ``weights`` the chunk's rows of the aligned maps.
    """
    if feature_set == "fast":
        return _fast_chunk(images, scale)
    return _measure_chunk(images, backend, scale, config, columns, psf_fwhm, masks, weights)


# --------------------------------------------------------------------------- parameters and parts


def _config_dict(config) -> dict | None:
    if config is None:
        return None
    if dataclasses.is_dataclass(config):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(config).items()}
    if isinstance(config, dict):
        return {k: _jsonable(v) for k, v in config.items()}
    return {"repr": repr(config)}


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def _fingerprint(ids: np.ndarray, params: dict, pixel_digest: str) -> str:
    """What a finished chunk was measured on: its ids, its pixels, the source and parameters."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(pixel_digest.encode())
    return h.hexdigest()


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _write_parquet_atomic(df: pd.DataFrame, path: Path, meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    existing = table.schema.metadata or {}
    table = table.replace_schema_metadata({**existing, METADATA_KEY: json.dumps(meta).encode()})
    from featuremass.io.layout import atomic_output

    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)


def _read_part(path: Path, start: int, stop: int):
    """``(DataFrame, metadata)`` of a finished part covering rows [start, stop), or None."""
    if not path.is_file():
        return None
    try:
        df, meta = _read_parquet_file(path)
    except (FeaturemassError, OSError, ValueError):
        return None
    if (meta.get("start"), meta.get("stop")) != (start, stop) or len(df) != stop - start:
        return None
    return df, meta


def read_feature_table(path) -> tuple[pd.DataFrame, dict]:
    """Read a feature table and its ``featuremass`` metadata.

    ``path`` is a Parquet file, or the folder a partitioned extract wrote
    (``part-NNNNNN.parquet`` files plus ``_featuremass.json``), read in chunk
    order.

    Returns
    -------
    (DataFrame, dict)
        The table, and the decoded JSON metadata (empty when absent).

    Raises
    ------
    DataError
        When the file is missing or not a readable Parquet file, or the folder
        holds an unfinished extract.
    """
    path = Path(path)
    if path.is_dir():
        return _read_dataset(path)
    if not path.is_file():
        raise DataError(f"feature table not found: {path}")
    return _read_parquet_file(path)


def _read_parquet_file(path: Path) -> tuple[pd.DataFrame, dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise DataError(f"{path} is not a readable Parquet file: {exc}") from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        raise DataError(f"{path}: the featuremass metadata is not valid JSON") from None
    return table.to_pandas(), meta


def _read_dataset(folder: Path) -> tuple[pd.DataFrame, dict]:
    meta_path = folder / DATASET_METADATA
    if not meta_path.is_file():
        raise DataError(
            f"{folder} is a folder without {DATASET_METADATA}: not a finished partitioned feature "
            "table (an interrupted extract finishes when run again)")
    try:
        meta = json.loads(meta_path.read_text())
        parts = [folder / name for name in meta["parts"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{meta_path} is damaged: {exc!r}") from None
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise DataError(f"{folder}: {len(missing)} part files are missing, e.g. {missing[:3]}")
    frames = [_read_parquet_file(p)[0] for p in parts]
    if not frames:
        return pd.DataFrame(columns=[ID_COLUMN, *feature_columns(), "flag"]), meta
    return pd.concat(frames, ignore_index=True), meta


# --------------------------------------------------------------------------- the batch


def _validate_inputs(images, ids, scale, backend, n_jobs, chunk_size, feature_set="full"):
    """``(ImageSource, (n, ny, nx), ids)`` after checking every argument."""
    from featuremass.features.execution import ImageSource

    if isinstance(images, str | os.PathLike):
        from featuremass.io.layout import load_npy

        images = load_npy(images, mmap=True)
    if not isinstance(images, ImageSource) and (
        not hasattr(images, "shape") or not hasattr(images, "__getitem__")
    ):
        images = np.asarray(images)
    source = ImageSource.of(images)
    shape = source.stack_shape()
    if len(shape) != 3:
        raise FeaturemassError(f"images must be an (n, ny, nx) stack; got shape {shape}")
    n = int(shape[0])
    if ids is None:
        ids = np.arange(n, dtype=np.int64)
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) != n:
        raise FeaturemassError(f"ids must be 1-D with one id per image ({n}); got shape {ids.shape}")
    if n and not np.issubdtype(ids.dtype, np.integer):
        raise FeaturemassError(f"galaxy ids must be integers; got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise FeaturemassError(f"duplicate galaxy ids: {ids[dup][:5].tolist()}")
    if scale not in SCALES:
        raise FeaturemassError(f"scale must be one of {SCALES}; got {scale!r}")
    if backend not in BACKENDS:
        raise FeaturemassError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if feature_set not in FEATURE_SETS:
        raise FeaturemassError(f"feature_set must be one of {FEATURE_SETS}; got {feature_set!r}")
    if feature_set == "fast" and backend != "native":
        raise FeaturemassError(f"the fast feature set is native only; got backend {backend!r}")
    if int(n_jobs) < 1:
        raise FeaturemassError(f"n_jobs must be >= 1; got {n_jobs}")
    if int(chunk_size) < 1:
        raise FeaturemassError(f"chunk_size must be >= 1; got {chunk_size}")
    return source, shape, ids


def extract_features(
    images,
    ids=None,
    *,
    scale: str = "auto",
    backend: str = "native",
    feature_set: str = "full",
    config=None,
    psf_fwhm=None,
    n_jobs: int = 1,
    chunk_size: int = 1000,
    out=None,
    resume: bool = True,
    progress: bool = False,
    input_description=None,
    executor=None,
    partitioned: bool = False,
    masks=None,
    weights=None,
) -> pd.DataFrame:
    """Measure every galaxy of an image stack; one row per galaxy.

    Parameters
    ----------
    images : array-like of shape (n, ny, nx), path to a .npy file, or ImageSource
        A memory map is streamed chunk by chunk, never read whole; an
        :class:`~featuremass.features.execution.ImageSource` also names an
        HDF5 dataset or a folder of ``.npy`` stamps.
    ids : array-like of int, optional
        One unique id per image (``galaxy_id``); default ``0 .. n-1``.
    scale : str
        How the pixels were scaled, one of :data:`SCALES`. ``'auto'``
        (default) detects the stretch of each stamp and inverts it
        (:func:`featuremass.io.stretch.invert_stretch`), recording what it
        found in the ``stretch_code``, ``stretch_param`` and
        ``censored_fraction`` columns and setting ``STRETCH_UNCERTAIN`` when
        unsure; a stretch name inverts that stretch; ``'seed-log'`` is the
        seed's shifted log with the sky-noise candle; ``'linear'`` measures
        the pixels as they are.
    backend : {'native', 'statmorph'}
        :func:`featuremass.features.measure.measure_galaxy`, or
        :func:`featuremass.features.statmorph_backend.measure_galaxy_statmorph`.
    feature_set : {'full', 'fast'}
        ``'fast'``: :func:`featuremass.features.fast.fast_features` on each
        chunk at once (native only; always in this process: it is batched).
    config : MorphologyConfig, optional
        Passed to the backend (the native default when None).
    psf_fwhm : array-like of float, optional
        PSF FWHM in pixels, one per image (from a PSF table): replaces the
        config's ``psf_fwhm_px`` galaxy by galaxy; NaN keeps the config's.
    n_jobs : int
        Worker processes when no ``executor`` is given; 1 runs in this process.
    chunk_size : int
        Galaxies per chunk (the unit of parallel work and of resuming).
    out : path, optional
        Write the table here: one Parquet file with resumable parts in
        ``OUT.parts/`` beside it, or with ``partitioned=True`` a folder of one
        Parquet file per chunk plus ``_featuremass.json``.
    resume : bool
        Reuse finished chunks of an interrupted run (default True) when their
        galaxy ids, pixel content (BLAKE2b), source and parameters all match.
    progress : bool
        Show a tqdm progress bar.
    input_description : dict, optional
        What the images are (recorded in the metadata).
    executor : LocalExecutor or DaskExecutor, optional
        Where chunks run (see :func:`featuremass.features.execution.open_executor`);
        by default a local pool of ``n_jobs`` opened and closed by this call.
    partitioned : bool
        Write ``out`` as a partitioned folder (what ``--scheduler`` does).
    masks : array-like of bool, shape (n, ny, nx), path to a .npy file, or ImageSource, optional
        True marks a pixel to ignore (a neighbour, a bad column), aligned
        with ``images`` row by row (full feature set only).
    weights : array-like of float, shape (n, ny, nx), path to a .npy file, or ImageSource, optional
        The 1-sigma error of every pixel, statmorph's ``weightmap``
        convention (not an inverse variance), in the units of the pixels;
        so only with ``scale='linear'`` and the native backend. See
        :func:`featuremass.features.measure.measure_galaxy` for what it
        changes: the sky noise and the Sérsic fit weights.

    Returns
    -------
    DataFrame
        ``galaxy_id`` (int64), every feature column (float64, NaN where not
        measured) and ``flag`` (int64), in input order.

    Raises
    ------
    FeaturemassError
        For a bad argument (shape, ids, scale, backend, n_jobs, chunk_size),
        or a Dask scheduler lost mid-run (finished chunks are kept).
    DataError
        When a mask or weight stack's shape differs from the images'.
    """
    from featuremass.features.execution import open_executor

    source, shape, ids = _validate_inputs(images, ids, scale, backend, n_jobs, chunk_size,
                                          feature_set)
    source = _with_maps(source, masks, weights, scale=scale, backend=backend,
                        feature_set=feature_set)
    psf_fwhm = _check_psf(psf_fwhm, ids)
    if config is None and backend == "native":
        from featuremass.features.measure import MorphologyConfig

        config = MorphologyConfig()
    columns = feature_columns(feature_set)
    params = _run_parameters(backend, feature_set, scale, config, shape, source)
    # what every chunk is measured with; new measuring options go here and in
    # _measure_chunk's signature, and travel to every worker unchanged
    measure_params = {"feature_set": feature_set, "backend": backend, "scale": scale,
                      "config": config, "columns": columns}
    chunks = _Chunks(ids, int(chunk_size), params, psf_fwhm)
    out = Path(out) if out is not None else None
    parts_dir = None if out is None else _prepare_output(out, partitioned=partitioned, resume=resume)

    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(open_executor(n_jobs))
        results = {} if parts_dir is None or not resume else _finished_chunks(
            executor, source, parts_dir, chunks, columns)
        todo = [(start, chunks.bounds[start]) for start in chunks.starts if start not in results]
        _measure_missing(stack, executor, source, todo, results, chunks, columns, parts_dir,
                         measure_params, feature_set=feature_set, progress=progress, backend=backend)

    table = (np.concatenate([results[s] for s in chunks.starts]) if chunks.starts
             else np.empty((0, len(columns) + 1)))
    df = _to_frame(ids, table, columns)
    if out is not None:
        meta = _run_metadata(df, params, backend, feature_set, scale, input_description,
                             seconds=time.perf_counter() - t_start,
                             n_measured=sum(stop - start for start, stop in todo),
                             n_jobs=int(getattr(executor, "n_workers", n_jobs)),
                             executor=type(executor).__name__)
        _write_output(df, out, parts_dir, meta, partitioned=partitioned, chunks=chunks)
    return df


# --------------------------------------------------------------------------- the batch's steps


def _with_maps(source, masks, weights, *, scale, backend, feature_set):
    """``source`` with its aligned mask and error maps, after checking they can be used."""
    if masks is None and weights is None:
        return source
    if feature_set != "full":
        raise FeaturemassError("masks and weights need the full feature set (the fast tier "
                               "measures whole stamps)")
    if weights is not None and backend != "native":
        raise FeaturemassError(f"weights are used by the native backend only; got backend {backend!r}")
    if weights is not None and scale != "linear":
        raise FeaturemassError(
            "weights are 1-sigma errors in the units of the pixels, so the pixels must be linear "
            f"flux: use scale 'linear' (got {scale!r})")
    return source.with_maps(masks=_as_stack(masks), weights=_as_stack(weights))


def _as_stack(stack):
    if stack is None or not isinstance(stack, str | os.PathLike):
        return stack
    from featuremass.io.layout import load_npy

    return load_npy(stack, mmap=True)


def _check_psf(psf_fwhm, ids):
    """The per-galaxy PSF FWHM as a float array aligned with ``ids`` (or None), checked."""
    if psf_fwhm is None:
        return None
    psf_fwhm = np.asarray(psf_fwhm, dtype=np.float64)
    if psf_fwhm.shape != ids.shape:
        raise FeaturemassError(f"psf_fwhm needs one value per image ({len(ids)}); got shape {psf_fwhm.shape}")
    bad = ~(np.isnan(psf_fwhm) | (psf_fwhm > 0)) | np.isinf(psf_fwhm)
    if bad.any():
        raise FeaturemassError(
            f"psf_fwhm must be positive (px); galaxy {int(ids[bad][0])} has {psf_fwhm[bad][0]!r}"
        )
    return psf_fwhm


def _run_parameters(backend, feature_set, scale, config, shape, source) -> dict:
    """Everything that affects a chunk's result besides its ids and pixels (the fingerprint's part)."""
    return {
        "featuremass_version": __version__,
        "feature_engine_version": FEATURE_ENGINE_VERSION,
        "backend": backend,
        "feature_set": feature_set,
        "scale": scale,
        "config": _config_dict(config),
        "image_shape": [int(s) for s in shape[1:]],
        "source": source.describe(),
    }


@dataclasses.dataclass(frozen=True)
class _Chunks:
    """How the galaxies are cut into chunks, and what makes each chunk's fingerprint."""

    ids: np.ndarray
    size: int
    params: dict
    psf_fwhm: np.ndarray | None

    @property
    def starts(self) -> list[int]:
        return list(range(0, len(self.ids), self.size))

    @property
    def bounds(self) -> dict[int, int]:
        return {start: min(start + self.size, len(self.ids)) for start in self.starts}

    def fingerprint(self, start: int, stop: int, digest: str) -> str:
        params = (self.params if self.psf_fwhm is None
                  else {**self.params, "psf_fwhm": self.psf_fwhm[start:stop].tolist()})
        return _fingerprint(self.ids[start:stop], params, digest)

    def params_of(self, start: int, stop: int) -> dict:
        # per-galaxy inputs travel with their chunk only
        return {} if self.psf_fwhm is None else {"psf_fwhm": self.psf_fwhm[start:stop]}


def _prepare_output(out: Path, *, partitioned: bool, resume: bool) -> Path:
    """Check ``out`` and make the folder the finished chunks go to; returns that folder."""
    if not out.parent.is_dir():
        raise FeaturemassError(f"output folder does not exist: {out.parent}")
    if partitioned and out.exists() and not out.is_dir():
        raise FeaturemassError(f"{out} is a file; a partitioned table is written as a folder")
    if not partitioned and out.is_dir():
        raise FeaturemassError(f"{out} is a folder; give a .parquet file name")
    parts_dir = out if partitioned else _parts_dir(out)
    if not resume and parts_dir.exists():
        for old in parts_dir.glob("part-*.parquet"):
            old.unlink()
    parts_dir.mkdir(exist_ok=True)
    if partitioned:
        # an unfinished folder must not read as a finished table
        (parts_dir / DATASET_METADATA).unlink(missing_ok=True)
    return parts_dir


def _finished_chunks(executor, source, parts_dir: Path, chunks: _Chunks, columns) -> dict:
    """``{start: values}`` of the chunks an interrupted run finished on these very pixels."""
    bounds = chunks.bounds
    candidates = {}
    for start in chunks.starts:
        found = _read_part(parts_dir / _part_name(start // chunks.size), start, bounds[start])
        if found is not None and list(found[0].columns) == [ID_COLUMN, *columns, "flag"]:
            candidates[start] = found
    results = {}
    if candidates:
        # the pixels are hashed again where they are read, so a part made
        # from other images with the same ids and shape is never reused
        keys = sorted(candidates)
        digests = executor.digests(source, [(s, bounds[s]) for s in keys])
        for start, digest in zip(keys, digests, strict=True):
            df, meta = candidates[start]
            if meta.get("fingerprint") == chunks.fingerprint(start, bounds[start], digest):
                results[start] = df[[*columns, "flag"]].to_numpy(dtype=np.float64)
        log.info("resuming: %d of %d chunks already done", len(results), len(chunks.starts))
    return results


def _measure_missing(stack, executor, source, todo, results, chunks: _Chunks, columns, parts_dir,
                     measure_params, *, feature_set, progress, backend) -> None:
    """Measure the ``todo`` chunks into ``results``, writing each finished one as a part."""
    from featuremass.features.execution import LocalExecutor

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = stack.enter_context(tqdm(total=len(chunks.ids), unit="gal", desc=f"extract ({backend})"))
        bar.update(sum(len(v) for v in results.values()))

    def finish(start, stop, digest, arr):
        results[start] = arr
        if parts_dir is not None:
            part = _to_frame(chunks.ids[start:stop], arr, columns)
            _write_parquet_atomic(part, parts_dir / _part_name(start // chunks.size),
                                  {"fingerprint": chunks.fingerprint(start, stop, digest),
                                   "chunk": start // chunks.size,
                                   "start": start, "stop": stop, "pixel_digest": digest})
        if bar is not None:
            bar.update(stop - start)

    if feature_set == "fast" and isinstance(executor, LocalExecutor):
        # the fast tier is batched NumPy: worker processes would cost more than they save
        executor = stack.enter_context(LocalExecutor(1))
    executor.map_chunks(source, todo, _measure_rows, measure_params, finish,
                        chunk_params=chunks.params_of)


def _run_metadata(df, params, backend, feature_set, scale, input_description, *, seconds,
                  n_measured, n_jobs, executor) -> dict:
    """The ``featuremass`` metadata of a written table."""
    return {
        "featuremass_version": __version__,
        "feature_engine_version": FEATURE_ENGINE_VERSION,
        "backend": backend,
        "feature_set": feature_set,
        "scale": scale,
        "parameters": params,
        "input": input_description,
        "n_galaxies": len(df),
        "n_flagged_serious": int(((df["flag"].to_numpy() & int(SERIOUS_FLAGS)) != 0).sum()),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        # wall time of this call and how much it measured (a resumed run
        # measures only the chunks that were missing)
        "seconds": round(seconds, 3),
        "n_measured": int(n_measured),
        "n_jobs": n_jobs,
        "executor": executor,
    }


def _write_output(df, out: Path, parts_dir: Path, meta: dict, *, partitioned: bool,
                  chunks: _Chunks) -> None:
    """One Parquet file (its parts then go), or the partitioned folder's run description."""
    if partitioned:
        names = [_part_name(k) for k in range(len(chunks.starts))]
        for stale in set(p.name for p in parts_dir.glob("part-*.parquet")) - set(names):
            (parts_dir / stale).unlink()
        _write_json_atomic(parts_dir / DATASET_METADATA,
                           {**meta, "chunk_size": chunks.size, "parts": names})
    else:
        _write_parquet_atomic(df, out, meta)
        shutil.rmtree(parts_dir, ignore_errors=True)


def _part_name(chunk: int) -> str:
    return f"part-{chunk:06d}.parquet"


def _write_json_atomic(path: Path, obj: dict) -> None:
    from featuremass.io.layout import write_json

    write_json(path, obj, indent=1, default=str)


def _to_frame(ids, arr, columns) -> pd.DataFrame:
    df = pd.DataFrame(arr[:, :-1], columns=list(columns), dtype=np.float64)
    df.insert(0, ID_COLUMN, np.asarray(ids, dtype=np.int64))
    df["flag"] = np.nan_to_num(arr[:, -1], nan=float(MorphFlag.BACKEND_ERROR)).astype(np.int64)
    return df


def image_source(path: Path):
    """``(ImageSource, ids or None)`` of ``--images``: a .npy stack, an HDF5 file or a .npy folder."""
    from featuremass.features.execution import ImageSource

    if path.is_dir():
        return ImageSource.npy_dir(path), None
    if path.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        from featuremass.io.formats import HDF5_IDS_KEY, HDF5_IMAGES_KEY

        source = ImageSource.hdf5(path, HDF5_IMAGES_KEY)
        shape = source.stack_shape()
        if len(shape) != 3:
            raise DataError(f"{path}:{HDF5_IMAGES_KEY} has shape {shape}; expected (n, ny, nx)")
        with h5py.File(path, "r") as fh:
            ids = np.asarray(fh[HDF5_IDS_KEY][...]) if HDF5_IDS_KEY in fh else None
        return source, ids
    from featuremass.io.layout import load_npy

    images = load_npy(path, mmap=True)
    if images.ndim != 3:
        raise DataError(f"{path} has shape {images.shape}; expected (n, ny, nx)")
    return ImageSource.of(images), None


@dataclasses.dataclass(frozen=True)
class _SimpleConfig:
    """Options the statmorph backend reads (it takes no MorphologyConfig)."""

    psf_fwhm_px: float | None = None


def with_psf(config, fwhm):
    # MorphologyConfig and _SimpleConfig both name it psf_fwhm_px.
    if config is None:
        return _SimpleConfig(psf_fwhm_px=float(fwhm))
    return dataclasses.replace(config, psf_fwhm_px=float(fwhm))


def summarize(df: pd.DataFrame, out=None) -> str:
    """A short text summary of a feature table: rows, flagged counts, output path."""
    flags = df["flag"].to_numpy(dtype=np.int64)
    serious = int(((flags & int(SERIOUS_FLAGS)) != 0).sum())
    lines = [
        f"{len(df)} galaxies, {len(df.columns) - 2} features"
        + (f" -> {out}" if out is not None else ""),
        f"  flag == 0: {int((flags == 0).sum())}; any flag: {int((flags != 0).sum())}; "
        f"serious (not to be trusted): {serious}",
    ]
    counts = {}
    for f in MorphFlag:
        c = int(((flags & int(f)) != 0).sum())
        if c:
            counts[f.name] = c
    if counts:
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
        lines.append("  most common flags: " + ", ".join(f"{k} {v}" for k, v in top))
    return "\n".join(lines)

