"""Check that two revisions give the same numbers, end to end through the CLI.

A refactor must not move a number. This script checks out two revisions
(default: ``303064b`` and the working tree, uncommitted changes included),
and runs on each, through the command line::

    featuremass simulate    (the same survey: N train / N test at NPIX px, one seed)
    featuremass extract     (train and test splits of the *first* revision's survey)
    featuremass train       (LightGBM, seed 0, one thread)
    featuremass evaluate    (--json, bootstrap intervals)
    featuremass importance  (gain, permutation, SHAP, families)

then compares the simulated surveys (bytes of every stamp file, the truth
table), the feature tables (largest absolute difference per column, NaN
pattern), the metrics and the importance tables and rankings. Both
revisions measure the same stamps, so a difference in the features is the
feature code's, not the simulator's::

    nice -n 5 python benchmarks/check_same_numbers.py --old 303064b

writes ``reports/same_numbers.md`` (with command, machine and date). About
3 minutes of one core at the default size. A revision other than the working
tree is checked out in a temporary ``git worktree`` under ``--work`` and
removed afterwards. Exit status 0 whether or not the numbers agree (the
report says); 1 when a step fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WORKTREE = "WORKTREE"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", default="303064b", help="first revision, any git revision (default 303064b)")
    p.add_argument("--new", default=WORKTREE,
                   help=f"second revision (default {WORKTREE}: this checkout, uncommitted changes included)")
    p.add_argument("--n-train", type=int, default=600, help="training galaxies (default 600)")
    p.add_argument("--n-test", type=int, default=200, help="test galaxies (default 200)")
    p.add_argument("--npix", type=int, default=69, help="stamp size in pixels (default 69)")
    p.add_argument("--seed", type=int, default=3, help="survey seed (default 3)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="worker processes for simulate/extract (default 1)")
    p.add_argument("--work", type=Path, default=REPO / "bench-work" / "same_numbers",
                   help="scratch folder (default bench-work/same_numbers, emptied first)")
    p.add_argument("--report", type=Path, default=REPO / "reports" / "same_numbers.md",
                   help="report to write (default reports/same_numbers.md)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- running a revision


class Revision:
    """One checked-out revision and a way to run its CLI."""

    def __init__(self, rev: str, work: Path):
        self.rev = rev
        if rev == WORKTREE:
            self.tree = REPO
            self.sha = _git("rev-parse", "HEAD").strip()
            dirty = _git("status", "--porcelain", "--untracked-files=no").strip()
            branch = _git("rev-parse", "--abbrev-ref", "HEAD").strip()
            self.label = (f"working tree of {branch} at {self.sha[:10]}"
                          + (" (with uncommitted changes)" if dirty else ""))
            self.temporary = False
        else:
            self.sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()
            self.tree = Path(tempfile.mkdtemp(prefix=f"tree-{self.sha[:10]}-", dir=work))
            _git("worktree", "add", "--detach", str(self.tree), self.sha)
            self.label = f"{rev} = {self.sha[:10]}"
            self.temporary = True
        self.times: dict[str, float] = {}
        self._help: dict[str, str] = {}

    def close(self) -> None:
        if self.temporary:
            _git("worktree", "remove", "--force", str(self.tree))

    def cli(self, verb: str, *args: str, step: str | None = None) -> str:
        """Run ``featuremass VERB ARGS`` from this revision's tree; its stdout."""
        code = "import sys; from featuremass.cli import main; sys.argv[0] = 'featuremass'; sys.exit(main())"
        env = {**os.environ, "PYTHONPATH": str(self.tree), "TF_CPP_MIN_LOG_LEVEL": "3"}
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", code, verb, *args], cwd=self.tree, env=env,
                             capture_output=True, text=True, check=False)
        if step:
            self.times[step] = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{self.label}: featuremass {verb} {' '.join(args)} failed "
                               f"(exit {res.returncode}):\n{res.stderr[-3000:]}")
        return res.stdout

    def option(self, verb: str, *names: str) -> str:
        """The first of ``names`` that this revision's ``VERB --help`` lists (option names may be renamed)."""
        if verb not in self._help:
            self._help[verb] = self.cli(verb, "--help")
        for name in names:
            if f"{name} " in self._help[verb] or f"{name}," in self._help[verb] or f"{name}\n" in self._help[verb]:
                return name
        raise RuntimeError(f"{self.label}: featuremass {verb} has none of the options {names}")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


def simulate(rev: Revision, out: Path, a) -> None:
    rev.cli("simulate", "--out", str(out), "--n-train", str(a.n_train), "--n-val", "0",
            "--n-test", str(a.n_test), "--npix", str(a.npix), "--seed", str(a.seed),
            rev.option("simulate", "--jobs", "-j"), str(a.jobs), step="simulate")


def pipeline(rev: Revision, data: Path, out: Path, a) -> dict:
    """extract, train, evaluate, importance on ``data``; paths and parsed outputs."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = rev.option("extract", "--jobs", "-j")
    tables = {}
    for split in ("train", "test"):
        tables[split] = out / f"{split}.parquet"
        size = ["--train-size", "all"] if split == "train" else []
        rev.cli("extract", "--data", str(data), "--npix", str(a.npix), "--split", split, *size,
                "--out", str(tables[split]), jobs, str(a.jobs), step=f"extract {split}")
    model = out / "model"
    rev.cli("train", "--train", str(tables["train"]), "--data", str(data), "--out", str(model),
            "--seed", "0", rev.option("train", "--jobs", "-j"), "1", step="train")
    text = rev.cli("evaluate", "--model", str(model), rev.option("evaluate", "--features", "--table"),
                   str(tables["test"]), "--data", str(data), "--json", "--n-boot", "200", step="evaluate")
    metrics = json.loads(text[text.index("{"):])
    rev.cli("importance", "--model", str(model), rev.option("importance", "--features", "--table"),
            str(tables["test"]), "--data", str(data), "--out", str(out / "importance"), "--seed", "0",
            step="importance")
    return {"tables": tables, "metrics": metrics, "importance": out / "importance"}


# --------------------------------------------------------------------------- comparing


def survey_digest(root: Path) -> dict[str, str]:
    """sha256 of every file of a simulated survey except the truth table (compared as a table)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".parquet"):
        out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def compare_surveys(a: Path, b: Path) -> list[str]:
    """Lines for the report: which survey files differ, and whether the truth tables do."""
    da, db = survey_digest(a), survey_digest(b)
    differ = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
    ta, tb = pd.read_parquet(a / "truth" / "truth.parquet"), pd.read_parquet(b / "truth" / "truth.parquet")
    try:
        pd.testing.assert_frame_equal(ta, tb, check_exact=True)
        truth_same = True
    except AssertionError:
        truth_same = False
    lines = [f"- stamp, name, split and metadata files: {len(da)} compared, "
             + ("all byte-identical" if not differ else f"{len(differ)} differ: {', '.join(differ[:10])}"),
             f"- truth table ({len(ta)} rows x {ta.shape[1]} columns): "
             + ("identical" if truth_same else "DIFFERS")]
    return lines


def column_differences(a: pd.DataFrame, b: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per numeric column: largest absolute and relative difference and NaN mismatches, rows matched on ``key``."""
    a, b = a.set_index(key).sort_index(), b.set_index(key).sort_index()
    if not a.index.equals(b.index):
        raise RuntimeError(f"the two tables hold different {key}s")
    rows = []
    for col in [c for c in a.columns if c in b.columns]:
        x = pd.to_numeric(a[col], errors="coerce").to_numpy(np.float64)
        y = pd.to_numeric(b[col], errors="coerce").to_numpy(np.float64)
        both = np.isfinite(x) & np.isfinite(y)
        d = np.abs(x[both] - y[both])
        rel = d / np.maximum(np.abs(x[both]), np.finfo(float).tiny)
        rows.append({"column": col,
                     "max_abs_diff": float(d.max()) if d.size else 0.0,
                     "max_rel_diff": float(rel.max()) if rel.size else 0.0,
                     "rows_differing": int(np.count_nonzero(d)),
                     "nan_mismatches": int(np.count_nonzero(np.isnan(x) != np.isnan(y)))})
    return pd.DataFrame(rows).set_index("column")


def flatten(obj, prefix="") -> dict[str, float]:
    """Numbers of a nested JSON object, keyed by their dotted path."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix[:-1]] = float(obj)
    return out


def compare_importance(a: Path, b: Path) -> list[str]:
    ia = pd.read_csv(a / "importance.csv", index_col="feature")
    ib = pd.read_csv(b / "importance.csv", index_col="feature")
    lines = ["| importance | max abs diff | same ranking | top 5 (first revision) |", "|---|---|---|---|"]
    if set(ia.index) != set(ib.index):
        lines.insert(0, f"Features differ: only first {sorted(set(ia.index) - set(ib.index))}, "
                        f"only second {sorted(set(ib.index) - set(ia.index))}.\n")
        return lines
    ib = ib.loc[ia.index]
    for col in [c for c in ia.select_dtypes("number").columns if c in ib.columns]:
        diff = float(np.nanmax(np.abs(ia[col] - ib[col]))) if len(ia) else 0.0
        rank_a = list(ia[col].sort_values(ascending=False, kind="stable").index)
        rank_b = list(ib[col].sort_values(ascending=False, kind="stable").index)
        lines.append(f"| {col} | {diff:.3g} | {'yes' if rank_a == rank_b else 'NO'} | {', '.join(rank_a[:5])} |")
    fa = pd.read_csv(a / "importance_families.csv", index_col="family")
    fb = pd.read_csv(b / "importance_families.csv", index_col="family").reindex(fa.index)
    fam = float(np.nanmax(np.abs(fa.select_dtypes("number").to_numpy() - fb.select_dtypes("number").to_numpy())))
    lines += ["", f"Family sums (`importance_families.csv`): max abs diff {fam:.3g}; "
                  f"same families: {'yes' if set(fa.index) == set(fb.index) else 'NO'}."]
    return lines


# --------------------------------------------------------------------------- report


def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.3g}"


def report(a, revs, results, survey_lines, prov) -> str:
    old, new = revs
    feats = {s: column_differences(pd.read_parquet(results[0]["tables"][s]), pd.read_parquet(results[1]["tables"][s]),
                                   "galaxy_id") for s in ("train", "test")}
    ma, mb = flatten(results[0]["metrics"]), flatten(results[1]["metrics"])
    metric_rows = [(k, ma[k], mb[k]) for k in ma if k in mb]
    metric_max = max((abs(x - y) for _, x, y in metric_rows), default=0.0)
    lines = ["# Same numbers before and after", "", prov, "",
             f"- first revision: {old.label}", f"- second revision: {new.label}",
             f"- survey: {a.n_train} train / {a.n_test} test galaxies at {a.npix} px, seed {a.seed}; "
             f"both revisions extract the first revision's stamps",
             "- steps, through the CLI of each revision: simulate, extract (train, test), train (LightGBM, "
             "seed 0, 1 thread), evaluate (--json, 200 bootstrap resamples), importance (seed 0)", "",
             "## Simulated survey", "", *survey_lines, "", "## Feature tables", ""]
    for split, df in feats.items():
        changed = df[(df.max_abs_diff > 0) | (df.nan_mismatches > 0)]
        lines.append(f"**{split}** ({len(df)} columns): largest absolute difference "
                     f"{_fmt(df.max_abs_diff.max())} ({df.max_abs_diff.idxmax() if len(changed) else '-'}), "
                     f"largest relative {_fmt(df.max_rel_diff.max())}; NaN pattern differs in "
                     f"{int(df.nan_mismatches.sum())} cells; {len(changed)} columns differ at all.")
        lines.append("")
        if len(changed):
            lines += ["| column | max abs diff | max rel diff | rows differing | NaN mismatches |",
                      "|---|---|---|---|---|"]
            for col, r in changed.sort_values("max_abs_diff", ascending=False).iterrows():
                lines.append(f"| {col} | {_fmt(r.max_abs_diff)} | {_fmt(r.max_rel_diff)} | "
                             f"{int(r.rows_differing)} | {int(r.nan_mismatches)} |")
            lines.append("")
    lines += ["## Metrics (`evaluate --json`)", "",
              f"{len(metric_rows)} numbers compared; largest absolute difference {_fmt(metric_max)}.", "",
              "| metric | first | second | abs diff |", "|---|---|---|---|"]
    for k, x, y in metric_rows:
        if not k.endswith(".ci95.0") and not k.endswith(".ci95.1"):
            lines.append(f"| {k} | {x:.6g} | {y:.6g} | {_fmt(abs(x - y))} |")
    only = sorted(set(ma) ^ set(mb))
    if only:
        lines += ["", f"Numbers in one revision's output only: {', '.join(only[:20])}"]
    lines += ["", "## Importance (`importance.csv`)", "",
              *compare_importance(results[0]["importance"], results[1]["importance"]), "",
              "## Wall time per step (s)", "",
              "Not a speed comparison: a fresh checkout compiles its numba kernels on first use, "
              "and the machine may be shared (see the load average above).", "",
              "| step | first | second |", "|---|---|---|"]
    for step in old.times:
        lines.append(f"| {step} | {old.times[step]:.1f} | {new.times.get(step, float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    a = parse_args(argv)
    from featuremass.io.layout import atomic_output
    from featuremass.report.provenance import provenance_markdown

    prov = provenance_markdown()  # load average before the run starts
    if a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True)
    revs = []
    try:
        for rev in (a.old, a.new):
            revs.append(Revision(rev, a.work))
        for i, rev in enumerate(revs):
            print(f"[{rev.label}] simulate", flush=True)
            simulate(rev, a.work / f"sim{i}", a)
        survey_lines = compare_surveys(a.work / "sim0", a.work / "sim1")
        results = []
        for i, rev in enumerate(revs):
            print(f"[{rev.label}] extract, train, evaluate, importance", flush=True)
            results.append(pipeline(rev, a.work / "sim0", a.work / f"run{i}", a))
        text = report(a, revs, results, survey_lines, prov)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"check_same_numbers: {exc}", file=sys.stderr)
        return 1
    finally:
        for rev in revs:
            rev.close()
    with atomic_output(a.report) as tmp:
        tmp.write_text(text)
    print(f"wrote {a.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
