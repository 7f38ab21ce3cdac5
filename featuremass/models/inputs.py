"""Input sets: which columns a model sees, joined from feature tables and metadata.

The seed's experiments compare a model that sees only the image with models
that also get quantities needing a spectrum (distance, g-band luminosity) and
the galaxy size. Here the "image" is its morphology feature table.

=================  =====================================================
input set          columns
=================  =====================================================
``image``          every morphology feature column of the table
``image+dl``       + ``distance_Mpc``, ``L_g``
``image+dl+size``  + ``distance_Mpc``, ``L_g``, ``galsize_kpc``
``extra``          ``distance_Mpc``, ``L_g`` only (no image)
=================  =====================================================

Model inputs are defined on linear flux (issue 10)
-------------------------------------------------
The default morphology inputs are ratios, radii, fractions and indices of the
recovered linear flux, which do not depend on the unknown flux scale or on the
stretch the stamps arrived in. The columns of :data:`PREPARATION_COLUMNS` stay
in the feature table but are left out of the default inputs (beside the
stamp-position columns), because each describes the observation or its
preparation rather than the galaxy:

=========================================  ==========================================
column                                     why it is left out
=========================================  ==========================================
``sky_mean``, ``sky_sigma``                sky level and noise in stamp units: set by
                                           the flux scale and the stretch's inverse
``sn_per_pixel``                           signal-to-noise: depth of the observation
``sersic_amplitude``                       surface brightness in stamp units (flux scale)
``sersic_chi2_dof``, ``bd_chi2_dof``       misfit in units of the noise: grows with S/N
``segmap_area_px``                         area above a threshold in noise units
``rmax_circ``, ``rmax_ellip``              extent of the noise-thresholded shape
                                           segmap (statmorph's ``rmax``)
``n_masked_neighbours``                    count of detections above a noise threshold
``stretch_code``, ``stretch_param``,       what ``--scale auto`` detected and the
``censored_fraction``                      inverse's parameters
=========================================  ==========================================

The profile samples ``prof_mu_*`` are magnitudes relative to the mean inside
``2 r_petro`` and ``bd_bulge_to_total`` is a flux ratio, so they stay.
``tests/features/test_invariance.py`` checks that every remaining input
ranks the same galaxies alike under each stretch.

Feature tables are keyed by ``galaxy_id``; dataset metadata by ``SDSS_ID``.
The two are joined on those ids, and a galaxy missing from the metadata is a
:class:`~featuremass.errors.DataError` naming the file and the ids.

A random-noise control column (:data:`NOISE_COLUMN`) can be appended: a
standard normal value derived from a hash of ``(seed, galaxy_id)``, so the
same galaxy gets the same value at training and prediction time without
storing it. It carries no information about M/L, so any importance method
should rank it near the bottom.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass.errors import DataError, SchemaError
from featuremass.features.measure import POSITION_COLUMNS
from featuremass.io.layout import ID_COLUMN as META_ID_COLUMN
from featuremass.io.layout import METADATA_COLUMNS, TARGET_COLUMN, SeedLayout, read_metadata

#: Key column of feature tables.
ID_COLUMN = "galaxy_id"
#: Columns of a feature table that are not model inputs.
NON_FEATURE_COLUMNS = (ID_COLUMN, "flag")
#: Feature-table columns that describe the observation or its preparation, not the
#: galaxy (flux scale, sky, noise, S/N, noise-thresholded areas, the detected
#: stretch): kept in the table, left out of the default model inputs (module docs).
PREPARATION_COLUMNS = (
    "sky_mean", "sky_sigma", "sn_per_pixel", "sersic_amplitude", "sersic_chi2_dof", "bd_chi2_dof",
    "segmap_area_px", "rmax_circ", "rmax_ellip", "n_masked_neighbours",
    "stretch_code", "stretch_param", "censored_fraction",
)
#: The random-noise control feature.
NOISE_COLUMN = "control_noise"
#: Extra (non-image) inputs of each input set, in order.
EXTRA_INPUTS = {
    "image": (),
    "image+dl": ("distance_Mpc", "L_g"),
    "image+dl+size": ("distance_Mpc", "L_g", "galsize_kpc"),
    "extra": ("distance_Mpc", "L_g"),
}
INPUT_SETS = tuple(EXTRA_INPUTS)
#: Feature family of the model inputs that are not measured on the image.
INPUT_FAMILY = {NOISE_COLUMN: "control",
                **dict.fromkeys(("distance_Mpc", "L_g", "galsize_kpc"), "extra inputs")}


def check_input_set(name: str) -> str:
    if name not in EXTRA_INPUTS:
        raise DataError(f"unknown input set {name!r}; expected one of {', '.join(INPUT_SETS)}")
    return name


def uses_image(input_set: str) -> bool:
    """True when the input set includes the morphology features."""
    return check_input_set(input_set) != "extra"


def _fmt(values, limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    more = f" ... ({len(values)} in all)" if len(values) > limit else ""
    return f"[{shown}{more}]"


# --------------------------------------------------------------------------- reading


def read_features(path: str | os.PathLike) -> pd.DataFrame:
    """Read a feature table (Parquet, or CSV for hand-made tables).

    Uses :func:`featuremass.features.batch.read_feature_table` for Parquet when
    it is available. Checks that ``galaxy_id`` exists and is unique.
    """
    path = Path(path)
    # a folder is the partitioned table of a distributed extract
    if not path.is_file() and not path.is_dir():
        raise DataError(f"feature table not found: {path}")
    if path.suffix.lower() == ".csv":
        try:
            df = pd.read_csv(path)
        except Exception as exc:  # pandas raises many types for bad files
            raise DataError(f"cannot read feature table {path}: {exc}") from None
    else:
        try:
            from featuremass.features.batch import read_feature_table
        except ImportError:  # the extractor is optional for hand-made tables
            read_feature_table = None
        try:
            if read_feature_table:
                df, record = read_feature_table(path)
            else:
                df, record = pd.read_parquet(path), {}
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"cannot read feature table {path}: {exc}") from None
    if ID_COLUMN not in df.columns:
        raise DataError(f"feature table {path} has no {ID_COLUMN!r} column; it has {list(df.columns)[:8]}")
    ids = df[ID_COLUMN]
    if not pd.api.types.is_integer_dtype(ids):
        raise DataError(f"feature table {path}: {ID_COLUMN} must be integers, got {ids.dtype}")
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise DataError(f"feature table {path} has duplicate {ID_COLUMN} values {_fmt(dup)}")
    df = df.copy()
    df[ID_COLUMN] = ids.astype(np.int64)
    df.attrs["source"] = str(path)
    if path.is_dir() and record:
        # a partitioned table keeps its run record beside the parts, not in a file schema
        df.attrs["featuremass"] = record
    return df


def load_metadata(data: str | os.PathLike) -> pd.DataFrame:
    """Metadata of a seed-layout dataset folder (index ``SDSS_ID``)."""
    meta = read_metadata(SeedLayout(data).metadata_path)
    meta.attrs["source"] = str(SeedLayout(data).metadata_path)
    return meta


# --------------------------------------------------------------------------- columns


def morphology_columns(table: pd.DataFrame) -> list[str]:
    """The morphology feature columns of a feature table, in table order.

    Every numeric column except ``galaxy_id``, ``flag``, metadata columns, the
    noise control, the stamp position / position-angle columns
    (:data:`featuremass.features.measure.POSITION_COLUMNS`), which describe the
    cutout rather than the galaxy, and :data:`PREPARATION_COLUMNS`, which
    describe the observation and its preparation.
    """
    skip = (set(NON_FEATURE_COLUMNS) | set(METADATA_COLUMNS) | {NOISE_COLUMN} | set(POSITION_COLUMNS)
            | set(PREPARATION_COLUMNS))
    return [
        c for c in table.columns
        if c not in skip and (pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c]))
    ]


def noise_control(ids, seed: int = 0) -> np.ndarray:
    """A standard-normal value per galaxy from a hash of ``(seed, galaxy_id)``.

    SplitMix64 (Steele, Lea & Flood 2014) mixes the id into two 53-bit
    uniforms, and the Box-Muller transform turns them into N(0, 1). Pure:
    the same id and seed always give the same value.
    """
    ids = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    mask = np.uint64(0xFFFFFFFFFFFFFFFF)

    def splitmix(x):
        with np.errstate(over="ignore"):
            x = (x + np.uint64(0x9E3779B97F4A7C15)) & mask
            x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & mask
            x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & mask
            return x ^ (x >> np.uint64(31))

    with np.errstate(over="ignore"):
        base = splitmix(ids ^ splitmix(np.full_like(ids, np.uint64(seed % 2**63))))
    u1 = ((splitmix(base) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = ((splitmix(base ^ np.uint64(0xD1B54A32D192ED03)) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def align_columns(X: pd.DataFrame, expected, *, source: str = "the feature table") -> pd.DataFrame:
    """Return ``X`` with exactly the ``expected`` columns, in that order.

    Missing or unexpected columns raise :class:`SchemaError` naming them;
    columns that are only in another order are realigned silently.
    """
    expected = list(expected)
    have = list(X.columns)
    missing = [c for c in expected if c not in have]
    extra = [c for c in have if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {_fmt(missing, 8)}")
        if extra:
            parts.append(f"unexpected column(s) {_fmt(extra, 8)}")
        raise SchemaError(
            f"{source} does not match the model's {len(expected)} features: " + "; ".join(parts)
        )
    if have != expected:
        X = X[expected]
    return X


# --------------------------------------------------------------------------- design


@dataclass
class Design:
    """Model inputs of one table: ``X`` (rows aligned with ``ids``), target ``y``.

    ``y`` is None when no metadata was given; ``metadata`` holds the joined
    metadata rows (or None).
    """

    X: pd.DataFrame
    ids: np.ndarray
    y: np.ndarray | None
    flags: np.ndarray | None
    metadata: pd.DataFrame | None


def join_metadata(ids, metadata: pd.DataFrame, *, source: str = "the feature table") -> pd.DataFrame:
    """Metadata rows for ``ids`` in that order; missing ids raise :class:`DataError`."""
    ids = np.asarray(ids, dtype=np.int64)
    missing = ~np.isin(ids, metadata.index.to_numpy())
    if missing.any():
        meta_source = metadata.attrs.get("source", "the metadata")
        raise DataError(
            f"{int(missing.sum())} galaxies of {source} are missing from {meta_source} "
            f"({META_ID_COLUMN}): ids {_fmt(ids[missing])}"
        )
    return metadata.loc[ids]


def build_design(
    table: pd.DataFrame,
    input_set: str = "image",
    *,
    metadata: pd.DataFrame | None = None,
    noise: bool = False,
    seed: int = 0,
    require_target: bool = False,
    columns=None,
) -> Design:
    """Assemble the model inputs of ``input_set`` from a feature table and metadata.

    Parameters
    ----------
    table : DataFrame
        Feature table with ``galaxy_id`` (as from :func:`read_features`).
    input_set : {'image', 'image+dl', 'image+dl+size', 'extra'}
    metadata : DataFrame, optional
        Dataset metadata indexed by ``SDSS_ID``; needed for the target and for
        any extra inputs.
    noise : bool
        Append the :data:`NOISE_COLUMN` control feature.
    seed : int
        Seed of the noise control.
    require_target : bool
        Raise when the target cannot be found (training, evaluation).
    columns : list of str, optional
        Morphology columns to use (default: :func:`morphology_columns`).
    """
    check_input_set(input_set)
    source = table.attrs.get("source", "the feature table")
    if ID_COLUMN not in table.columns:
        raise DataError(f"{source} has no {ID_COLUMN!r} column")
    ids = table[ID_COLUMN].to_numpy(dtype=np.int64)
    extras = EXTRA_INPUTS[input_set]
    meta_rows = None
    if metadata is not None:
        meta_rows = join_metadata(ids, metadata, source=source)
    elif extras or require_target:
        what = f"the extra inputs {list(extras)}" if extras else f"the target {TARGET_COLUMN!r}"
        raise DataError(
            f"input set {input_set!r} needs {what} from the dataset metadata; "
            "pass the dataset folder (--data)"
        )
    parts = {}
    if uses_image(input_set):
        cols = morphology_columns(table) if columns is None else list(columns)
        absent = [c for c in cols if c not in table.columns]
        if absent:
            raise SchemaError(f"{source} lacks feature column(s) {_fmt(absent, 8)}")
        if not cols:
            raise SchemaError(f"{source} has no morphology feature columns")
        for c in cols:
            parts[c] = table[c].to_numpy(dtype=np.float64)
    for c in extras:
        parts[c] = meta_rows[c].to_numpy(dtype=np.float64)
    if noise:
        parts[NOISE_COLUMN] = noise_control(ids, seed)
    X = pd.DataFrame(parts, index=pd.RangeIndex(len(ids)))
    y = None
    if meta_rows is not None:
        y = meta_rows[TARGET_COLUMN].to_numpy(dtype=np.float64)
        if require_target and not np.isfinite(y).all():
            bad = ids[~np.isfinite(y)]
            raise DataError(
                f"{metadata.attrs.get('source', 'the metadata')} has non-finite {TARGET_COLUMN} "
                f"for ids {_fmt(bad)}"
            )
    flags = table["flag"].to_numpy(dtype=np.int64) if "flag" in table.columns else None
    return Design(X=X, ids=ids, y=y, flags=flags, metadata=meta_rows)
