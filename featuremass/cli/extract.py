"""``featuremass extract``: its options; the work is in :mod:`featuremass.cli._extract`."""

from __future__ import annotations

from pathlib import Path

from featuremass.cli._options import (
    IMAGES_HELP,
    JOBS,
    NAMES_HELP,
    SCALE_CHOICES,
    SCALE_HELP,
    add_scheduler,
    int_at_least,
)


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
    src.add_argument("--images", type=Path, help=IMAGES_HELP)
    src.add_argument("--names", type=Path, help=NAMES_HELP)
    src.add_argument("--masks", type=Path,
                     help="with --images: a boolean stack of the same shape (a .npy, HDF5 or "
                          "folder, as --images), True = a pixel to ignore (a neighbour, a bad "
                          "column) (default: no mask; non-finite pixels are always ignored)")
    src.add_argument("--weights", type=Path,
                     help="with --images and --scale linear: the 1-sigma error of every pixel, in "
                          "the pixels' units, same shape (statmorph's weightmap convention, not an "
                          "inverse variance); sets sky_sigma and weights the Sérsic fits "
                          "(default: the noise measured on each stamp)")
    p.add_argument("--scale", choices=SCALE_CHOICES, default="auto", help=SCALE_HELP)
    p.add_argument("--backend", choices=["native", "statmorph"], default="native",
                   help="measurement engine (statmorph: the reference, slower)")
    p.add_argument("--feature-set", choices=["full", "fast"], default="full",
                   help="full: every morphology feature; fast: the segmentation-free tier, batched "
                        "(featuremass.features.fast; native only)")
    p.add_argument("--out", required=True, type=Path, help="output .parquet file")
    p.add_argument("-j", "--jobs", type=JOBS, default=1, help="worker processes (default 1)")
    p.add_argument("--chunk-size", type=int_at_least(1), default=1000,
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
    add_scheduler(p, "measure the chunks; --out is then a folder of one Parquet file per chunk,")


def _run_extract(args):
    from featuremass.cli._extract import extract_cli

    extract_cli(args)


COMMANDS = [("extract", _add_extract, _run_extract)]
