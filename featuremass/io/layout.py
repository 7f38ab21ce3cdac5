"""The seed's on-disk layout, read and written exactly.

::

    DATA/images/{npix}pix_npy/train_images_{N}.npy   N = 10000, 30000 or all
    DATA/images/{npix}pix_npy/train_names_{N}.npy
    DATA/images/{npix}pix_npy/{val,test}_images.npy, {val,test}_names.npy
    DATA/metadata/metadata.tsv      index SDSS_ID; M/L, L_g, distance_Mpc, galsize_kpc
    DATA/split/{train,val,test}_labels.txt   one id per line

Images are float32 ``(n, npix, npix)`` in [-1, 1] (the seed stretch); names are
int64 SDSS object ids. Large image files are memory-mapped, never read whole.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ID_COLUMN = "SDSS_ID"
TARGET_COLUMN = "M/L"
METADATA_COLUMNS = ("M/L", "L_g", "distance_Mpc", "galsize_kpc")

_TRAIN_RE = re.compile(r"^train_images_(\d+|all)\.npy$")


def _fmt_ids(ids, limit: int = 5) -> str:
    ids = list(ids)
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    more = f" ... ({len(ids)} in all)" if len(ids) > limit else ""
    return f"[{shown}{more}]"


@dataclass(frozen=True)
class SeedLayout:
    """Paths of a dataset in the seed layout rooted at ``root``."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def images_dir(self, npix: int) -> Path:
        return self.root / "images" / f"{int(npix)}pix_npy"

    def image_path(self, npix: int, split: str, train_size: str | int | None = None) -> Path:
        return self.images_dir(npix) / f"{self._stem(split, train_size)[0]}.npy"

    def names_path(self, npix: int, split: str, train_size: str | int | None = None) -> Path:
        return self.images_dir(npix) / f"{self._stem(split, train_size)[1]}.npy"

    @property
    def metadata_path(self) -> Path:
        return self.root / "metadata" / "metadata.tsv"

    def split_labels_path(self, split: str) -> Path:
        _check_split(split)
        return self.root / "split" / f"{split}_labels.txt"

    @property
    def truth_path(self) -> Path:
        """Latent parameters of a simulated survey (absent for real data)."""
        return self.root / "truth" / "truth.parquet"

    def linear_path(self, npix: int, split: str) -> Path:
        """Linear-flux images written by the simulator (absent for real data)."""
        _check_split(split)
        return self.root / "images" / f"{int(npix)}pix_linear" / f"{split}_linear.npy"

    @staticmethod
    def _stem(split: str, train_size) -> tuple[str, str]:
        _check_split(split)
        if split == "train":
            label = "all" if train_size is None else str(train_size)
            return f"train_images_{label}", f"train_names_{label}"
        return f"{split}_images", f"{split}_names"

    def available_npix(self) -> list[int]:
        """Image sizes present under ``images/``, sorted."""
        base = self.root / "images"
        if not base.is_dir():
            return []
        found = []
        for p in base.iterdir():
            m = re.fullmatch(r"(\d+)pix_npy", p.name)
            if m and p.is_dir():
                found.append(int(m.group(1)))
        return sorted(found)

    def available_train_sizes(self, npix: int) -> list[str]:
        """Train-size labels present for ``npix`` (``'10000'``, ``'all'``...)."""
        d = self.images_dir(npix)
        if not d.is_dir():
            return []
        labels = [m.group(1) for p in d.iterdir() if (m := _TRAIN_RE.match(p.name))]
        return sorted(labels, key=lambda s: (s == "all", int(s) if s.isdigit() else 0))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


# --------------------------------------------------------------------------- reading


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``metadata.tsv``: tab-separated, index ``SDSS_ID`` (int64).

    Raises :class:`DataError` naming the file when it is missing, unparsable,
    lacks a required column, or has duplicate or non-integer ids.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metadata file not found: {path}")
    try:
        df = pd.read_csv(path, sep="\t", index_col=0)
    except Exception as exc:  # pandas raises many types for bad files
        raise DataError(f"cannot parse metadata {path}: {exc}") from None
    missing = [c for c in METADATA_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"metadata {path} lacks column(s) {missing}; it has {list(df.columns)}")
    try:
        df.index = df.index.astype(np.int64)
    except (TypeError, ValueError):
        bad = [i for i in df.index if not str(i).lstrip("-").isdigit()]
        raise DataError(f"metadata {path} has non-integer {ID_COLUMN} values {bad[:5]}") from None
    df.index.name = ID_COLUMN
    dup = df.index[df.index.duplicated()].unique()
    if len(dup):
        raise DataError(f"metadata {path} has duplicate {ID_COLUMN} values {_fmt_ids(dup)}")
    for col in METADATA_COLUMNS:
        if pd.api.types.is_bool_dtype(df[col]) or not pd.api.types.is_numeric_dtype(df[col]):
            values = pd.to_numeric(df[col], errors="coerce")
            bad = values.isna() & df[col].notna()
            if pd.api.types.is_bool_dtype(df[col]):
                bad = df[col].notna()
            if bad.any():
                first = df.index[bad][0]
                line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # 1-based, after the header
                raise DataError(
                    f"metadata {path}: column {col!r} holds a non-numeric value "
                    f"{df[col][bad].iloc[0]!r} on line {line} ({ID_COLUMN} {first}); "
                    f"{int(bad.sum())} such rows in all"
                )
            df[col] = values.astype(np.float64)
    return df


def read_split_labels(path: str | os.PathLike) -> np.ndarray:
    """Read a ``{split}_labels.txt`` file: one integer id per line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    if not path.read_bytes().strip():
        return np.zeros(0, dtype=np.int64)  # an empty split (e.g. simulate --n-val 0), without loadtxt's warning
    try:
        return np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise DataError(f"split file {path} holds a non-integer id: {exc}") from None


def load_npy(path: str | os.PathLike, *, mmap: bool = True) -> np.ndarray:
    """``np.load`` with a clear error for missing, truncated or pickled files.

    Object arrays (which need pickle) are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise DataError(f"{path} cannot be read as .npy: {exc}") from None
    if magic != b"\x93NUMPY":
        # np.load would try pickle (or return an NpzFile) for anything else.
        what = "empty" if not magic else "not a .npy file (no NUMPY header)"
        raise DataError(f"{path} is {what}")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        msg = str(exc)
        if "pickle" in msg.lower() or "python objects" in msg.lower():
            raise DataError(f"{path} holds Python objects (pickle), which featuremass refuses to load") from None
        raise DataError(f"{path} is truncated or not a valid .npy file: {msg}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read as .npy: {exc}") from None
    return arr


#: Image dtypes measured as they are (integers are converted to float).
_IMAGE_KINDS = "fiu"


def check_image_dtype(images, path) -> None:
    """Refuse image stacks whose dtype is not a real number (complex, bool, text, objects)."""
    dtype = np.dtype(images.dtype)
    if dtype.kind not in _IMAGE_KINDS:
        what = {"c": "complex", "b": "boolean", "U": "text", "S": "bytes", "O": "object",
                "V": "structured", "M": "datetime", "m": "timedelta"}.get(dtype.kind, str(dtype))
        raise DataError(f"{path} holds {what} values ({dtype}); images must be real numbers "
                        "(float32 as in the seed layout)")


def as_int64_ids(ids, path, n: int | None = None) -> np.ndarray:
    """``ids`` as int64 after checking they are 1-D integers that fit (``n`` of them if given).

    Unsigned ids of 2**63 and above would wrap to negative numbers, so they are refused.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or (len(ids) and not np.issubdtype(ids.dtype, np.integer)):
        raise DataError(f"{path} must be a 1-D integer array of ids; got {ids.dtype} {ids.shape}")
    if n is not None and len(ids) != n:
        raise DataError(f"{path} has {len(ids)} ids but there are {n} images")
    if ids.dtype.kind == "u" and ids.dtype.itemsize >= 8 and len(ids):
        too_big = ids > np.uint64(np.iinfo(np.int64).max)
        if too_big.any():
            raise DataError(f"{path} holds ids of 2**63 or more, beyond int64: "
                            f"{[int(i) for i in ids[too_big][:5]]}")
    return ids.astype(np.int64)


#: Largest |pixel| accepted for seed-log images, which the stretch maps into [-1, 1].
SEED_LOG_LIMIT = 1.5


def check_seed_log_range(images, path, *, limit: float = SEED_LOG_LIMIT,
                         chunk: int = 2048, hint: str = "Pass --scale linear (or --scale auto)") -> None:
    """Refuse a stack declared seed-log whose finite pixels lie far outside [-1, 1].

    Scanned in chunks, so a memory map is never read whole at once. ``hint``
    ends the message (what the caller's user can do instead).
    """
    worst = 0.0
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start:start + chunk], dtype=np.float64)
        finite = np.abs(block[np.isfinite(block)])
        if finite.size:
            worst = max(worst, float(finite.max()))
        if worst > limit:
            raise DataError(
                f"{path} has pixel values up to {worst:.3g}, far outside the seed-log stretch's "
                f"[-1, 1]: these are not seed-log images. {hint}"
            )


def check_image_stack(images, path, scale: str | None = None, **hint) -> None:
    """Refuse an image stack of a non-real dtype, or one declared seed-log that is not.

    ``hint=`` is passed to :func:`check_seed_log_range`.
    """
    check_image_dtype(images, path)
    if scale == "seed-log":
        check_seed_log_range(images, path, **hint)


@dataclass
class Dataset:
    """Images, ids and joined metadata of one split.

    ``images`` may be a read-only memory map; ``metadata`` is aligned row by
    row with ``images`` and ``ids``.
    """

    images: np.ndarray
    ids: np.ndarray
    metadata: pd.DataFrame
    npix: int
    split: str
    source: Path
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def target(self) -> np.ndarray:
        """The g-band M/L, aligned with ``images``."""
        return self.metadata[TARGET_COLUMN].to_numpy(dtype=np.float64)


def validate_images(images: np.ndarray, path: Path, npix: int | None = None) -> int:
    """Check dtype and shape of an image stack; return npix."""
    if images.dtype != np.float32:
        raise DataError(f"{path} has dtype {images.dtype}; the seed layout stores float32 images")
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DataError(f"{path} has shape {images.shape}; expected (n, npix, npix)")
    if npix is not None and images.shape[1] != npix:
        raise DataError(f"{path} holds {images.shape[1]} px images but {npix} px were asked for")
    return int(images.shape[1])


def _resolve_train_size(layout: SeedLayout, npix: int, train_size) -> tuple[str, int | None]:
    """Return (file label, number of rows to keep) for a train-size request."""
    available = layout.available_train_sizes(npix)
    if not available:
        raise DataError(f"no train_images_*.npy in {layout.images_dir(npix)}")
    if train_size is None:
        return available[-1], None
    label = str(train_size)
    if label in available:
        return label, None
    if not label.isdigit():
        raise DataError(
            f"train size {label!r} not in {layout.images_dir(npix)}; available: {available}"
        )
    # A smaller training set is the first N galaxies of a larger file.
    n = int(label)
    for cand in available:
        if cand == "all" or int(cand) >= n:
            return cand, n
    raise DataError(
        f"train size {n} exceeds every train file in {layout.images_dir(npix)} ({available})"
    )


def load_split(
    root: str | os.PathLike,
    *,
    npix: int,
    split: str,
    train_size: str | int | None = None,
    mmap: bool = True,
    drop_invalid: bool = False,
) -> Dataset:
    """Load one split of a seed-layout dataset with its metadata joined.

    Parameters
    ----------
    root : path
        The dataset folder (holding ``images/``, ``metadata/``, ``split/``).
    npix : int
        Image size (69 or 128 for the seed).
    split : {'train', 'val', 'test'}
    train_size : {'10000', '30000', 'all'} or int, optional
        For ``split='train'``: which file to read; an integer smaller than an
        existing file takes its first rows. Default: the largest available.
    mmap : bool
        Memory-map the images (default) rather than read them into memory.
    drop_invalid : bool
        By default any invalid galaxy (id missing from the metadata, duplicate
        id, non-finite M/L, M/L <= 0) raises :class:`DataError` naming the file and ids.
        With ``True`` those galaxies are dropped, a warning says how many, and
        ``Dataset.dropped`` counts them by reason.
    """
    layout = SeedLayout(root)
    _check_split(split)
    label, keep = (None, None)
    if split == "train":
        label, keep = _resolve_train_size(layout, npix, train_size)
    img_path = layout.image_path(npix, split, label)
    names_path = layout.names_path(npix, split, label)
    images = load_npy(img_path, mmap=mmap)
    validate_images(images, img_path, npix)
    ids = as_int64_ids(load_npy(names_path, mmap=False), names_path)
    if len(ids) != len(images):
        raise DataError(f"{names_path} has {len(ids)} ids but {img_path} has {len(images)} images")
    if keep is not None:
        if keep > len(ids):
            raise DataError(f"train size {keep} asked for but {img_path} holds only {len(ids)} galaxies")
        images, ids = images[:keep], ids[:keep]

    meta = read_metadata(layout.metadata_path)
    problems: dict[str, np.ndarray] = {}
    dup_mask = pd.Index(ids).duplicated()
    if dup_mask.any():
        problems["duplicate id"] = np.flatnonzero(dup_mask)
    missing_mask = ~np.isin(ids, meta.index.to_numpy())
    if missing_mask.any():
        problems["missing from metadata"] = np.flatnonzero(missing_mask)
    target = meta[TARGET_COLUMN].reindex(ids).to_numpy(dtype=np.float64)
    bad_target = ~missing_mask & ~np.isfinite(target)
    if bad_target.any():
        problems["non-finite M/L"] = np.flatnonzero(bad_target)
    with np.errstate(invalid="ignore"):
        not_positive = ~missing_mask & np.isfinite(target) & (target <= 0)
    if not_positive.any():
        problems["M/L <= 0"] = np.flatnonzero(not_positive)

    dropped: dict[str, int] = {}
    if problems:
        if not drop_invalid:
            reason, rows = next(iter(problems.items()))
            where = layout.metadata_path if "M/L" in reason else names_path
            raise DataError(
                f"{where}: {len(rows)} galaxies with {reason}: ids {_fmt_ids(ids[rows])}. "
                "Fix the files, or pass --drop-invalid to drop them."
            )
        bad = np.zeros(len(ids), dtype=bool)
        for reason, rows in problems.items():
            dropped[reason] = int(len(rows))
            bad[rows] = True
        log.warning(
            "%s: dropped %d of %d galaxies (%s)",
            img_path,
            int(bad.sum()),
            len(ids),
            ", ".join(f"{v} {k}" for k, v in dropped.items()),
        )
        keep_rows = np.flatnonzero(~bad)
        images = np.asarray(images[keep_rows])
        ids = ids[keep_rows]
    metadata = meta.loc[ids]
    return Dataset(images=images, ids=ids, metadata=metadata, npix=int(npix), split=split,
                   source=img_path, dropped=dropped)


# --------------------------------------------------------------------------- writing


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it into place on success.

    The file appears under its final name only when the block exits cleanly;
    on any error (a full disk included) the temporary file is removed, so no
    half-written output is ever left under the real name. The temporary name
    carries the process id, so two writers never share one, and starts with a
    dot, so a reader of the folder (Parquet datasets, globs) skips a file left
    by a killed writer. Its suffix is not the final one: a writer that picks
    the format from the name must be told it (``format=``).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"output {path} is an existing directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 2, **dumps_kw) -> Path:
    """Write ``obj`` as JSON (``json.dumps(obj, indent=indent, **dumps_kw)``) through :func:`atomic_output`."""
    import json

    return write_text(path, json.dumps(obj, indent=indent, **dumps_kw))


def write_frame(df: pd.DataFrame, path: str | os.PathLike, **kw) -> Path:
    """Write a DataFrame as CSV or Parquet (by the suffix) through :func:`atomic_output`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise DataError(f"output {path} must end in .csv or .parquet")
    with atomic_output(path) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, **kw)
        else:
            df.to_parquet(tmp, **kw)
    return path


def save_figure(fig, path: str | os.PathLike, **savefig_kw) -> Path:
    """``fig.savefig`` through :func:`atomic_output`, the format taken from ``path``'s suffix."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", **savefig_kw)
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(path: str | os.PathLike, *, inputs=(), overwrite: bool = False,
                 folder: bool = False) -> Path:
    """Refuse an output that would replace an input, or an existing one without ``overwrite``.

    Inputs are compared by resolved path and by inode, so a symlink or a
    hard link to an input is caught too. ``folder`` outputs (model folders,
    plot folders) must be folders when they exist; file outputs must not be.
    """
    path = Path(path)
    for src in inputs:
        if src is not None and _same_file(path, Path(src)):
            raise DataError(f"output {path} is the input {src}; refusing to overwrite an input. "
                            "Choose another --out")
    if path.exists():
        if folder and not path.is_dir():
            raise DataError(f"output {path} exists and is not a folder; choose another --out")
        if not folder and path.is_dir():
            raise DataError(f"output {path} is an existing directory; give a file name for --out")
        if not overwrite:
            raise DataError(f"output {path} already exists; pass --overwrite to replace it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise DataError(f"cannot write {path}: {parent} is not a directory")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``.NAME.lock`` beside ``path`` while writing it; a second writer is refused.

    The lock file holds the writer's process id. A lock left by a process
    that no longer runs (kill -9) is stale and taken over.
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid > 0 and _pid_alive(pid):
                raise DataError(
                    f"another featuremass process (pid {pid}) is writing {path}; wait for it to "
                    f"finish (or remove {lock} if no such process runs)"
                ) from None
            log.warning("removing the stale lock %s of process %d, which no longer runs", lock, pid)
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        break
    else:  # pragma: no cover - lost two races in a row
        raise DataError(f"cannot take the lock {lock} for {path}; try again")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


@contextmanager
def guarded_output(path: str | os.PathLike, *, inputs=(), overwrite: bool = False,
                   folder: bool = False) -> Iterator[Path]:
    """:func:`check_output`, then :func:`output_lock` for the duration of the block."""
    path = check_output(path, inputs=inputs, overwrite=overwrite, folder=folder)
    with output_lock(path):
        # checked again under the lock: another writer may have finished meanwhile
        check_output(path, inputs=inputs, overwrite=overwrite, folder=folder)
        yield path


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` to ``path`` via a temporary file and an atomic rename."""
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)
    return Path(path)


class NpyStreamWriter:
    """Write a large ``.npy`` chunk by chunk through a memory map, atomically.

    >>> with NpyStreamWriter(path, (n, 69, 69)) as out:   # doctest: +SKIP
    ...     out[i0:i1] = chunk

    The file appears under its final name only when the block exits cleanly.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype=np.float32):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._mm = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=dtype, shape=shape)

    def __enter__(self) -> np.ndarray:
        return self._mm

    def __exit__(self, exc_type, exc, tb) -> None:
        self._mm.flush()
        del self._mm
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def write_split(
    root: str | os.PathLike,
    *,
    npix: int,
    split: str,
    images: np.ndarray,
    ids: np.ndarray,
    train_size: str | int | None = None,
) -> tuple[Path, Path]:
    """Write one split's images and names in the seed layout (atomically)."""
    layout = SeedLayout(root)
    images = np.asarray(images, dtype=np.float32)
    validate_images(images, Path("<images>"), npix)
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) != len(images):
        raise DataError(f"{len(ids)} ids for {len(images)} images")
    label = None
    if split == "train":
        label = "all" if train_size is None else str(train_size)
    img = atomic_save_npy(layout.image_path(npix, split, label), images)
    names = atomic_save_npy(layout.names_path(npix, split, label), ids)
    return img, names


def write_metadata(root: str | os.PathLike, metadata: pd.DataFrame) -> Path:
    """Write ``metadata.tsv`` (index ``SDSS_ID``) atomically."""
    layout = SeedLayout(root)
    missing = [c for c in METADATA_COLUMNS if c not in metadata.columns]
    if missing:
        raise DataError(f"metadata lacks column(s) {missing}")
    df = metadata.copy()
    df.index = df.index.astype(np.int64)
    df.index.name = ID_COLUMN
    with atomic_output(layout.metadata_path) as tmp:
        df.to_csv(tmp, sep="\t", float_format="%.6g")
    return layout.metadata_path


def write_split_labels(root: str | os.PathLike, split: str, ids: np.ndarray) -> Path:
    """Write ``split/{split}_labels.txt``: one id per line."""
    path = SeedLayout(root).split_labels_path(split)
    with atomic_output(path) as tmp:
        np.savetxt(tmp, np.asarray(ids, dtype=np.int64), fmt="%d")
    return path
