"""Build a seed-layout dataset from FITS sky images and a catalogue.

The workflow of the seed's "Astronomical images for machine learning" note:
for each catalogue object, find the sky image whose WCS contains it, cut a
square stamp around it with :class:`astropy.nddata.Cutout2D`, then (as the
seed's preprocessing did) resize it to ``npix`` and apply the seed's log
stretch. The split is written with :func:`~featuremass.io.layout.write_split`.

Cutout side
    ``size_factor`` times the per-object angular size column (arcsec, e.g. a
    D25 or Petrosian diameter) when ``size_col`` is given; otherwise the fixed
    ``size_arcsec``; otherwise ``npix`` native pixels of the image.

Objects that cannot be cut out are never dropped silently. Each one is listed
with its reason in :attr:`CutoutReport.skipped` and in
``OUT/cutout_report.csv`` (columns ``id, split, reason, detail``):

``off image``            the position is outside every image
``partially off image``  the stamp would cross the edge of every image holding the position
``blank or NaN``         more than ``max_blank_fraction`` of the stamp is NaN/inf or exactly 0
                         (the fill value of mosaics), or its central 3x3 pixels are
``bad coordinates``      RA/Dec not finite or outside the valid range
``bad size``             the size column is not finite or not positive
``non-finite target``    the target column is NaN or infinite
``duplicate id``         the id appeared earlier in the catalogue (the first one is kept)

Metadata: with ``target_col`` the ``M/L`` column comes from it; without one
the written ``metadata.tsv`` still lists every id (so the name files and the
metadata agree) but with ``M/L`` = NaN, which :func:`~featuremass.io.layout.load_split`
reports as non-finite targets unless ``drop_invalid``: such a dataset is for
prediction, not training. ``L_g``, ``distance_Mpc`` and ``galsize_kpc`` are
copied from catalogue columns of those names when present, NaN otherwise. An
existing ``metadata.tsv`` in ``OUT`` is merged (rows of the same id replaced),
so several splits can be cut into one dataset one after the other.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass.errors import DataError
from featuremass.io.layout import (
    ID_COLUMN,
    METADATA_COLUMNS,
    SPLITS,
    TARGET_COLUMN,
    SeedLayout,
    read_metadata,
    write_frame,
    write_metadata,
    write_split,
    write_split_labels,
)
from featuremass.io.stretch import seed_stretch

log = logging.getLogger(__name__)

REPORT_NAME = "cutout_report.csv"


@dataclass(frozen=True)
class CutoutConfig:
    """How to cut, size and name the stamps (validated on creation).

    Parameters
    ----------
    npix : int
        Output image side in pixels (the seed used 69 and 128).
    id_col, ra_col, dec_col : str
        Catalogue columns: integer id, RA and Dec in degrees (ICRS/FK5).
    target_col : str, optional
        Column with the target (M/L), written to the metadata ``M/L`` column.
    size_col : str, optional
        Column with each object's angular size in arcsec.
    size_factor : float
        Stamp side = ``size_factor`` x ``size_col``.
    size_arcsec : float, optional
        Fixed stamp side in arcsec, used when ``size_col`` is not given.
    max_blank_fraction : float
        Largest tolerated fraction of NaN/inf/zero pixels in a stamp.
    """

    npix: int = 69
    id_col: str = "id"
    ra_col: str = "ra"
    dec_col: str = "dec"
    target_col: str | None = None
    size_col: str | None = None
    size_factor: float = 2.0
    size_arcsec: float | None = None
    max_blank_fraction: float = 0.05

    def __post_init__(self):
        if int(self.npix) != self.npix or not 8 <= self.npix <= 4096:
            raise DataError(f"npix must be an integer between 8 and 4096, got {self.npix!r}")
        if not (np.isfinite(self.size_factor) and self.size_factor > 0):
            raise DataError(f"size_factor must be positive, got {self.size_factor!r}")
        if self.size_arcsec is not None and not (np.isfinite(self.size_arcsec) and self.size_arcsec > 0):
            raise DataError(f"size_arcsec must be positive, got {self.size_arcsec!r}")
        if not 0 <= self.max_blank_fraction < 1:
            raise DataError(f"max_blank_fraction must be in [0, 1), got {self.max_blank_fraction!r}")
        for name in ("id_col", "ra_col", "dec_col"):
            if not getattr(self, name):
                raise DataError(f"{name} must name a catalogue column")

    @property
    def columns(self) -> list[str]:
        """Catalogue columns this configuration needs."""
        cols = [self.id_col, self.ra_col, self.dec_col]
        return cols + [c for c in (self.target_col, self.size_col) if c]


@dataclass
class CutoutReport:
    """What :func:`make_cutouts` did: counts, skipped objects with reasons, files."""

    catalog: Path
    out: Path
    split: str
    npix: int
    n_input: int
    ids: np.ndarray
    skipped: pd.DataFrame
    report_path: Path
    files: list[Path] = field(default_factory=list)

    @property
    def n_written(self) -> int:
        return int(len(self.ids))

    def counts(self) -> dict[str, int]:
        """Number of skipped objects per reason."""
        return dict(Counter(self.skipped["reason"]))

    def __str__(self) -> str:
        lines = [
            f"cutout: {self.n_input} objects in {self.catalog} -> {self.n_written} "
            f"{self.npix}x{self.npix} cutouts written to {self.out} (split '{self.split}')"
        ]
        if len(self.skipped):
            lines.append(f"  {len(self.skipped)} objects not cut out (listed in {self.report_path}):")
            for reason, n in sorted(self.counts().items(), key=lambda t: -t[1]):
                lines.append(f"    {n:6d}  {reason}")
        else:
            lines.append("  every object was cut out")
        return "\n".join(lines)


# --------------------------------------------------------------------------- inputs


def read_catalog(path: str | os.PathLike, config: CutoutConfig) -> pd.DataFrame:
    """Read a CSV/TSV or FITS table catalogue and check the configured columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"catalogue not found: {path}")
    name = path.name.lower()
    try:
        if name.endswith((".fits", ".fit", ".fits.gz", ".fts")):
            from astropy.table import Table

            table = Table.read(path)
            table = table[[n for n in table.colnames if len(table[n].shape) <= 1]]
            df = table.to_pandas()
        else:
            sep = "\t" if name.endswith((".tsv", ".tab")) else ","
            df = pd.read_csv(path, sep=sep)
    except Exception as exc:  # astropy and pandas raise many types on bad files
        raise DataError(f"cannot read catalogue {path}: {exc}") from None
    missing = [c for c in config.columns if c not in df.columns]
    if missing:
        raise DataError(f"catalogue {path} lacks column(s) {missing}; it has {list(df.columns)}")
    ids = df[config.id_col]
    if not pd.api.types.is_integer_dtype(ids):
        text = ids.astype(str).str.strip()
        bad = ids.isna() | ~text.str.fullmatch(r"-?\d+")
        if bad.any():
            raise DataError(
                f"catalogue {path}: column {config.id_col!r} must hold integer ids; "
                f"bad values {ids[bad].tolist()[:5]}"
            )
        ids = text.map(int)
    df[config.id_col] = ids.astype(np.int64)
    for col in config.columns[1:]:
        try:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(np.float64)
        except (ValueError, TypeError):
            raise DataError(f"catalogue {path}: column {col!r} must be numeric") from None
    return df.reset_index(drop=True)


@dataclass
class _SkyImage:
    path: Path
    data: np.ndarray
    wcs: object
    pixscale_arcsec: float


def _open_images(paths) -> list[_SkyImage]:
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    images = []
    for p in map(Path, paths):
        if not p.is_file():
            raise DataError(f"FITS image not found: {p}")
        try:
            with fits.open(p, memmap=False) as hdul:
                hdu = next((h for h in hdul if h.is_image and h.data is not None and h.data.ndim == 2), None)
                if hdu is None:
                    raise DataError(f"{p} holds no 2-D image HDU")
                wcs = WCS(hdu.header)
                data = np.asarray(hdu.data, dtype=np.float64)
        except DataError:
            raise
        except Exception as exc:  # astropy raises many types for bad headers
            raise DataError(f"cannot read FITS image {p}: {exc}") from None
        if not wcs.has_celestial or wcs.naxis != 2:
            raise DataError(f"{p} has no celestial WCS (CTYPE {list(wcs.wcs.ctype)})")
        scale = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
        if not (np.isfinite(scale) and scale > 0):
            raise DataError(f"{p}: cannot work out the pixel scale from its WCS")
        images.append(_SkyImage(p, data, wcs, scale))
    if not images:
        raise DataError("no FITS images given")
    return images


# --------------------------------------------------------------------------- cutting


def _blank_reason(stamp: np.ndarray, max_fraction: float) -> str | None:
    blank = ~np.isfinite(stamp) | (stamp == 0)
    frac = float(blank.mean())
    cy, cx = stamp.shape[0] // 2, stamp.shape[1] // 2
    if blank[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2].any():
        return "centre pixels are NaN or blank"
    if frac > max_fraction:
        return f"{100 * frac:.1f}% of the stamp is NaN or blank (limit {100 * max_fraction:.1f}%)"
    return None


def _resize(stamp: np.ndarray, npix: int) -> np.ndarray:
    from skimage.transform import resize

    if stamp.shape == (npix, npix):
        return stamp
    return resize(stamp, (npix, npix), order=1, mode="reflect",
                  anti_aliasing=stamp.shape[0] > npix, preserve_range=True)


def make_cutouts(
    fits_images,
    catalog: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "test",
    config: CutoutConfig | None = None,
) -> CutoutReport:
    """Cut every catalogue object out of the FITS images into a seed-layout split.

    Parameters
    ----------
    fits_images : sequence of path
        FITS images with a celestial WCS (the first 2-D image HDU of each is used).
    catalog : path
        CSV/TSV or FITS table with the columns named in ``config``.
    out : path
        Dataset root to write (created if needed).
    split : {'train', 'val', 'test'}
        Which split to write (a train split is written as ``train_*_all.npy``).
    config : CutoutConfig

    Returns
    -------
    CutoutReport
        Counts, the written ids, and every skipped object with its reason
        (also written to ``out/cutout_report.csv``).

    Raises
    ------
    DataError
        Missing file or column, bad WCS, or no object could be cut out.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    config = config or CutoutConfig()
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    catalog = Path(catalog)
    out = Path(out)
    cat = read_catalog(catalog, config)
    skies = _open_images(fits_images)

    ids = cat[config.id_col].to_numpy()
    ra = cat[config.ra_col].to_numpy()
    dec = cat[config.dec_col].to_numpy()
    valid, size, skipped = _usable_rows(cat, config)
    coords = SkyCoord(ra=np.where(valid, ra, 0.0) * u.deg, dec=np.where(valid, dec, 0.0) * u.deg, frame="icrs")
    inside = _images_holding(skies, coords)

    stamps, kept = [], []
    for i in np.flatnonzero(valid):
        gid = int(ids[i])
        holders = np.flatnonzero(inside[:, i])
        if holders.size == 0:
            skipped.append((gid, "off image", f"ra={ra[i]:.6f}, dec={dec[i]:.6f} is outside all {len(skies)} images"))
            continue
        cut, side_pix, partial_in = _cut_from_first_holder([skies[k] for k in holders], coords[i], size[i], config)
        if cut is None:
            skipped.append((gid, "partially off image", f"the {side_pix}-pixel stamp crosses the edge of {', '.join(partial_in)}"))
            continue
        reason = _blank_reason(cut.data, config.max_blank_fraction)
        if reason:
            skipped.append((gid, "blank or NaN", reason))
            continue
        stamps.append(seed_stretch(_resize(cut.data, config.npix)))
        kept.append(i)

    skipped_df = pd.DataFrame(skipped, columns=["id", "reason", "detail"]).astype({"id": np.int64})
    report_path = _write_report(out, split, skipped_df)
    report = CutoutReport(catalog=catalog, out=out, split=split, npix=int(config.npix), n_input=len(cat),
                          ids=ids[kept].astype(np.int64), skipped=skipped_df, report_path=report_path)
    for reason, n in report.counts().items():
        log.warning("%s: %d objects not cut out: %s (see %s)", catalog, n, reason, report_path)
    if not kept:
        raise DataError(
            f"no object of {catalog} could be cut out of the {len(skies)} images "
            f"({', '.join(f'{n} {r}' for r, n in report.counts().items())}); see {report_path}"
        )

    kept = np.asarray(kept)
    images = np.stack(stamps).astype(np.float32)
    report.files.extend(write_split(out, npix=config.npix, split=split, images=images, ids=ids[kept]))
    report.files.append(write_split_labels(out, split, ids[kept]))
    report.files.append(_merge_metadata(out, cat.iloc[kept], config))
    return report


def _usable_rows(cat: pd.DataFrame, config: CutoutConfig):
    """``(valid, size_arcsec, skipped)``: the catalogue rows worth cutting out.

    Duplicate ids (after the first), bad coordinates, bad sizes and
    non-finite targets are skipped, in that order, each with its reason.
    """
    ids = cat[config.id_col].to_numpy()
    ra = cat[config.ra_col].to_numpy()
    dec = cat[config.dec_col].to_numpy()
    skipped: list[tuple[int, str, str]] = []
    valid = np.ones(len(cat), dtype=bool)

    dup = pd.Series(ids).duplicated().to_numpy()
    for i in np.flatnonzero(dup):
        skipped.append((int(ids[i]), "duplicate id", "an earlier catalogue row has the same id"))
    valid &= ~dup
    bad_coord = valid & ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90))
    for i in np.flatnonzero(bad_coord):
        skipped.append((int(ids[i]), "bad coordinates", f"ra={ra[i]!r}, dec={dec[i]!r}"))
    valid &= ~bad_coord
    if config.size_col:
        size = cat[config.size_col].to_numpy() * config.size_factor
        bad_size = valid & ~(np.isfinite(size) & (size > 0))
        for i in np.flatnonzero(bad_size):
            skipped.append((int(ids[i]), "bad size", f"{config.size_col}={cat[config.size_col][i]!r}"))
        valid &= ~bad_size
    else:
        size = np.full(len(cat), np.nan if config.size_arcsec is None else config.size_arcsec)
    if config.target_col:
        target = cat[config.target_col].to_numpy()
        bad_target = valid & ~np.isfinite(target)
        for i in np.flatnonzero(bad_target):
            skipped.append((int(ids[i]), "non-finite target", f"{config.target_col}={target[i]!r}"))
        valid &= ~bad_target
    return valid, size, skipped


def _images_holding(skies: list[_SkyImage], coords) -> np.ndarray:
    """``inside[k, i]``: whether image ``k`` holds position ``i`` (pixel centres span -0.5 .. n-0.5)."""
    inside = np.zeros((len(skies), len(coords)), dtype=bool)
    for k, sky in enumerate(skies):
        x, y = sky.wcs.world_to_pixel(coords)
        ny, nx = sky.data.shape
        inside[k] = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    return inside


def _cut_from_first_holder(holders: list[_SkyImage], coord, size_arcsec: float, config: CutoutConfig):
    """``(cutout, side_pix, partial_in)``: the stamp from the first image that holds all of it.

    ``cutout`` is None when the stamp crosses the edge of every holder
    (``partial_in`` names them). The side is ``size_arcsec`` in that image's
    pixels, or ``config.npix`` without a size, and at least 3.
    """
    from astropy.nddata import Cutout2D
    from astropy.nddata.utils import NoOverlapError, PartialOverlapError

    partial_in = []
    for sky in holders:
        side_pix = config.npix if not np.isfinite(size_arcsec) else size_arcsec / sky.pixscale_arcsec
        side_pix = max(int(round(side_pix)), 3)
        try:
            return Cutout2D(sky.data, coord, (side_pix, side_pix), wcs=sky.wcs, mode="strict", copy=True), side_pix, []
        except PartialOverlapError:
            partial_in.append(sky.path.name)
        except NoOverlapError:  # rounding at the very edge
            partial_in.append(sky.path.name)
    return None, side_pix, partial_in


def _write_report(out: Path, split: str, skipped: pd.DataFrame) -> Path:
    """Write ``cutout_report.csv``, keeping rows of other splits from earlier runs."""
    path = out / REPORT_NAME
    out.mkdir(parents=True, exist_ok=True)
    rows = skipped.assign(split=split)[["id", "split", "reason", "detail"]]
    if path.is_file():
        try:
            old = pd.read_csv(path)
            if {"id", "split", "reason", "detail"} <= set(old.columns):
                rows = pd.concat([old[old["split"] != split], rows], ignore_index=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
            log.warning("replacing unreadable %s", path)
    return write_frame(rows, path, index=False)


def _merge_metadata(out: Path, cat: pd.DataFrame, config: CutoutConfig) -> Path:
    meta = pd.DataFrame(index=pd.Index(cat[config.id_col].to_numpy(np.int64), name=ID_COLUMN))
    for col in METADATA_COLUMNS:
        if col == TARGET_COLUMN and config.target_col:
            meta[col] = cat[config.target_col].to_numpy(np.float64)
        elif col in cat.columns and col != config.id_col:
            meta[col] = pd.to_numeric(cat[col], errors="coerce").to_numpy(np.float64)
        else:
            meta[col] = np.nan
    path = SeedLayout(out).metadata_path
    if path.is_file():
        old = read_metadata(path)
        meta = pd.concat([old[~old.index.isin(meta.index)], meta])
    return write_metadata(out, meta)
