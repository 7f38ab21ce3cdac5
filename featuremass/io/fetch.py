"""Download the workshop's SDSS cutouts into the seed layout, safely.

The URL list (``featuremass/data/urls.json``, a copy of the seed's
``data/images/urls.json``) maps ``"{npix}pix"`` to archive keys
``train10000``, ``train30000``, ``trainall`` and ``valtest``. An entry is a URL
string, or ``{"url": ..., "sha256": ...}`` to have the download checked.

Safety, in order:

1. the archive is downloaded to a temporary file, and its size is checked
   against ``Content-Length`` (and its SHA-256 when one is listed);
2. it is read in full as gzip + tar before anything is unpacked (a truncated
   or corrupt archive fails here);
3. every member is checked: absolute paths, ``..``, symbolic or hard links,
   devices and FIFOs, and any path landing outside the target folder are
   refused with :class:`~featuremass.errors.FetchError` naming the archive and
   the member;
4. files are unpacked into a temporary folder beside the target, every
   ``.npy`` is opened to check it, and only then are they moved into place
   with atomic renames. On any failure the temporary files are removed, so no
   half-written dataset remains.

Archives may hold the files at their top level or under a ``{npix}pix_npy/``
folder; both land in ``DATA/images/{npix}pix_npy/``.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path, PurePosixPath

from featuremass.errors import FetchError

log = logging.getLogger(__name__)

TRAIN_CHOICES = ("10000", "30000", "all")
_CHUNK = 1 << 20


def load_url_list(urls: str | os.PathLike | dict | None = None) -> dict:
    """The URL list: the bundled seed list, a JSON file, or a dict."""
    if isinstance(urls, dict):
        return urls
    try:
        if urls is None:
            text = resources.files("featuremass").joinpath("data", "urls.json").read_text(encoding="utf-8")
            where = "the bundled featuremass/data/urls.json"
        else:
            text = Path(urls).read_text(encoding="utf-8")
            where = str(urls)
        data = json.loads(text)
    except FileNotFoundError:
        raise FetchError(f"URL list not found: {urls}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise FetchError(f"cannot read the URL list {urls}: {exc}") from None
    if not isinstance(data, dict):
        raise FetchError(f"URL list {where} must be a JSON object of {{'69pix': {{...}}}}")
    return data


def _entry(urls: dict, npix: int, key: str) -> tuple[str, str | None]:
    group = urls.get(f"{int(npix)}pix")
    if not isinstance(group, dict) or key not in group:
        have = sorted(group) if isinstance(group, dict) else sorted(urls)
        raise FetchError(f"the URL list has no '{npix}pix' -> {key!r} archive (it has {have})")
    value = group[key]
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        return value["url"], value.get("sha256")
    raise FetchError(f"URL list entry '{npix}pix' -> {key!r} must be a URL or {{'url', 'sha256'}}: {value!r}")


def _expected_files(key: str) -> list[str]:
    if key == "valtest":
        return ["val_images.npy", "val_names.npy", "test_images.npy", "test_names.npy"]
    label = key.removeprefix("train")
    return [f"train_images_{label}.npy", f"train_names_{label}.npy"]


def _offline_message(url: str, reason: object, all_urls: list[str], target: Path) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    return (
        f"cannot reach {host} ({reason}). To install the data by hand, download "
        f"{' and '.join(all_urls)} on a connected machine and unpack each archive into "
        f"{target}/ (the .npy files directly in that folder), e.g. "
        f"tar -xzf ARCHIVE -C {target} --strip-components=1 if it holds a top folder"
    )


_UNREACHABLE_ERRNO = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def _is_unreachable(reason: object) -> bool:
    """DNS failure, refused/reset connection, timeout, no route: the host cannot be reached."""
    if isinstance(reason, socket.gaierror | ConnectionError | TimeoutError):
        return True
    return isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNO


def _download(url: str, dest: Path, *, timeout: float, progress: bool, sha256: str | None,
              all_urls: list[str], target: Path) -> None:
    """Stream ``url`` into ``dest``; raise FetchError on any network or size problem."""
    from tqdm.auto import tqdm

    name = PurePosixPath(urllib.parse.urlsplit(url).path).name or url
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) from a trusted list)
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            n = 0
            with open(dest, "wb") as fh, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not progress, leave=False,
            ) as bar:
                while chunk := resp.read(_CHUNK):
                    fh.write(chunk)
                    digest.update(chunk)
                    n += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise FetchError(f"downloading {url} failed: the server answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if _is_unreachable(exc.reason):
            raise FetchError(_offline_message(url, exc.reason, all_urls, target)) from None
        raise FetchError(f"downloading {url} failed: {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise FetchError(_offline_message(url, exc or "timed out", all_urls, target)) from None
    except OSError as exc:  # http.client.IncompleteRead and friends, disk full
        raise FetchError(f"downloading {url} failed: {exc}") from None
    if total is not None and n != total:
        raise FetchError(f"downloading {url} is incomplete: got {n} of {total} bytes")
    if sha256 is not None and digest.hexdigest().lower() != sha256.lower():
        raise FetchError(
            f"{name} from {url} fails its checksum: sha256 {digest.hexdigest()} != expected {sha256}"
        )


def _member_relpath(member: tarfile.TarInfo, archive: str, npix: int) -> PurePosixPath | None:
    """Safe relative destination of a member, or None for a directory entry; refuse the unsafe."""
    name = member.name
    if member.issym() or member.islnk():
        raise FetchError(f"{archive}: refusing link member {name!r} -> {member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise FetchError(f"{archive}: refusing special member {name!r} (device, FIFO or other non-file)")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise FetchError(f"{archive}: refusing member {name!r} with an absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FetchError(f"{archive}: refusing member {name!r}: it contains '..'")
    if parts and parts[0] == f"{int(npix)}pix_npy":
        parts = parts[1:]
    if member.isdir() or not parts:
        return None
    return PurePosixPath(*parts)


def _extract(archive_path: Path, archive: str, npix: int, staging: Path) -> list[PurePosixPath]:
    """Check the gzip stream and every member, then unpack regular files into ``staging``."""
    try:
        with gzip.open(archive_path, "rb") as gz:  # full read: truncation and CRC errors show here
            while gz.read(_CHUNK):
                pass
        with tarfile.open(archive_path, mode="r:gz") as tar:
            members = tar.getmembers()  # reads the whole stream: detects truncation
            plan = []
            for m in members:
                rel = _member_relpath(m, archive, npix)
                if rel is None:
                    continue
                dest = (staging / rel).resolve()
                if not dest.is_relative_to(staging.resolve()):
                    raise FetchError(f"{archive}: refusing member {m.name!r}: it would land outside {staging}")
                plan.append((m, rel, dest))
            if not plan:
                raise FetchError(f"{archive} holds no files")
            seen = set()
            for m, rel, dest in plan:
                if rel in seen:
                    raise FetchError(f"{archive}: member {m.name!r} appears twice")
                seen.add(rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                with src, open(dest, "wb") as fh:
                    shutil.copyfileobj(src, fh, _CHUNK)
                if dest.stat().st_size != m.size:
                    raise FetchError(f"{archive}: member {m.name!r} is truncated")
    except FetchError:
        raise
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError, ValueError) as exc:
        raise FetchError(f"{archive} is not a complete, valid .tar.gz archive: {exc}") from None
    return [rel for _, rel, _ in plan]


def _check_npy(path: Path, archive: str, rel: PurePosixPath) -> None:
    import numpy as np

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        del arr
    except (ValueError, OSError, EOFError) as exc:
        raise FetchError(f"{archive}: member {str(rel)!r} is not a valid .npy file: {exc}") from None


def fetch_seed(
    data_dir: str | os.PathLike,
    *,
    npix: int,
    train: str | None = "10000",
    valtest: bool = True,
    urls: str | os.PathLike | dict | None = None,
    timeout: float = 30,
    progress: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Download and unpack the seed's image archives into ``data_dir``.

    Parameters
    ----------
    data_dir : path
        Dataset root; files land in ``data_dir/images/{npix}pix_npy/``.
    npix : int
        69 or 128 (whatever the URL list offers).
    train : {'10000', '30000', 'all'} or None
        Which training archive; ``None`` fetches none.
    valtest : bool
        Also fetch the validation + test archive.
    urls : path or dict, optional
        URL list (default: the bundled copy of the seed's ``urls.json``).
    timeout : float
        Seconds before a silent connection counts as unreachable.
    progress : bool
        Show a tqdm progress bar per download.
    overwrite : bool
        Download again even when an archive's files are already in place.

    Returns
    -------
    list of Path
        The files written (or already present), in archive order.

    Raises
    ------
    FetchError
        Host unreachable (one line saying how to install the files by hand),
        HTTP error, truncated or corrupt archive, checksum mismatch, or an
        unsafe member. Nothing is left half-written.
    """
    if train is not None and str(train) not in TRAIN_CHOICES:
        raise FetchError(f"train must be one of {TRAIN_CHOICES} or None, got {train!r}")
    keys = ([f"train{train}"] if train is not None else []) + (["valtest"] if valtest else [])
    if not keys:
        raise FetchError("nothing to fetch: train=None and valtest=False")
    url_list = load_url_list(urls)
    entries = [(key, *_entry(url_list, npix, key)) for key in keys]
    target = Path(data_dir) / "images" / f"{int(npix)}pix_npy"
    all_urls = [u for _, u, _ in entries]

    created = [p for p in (target.parent.parent, target.parent) if not p.exists()]
    written: list[Path] = []
    try:
        _fetch_all(entries, target, npix, all_urls, written, timeout=timeout, progress=progress,
                   overwrite=overwrite)
    except BaseException:
        for folder in reversed(created):  # leave no empty folders behind a failed first fetch
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return written


def _fetch_all(entries, target: Path, npix: int, all_urls: list[str], written: list[Path], *,
               timeout: float, progress: bool, overwrite: bool) -> None:
    for key, url, sha256 in entries:
        expected = [target / f for f in _expected_files(key)]
        if not overwrite and all(p.is_file() for p in expected):
            log.info("%s already in place in %s; skipping (overwrite=True to fetch again)", key, target)
            written.extend(expected)
            continue
        archive = PurePosixPath(urllib.parse.urlsplit(url).path).name or f"{key}.tar.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".fetch-{int(npix)}pix-{key}-", dir=target.parent))
        try:
            download = work / "archive.tar.gz"
            staging = work / "files"
            staging.mkdir()
            _download(url, download, timeout=timeout, progress=progress, sha256=sha256,
                      all_urls=all_urls, target=target)
            rels = _extract(download, archive, npix, staging)
            for rel in rels:
                if rel.suffix == ".npy":
                    _check_npy(staging / rel, archive, rel)
            missing = [p.name for p in expected if PurePosixPath(p.name) not in rels]
            if missing:
                log.warning("%s did not contain the expected %s", archive, missing)
            target.mkdir(parents=True, exist_ok=True)
            for rel in rels:
                dest = target / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / rel, dest)
                written.append(dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
