"""fetch_seed against a local HTTP server on 127.0.0.1 serving archives built here."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading

import numpy as np
import pytest

from featuremass.errors import FetchError
from featuremass.io.fetch import fetch_seed, load_url_list
from featuremass.io.layout import load_split, write_metadata

NPIX = 8


def _npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _add(tar, name, data: bytes = b"", **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if data else None)


def _archive(path, members):
    """members: list of (name, bytes) or (name, bytes, {tarinfo attrs})."""
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            _add(tar, m[0], m[1], **(m[2] if len(m) > 2 else {}))
    return path


def _split_members(prefix, split, n, start, label=None):
    stem = f"{split}_{{}}" + (f"_{label}" if label else "")
    rng = np.random.default_rng(start)
    images = rng.uniform(-1, 1, (n, NPIX, NPIX)).astype(np.float32)
    ids = np.arange(start, start + n, dtype=np.int64)
    return [
        (prefix + stem.format("images") + ".npy", _npy_bytes(images)),
        (prefix + stem.format("names") + ".npy", _npy_bytes(ids)),
    ]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Serve a folder of archives on an ephemeral 127.0.0.1 port; shut down afterwards."""
    root = tmp_path_factory.mktemp("served")
    # Good archives: train files at the top level, val/test under "8pix_npy/".
    _archive(root / "good_train.tar.gz", _split_members("", "train", 6, 100, label="10000"))
    _archive(root / "good_valtest.tar.gz",
             [("8pix_npy", b"", {"type": tarfile.DIRTYPE, "mode": 0o755})]
             + _split_members("8pix_npy/", "val", 3, 200) + _split_members("./8pix_npy/", "test", 4, 300))
    ok = _split_members("", "train", 2, 1, label="10000")
    _archive(root / "dotdot.tar.gz", ok + [("../evil.npy", b"x")])
    _archive(root / "nested_dotdot.tar.gz", ok + [("8pix_npy/sub/../../../evil.npy", b"x")])
    _archive(root / "absolute.tar.gz", ok + [("/tmp/featuremass_evil.npy", b"x")])
    _archive(root / "symlink.tar.gz",
             ok + [("link.npy", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})])
    _archive(root / "hardlink.tar.gz",
             ok + [("hard.npy", b"", {"type": tarfile.LNKTYPE, "linkname": "train_images_10000.npy"})])
    _archive(root / "device.tar.gz", ok + [("dev.npy", b"", {"type": tarfile.CHRTYPE})])
    raw = (root / "good_train.tar.gz").read_bytes()
    (root / "truncated.tar.gz").write_bytes(raw[: len(raw) // 2])
    (root / "notgzip.tar.gz").write_bytes(b"<html>Access denied</html>")
    _archive(root / "badnpy.tar.gz", [("train_images_10000.npy", b"\x93NUMPY garbage"),
                                      ("train_names_10000.npy", _npy_bytes(np.arange(2)))])

    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _urls(tmp_path, base, train="good_train.tar.gz", valtest="good_valtest.tar.gz", **extra):
    entry = {"train10000": f"{base}/{train}", "valtest": f"{base}/{valtest}", **extra}
    path = tmp_path / "urls.json"
    path.write_text(json.dumps({f"{NPIX}pix": entry}))
    return path


def _leftovers(data_dir):
    """Anything fetch may have left behind: temp folders or files."""
    images = data_dir / "images"
    if not images.exists():
        return []
    return [p for p in images.rglob("*") if p.name.startswith(".fetch") or p.suffix == ".partial"]


def _assert_nothing_written(data_dir):
    """A failed fetch into a fresh folder leaves not even empty folders."""
    assert _leftovers(data_dir) == []
    assert not data_dir.exists()


def test_bundled_url_list_matches_the_seed():
    urls = load_url_list()
    assert set(urls) == {"69pix", "128pix"}
    for group in urls.values():
        assert set(group) == {"train10000", "train30000", "trainall", "valtest"}
        assert all(u.startswith("https://") and u.endswith(".tar.gz") for u in group.values())


def test_good_archives_land_in_the_seed_layout(tmp_path, server):
    base, _ = server
    data = tmp_path / "data"
    written = fetch_seed(data, npix=NPIX, train="10000", urls=_urls(tmp_path, base), timeout=5)
    target = data / "images" / f"{NPIX}pix_npy"
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["train_images_10000.npy", "train_names_10000.npy", "val_images.npy", "val_names.npy",
         "test_images.npy", "test_names.npy"]
    )
    assert set(written) == set(target.iterdir())
    assert np.load(target / "train_images_10000.npy").shape == (6, NPIX, NPIX)
    assert np.load(target / "test_names.npy").tolist() == [300, 301, 302, 303]
    assert _leftovers(data) == []
    # The fetched files load through the normal loader once metadata exists.
    import pandas as pd

    ids = np.r_[np.arange(100, 106), np.arange(200, 203), np.arange(300, 304)]
    write_metadata(data, pd.DataFrame({"M/L": 1.0, "L_g": 1.0, "distance_Mpc": 1.0, "galsize_kpc": 1.0},
                                      index=pd.Index(ids, name="SDSS_ID")))
    assert len(load_split(data, npix=NPIX, split="val")) == 3
    # A second call finds the files in place and downloads nothing.
    again = fetch_seed(data, npix=NPIX, train="10000", urls={f"{NPIX}pix": {
        "train10000": f"{base}/missing.tar.gz", "valtest": f"{base}/missing.tar.gz"}})
    assert set(again) == set(written)


def test_checksum(tmp_path, server):
    base, root = server
    good = hashlib.sha256((root / "good_train.tar.gz").read_bytes()).hexdigest()
    urls = {f"{NPIX}pix": {"train10000": {"url": f"{base}/good_train.tar.gz", "sha256": good}}}
    fetch_seed(tmp_path / "ok", npix=NPIX, train="10000", valtest=False, urls=urls)
    urls[f"{NPIX}pix"]["train10000"]["sha256"] = "0" * 64
    with pytest.raises(FetchError, match=r"good_train\.tar\.gz .*fails its checksum"):
        fetch_seed(tmp_path / "bad", npix=NPIX, train="10000", valtest=False, urls=urls)
    _assert_nothing_written(tmp_path / "bad")


@pytest.mark.parametrize(
    "archive, message",
    [
        ("dotdot.tar.gz", r"dotdot\.tar\.gz: refusing member '\.\./evil\.npy': it contains '\.\.'"),
        ("nested_dotdot.tar.gz", r"nested_dotdot\.tar\.gz: refusing member .*it contains '\.\.'"),
        ("absolute.tar.gz", r"absolute\.tar\.gz: refusing member '/tmp/featuremass_evil\.npy' with an absolute path"),
        ("symlink.tar.gz", r"symlink\.tar\.gz: refusing link member 'link\.npy'"),
        ("hardlink.tar.gz", r"hardlink\.tar\.gz: refusing link member 'hard\.npy'"),
        ("device.tar.gz", r"device\.tar\.gz: refusing special member 'dev\.npy'"),
        ("truncated.tar.gz", r"truncated\.tar\.gz is not a complete, valid \.tar\.gz archive"),
        ("notgzip.tar.gz", r"notgzip\.tar\.gz is not a complete, valid \.tar\.gz archive"),
        ("badnpy.tar.gz", r"badnpy\.tar\.gz: member 'train_images_10000\.npy' is not a valid \.npy"),
    ],
)
def test_bad_archives_are_refused_and_leave_nothing(tmp_path, server, archive, message):
    base, _ = server
    data = tmp_path / "data"
    with pytest.raises(FetchError, match=message):
        fetch_seed(data, npix=NPIX, train="10000", valtest=False,
                   urls=_urls(tmp_path, base, train=archive), timeout=5)
    _assert_nothing_written(data)
    assert not (tmp_path / "evil.npy").exists()
    assert not (data / "images" / "evil.npy").exists()


def test_failure_in_second_archive_keeps_first_complete(tmp_path, server):
    base, _ = server
    data = tmp_path / "data"
    with pytest.raises(FetchError, match="refusing"):
        fetch_seed(data, npix=NPIX, train="10000", urls=_urls(tmp_path, base, valtest="symlink.tar.gz"))
    target = data / "images" / f"{NPIX}pix_npy"
    assert sorted(p.name for p in target.iterdir()) == ["train_images_10000.npy", "train_names_10000.npy"]
    assert _leftovers(data) == []


def test_http_404(tmp_path, server):
    base, _ = server
    with pytest.raises(FetchError, match=r"missing\.tar\.gz failed: the server answered HTTP 404"):
        fetch_seed(tmp_path / "d", npix=NPIX, train="10000", valtest=False,
                   urls=_urls(tmp_path, base, train="missing.tar.gz"), timeout=5)
    _assert_nothing_written(tmp_path / "d")


def test_unreachable_host_gives_one_clear_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    with pytest.raises(FetchError) as err:
        fetch_seed(data, npix=NPIX, train="10000", urls=_urls(tmp_path, base), timeout=2)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot reach 127.0.0.1:{port}")
    assert f"{base}/good_train.tar.gz" in msg and f"{base}/good_valtest.tar.gz" in msg
    assert str(data / "images" / f"{NPIX}pix_npy") in msg
    _assert_nothing_written(data)


def test_bad_requests(tmp_path):
    with pytest.raises(FetchError, match="train must be one of"):
        fetch_seed(tmp_path, npix=NPIX, train="500")
    with pytest.raises(FetchError, match="nothing to fetch"):
        fetch_seed(tmp_path, npix=NPIX, train=None, valtest=False)
    with pytest.raises(FetchError, match=r"no '64pix' -> 'train10000' archive"):
        fetch_seed(tmp_path, npix=64, train="10000")
    with pytest.raises(FetchError, match="URL list not found"):
        fetch_seed(tmp_path, npix=NPIX, urls=tmp_path / "nope.json")
