"""``featuremass report / demo``: the HTML report, and the whole pipeline on a simulated survey."""

from __future__ import annotations

from pathlib import Path

from featuremass.cli._options import JOBS


def _add_report(sub):
    p = sub.add_parser("report", help="build a self-contained HTML report from existing artefacts")
    p.add_argument("--run", required=True, type=Path, help="folder written by demo/train/importance")
    p.add_argument("--out", type=Path, default=None, help="HTML file (default RUN/report.html)")
    p.add_argument("--benchmark", type=Path, default=None,
                   help="a benchmark.json from benchmarks/bench_accuracy.py (e.g. "
                        "reports/benchmark.json) for the CNN-vs-classical section")


def _run_report(args):
    from featuremass.report.html import build_report

    print(build_report(args.run, out=args.out, benchmark=args.benchmark))


def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        help="the main job: simulate, extract, train, explain, (CNN), report",
        description="Runs the whole pipeline on the embedded simulated survey and writes an HTML report.",
    )
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    p.add_argument("--fast", action="store_true", help="a tiny survey, for tests")
    p.add_argument("--seed", type=int, default=0, help="random seed of the survey and the models")
    p.add_argument("--no-cnn", action="store_true", help="skip the CNN even if TensorFlow is installed")
    p.add_argument("-j", "--jobs", type=JOBS, default=None, help="worker processes (default: all cores)")


def _run_demo(args):
    from featuremass.demo import run_demo

    print(run_demo(args.out, fast=args.fast, seed=args.seed, cnn=not args.no_cnn, n_jobs=args.jobs))


COMMANDS = [("report", _add_report, _run_report), ("demo", _add_demo, _run_demo)]
