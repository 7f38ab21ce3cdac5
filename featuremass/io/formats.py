"""Other on-disk image formats: PNG/JPG folders, HDF5 files, FITS cubes and folders.

Every reader returns ``(images, ids)``: ``images`` float32 ``(n, npix, npix)``,
``ids`` int64 ``(n,)``, sorted by id for folders and in file order otherwise.
Every writer takes the same pair. Bad content raises
:class:`~featuremass.errors.DataError` naming the file and the offending value.

=================  =============================================================
format             layout
=================  =============================================================
PNG / JPG folder   one ``{id}.png`` (or ``.jpg``/``.jpeg``) per galaxy, 8-bit
                   greyscale; pixel value ``v`` maps to ``v / 127.5 - 1`` in
                   [-1, 1], as the seed's PNG experiment did. JPG is lossy.
HDF5               datasets ``data`` ``(n, npix, npix)`` and ``sdss_id`` ``(n,)``
FITS cube          an image HDU ``(n, npix, npix)`` plus a binary-table HDU named
                   ``SDSS_ID`` with a column ``SDSS_ID``
FITS folder        one ``*.fits`` (``.fit``, ``.fits.gz``) per galaxy holding a
                   2-D image; the id is the header keyword ``SDSS_ID`` if present,
                   otherwise the file name (``{id}.fits``)
=================  =============================================================

FITS images are returned as stored (pass ``stretch=True`` to apply
:func:`~featuremass.io.stretch.seed_stretch` to linear-flux images); the 8-bit
formats are by construction already stretched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from featuremass.errors import DataError
from featuremass.io.layout import atomic_output

#: HDF5 dataset names used by the seed's HDF5 variant.
HDF5_IMAGES_KEY = "data"
HDF5_IDS_KEY = "sdss_id"
#: FITS header keyword / table name holding the SDSS object id.
FITS_ID_KEYWORD = "SDSS_ID"

_RASTER_SUFFIXES = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}
_FITS_RE = re.compile(r"^(?P<stem>.+?)\.(fits|fit|fts)(\.gz)?$", re.IGNORECASE)
_INT_RE = re.compile(r"^-?\d+$")


# --------------------------------------------------------------------------- helpers


def _stack(images: list[np.ndarray], names: list[Path], where: Path) -> np.ndarray:
    """Stack 2-D images, refusing mixed or non-square sizes with a clear error."""
    if not images:
        return np.zeros((0, 0, 0), dtype=np.float32)
    shape0 = images[0].shape
    for img, name in zip(images, names, strict=True):
        if img.ndim != 2:
            raise DataError(f"{name} holds a {img.ndim}-D array of shape {img.shape}; expected a 2-D image")
        if img.shape != shape0:
            raise DataError(
                f"{where} mixes image sizes: {names[0].name} is {shape0} but {name.name} is {img.shape}"
            )
    if shape0[0] != shape0[1]:
        raise DataError(f"{names[0]} is {shape0}; featuremass expects square (npix, npix) images")
    return np.stack(images).astype(np.float32, copy=False)


def _check_pair(images: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate arrays given to a writer."""
    images = np.asarray(images)
    ids = np.asarray(ids)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DataError(f"images have shape {images.shape}; expected (n, npix, npix)")
    if ids.ndim != 1 or len(ids) != len(images):
        raise DataError(f"{ids.shape} ids for {len(images)} images; expected one id per image")
    if len(ids) and not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"ids must be integers; got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"duplicate ids {uniq[counts > 1][:5].tolist()}")
    return images, ids


def _int_id(text: str, path: Path) -> int:
    if not _INT_RE.match(text.strip()):
        raise DataError(f"{path}: cannot read an integer galaxy id from {text!r}")
    return int(text)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map [-1, 1] to 0..255 (inverse of ``v / 127.5 - 1``), rounding and clipping."""
    arr = np.asarray(images, dtype=np.float64)
    arr = np.where(np.isfinite(arr), arr, -1.0)
    return np.clip(np.rint((arr + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(values: np.ndarray) -> np.ndarray:
    """Map 8-bit values to [-1, 1]: ``v / 127.5 - 1`` (the seed's PNG convention)."""
    return (np.asarray(values, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)).astype(np.float32)


# --------------------------------------------------------------------------- PNG / JPG


def read_image_folder(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a folder of ``{id}.png`` / ``{id}.jpg`` 8-bit greyscale images.

    RGB images are accepted only when the three channels are equal (a grey
    image saved as colour). Files with other suffixes are ignored.

    Returns
    -------
    images : ndarray of float32, shape (n, npix, npix), in [-1, 1]
    ids : ndarray of int64, sorted ascending
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _RASTER_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder} holds no .png or .jpg files")
    pairs = sorted(((_int_id(p.stem, p), p) for p in files), key=lambda t: t[0])
    ids = np.array([i for i, _ in pairs], dtype=np.int64)
    dup = np.unique(ids[1:][np.diff(ids) == 0])
    if dup.size:
        raise DataError(f"{folder} holds several files for ids {dup[:5].tolist()} (e.g. both .png and .jpg)")
    images, names = [], []
    for _, path in pairs:
        try:
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                arr = np.asarray(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        if mode in ("RGB", "RGBA"):
            rgb = arr[..., :3]
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise DataError(f"{path} is a colour ({mode}) image; featuremass expects 8-bit greyscale")
            arr = rgb[..., 0]
        elif mode == "LA":
            arr = arr[..., 0]
        elif mode != "L":
            raise DataError(f"{path} has image mode {mode!r}; featuremass expects 8-bit greyscale ('L')")
        images.append(from_uint8(arr))
        names.append(path)
    return _stack(images, names, folder), ids


def write_image_folder(
    folder: str | os.PathLike,
    images: np.ndarray,
    ids: np.ndarray,
    *,
    fmt: str = "png",
    quality: int = 95,
) -> list[Path]:
    """Write each image as ``{id}.{fmt}``, 8-bit greyscale: ``round((x + 1) * 127.5)``.

    Parameters
    ----------
    fmt : {'png', 'jpg'}
        PNG is lossless apart from the 8-bit quantisation (error <= 1/255 of
        the range); JPG is lossy (``quality`` 1-95).
    """
    from PIL import Image

    if fmt not in ("png", "jpg"):
        raise DataError(f"unknown raster format {fmt!r}; expected 'png' or 'jpg'")
    images, ids = _check_pair(images, ids)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for img, gid in zip(to_uint8(images), ids, strict=True):
        path = folder / f"{int(gid)}.{fmt}"
        kwargs = {"quality": int(quality)} if fmt == "jpg" else {}
        with atomic_output(path) as tmp:
            Image.fromarray(img, mode="L").save(tmp, format="PNG" if fmt == "png" else "JPEG", **kwargs)
        written.append(path)
    return written


# --------------------------------------------------------------------------- HDF5


def read_hdf5(
    path: str | os.PathLike,
    *,
    images_key: str = HDF5_IMAGES_KEY,
    ids_key: str = HDF5_IDS_KEY,
) -> tuple[np.ndarray, np.ndarray]:
    """Read datasets ``data`` ``(n, npix, npix)`` and ``sdss_id`` ``(n,)`` from an HDF5 file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"HDF5 file not found: {path}")
    try:
        with h5py.File(path, "r") as fh:
            for key in (images_key, ids_key):
                if key not in fh:
                    raise DataError(f"{path} has no dataset {key!r}; it holds {sorted(fh.keys())}")
            dimg, dids = fh[images_key], fh[ids_key]
            if dimg.ndim != 3 or dimg.shape[1] != dimg.shape[2]:
                raise DataError(f"{path}:{images_key} has shape {dimg.shape}; expected (n, npix, npix)")
            if dimg.dtype.kind not in "fiu":
                raise DataError(f"{path}:{images_key} has non-numeric dtype {dimg.dtype}")
            if dids.ndim != 1 or dids.dtype.kind not in "iu":
                raise DataError(
                    f"{path}:{ids_key} must be a 1-D integer array; got {dids.dtype} {dids.shape}"
                )
            if len(dids) != len(dimg):
                raise DataError(f"{path}: {len(dids)} ids in {ids_key!r} but {len(dimg)} images in {images_key!r}")
            images = dimg[...].astype(np.float32, copy=False)
            ids = dids[...].astype(np.int64)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise DataError(f"cannot read HDF5 file {path}: {exc}") from None
    return images, ids


def write_hdf5(path: str | os.PathLike, images: np.ndarray, ids: np.ndarray) -> Path:
    """Write ``data`` (float32) and ``sdss_id`` (int64) datasets, atomically."""
    import h5py

    images, ids = _check_pair(images, ids)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset(HDF5_IMAGES_KEY, data=images.astype(np.float32), chunks=True)
        fh.create_dataset(HDF5_IDS_KEY, data=ids)
    return Path(path)


# --------------------------------------------------------------------------- FITS


def _first_image_hdu(hdul, path: Path):
    for hdu in hdul:
        if hdu.is_image and hdu.data is not None:
            return hdu
    raise DataError(f"{path} holds no image data")


def read_fits(
    path: str | os.PathLike, *, id_keyword: str = FITS_ID_KEYWORD, stretch: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read a FITS cube (one file) or a folder of per-galaxy FITS images.

    Parameters
    ----------
    path : path
        A FITS file holding an ``(n, npix, npix)`` image HDU and a table HDU
        named ``SDSS_ID`` (column ``SDSS_ID``), or a folder of 2-D FITS images
        whose id is the header keyword ``id_keyword`` or else the file name.
    stretch : bool
        Apply :func:`~featuremass.io.stretch.seed_stretch` (for linear-flux images).
    """
    from astropy.io import fits

    path = Path(path)
    if path.is_dir():
        images, ids = _read_fits_folder(path, id_keyword)
    elif path.is_file():
        try:
            with fits.open(path, memmap=False) as hdul:
                hdu = _first_image_hdu(hdul, path)
                data = np.asarray(hdu.data)
                if data.ndim != 3 or data.shape[1] != data.shape[2]:
                    raise DataError(
                        f"{path} image HDU has shape {data.shape}; a FITS cube must be (n, npix, npix)"
                    )
                if id_keyword not in hdul:
                    raise DataError(
                        f"{path} has no {id_keyword!r} table HDU with the galaxy ids "
                        "(or pass a folder of per-galaxy FITS files)"
                    )
                table = hdul[id_keyword].data
                if table is None or id_keyword not in table.columns.names:
                    raise DataError(f"{path}: HDU {id_keyword!r} lacks a column {id_keyword!r}")
                raw_ids = np.asarray(table[id_keyword])
                images = data.astype(np.float32)
        except DataError:
            raise
        except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise DataError(f"cannot read FITS file {path}: {exc}") from None
        if raw_ids.dtype.kind not in "iu":
            raise DataError(f"{path}: {id_keyword} column has dtype {raw_ids.dtype}; expected integers")
        ids = raw_ids.astype(np.int64)
        if len(ids) != len(images):
            raise DataError(f"{path}: {len(ids)} ids for {len(images)} images")
    else:
        raise DataError(f"FITS file or folder not found: {path}")
    if stretch:
        from featuremass.io.stretch import seed_stretch

        images = seed_stretch(images) if len(images) else images
    return images, ids


def _read_fits_folder(folder: Path, id_keyword: str) -> tuple[np.ndarray, np.ndarray]:
    from astropy.io import fits

    files = sorted(p for p in folder.iterdir() if p.is_file() and _FITS_RE.match(p.name))
    if not files:
        raise DataError(f"{folder} holds no .fits files")
    records = []
    for p in files:
        try:
            with fits.open(p, memmap=False) as hdul:
                hdu = _first_image_hdu(hdul, p)
                data = np.asarray(hdu.data, dtype=np.float32)
                header_id = hdul[0].header.get(id_keyword, hdu.header.get(id_keyword))
        except DataError:
            raise
        except (OSError, ValueError, TypeError, IndexError) as exc:
            raise DataError(f"cannot read FITS file {p}: {exc}") from None
        if header_id is not None:
            gid = _int_id(str(header_id), p)
        else:
            gid = _int_id(_FITS_RE.match(p.name).group("stem"), p)
        records.append((gid, p, data))
    records.sort(key=lambda r: r[0])
    ids = np.array([r[0] for r in records], dtype=np.int64)
    dup = np.unique(ids[1:][np.diff(ids) == 0])
    if dup.size:
        raise DataError(f"{folder} holds several FITS files for ids {dup[:5].tolist()}")
    images = _stack([r[2] for r in records], [r[1] for r in records], folder)
    return images, ids


def write_fits(path: str | os.PathLike, images: np.ndarray, ids: np.ndarray) -> Path:
    """Write a FITS cube (primary HDU) plus an ``SDSS_ID`` table HDU, atomically."""
    from astropy.io import fits

    images, ids = _check_pair(images, ids)
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name=FITS_ID_KEYWORD, format="K", array=ids)], name=FITS_ID_KEYWORD
    )
    with atomic_output(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(images.astype(np.float32)), table]).writeto(tmp, overwrite=True)
    return Path(path)


def write_fits_folder(folder: str | os.PathLike, images: np.ndarray, ids: np.ndarray) -> list[Path]:
    """Write one ``{id}.fits`` per galaxy, with the id also in the header keyword ``SDSS_ID``."""
    from astropy.io import fits

    images, ids = _check_pair(images, ids)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for img, gid in zip(images, ids, strict=True):
        hdu = fits.PrimaryHDU(np.asarray(img, dtype=np.float32))
        hdu.header[FITS_ID_KEYWORD] = (int(gid), "SDSS object id")
        path = folder / f"{int(gid)}.fits"
        with atomic_output(path) as tmp:
            hdu.writeto(tmp, overwrite=True)
        written.append(path)
    return written


# --------------------------------------------------------------------------- dispatch


def detect_format(path: str | os.PathLike) -> str:
    """Guess ``'npy'``, ``'png'``, ``'jpg'``, ``'hdf5'`` or ``'fits'`` from a path."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        kinds = {_RASTER_SUFFIXES.get(p.suffix.lower()) for p in path.iterdir()}
        kinds.discard(None)
        if kinds:
            return "jpg" if kinds == {"jpg"} else "png"
        if any(_FITS_RE.match(p.name) for p in path.iterdir()):
            return "fits"
        raise DataError(f"{path} holds no .png, .jpg or .fits images")
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".h5", ".hdf5", ".hdf")):
        return "hdf5"
    if _FITS_RE.match(name):
        return "fits"
    raise DataError(f"cannot tell the image format of {path} from its name")


def read_images(path: str | os.PathLike, *, fmt: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read images and ids from any supported format (see the module table).

    A ``.npy`` image stack needs its ids next to it: ``X_images.npy`` pairs
    with ``X_names.npy``; otherwise ids are ``0..n-1``.
    """
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt in ("png", "jpg"):
        return read_image_folder(path)
    if fmt == "hdf5":
        return read_hdf5(path)
    if fmt == "fits":
        return read_fits(path)
    if fmt == "npy":
        from featuremass.io.layout import load_npy

        images = load_npy(path)
        names = path.with_name(path.name.replace("_images", "_names"))
        if names != path and names.is_file():
            ids = np.asarray(load_npy(names, mmap=False))
        else:
            ids = np.arange(len(images), dtype=np.int64)
        images, ids = _check_pair(images, ids)
        return images, ids
    raise DataError(f"unknown image format {fmt!r}; expected npy, png, jpg, hdf5 or fits")
