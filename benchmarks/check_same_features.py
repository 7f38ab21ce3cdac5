"""Check that two revisions extract the same features, through ``featuremass extract``.

A speed change must not move a number. For every input below, both revisions
run ``featuremass extract`` (one process each) and the two feature tables are
compared column by column: the largest relative difference
``|a - b| / |a|`` (0 where equal), the NaN pattern, and every non-float
column (``galaxy_id``, ``flag``, stretch codes) exactly::

    python benchmarks/check_same_features.py --old main \\
        --data SURVEY:69,128:auto,linear,seed-log OTHER:69:auto --name same_features.md

Each ``--data`` item is ``FOLDER:NPIX[,NPIX]:SCALE[,SCALE]`` with FOLDER a
simulated survey in the seed layout (``featuremass simulate``); its test
split is measured at each size and scale. ``linear`` reads the survey's
linear-flux stack (``images/{npix}pix_linear/test_linear.npy``) with
``--scale linear``; any other scale reads the stored (stretched) stamps with
that ``--scale``. The old revision is checked out in a temporary ``git
worktree``; the new one is this checkout (uncommitted changes included).
Each tree runs all its extractions in one process (``featuremass.cli.main``
called once per table), so start-up and numba compilation are paid once.
``--old-tables DIR`` reuses tables already extracted by the old revision
(``DIR/<survey>_<npix>_<scale>.parquet``, the same ``featuremass extract``
arguments) instead of running it again.
Writes ``reports/<name>`` with the command, machine and date. Exit status 0
when every table agrees within ``--rtol`` (default 1e-9), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass.report.provenance import provenance_markdown

REPO = Path(__file__).resolve().parents[1]


def _parse_item(item: str):
    folder, sizes, scales = item.rsplit(":", 2)
    return Path(folder), [int(s) for s in sizes.split(",")], scales.split(",")


def _extract_argv(folder: Path, npix: int, scale: str, out: Path) -> list[str]:
    if scale == "linear":
        src = ["--images", str(folder / "images" / f"{npix}pix_linear" / "test_linear.npy"), "--scale", "linear"]
    else:
        src = ["--data", str(folder), "--npix", str(npix), "--split", "test", "--scale", scale]
    return ["extract", *src, "--out", str(out), "-j", "1", "--overwrite", "--no-resume"]


_RUN_ALL = """
import json, sys
from featuremass.cli import main
for argv in json.loads(sys.argv[1]):
    rc = main(argv)
    if rc:
        sys.exit(rc)
"""


def _extract_all(tree: Path, argvs: list[list[str]]) -> None:
    """Every extraction of one tree in one process."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", _RUN_ALL, json.dumps(argvs)], env=env, cwd=tree, check=True,
                   capture_output=True)


def compare_tables(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, str, list[str]]:
    """(largest relative difference over float columns, its column, problems) of two feature tables."""
    problems = []
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return float("inf"), "", [f"shapes differ: {a.shape} vs {b.shape}"]
    worst, where = 0.0, ""
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind != "f":
            if not np.array_equal(x, y):
                problems.append(f"{col}: {int(np.sum(x != y))} rows differ")
            continue
        nx, ny = np.isnan(x), np.isnan(y)
        if not np.array_equal(nx, ny):
            problems.append(f"{col}: NaN pattern differs in {int(np.sum(nx != ny))} rows")
        both = ~nx & ~ny
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(x[both] == y[both], 0.0, np.abs(x[both] - y[both]) / np.abs(x[both]))
        if rel.size and rel.max() > worst:
            worst, where = float(rel.max()), col
    return worst, where, problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", default="main", help="revision to compare with (default main)")
    p.add_argument("--old-tables", type=Path, default=None,
                   help="tables the old revision already extracted (DIR/<survey>_<npix>_<scale>.parquet)")
    p.add_argument("--data", nargs="+", required=True, help="FOLDER:NPIX[,NPIX]:SCALE[,SCALE] items")
    p.add_argument("--rtol", type=float, default=1e-9)
    p.add_argument("--out", type=Path, default=REPO / "reports")
    p.add_argument("--name", default="same_features.md")
    args = p.parse_args(argv)
    provenance = provenance_markdown(None if argv is None else [f"benchmarks/{Path(__file__).name}", *argv])
    old_sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.old], check=True,
                             capture_output=True, text=True).stdout.strip()
    new_sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=True,
                             capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], check=True,
                           capture_output=True, text=True).stdout.strip()
    jobs = [(folder, npix, scale) for folder, sizes, scales in map(_parse_item, args.data)
            for npix in sizes for scale in scales]
    rows, all_ok = [], True
    with tempfile.TemporaryDirectory(prefix="featuremass-same-") as tmp:
        def table(key, folder, npix, scale):
            return Path(tmp) / key / f"{folder.name}_{npix}_{scale}.parquet"

        for key in ("old", "new"):
            (Path(tmp) / key).mkdir()

        _extract_all(REPO, [_extract_argv(f, n, s, table("new", f, n, s)) for f, n, s in jobs])
        if args.old_tables is None:
            old_tree = Path(tmp) / "old-tree"  # not "old": removing the worktree would take the tables
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old_tree), args.old],
                           check=True, capture_output=True)
            try:
                _extract_all(old_tree, [_extract_argv(f, n, s, table("old", f, n, s)) for f, n, s in jobs])
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)],
                               check=False, capture_output=True)
        for folder, npix, scale in jobs:
            old = (table("old", folder, npix, scale) if args.old_tables is None
                   else args.old_tables / f"{folder.name}_{npix}_{scale}.parquet")
            tables = [pd.read_parquet(old), pd.read_parquet(table("new", folder, npix, scale))]
            worst, col, problems = compare_tables(*tables)
            ok = not problems and worst <= args.rtol
            all_ok &= ok
            rows.append(f"| {folder.name} | {npix} | {scale} | {len(tables[0])} | {tables[0].shape[1]} "
                        f"| {worst:.3g}{f' ({col})' if col else ''} "
                        f"| {'; '.join(problems) if problems else 'none'} | {'yes' if ok else '**no**'} |")
            print(rows[-1], flush=True)
    lines = ["# Same features: two revisions through `featuremass extract`", "", provenance,
             f"- old: `{args.old}` ({old_sha})"
             + ("" if args.old_tables is None else f", tables extracted earlier into `{args.old_tables}`")
             + f"; new: this checkout at {new_sha}" + (" with uncommitted changes" if dirty else ""),
             f"- tolerance: relative difference <= {args.rtol:g} on every float column; NaN pattern and every "
             "other column (galaxy_id, flag, stretch columns) identical", "",
             "| survey | npix | scale | rows | columns | largest relative difference | other differences | same |",
             "|---|---|---|---|---|---|---|---|", *rows, "",
             f"**{'Every table agrees.' if all_ok else 'Some tables differ.'}**", ""]
    from featuremass.io.layout import atomic_output

    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out / args.name) as tmp_path:
        tmp_path.write_text("\n".join(lines))
    print(f"wrote {args.out / args.name}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
