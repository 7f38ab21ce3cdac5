"""Per-galaxy PSF and pixel scale, read from a table keyed by galaxy id.

The seed's stamps are crops resized per galaxy, so the PSF measured in
pixels differs from stamp to stamp. A PSF table (CSV or Parquet) gives it per
galaxy, with the columns

* ``galaxy_id`` (integer), and either
* ``psf_fwhm_px``: the PSF FWHM in stamp pixels, or
* ``psf_fwhm_arcsec`` and ``pixel_scale_arcsec`` (arcsec per stamp pixel):
  the FWHM in pixels is their ratio.

When both forms are present ``psf_fwhm_px`` wins. Every galaxy to be
measured must be in the table, and every value must be finite and positive;
anything else is one :class:`~featuremass.errors.DataError` naming the file,
the galaxy ids and the value.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass.errors import DataError

__all__ = ["PSF_TABLE_ID", "read_psf_table"]

PSF_TABLE_ID = "galaxy_id"


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"PSF table not found: {path}")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pandas / pyarrow raise many types for bad files
        raise DataError(f"cannot read PSF table {path}: {exc}") from None


def read_psf_table(path: str | os.PathLike, ids) -> np.ndarray:
    """PSF FWHM in pixels for each of ``ids``, in that order.

    Parameters
    ----------
    path : path to a .csv or .parquet file
        The PSF table (module docs).
    ids : array-like of int
        The galaxies to be measured.

    Returns
    -------
    ndarray of float64, one FWHM (px) per id.

    Raises
    ------
    DataError
        Missing file or column, duplicate ids, a galaxy missing from the
        table, or a value that is not a finite positive number.
    """
    path = Path(path)
    df = _read(path)
    if PSF_TABLE_ID not in df.columns:
        raise DataError(f"PSF table {path} has no {PSF_TABLE_ID!r} column; it has {list(df.columns)[:8]}")
    if "psf_fwhm_px" in df.columns:
        fwhm = pd.to_numeric(df["psf_fwhm_px"], errors="coerce").to_numpy(np.float64)
        what = "psf_fwhm_px"
    elif {"psf_fwhm_arcsec", "pixel_scale_arcsec"} <= set(df.columns):
        arcsec = pd.to_numeric(df["psf_fwhm_arcsec"], errors="coerce").to_numpy(np.float64)
        scale = pd.to_numeric(df["pixel_scale_arcsec"], errors="coerce").to_numpy(np.float64)
        for name, values in (("psf_fwhm_arcsec", arcsec), ("pixel_scale_arcsec", scale)):
            _check_positive(path, df, name, values)
        fwhm = arcsec / scale
        what = "psf_fwhm_arcsec / pixel_scale_arcsec"
    else:
        raise DataError(
            f"PSF table {path} needs a 'psf_fwhm_px' column, or 'psf_fwhm_arcsec' and "
            f"'pixel_scale_arcsec'; it has {list(df.columns)[:8]}"
        )
    _check_positive(path, df, what, fwhm)
    try:
        table_ids = df[PSF_TABLE_ID].to_numpy().astype(np.int64)
    except (TypeError, ValueError):
        raise DataError(f"PSF table {path}: {PSF_TABLE_ID} must be integers") from None
    dup = pd.Index(table_ids).duplicated()
    if dup.any():
        raise DataError(f"PSF table {path} has duplicate {PSF_TABLE_ID} values {table_ids[dup][:5].tolist()}")
    lookup = pd.Series(fwhm, index=table_ids)
    ids = np.asarray(ids, dtype=np.int64)
    missing = ~np.isin(ids, table_ids)
    if missing.any():
        raise DataError(
            f"{int(missing.sum())} galaxies are missing from PSF table {path}: ids {ids[missing][:5].tolist()}"
        )
    return lookup.loc[ids].to_numpy(np.float64)


def _check_positive(path: Path, df: pd.DataFrame, name: str, values: np.ndarray) -> None:
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        col = name if name in df.columns else None
        shown = df[col].iloc[i] if col is not None else values[i]
        shown = shown.item() if isinstance(shown, np.generic) else shown
        raise DataError(
            f"PSF table {path}: {name} must be a finite positive number; galaxy "
            f"{df[PSF_TABLE_ID].iloc[i]} has {shown!r} ({int(bad.sum())} bad rows)"
        )
