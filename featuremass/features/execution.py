"""Where chunks of galaxies are measured: this process, a local pool, or Dask.

One chunk function, :func:`measure_chunk`, does the work everywhere: it reads
rows ``[start, stop)`` of an :class:`ImageSource` (an ``.npy`` memory map, an
HDF5 dataset, or a folder of ``.npy`` stamps), hashes their pixels, and calls
the measuring function it is given. The executors only decide *where* it
runs, so the local and the distributed paths cannot drift:

* :class:`LocalExecutor` -- this process for one worker or a single chunk,
  otherwise one process pool, started on first use and kept for the whole
  command;
* :class:`DaskExecutor` -- a running ``dask.distributed`` scheduler
  (``tcp://host:port``), or a ``LocalCluster`` it starts on 127.0.0.1.

Only the source's *address* travels to a worker (a path and a row range), never
the pixels, except for in-memory arrays on the local pool, which have no file
to read.

Workers end with their command: pool workers ignore SIGINT (the command
decides), and a watchdog thread in each worker exits when the command is gone
(killed with SIGKILL included). :func:`terminate_on_signals` turns SIGTERM into
the same clean unwinding as Ctrl-C, so finished chunks stay resumable.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from featuremass.errors import DataError, FeaturemassError, MissingDependencyError

log = logging.getLogger(__name__)

__all__ = ["DaskExecutor", "ImageSource", "LocalExecutor", "measure_chunk", "open_executor",
           "pixel_digest", "terminate_on_signals"]

#: Seconds between a worker's checks that its command is still alive.
PARENT_POLL_SECONDS = 0.5
SOURCE_KINDS = ("npy", "hdf5", "npy-dir", "array")


# --------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """Where a worker reads an ``(n, ny, nx)`` image stack, row range by row range.

    Build one with :meth:`npy`, :meth:`hdf5`, :meth:`npy_dir` or :meth:`of`.
    ``base`` is the global row number of the first row held (non-zero only for
    the windows of in-memory arrays and folders, see :meth:`window`).
    ``masks`` and ``weights`` (see :meth:`with_maps`) are stacks aligned with
    it row by row, read with the same rows and handed to the measuring function.
    """

    kind: str
    path: str | None = None
    key: str | None = None
    files: tuple[str, ...] = ()
    array: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    base: int = 0
    masks: ImageSource | None = None
    weights: ImageSource | None = None

    # -- constructors

    @classmethod
    def npy(cls, path) -> ImageSource:
        return cls("npy", path=str(Path(path).resolve()))

    @classmethod
    def hdf5(cls, path, key: str = "data") -> ImageSource:
        return cls("hdf5", path=str(Path(path).resolve()), key=key)

    @classmethod
    def npy_dir(cls, folder) -> ImageSource:
        """A folder of 2-D ``.npy`` stamps, one galaxy per file, in file-name order."""
        folder = Path(folder).resolve()
        files = tuple(sorted(p.name for p in folder.glob("*.npy")))
        if not files:
            raise DataError(f"{folder} holds no .npy files")
        return cls("npy-dir", path=str(folder), files=files)

    @classmethod
    def of(cls, images) -> ImageSource:
        """The source behind ``images``: its ``.npy`` file when it memory-maps rows 0..n-1 of one."""
        if isinstance(images, ImageSource):
            return images
        path = _npy_backing_file(images)
        if path is not None:
            return cls.npy(path)
        return cls("array", array=images)

    def with_maps(self, masks=None, weights=None) -> ImageSource:
        """This stack with per-pixel maps aligned with it (same n, ny, nx).

        ``masks``: True marks a pixel to ignore. ``weights``: the 1-sigma error
        of every pixel (statmorph's ``weightmap`` convention). Either may be
        anything :meth:`of` takes, or another :class:`ImageSource`.

        Raises
        ------
        DataError
            When a map's shape differs from the images', naming both.
        """
        shape = self.stack_shape()
        maps = {}
        for name, stack in (("masks", masks), ("weights", weights)):
            if stack is None:
                continue
            source = ImageSource.of(stack)
            if source.kind == "array" and np.ndim(source.array) != 3:
                source = ImageSource.of(np.asarray(source.array))
            map_shape = source.stack_shape()
            if map_shape != shape:
                raise DataError(
                    f"{name} {source.path or 'array'} has shape {map_shape}, but the images "
                    f"{self.path or 'array'} have shape {shape}: each map needs one "
                    "(ny, nx) plane per image, the same size")
            maps[name] = source
        return dataclasses.replace(self, **maps)

    # -- reading

    @property
    def shared(self) -> bool:
        """Whether a worker on another machine can read it and its maps (they live in files)."""
        return self.kind != "array" and all(m.shared for m in self._maps().values())

    def _maps(self) -> dict[str, ImageSource]:
        return {name: m for name, m in (("masks", self.masks), ("weights", self.weights))
                if m is not None}

    def read_maps(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """``{"masks": bool rows, "weights": float rows}`` of rows ``[start, stop)`` (those present)."""
        rows = {name: m.read(start, stop) for name, m in self._maps().items()}
        if "masks" in rows:
            rows["masks"] = rows["masks"].astype(bool)
        return rows

    def stack_shape(self) -> tuple[int, ...]:
        """``(n, ny, nx)`` of the whole stack, read from the file header only."""
        if self.kind == "array":
            return tuple(int(s) for s in np.shape(self.array))
        if self.kind == "npy":
            return tuple(int(s) for s in np.load(self.path, mmap_mode="r", allow_pickle=False).shape)
        if self.kind == "hdf5":
            import h5py

            try:
                with h5py.File(self.path, "r") as fh:
                    if self.key not in fh:
                        raise DataError(f"{self.path} has no dataset {self.key!r}; it holds {sorted(fh.keys())}")
                    return tuple(int(s) for s in fh[self.key].shape)
            except OSError as exc:
                raise DataError(f"cannot read HDF5 file {self.path}: {exc}") from None
        first = np.load(Path(self.path) / self.files[0], mmap_mode="r", allow_pickle=False)
        return (len(self.files), *(int(s) for s in first.shape))

    def describe(self) -> dict:
        """What the resume fingerprint records about the source (no pixels)."""
        described = {"kind": self.kind, "path": self.path, "key": self.key}
        for name, m in self._maps().items():
            described[name] = m.describe()
        return described

    def window(self, start: int, stop: int) -> ImageSource:
        """A source holding only rows ``[start, stop)`` (what is shipped to one task)."""
        maps = {name: m.window(start, stop) for name, m in self._maps().items()}
        if maps:
            return dataclasses.replace(dataclasses.replace(self, masks=None, weights=None)
                                       .window(start, stop), **maps)
        if self.kind == "array":
            rows = np.asarray(self.array[start - self.base:stop - self.base])
            return dataclasses.replace(self, array=rows, base=start)
        if self.kind == "npy-dir":
            return dataclasses.replace(self, files=self.files[start - self.base:stop - self.base],
                                       base=start)
        return self

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as an in-memory array."""
        lo, hi = start - self.base, stop - self.base
        if self.kind == "array":
            return np.asarray(self.array[lo:hi])
        if self.kind == "npy":
            return np.array(np.load(self.path, mmap_mode="r", allow_pickle=False)[lo:hi])
        if self.kind == "hdf5":
            import h5py

            with h5py.File(self.path, "r") as fh:
                return np.asarray(fh[self.key][lo:hi])
        if self.kind == "npy-dir":
            folder = Path(self.path)
            return np.stack([np.load(folder / name, allow_pickle=False) for name in self.files[lo:hi]])
        raise FeaturemassError(f"unknown image source kind {self.kind!r}; expected {SOURCE_KINDS}")


def _npy_backing_file(images) -> str | None:
    """Path of the .npy file that ``images`` memory-maps whole, or None.

    A view of a memory map (``stack[:100]``, ``stack[::2]``, ``stack[::-1]``)
    keeps the file name of its parent, so the name alone would make workers
    read rows the caller never passed: only a map of the whole file, with the
    file's own shape and strides, is read back from the file.
    """
    if not isinstance(images, np.memmap) or not getattr(images, "filename", None):
        return None
    try:
        full = np.load(images.filename, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if full.shape != images.shape or full.dtype != images.dtype or full.strides != images.strides:
        return None
    # the same shape and strides could still be another file's map under an old name
    nan = images.dtype.kind in "fc"
    if len(images) and not (
        np.array_equal(full[0], images[0], equal_nan=nan)
        and np.array_equal(full[len(images) - 1], images[-1], equal_nan=nan)
    ):
        return None
    return str(images.filename)


def pixel_digest(images: np.ndarray, *maps: np.ndarray) -> str:
    """BLAKE2b of a chunk's dtype, shape and pixel bytes, then of its maps' (what resume compares)."""
    h = hashlib.blake2b(digest_size=16)
    for stack in (images, *maps):
        arr = np.ascontiguousarray(stack)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


# --------------------------------------------------------------------------- the chunk function


def measure_chunk(source: ImageSource, start: int, stop: int, measure: Callable,
                  params: dict) -> tuple[int, str, np.ndarray]:
    """Read rows ``[start, stop)`` of ``source``, hash them, and measure them.

    ``measure(images, **params)`` returns one row per image; the source's
    maps, when it has them, come as ``masks=`` and ``weights=`` rows. The same
    call runs in this process, in a pool worker and on a Dask worker.

    Returns
    -------
    (start, digest, values)
        ``digest`` is :func:`pixel_digest` of exactly the pixels (and maps) measured.
    """
    images = source.read(start, stop)
    maps = source.read_maps(start, stop)
    digest = pixel_digest(images, *maps.values())
    with _single_threaded():
        values = measure(images, **params, **maps)
    return start, digest, values


def chunk_digest(source: ImageSource, start: int, stop: int) -> str:
    """:func:`pixel_digest` of rows ``[start, stop)`` (the resume check, run where the data is)."""
    return pixel_digest(source.read(start, stop), *source.read_maps(start, stop).values())


@contextlib.contextmanager
def _single_threaded():
    # Each worker is one core's worth of work; BLAS threads would oversubscribe.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    with threadpool_limits(1):
        yield


# --------------------------------------------------------------------------- workers end with their command


def _watch_parent(parent_pid: int, start_ppid: int) -> None:
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        # the direct parent changes when it dies (re-parented to init or a
        # subreaper); the command may be a grandparent (forkserver), so check it too
        if os.getppid() != start_ppid or not _pid_alive(parent_pid):
            os._exit(1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_parent_watch(parent_pid: int) -> None:
    threading.Thread(target=_watch_parent, args=(parent_pid, os.getppid()),
                     name="featuremass-parent-watch", daemon=True).start()


def _pool_worker_init(parent_pid: int) -> None:
    # Ctrl-C reaches the whole process group; the command decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a forked worker inherits the command's SIGTERM handler; the command's
    # terminate() must simply end it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _start_parent_watch(parent_pid)


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM into ``KeyboardInterrupt`` while the block runs (main thread only).

    The command then unwinds as on Ctrl-C: executors stop their workers and
    the chunks already written stay for a resumed run.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- executors


def _with_chunk(params: dict, chunk_params, start: int, stop: int) -> dict:
    return params if chunk_params is None else {**params, **chunk_params(start, stop)}

OnResult = Callable[[int, int, str, np.ndarray], None]


class LocalExecutor:
    """This process, or one process pool kept for the whole command.

    Parameters
    ----------
    n_jobs : int
        Worker processes; 1 measures in this process.
    """

    def __init__(self, n_jobs: int = 1):
        if int(n_jobs) < 1:
            raise FeaturemassError(f"n_jobs must be >= 1; got {n_jobs}")
        self.n_jobs = int(n_jobs)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    @property
    def n_workers(self) -> int:
        return self.n_jobs

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(abort=exc_type is not None)

    def _get_pool(self):
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.n_jobs, initializer=_pool_worker_init, initargs=(os.getpid(),))
        return self._pool

    def digests(self, source: ImageSource, chunks: Sequence[tuple[int, int]]) -> list[str]:
        return [chunk_digest(source, a, b) for a, b in chunks]

    def map_chunks(self, source: ImageSource, chunks: Sequence[tuple[int, int]], measure: Callable,
                   params: dict, on_result: OnResult,
                   chunk_params: Callable[[int, int], dict] | None = None) -> None:
        """Measure every ``(start, stop)`` chunk; ``on_result`` runs here as each one ends.

        ``chunk_params(start, stop)``, when given, adds that chunk's own
        arguments (per-galaxy inputs) to ``params``.
        """
        chunks = list(chunks)
        if self.n_jobs == 1 or len(chunks) <= 1:
            for a, b in chunks:
                _, digest, values = measure_chunk(source, a, b, measure,
                                                  _with_chunk(params, chunk_params, a, b))
                on_result(a, b, digest, values)
            return
        pool = self._get_pool()
        pending = list(chunks)
        running: dict[concurrent.futures.Future, tuple[int, int]] = {}
        # At most two chunks per worker in flight: in-memory stacks travel as
        # slices, so memory stays bounded by the chunk size, not the data size.
        while pending or running:
            while pending and len(running) < 2 * self.n_jobs:
                a, b = pending.pop(0)
                fut = pool.submit(measure_chunk, source.window(a, b), a, b, measure,
                                  _with_chunk(params, chunk_params, a, b))
                running[fut] = (a, b)
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                a, b = running.pop(fut)
                _, digest, values = fut.result()
                on_result(a, b, digest, values)

    def close(self, abort: bool = False) -> None:
        """Shut the pool down; with ``abort``, stop its workers now (running chunks are abandoned)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if not abort:
            pool.shutdown(wait=True)
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(timeout=5)


class DaskExecutor:
    """Chunks measured on a ``dask.distributed`` cluster.

    Parameters
    ----------
    address : str
        ``tcp://host:port`` of a running scheduler, or ``'local'`` to start a
        ``LocalCluster`` of ``n_workers`` single-threaded worker processes on
        127.0.0.1 (its HTTP endpoint on a free 127.0.0.1 port), closed with this executor.
    n_workers : int
        Workers of a local cluster (ignored for an address).
    connect_timeout : float
        Seconds to wait for the scheduler and for a first worker.
    """

    def __init__(self, address: str, n_workers: int = 2, *, connect_timeout: float = 20.0):
        try:
            import distributed
        except ImportError:
            raise MissingDependencyError(
                "--scheduler needs dask.distributed: pip install 'featuremass[dask]'") from None
        self.address = address
        self.cluster = None
        if address == "local":
            self.cluster = distributed.LocalCluster(
                n_workers=int(n_workers), threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,
            )
            # its worker processes exit by themselves when this process dies
            # (distributed's AsyncProcess watches a pipe from the parent)
            self.client = distributed.Client(self.cluster)
        else:
            if not address.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
                raise FeaturemassError(
                    f"--scheduler must be 'local' or a scheduler address like tcp://127.0.0.1:8786; "
                    f"got {address!r}")
            try:
                self.client = distributed.Client(address, timeout=connect_timeout)
            except (OSError, TimeoutError) as exc:
                raise FeaturemassError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        try:
            self.client.wait_for_workers(1, timeout=connect_timeout)
        except (OSError, TimeoutError):
            self.close()
            raise FeaturemassError(
                f"no Dask worker joined the scheduler at {address} within {connect_timeout:.0f} s") from None

    @property
    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def digests(self, source: ImageSource, chunks: Sequence[tuple[int, int]]) -> list[str]:
        self._check_shared(source)
        futures = [self.client.submit(chunk_digest, source, a, b, pure=False) for a, b in chunks]
        try:
            return self.client.gather(futures)
        except Exception as exc:  # noqa: BLE001 - distributed raises comm, timeout and cancel errors
            raise self._failure(exc, 0, len(chunks)) from None

    def _check_shared(self, source: ImageSource) -> None:
        if not source.shared:
            raise FeaturemassError(
                "Dask workers read the images from shared storage: give a .npy file, an HDF5 "
                "file or a folder of .npy stamps, not an in-memory array")

    def map_chunks(self, source: ImageSource, chunks: Sequence[tuple[int, int]], measure: Callable,
                   params: dict, on_result: OnResult,
                   chunk_params: Callable[[int, int], dict] | None = None) -> None:
        """Measure every chunk on the cluster; ``on_result`` runs here as each one ends.

        A worker lost mid-run is replaced and its chunks rerun by Dask; a lost
        scheduler raises :class:`FeaturemassError` after the chunks already
        handed to ``on_result``.
        """
        from distributed import as_completed

        self._check_shared(source)
        chunks = list(chunks)
        if not chunks:
            return
        # params go with each task (a few hundred bytes): scattered data would
        # be lost for good with the worker holding it
        futures = {
            self.client.submit(measure_chunk, source.window(a, b), a, b, measure,
                               _with_chunk(params, chunk_params, a, b), pure=False): (a, b)
            for a, b in chunks
        }
        n_done = 0
        try:
            for fut in as_completed(futures):
                a, b = futures[fut]
                _, digest, values = fut.result()
                on_result(a, b, digest, values)
                n_done += 1
        except (KeyboardInterrupt, FeaturemassError):
            raise
        except Exception as exc:  # noqa: BLE001 - distributed raises comm, timeout and cancel errors
            raise self._failure(exc, n_done, len(chunks)) from None
        finally:
            for fut in futures:
                fut.release()

    def _failure(self, exc: BaseException, n_done: int, n_total: int) -> FeaturemassError:
        lost = self.client.status not in ("running", "connecting") or _is_comm_error(exc)
        what = (f"lost the Dask scheduler at {self.address}" if lost
                else f"a Dask task failed ({type(exc).__name__}: {exc})")
        return FeaturemassError(
            f"{what}; {n_done} of {n_total} chunks were finished and are kept: run the same "
            "command again to resume")

    def close(self, abort: bool = False) -> None:
        # closing a client whose scheduler is gone cancels its reconnection
        # attempts, which distributed logs as an error with a traceback; the
        # command has already said what happened in one line
        quiet = _DropRecords()
        client_log = logging.getLogger("distributed.client")
        client_log.addFilter(quiet)
        try:
            for obj in (getattr(self, "client", None), self.cluster):
                if obj is None:
                    continue
                with contextlib.suppress(Exception):
                    obj.close()
        finally:
            client_log.removeFilter(quiet)
        self.cluster = None


class _DropRecords(logging.Filter):
    def filter(self, record):
        return False


def _is_comm_error(exc: BaseException) -> bool:
    from distributed.comm.core import CommClosedError

    return isinstance(exc, CommClosedError | OSError | TimeoutError
                      | concurrent.futures.CancelledError) or "CancelledError" in type(exc).__name__


@contextlib.contextmanager
def open_executor(n_jobs: int = 1, scheduler: str | None = None) -> Iterator[LocalExecutor | DaskExecutor]:
    """The executor of one command: local (default) or Dask, closed on exit."""
    executor = LocalExecutor(n_jobs) if scheduler is None else DaskExecutor(scheduler, n_jobs)
    try:
        yield executor
    except BaseException:
        executor.close(abort=True)
        raise
    executor.close()
