"""``featuremass train / evaluate / predict / importance``: their options; the work is in
:mod:`featuremass.cli._models`."""

from __future__ import annotations

from pathlib import Path

from featuremass.cli._options import (
    IMAGES_HELP,
    JOBS,
    NAMES_HELP,
    SCALE_CHOICES,
    SCALE_HELP,
    add_scheduler,
    cv_folds,
    deprecated_alias,
    int_at_least,
    positive_float,
)


def _add_train(sub):
    p = sub.add_parser("train", help="train a LightGBM (or baseline) M/L model on feature tables")
    deprecated_alias(p, p.add_argument("--features", required=True, type=Path,
                                       help="training feature table (.parquet, from extract)"),
                     "--train")
    deprecated_alias(p, p.add_argument("--val-features", type=Path,
                                       help="validation feature table for early stopping (default: "
                                            "a held-out part of --features)"),
                     "--val")
    p.add_argument("--data", type=Path, help="dataset folder for metadata (M/L, distance, L_g)")
    p.add_argument("--inputs", default="image",
                   choices=["image", "image+dl", "image+dl+size", "extra"],
                   help="input set (default image)")
    p.add_argument("--model", default="lgbm", choices=["lgbm", "ridge", "mean"],
                   help="LightGBM, or a baseline: ridge regression, the training mean")
    p.add_argument("--loss", default="l2", choices=["l2", "l1"], help="training loss")
    p.add_argument("--target", default="linear", choices=["linear", "log"],
                   help="fit M/L or log10 M/L (predictions are M/L either way)")
    p.add_argument("--cv", type=cv_folds, default=0,
                   help="K-fold cross-validation folds (0: off)")
    p.add_argument("--seed", type=int, default=0, help="random seed (splits, noise control, LightGBM)")
    p.add_argument("--n-estimators", type=int_at_least(1), default=2000,
                   help="maximum boosting rounds (early stopping usually ends sooner)")
    p.add_argument("--learning-rate", type=positive_float, default=0.05,
                   help="LightGBM learning rate, > 0 (default 0.05)")
    p.add_argument("--no-noise-control", action="store_true",
                   help="do not add the random-noise control feature (used by the importance study)")
    p.add_argument("-j", "--jobs", type=JOBS, default=2, help="LightGBM threads (default 2)")
    p.add_argument("--out", required=True, type=Path, help="model directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.add_argument("--drop-invalid", action="store_true",
                   help="drop galaxies whose M/L is non-finite or <= 0 instead of stopping")
    add_scheduler(p, "train with lightgbm.dask (model saved like a local one)")


def _run_train(args):
    from featuremass.cli._models import train_cli

    train_cli(args)


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="metrics of a trained model on a feature table")
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--features", required=True, type=Path, help="feature table (.parquet)")
    p.add_argument("--data", type=Path, help="dataset folder for metadata")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    p.add_argument("--n-boot", type=int_at_least(0), default=1000,
                   help="bootstrap resamples for intervals (default 1000; 0: no intervals)")
    p.add_argument("--drop-invalid", action="store_true",
                   help="drop galaxies whose M/L is non-finite or <= 0 instead of stopping")
    p.add_argument("--impute", action="store_true",
                   help="also score seriously flagged galaxies (LightGBM's missing-value path); "
                        "by default they are left out and counted")


def _run_evaluate(args):
    from featuremass.cli._models import evaluate_cli

    evaluate_cli(args)


def _add_predict(sub):
    p = sub.add_parser("predict", help="predict M/L (with intervals) from images or a feature table")
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--features", type=Path, help="feature table (.parquet)")
    p.add_argument("--images", type=Path, help=IMAGES_HELP + ", measured here")
    p.add_argument("--names", type=Path, help=NAMES_HELP)
    p.add_argument("--scale", choices=SCALE_CHOICES, default="auto", help=SCALE_HELP)
    p.add_argument("--data", type=Path, help="dataset folder for extra inputs and L_g")
    p.add_argument("-j", "--jobs", type=JOBS, default=1, help="worker processes (default 1)")
    p.add_argument("--out", required=True, type=Path,
                   help="output .csv or .parquet (with --scheduler: a folder of Parquet parts)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--impute", action="store_true",
                   help="predict seriously flagged galaxies too, through LightGBM's missing-value "
                        "path (default: their M/L is NaN and their flag is kept)")
    add_scheduler(p, "predict partition by partition")


def _run_predict(args):
    from featuremass.cli._models import predict_cli

    predict_cli(args)


def _add_importance(sub):
    p = sub.add_parser("importance", help="feature-importance study of a trained model")
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--features", required=True, type=Path, help="test feature table (.parquet)")
    p.add_argument("--data", type=Path, help="dataset folder for metadata")
    p.add_argument("--out", required=True, type=Path, help="output folder for tables and plots")
    p.add_argument("--n-repeats", type=int_at_least(1), default=5,
                   help="shuffles per feature (permutation; default 5)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing --out folder")
    p.add_argument("--seed", type=int, default=0, help="random seed of the permutations")


def _run_importance(args):
    from featuremass.cli._models import importance_cli

    importance_cli(args)


COMMANDS = [
    ("train", _add_train, _run_train),
    ("evaluate", _add_evaluate, _run_evaluate),
    ("predict", _add_predict, _run_predict),
    ("importance", _add_importance, _run_importance),
]
