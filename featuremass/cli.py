"""The ``featuremass`` command line: parse, validate, call the library, print.

Only this module configures logging. Heavy imports (GalSim, LightGBM,
TensorFlow, Dask) happen inside the command that needs them, so ``--help`` is
instant. A user mistake (:class:`featuremass.errors.FeaturemassError`) becomes
one line on stderr and exit status 2, never a traceback.

Each command is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args)``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from featuremass._version import __version__
from featuremass.errors import FeaturemassError

log = logging.getLogger("featuremass")


def _npix_list(values):
    return [int(v) for v in values]


def _add_scheduler(p, what: str) -> None:
    p.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help=f"{what} on Dask: tcp://HOST:PORT of a running dask.distributed scheduler, or "
             "'local' to start a LocalCluster of -j worker processes on 127.0.0.1 "
             "(needs the dask extra; default: this machine, without Dask)",
    )


def _int_at_least(low: int):
    """An argparse type: an integer >= ``low`` (a clear usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


_positive_float.__name__ = "number > 0"


def _cv_folds(text: str) -> int:
    """An argparse type: 0 (no cross-validation) or at least 2 folds."""
    value = _int_at_least(0)(text)
    if value == 1:
        raise argparse.ArgumentTypeError("1 fold is no cross-validation; give 0 (off) or >= 2")
    return value
_JOBS = _int_at_least(1)


# =========================================================================== data (issue 2)


def _add_simulate(sub):
    p = sub.add_parser(
        "simulate",
        help="render a simulated SDSS-like survey in the seed layout",
        description=(
            "Render galaxies with GalSim (Sérsic bulge + disk with arms, clumps, bars, dust, "
            "PSF, sky and Poisson noise, stars) and write them in the seed layout, with a "
            "truth table of latent parameters and the linear-flux images."
        ),
    )
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    p.add_argument("--n-train", type=int, default=1000, help="training galaxies (default 1000)")
    p.add_argument("--n-val", type=int, default=250, help="validation galaxies (default 250)")
    p.add_argument("--n-test", type=int, default=500, help="test galaxies (default 500)")
    p.add_argument("--npix", type=int, nargs="+", default=[69], help="image sizes (default 69)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-j", "--jobs", type=_JOBS, default=None, help="worker processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")


def _run_simulate(args):
    from featuremass.io.simulate import SurveyConfig, simulate_survey

    cfg = SurveyConfig(
        n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
        npix=tuple(_npix_list(args.npix)), seed=args.seed,
    )
    summary = simulate_survey(args.out, cfg, n_jobs=args.jobs, overwrite=args.overwrite, progress=True)
    print(summary)


def _add_data(sub):
    p = sub.add_parser("data", help="inspect a dataset")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{info}")
    info = dsub.add_parser(
        "info",
        help="what a dataset holds: splits, counts, npix, target statistics, missing ids",
    )
    info.add_argument("--data", required=True, type=Path, help="dataset folder in the seed layout")


def _run_data(args):
    from featuremass.io.info import dataset_info, format_info

    print(format_info(dataset_info(args.data)))


def _add_fetch(sub):
    p = sub.add_parser(
        "fetch",
        help="download the workshop's SDSS cutouts into the seed layout",
        description=(
            "Download and unpack the seed archives (see data/images/urls.json) into DATA/images. "
            "Archives are checked before extraction; members outside the target folder, absolute "
            "paths and links are refused; an interrupted fetch leaves no half-written dataset."
        ),
    )
    p.add_argument("--npix", type=int, choices=[69, 128], required=True)
    p.add_argument("--train", default="10000", choices=["10000", "30000", "all", "none"],
                   help="which training archive (default 10000; 'none' fetches val/test only)")
    p.add_argument("--no-valtest", action="store_true", help="skip the val/test archive")
    p.add_argument("--data", type=Path, default=Path("data"), help="dataset folder (default ./data)")
    p.add_argument("--urls", type=Path, default=None, help="URL list (default: the bundled seed list)")
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")


def _run_fetch(args):
    from featuremass.io.fetch import fetch_seed

    written = fetch_seed(
        args.data, npix=args.npix, train=None if args.train == "none" else args.train,
        valtest=not args.no_valtest, urls=args.urls, timeout=args.timeout, progress=True,
    )
    for path in written:
        print(path)


def _add_cutout(sub):
    p = sub.add_parser(
        "cutout",
        help="cut galaxies out of FITS sky images into the seed layout",
        description=(
            "Square cutouts around catalogue positions (astropy Cutout2D with the image WCS), "
            "sized from a per-object angular size column or a fixed size, resized to npix and "
            "stretched like the seed. Objects off the images or on blank/NaN regions are reported."
        ),
    )
    p.add_argument("--images", required=True, nargs="+", type=Path, help="FITS images with a WCS")
    p.add_argument("--catalog", required=True, type=Path, help="CSV or FITS table")
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    p.add_argument("--npix", type=int, default=69)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--id-col", default="id")
    p.add_argument("--ra-col", default="ra")
    p.add_argument("--dec-col", default="dec")
    p.add_argument("--target-col", default=None, help="column with M/L (optional)")
    p.add_argument("--size-col", default=None, help="column with the angular size in arcsec")
    p.add_argument("--size-factor", type=float, default=2.0,
                   help="cutout side = size-factor x size column (default 2)")
    p.add_argument("--size-arcsec", type=float, default=None, help="fixed cutout side in arcsec")


def _run_cutout(args):
    from featuremass.io.cutouts import CutoutConfig, make_cutouts

    cfg = CutoutConfig(
        npix=args.npix, id_col=args.id_col, ra_col=args.ra_col, dec_col=args.dec_col,
        target_col=args.target_col, size_col=args.size_col, size_factor=args.size_factor,
        size_arcsec=args.size_arcsec,
    )
    report = make_cutouts(args.images, args.catalog, args.out, split=args.split, config=cfg)
    print(report)


# =========================================================================== features (issue 3)


_SCALE_HELP = (
    "how the pixels were scaled (default: auto, which detects the stretch of each stamp, inverts it "
    "and records it in stretch_code/stretch_param/censored_fraction); seed-log: the seed's shifted log; "
    "linear: pixels are linear flux; shifted-log, clipped-log, asinh: invert that stretch"
)
_SCALE_CHOICES = ["auto", "seed-log", "linear", "shifted-log", "clipped-log", "asinh"]


def _add_extract(sub):
    p = sub.add_parser(
        "extract",
        help="measure morphology features into a Parquet table",
        description="One row per input galaxy, keyed by galaxy_id, with every feature and a flag.",
    )
    src = p.add_argument_group("input (either a dataset split or an image stack)")
    src.add_argument("--data", type=Path, help="dataset folder in the seed layout")
    src.add_argument("--npix", type=int, help="image size within --data")
    src.add_argument("--split", choices=["train", "val", "test"], help="split within --data")
    src.add_argument("--train-size", default=None, help="train file label (10000, 30000, all)")
    src.add_argument("--images", type=Path, help="an (n, ny, nx) .npy stack, an HDF5 file (datasets data, sdss_id) or a folder of 2-D .npy stamps")
    src.add_argument("--names", type=Path, help="ids for --images (default 0..n-1)")
    p.add_argument("--scale", choices=_SCALE_CHOICES, default=None, help=_SCALE_HELP)
    p.add_argument("--backend", choices=["native", "statmorph"], default="native")
    p.add_argument("--feature-set", choices=["full", "fast"], default="full",
                   help="full: every morphology feature; fast: the segmentation-free tier, batched "
                        "(featuremass.features.fast; native only)")
    p.add_argument("--out", required=True, type=Path, help="output .parquet file")
    p.add_argument("-j", "--jobs", type=_JOBS, default=1, help="worker processes (default 1)")
    p.add_argument("--chunk-size", type=_int_at_least(1), default=1000,
                   help="galaxies per resumable chunk (default 1000)")
    p.add_argument("--psf-fwhm", type=float, default=None, help="PSF FWHM in pixels for Sérsic fits")
    p.add_argument("--psf-table", type=Path, default=None,
                   help="CSV or Parquet keyed by galaxy_id with psf_fwhm_px, or psf_fwhm_arcsec and "
                        "pixel_scale_arcsec: a PSF FWHM per galaxy for the Sérsic fits (overrides --psf-fwhm)")
    p.add_argument("--no-resume", action="store_true", help="recompute finished chunks")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out table")
    p.add_argument("--drop-invalid", action="store_true",
                   help="with --data: drop galaxies with a missing id or an invalid M/L "
                        "(non-finite or <= 0) instead of stopping, and say how many")
    _add_scheduler(p, "measure the chunks; --out is then a folder of one Parquet file per chunk,")


def _run_extract(args):
    from featuremass.features.batch import extract_cli

    extract_cli(args)


# =========================================================================== models (issue 4)


def _add_train(sub):
    p = sub.add_parser("train", help="train a LightGBM (or baseline) M/L model on feature tables")
    p.add_argument("--train", required=True, type=Path, help="training feature table (.parquet)")
    p.add_argument("--val", type=Path, help="validation feature table for early stopping")
    p.add_argument("--data", type=Path, help="dataset folder for metadata (M/L, distance, L_g)")
    p.add_argument("--inputs", default="image",
                   choices=["image", "image+dl", "image+dl+size", "extra"],
                   help="input set (default image)")
    p.add_argument("--model", default="lgbm", choices=["lgbm", "ridge", "mean"])
    p.add_argument("--loss", default="l2", choices=["l2", "l1"])
    p.add_argument("--target", default="linear", choices=["linear", "log"])
    p.add_argument("--cv", type=_cv_folds, default=0,
                   help="K-fold cross-validation folds (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-estimators", type=_int_at_least(1), default=2000,
                   help="maximum boosting rounds (early stopping usually ends sooner)")
    p.add_argument("--learning-rate", type=_positive_float, default=0.05,
                   help="LightGBM learning rate, > 0 (default 0.05)")
    p.add_argument("--no-noise-control", action="store_true",
                   help="do not add the random-noise control feature (used by the importance study)")
    p.add_argument("-j", "--jobs", type=_JOBS, default=2, help="LightGBM threads (default 2)")
    p.add_argument("--out", required=True, type=Path, help="model directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.add_argument("--drop-invalid", action="store_true",
                   help="drop galaxies whose M/L is non-finite or <= 0 instead of stopping")
    _add_scheduler(p, "train with lightgbm.dask (model saved like a local one)")


def _run_train(args):
    from featuremass.models.commands import train_cli

    train_cli(args)


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="metrics of a trained model on a feature table")
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--features", required=True, type=Path, help="feature table (.parquet)")
    p.add_argument("--data", type=Path, help="dataset folder for metadata")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    p.add_argument("--n-boot", type=_int_at_least(0), default=1000,
                   help="bootstrap resamples for intervals (default 1000; 0: no intervals)")
    p.add_argument("--drop-invalid", action="store_true",
                   help="drop galaxies whose M/L is non-finite or <= 0 instead of stopping")
    p.add_argument("--impute", action="store_true",
                   help="also score seriously flagged galaxies (LightGBM's missing-value path); "
                        "by default they are left out and counted")


def _run_evaluate(args):
    from featuremass.models.commands import evaluate_cli

    evaluate_cli(args)


def _add_predict(sub):
    p = sub.add_parser("predict", help="predict M/L (with intervals) from images or a feature table")
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--features", type=Path, help="feature table (.parquet)")
    p.add_argument("--images", type=Path, help="an (n, ny, nx) .npy stack")
    p.add_argument("--names", type=Path, help="ids for --images")
    p.add_argument("--scale", choices=_SCALE_CHOICES, default="auto", help=_SCALE_HELP)
    p.add_argument("--data", type=Path, help="dataset folder for extra inputs and L_g")
    p.add_argument("-j", "--jobs", type=_JOBS, default=1, help="worker processes (default 1)")
    p.add_argument("--out", required=True, type=Path,
                   help="output .csv or .parquet (with --scheduler: a folder of Parquet parts)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--impute", action="store_true",
                   help="predict seriously flagged galaxies too, through LightGBM's missing-value "
                        "path (default: their M/L is NaN and their flag is kept)")
    _add_scheduler(p, "predict partition by partition")


def _run_predict(args):
    from featuremass.models.commands import predict_cli

    predict_cli(args)


def _add_importance(sub):
    p = sub.add_parser("importance", help="feature-importance study of a trained model")
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--features", required=True, type=Path, help="test feature table (.parquet)")
    p.add_argument("--data", type=Path, help="dataset folder for metadata")
    p.add_argument("--out", required=True, type=Path, help="output folder for tables and plots")
    p.add_argument("--n-repeats", type=_int_at_least(1), default=5,
                   help="shuffles per feature (permutation; default 5)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing --out folder")
    p.add_argument("--seed", type=int, default=0)


def _run_importance(args):
    from featuremass.models.commands import importance_cli

    importance_cli(args)


# =========================================================================== CNN, report, demo (issue 5)


def _add_cnn(sub):
    p = sub.add_parser("cnn", help="the bundled Keras CNN (needs the cnn extra)")
    csub = p.add_subparsers(dest="cnn_command", required=True, metavar="{train,predict}")
    t = csub.add_parser("train", help="train the seed's CNN on a dataset split")
    t.add_argument("--data", required=True, type=Path)
    t.add_argument("--npix", type=int, default=69)
    t.add_argument("--train-size", default=None)
    t.add_argument("--extra-inputs", action="store_true", help="add distance and L_g")
    t.add_argument("--epochs", type=_int_at_least(1), default=50)
    t.add_argument("--batch-size", type=_int_at_least(1), default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, type=Path, help="model directory")
    t.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    t.add_argument("--drop-invalid", action="store_true",
                   help="drop galaxies with a missing id or an invalid M/L instead of stopping")
    pr = csub.add_parser("predict", help="predict M/L with a trained CNN")
    pr.add_argument("--model", required=True, type=Path)
    pr.add_argument("--data", required=True, type=Path)
    pr.add_argument("--npix", type=int, default=69)
    pr.add_argument("--split", default="test", choices=["train", "val", "test"])
    pr.add_argument("--out", required=True, type=Path)
    pr.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    pr.add_argument("--drop-invalid", action="store_true",
                    help="drop galaxies with a missing id or an invalid M/L instead of stopping")


def _run_cnn(args):
    from featuremass.models.cnn_commands import cnn_cli

    cnn_cli(args)


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
    p.add_argument("--out", type=Path, default=Path("demo-output"))
    p.add_argument("--fast", action="store_true", help="a tiny survey, for tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cnn", action="store_true", help="skip the CNN even if TensorFlow is installed")
    p.add_argument("-j", "--jobs", type=_JOBS, default=None)


def _run_demo(args):
    from featuremass.demo import run_demo

    print(run_demo(args.out, fast=args.fast, seed=args.seed, cnn=not args.no_cnn, n_jobs=args.jobs))


# =========================================================================== main

COMMANDS = [
    ("simulate", _add_simulate, _run_simulate),
    ("data", _add_data, _run_data),
    ("fetch", _add_fetch, _run_fetch),
    ("cutout", _add_cutout, _run_cutout),
    ("extract", _add_extract, _run_extract),
    ("train", _add_train, _run_train),
    ("evaluate", _add_evaluate, _run_evaluate),
    ("predict", _add_predict, _run_predict),
    ("importance", _add_importance, _run_importance),
    ("cnn", _add_cnn, _run_cnn),
    ("report", _add_report, _run_report),
    ("demo", _add_demo, _run_demo),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featuremass",
        description=(
            "Classical galaxy morphology -> gradient-boosted g-band M/L, explained, "
            "and benchmarked against a CNN."
        ),
    )
    parser.add_argument("--version", action="version", version=f"featuremass {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for _, add, _ in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    # dask.distributed sets its own logger to INFO when imported (inside the
    # commands); its config, read at that import, follows -v like the rest
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info" if args.verbose else "warning")
    run = {name: fn for name, _, fn in COMMANDS}[args.command]
    try:
        run(args)
    except FeaturemassError as exc:
        print(f"featuremass {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # permission denied, disk full, not a directory...: the writers clean
        # up their temporary files, so one line naming the path is enough
        log.debug("OS error", exc_info=True)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"featuremass {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"featuremass {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
