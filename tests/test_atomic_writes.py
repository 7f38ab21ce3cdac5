"""Every file featuremass writes appears whole or not at all.

A file is written through :func:`featuremass.io.layout.atomic_output` (or one
of its helpers ``write_text``, ``write_json``, ``write_frame``,
``save_figure``), or inside a folder that is itself moved into place whole
(the model store, the simulated survey, the downloaded archives). This test
reads the package's source and finds every call that writes a file: it must
sit inside a ``with atomic_output(...)`` block, write to an in-memory buffer,
or be one of the few places listed below, each with the reason it is safe.
A new raw write anywhere else fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "featuremass"

#: Methods that write a file named by their first argument (or by ``self`` for
#: ``write_text``/``write_bytes`` on a path).
WRITE_METHODS = {"to_csv", "to_parquet", "to_json", "to_hdf", "to_feather", "savefig",
                 "write_text", "write_bytes", "write_table", "writeto", "savez",
                 "savez_compressed", "save_weights", "open_memmap"}
#: ``module.function`` calls that write or move files.
WRITE_FUNCTIONS = {("np", "save"), ("numpy", "save"), ("json", "dump"), ("os", "replace"),
                   ("os", "rename"), ("shutil", "move"), ("shutil", "copy"), ("shutil", "copyfile"),
                   ("shutil", "copy2"), ("shutil", "copytree")}
#: In-memory targets: nothing on disk to tear.
BUFFERS = {"buf", "buffer", "io.BytesIO", "BytesIO", "StringIO"}

#: (module, function) -> why its raw writes are safe. Keep it short.
ALLOWED = {
    ("io/layout.py", "atomic_output"): "the one temp-then-rename every file write goes through",
    ("io/layout.py", "NpyStreamWriter.__init__"): "the memmap is written under a .partial name...",
    ("io/layout.py", "NpyStreamWriter.__exit__"): "...and renamed into place when it is complete",
    ("io/layout.py", "output_lock"): "the lock file: created exclusively, holds only a pid",
    ("models/store.py", "stage"): "the sidecar, last into the store's staging folder",
    ("models/store.py", "save_model.write_files"): "into the store's staging folder",
    ("models/store.py", "save"): "the store's atomic folder save: the staging folder renamed whole",
    ("models/hybrid.py", "HybridRegressor.save.write_files"): "into the store's staging folder",
    ("models/cnn_training.py", "TrainingBackup._write"):
        "Keras picks the format from the .weights.h5 name; the state file, written last and "
        "atomically, names only complete files",
    ("models/dask_gbm.py", "predict_partitions"):
        "Dask writes a folder of parts under a temporary name, renamed into place whole",
    ("io/simulate/_survey.py", "_swap_into_place"): "the survey folder is built aside, renamed whole",
    ("io/simulate/_survey.py", "_write_truth"): "into the survey's staging folder, renamed whole",
    ("io/fetch.py", "_download"): "the archive is downloaded into a scratch folder",
    ("io/fetch.py", "_extract"): "members are unpacked into a staging folder and checked...",
    ("io/fetch.py", "_fetch_all"): "...then each complete file is renamed into place",
}


def _name(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _name(node.func) + "()"
    return type(node).__name__


def _is_atomic_with(node: ast.With) -> bool:
    return any(isinstance(item.context_expr, ast.Call)
               and _name(item.context_expr.func).split(".")[-1] == "atomic_output"
               for item in node.items)


def _writes(call: ast.Call) -> str | None:
    """What ``call`` writes with (``'to_csv'``, ``'os.replace'``, ``'open(w)'``), or None."""
    func = call.func
    target = call.args[0] if call.args else None
    if target is not None and _name(target) in BUFFERS:
        return None
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name) and (func.value.id, func.attr) in WRITE_FUNCTIONS:
            return f"{func.value.id}.{func.attr}"
        if func.attr in WRITE_METHODS:
            return func.attr
        if func.attr == "save" and any(k.arg == "format" for k in call.keywords):
            return "save"  # PIL images
        if func.attr == "File" and len(call.args) > 1 and isinstance(call.args[1], ast.Constant) \
                and str(call.args[1].value)[:1] in "wax":
            return "h5py.File(w)"
    if isinstance(func, ast.Name) and func.id == "open":
        mode = call.args[1] if len(call.args) > 1 else next(
            (k.value for k in call.keywords if k.arg == "mode"), None)
        if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
            return "open(w)"
    if isinstance(func, ast.Attribute) and func.attr == "fdopen":
        return "os.fdopen"
    return None


def raw_writes(source: str, module: str):
    """``(module, function, line, what)`` of every write outside an atomic block."""
    found = []

    def visit(node, scope, atomic):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope = (*scope, node.name)
        if isinstance(node, ast.With) and _is_atomic_with(node):
            atomic = True
        if isinstance(node, ast.Call) and not atomic:
            what = _writes(node)
            if what:
                found.append((module, ".".join(scope), node.lineno, what))
        for child in ast.iter_child_nodes(node):
            visit(child, scope, atomic)

    visit(ast.parse(source), (), False)
    return found


def _all_raw_writes():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        found += raw_writes(path.read_text(), module)
    return found


def test_every_write_is_atomic():
    offenders = [f"{m}:{line} {fn}: {what}" for m, fn, line, what in _all_raw_writes()
                 if (m, fn) not in ALLOWED]
    assert offenders == [], "write these through featuremass.io.layout.atomic_output"


def test_every_exception_is_still_needed():
    used = {(m, fn) for m, fn, _, _ in _all_raw_writes()}
    assert sorted(set(ALLOWED) - used) == []


def test_the_scan_sees_raw_writes_and_accepts_atomic_ones():
    source = '''
import json, os
import numpy as np
from featuremass.io.layout import atomic_output

def bad(df, fig, path, obj):
    df.to_csv(path)
    fig.savefig(path)
    np.save(path, obj)
    with open(path, "w") as fh:
        json.dump(obj, fh)
    path.write_text("x")
    os.replace(path, path)

def good(df, fig, path, buf):
    with atomic_output(path) as tmp:
        df.to_parquet(tmp)
        with open(tmp, "wb") as fh:
            np.save(fh, 1)
    fig.savefig(buf, format="png")
    with open(path) as fh:
        fh.read()
'''
    found = [(fn, what) for _, fn, _, what in raw_writes(source, "x.py")]
    assert found == [("bad", "to_csv"), ("bad", "savefig"), ("bad", "np.save"), ("bad", "open(w)"),
                     ("bad", "json.dump"), ("bad", "write_text"), ("bad", "os.replace")]
