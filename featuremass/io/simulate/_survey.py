"""Simulate a whole survey in parallel and write it in the seed layout, atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass._version import __version__
from featuremass.errors import FeaturemassError
from featuremass.io.layout import (
    SPLITS,
    NpyStreamWriter,
    SeedLayout,
    atomic_save_npy,
    write_metadata,
    write_split_labels,
)
from featuremass.io.simulate._config import ID_BASE, SurveyConfig
from featuremass.io.simulate._population import draw_galaxy
from featuremass.io.simulate._render import observing_conditions, render_galaxy, render_outputs

log = logging.getLogger(__name__)

#: Extra columns written to metadata.tsv beside the seed's four.
EXTRA_METADATA_COLUMNS = ("redshift",)
#: Folders and files that make a directory look like a dataset we may replace.
_DATASET_MARKERS = ("images", "metadata", "split", "truth")


def galaxy_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of galaxy ``index``: child ``index`` of ``SeedSequence(seed)``.

    Equal to ``SeedSequence(seed).spawn(n)[index]`` for any ``n > index``, so
    a galaxy is the same whatever the chunking or the number of processes.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def galaxy_ids(config: SurveyConfig) -> np.ndarray:
    """Unique, deterministic SDSS-like int64 ids, in galaxy order."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2**32,)))
    offsets = rng.choice(10**12, size=config.n_total, replace=False)
    return (np.int64(ID_BASE) + offsets.astype(np.int64)).astype(np.int64)


def simulate_galaxy(config: SurveyConfig, index: int) -> tuple[dict, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Truth row and ``{npix: (linear, stretched)}`` of galaxy ``index``."""
    rng = galaxy_rng(config.seed, index)
    galaxy = draw_galaxy(rng, config)
    obs = observing_conditions(rng, galaxy, config)
    linear, _, stars, noise = render_galaxy(rng, galaxy, obs, config, return_noise=True)
    variant = {"stretch": config.stretch, "stretch_softening": config.stretch_softening,
               "crop_factor": config.crop_factor, "noise_correlation_px": config.noise_correlation_px,
               "star_residual": config.star_residual}
    truth = {**galaxy, **obs, **stars, **variant}
    return truth, render_outputs(linear, config.npix, config, noise)


def _simulate_chunk(config: SurveyConfig, start: int, stop: int):
    return start, [simulate_galaxy(config, i) for i in range(start, stop)]


@dataclass(frozen=True)
class SurveySummary:
    """What :func:`simulate_survey` wrote; ``str()`` is a short report."""

    out: Path
    counts: dict[str, int]
    npix: tuple[int, ...]
    seconds: float
    target_mean: float
    target_std: float
    target_percentiles: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        n = sum(self.counts.values())
        per = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        pct = ", ".join(f"{k} {v:.2f}" for k, v in self.target_percentiles.items())
        return (
            f"simulated {n} galaxies ({per}) at {'/'.join(map(str, self.npix))} px "
            f"in {self.seconds:.1f} s -> {self.out}\n"
            f"M/L: mean {self.target_mean:.2f}, std {self.target_std:.2f}; percentiles {pct}"
        )


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise FeaturemassError(f"output {out} exists and is not a folder")
    entries = [p.name for p in out.iterdir()]
    if not entries:
        return
    if not overwrite:
        raise FeaturemassError(
            f"output {out} already holds a dataset or other files; pass overwrite=True "
            "(--overwrite) to replace it"
        )
    foreign = sorted(e for e in entries if e not in _DATASET_MARKERS)
    if foreign:
        raise FeaturemassError(
            f"refusing to overwrite {out}: it holds files that are not a featuremass dataset {foreign[:5]}"
        )


def simulate_survey(
    out: str | os.PathLike,
    config: SurveyConfig,
    *,
    n_jobs: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> SurveySummary:
    """Render a simulated SDSS-like g-band survey in the seed layout.

    Writes, under ``out``: the stretched images and names of every split at
    every ``config.npix`` (``images/{npix}pix_npy``), the linear-flux images
    (``images/{npix}pix_linear``), ``metadata/metadata.tsv``, the split label
    files, and ``truth/truth.parquet`` (one row per galaxy: every latent
    parameter). The physical model is described in ``docs/simulation.md``.

    The dataset is built in a temporary folder beside ``out`` and renamed into
    place at the end, so an interrupted run leaves no half-written dataset.

    Parameters
    ----------
    out : path
        Dataset folder. An existing non-empty folder is refused unless
        ``overwrite``; even then, a folder holding anything but a dataset is
        refused.
    config : SurveyConfig
    n_jobs : int, optional
        Worker processes (default: all cores). The output does not depend on it.
    overwrite : bool
        Replace an existing dataset in ``out``.
    progress : bool
        Show a progress bar.
    """
    if not isinstance(config, SurveyConfig):
        raise FeaturemassError(f"config must be a SurveyConfig, got {type(config).__name__}")
    out = Path(out)
    _check_target(out, overwrite)
    if n_jobs is None:
        n_jobs = os.cpu_count() or 1
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise FeaturemassError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    try:
        truth = _write_dataset(tmp, config, n_jobs=n_jobs, progress=progress)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    ml = truth["M/L"].to_numpy()
    counts = {s: int((truth["split"] == s).sum()) for s in SPLITS}
    pct = {f"p{q}": float(np.percentile(ml, q)) for q in (5, 50, 95)}
    pct["max"] = float(ml.max())
    return SurveySummary(out=out, counts=counts, npix=config.npix, seconds=seconds,
                         target_mean=float(ml.mean()), target_std=float(ml.std()),
                         target_percentiles=pct)


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _chunks(config: SurveyConfig):
    size = config.chunk_size
    return [(s, min(s + size, config.n_total)) for s in range(0, config.n_total, size)]


def _results(config: SurveyConfig, n_jobs: int):
    chunks = _chunks(config)
    if n_jobs == 1 or len(chunks) == 1:
        for start, stop in chunks:
            yield _simulate_chunk(config, start, stop)
        return
    with ProcessPoolExecutor(max_workers=min(n_jobs, len(chunks))) as pool:
        futures = [pool.submit(_simulate_chunk, config, a, b) for a, b in chunks]
        try:
            for fut in futures:
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def _write_dataset(root: Path, config: SurveyConfig, *, n_jobs: int, progress: bool) -> pd.DataFrame:
    layout = SeedLayout(root)
    ids = galaxy_ids(config)
    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    bounds, start = {}, 0
    for split in SPLITS:
        bounds[split] = (start, start + sizes[split])
        start += sizes[split]
    split_of = np.empty(config.n_total, dtype=object)
    for split, (a, b) in bounds.items():
        split_of[a:b] = split

    writers = {}
    maps = {}
    for npix in config.npix:
        for split, (a, b) in bounds.items():
            stretched_path = layout.image_path(npix, split, "all" if split == "train" else None)
            for kind, path in (("stretched", stretched_path), ("linear", layout.linear_path(npix, split))):
                if b == a:  # an empty split: a memory map cannot have size 0
                    atomic_save_npy(path, np.zeros((0, npix, npix), dtype=np.float32))
                    continue
                w = NpyStreamWriter(path, (b - a, npix, npix))
                writers[(npix, split, kind)] = w
                maps[(npix, split, kind)] = w.__enter__()

    rows: list[dict | None] = [None] * config.n_total
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.n_total, unit="gal", desc="simulate")
    ok = False
    try:
        for start, results in _results(config, n_jobs):
            for k, (truth, images) in enumerate(results):
                i = start + k
                split = split_of[i]
                j = i - bounds[split][0]
                rows[i] = truth
                for npix, (lin, stretched) in images.items():
                    maps[(npix, split, "linear")][j] = lin
                    maps[(npix, split, "stretched")][j] = stretched
            if bar is not None:
                bar.update(len(results))
        ok = True
    finally:
        if bar is not None:
            bar.close()
        for key, w in writers.items():
            del maps[key]
            w.__exit__(None if ok else RuntimeError, None, None)

    for npix in config.npix:
        for split, (a, b) in bounds.items():
            path = layout.names_path(npix, split, "all" if split == "train" else None)
            atomic_save_npy(path, ids[a:b])
    for split, (a, b) in bounds.items():
        write_split_labels(root, split, ids[a:b])

    truth = pd.DataFrame(rows)
    truth.insert(0, "split", split_of.astype(str))
    truth.insert(0, "galaxy_id", ids)
    meta_cols = ["M/L", "L_g", "distance_Mpc", "galsize_kpc", *EXTRA_METADATA_COLUMNS]
    meta = truth.set_index("galaxy_id")[meta_cols]
    write_metadata(root, meta)
    _write_truth(layout.truth_path, truth, config)
    return truth


def _write_truth(path: Path, truth: pd.DataFrame, config: SurveyConfig) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(truth, preserve_index=False)
    info = {"version": __version__, "generator": "featuremass.io.simulate", "config": config.as_dict()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"featuremass": json.dumps(info).encode()})
    pq.write_table(table, path)
