"""``featuremass simulate / data / fetch / cutout``: make or inspect a dataset."""

from __future__ import annotations

from pathlib import Path

from featuremass.cli._options import JOBS, deprecated_alias, npix_list


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
    p.add_argument("-j", "--jobs", type=JOBS, default=None, help="worker processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    v = p.add_argument_group(
        "variants (defaults reproduce the standard survey; each is recorded in the truth table)")
    from featuremass.io.stretch import STRETCHES

    v.add_argument("--stretch", choices=STRETCHES, default="shifted-log",
                   help="stretch of the stored stamps (default shifted-log, the seed stretch; "
                        "clipped-log piles the negative sky up at -1)")
    v.add_argument("--softening", type=float, default=1.0,
                   help="where the log/asinh stretch turns over, in sky sigmas (default 1)")
    v.add_argument("--crop-factor", type=float, default=2.5,
                   help="crop side in PSF-broadened R90 radii (default 2.5: the R90 diameter "
                        "fills 80%% of the frame; 2.2 or less: 90%% or more)")
    v.add_argument("--noise-correlation", type=float, default=0.0, metavar="SIGMA_PX",
                   help="correlate the noise with a Gaussian of this sigma in output pixels, "
                        "keeping its variance (default 0: white noise)")
    v.add_argument("--star-residual", type=float, default=0.0, metavar="REL_ERR",
                   help="subtract removed stars with a PSF model whose flux and FWHM are off by "
                        "this relative sigma, leaving residuals (default 0: mask and fill)")
    v.add_argument("--star-density", type=float, default=0.8,
                   help="foreground stars per arcmin^2 to g = 22 (default 0.8)")


def _run_simulate(args):
    from featuremass.io.simulate import SurveyConfig, simulate_survey

    cfg = SurveyConfig(
        n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
        npix=tuple(npix_list(args.npix)), seed=args.seed,
        stretch=args.stretch, stretch_softening=args.softening, crop_factor=args.crop_factor,
        noise_correlation_px=args.noise_correlation, star_residual=args.star_residual,
        star_density=args.star_density,
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
    p.add_argument("--npix", type=int, choices=[69, 128], required=True, help="stamp size to fetch")
    deprecated_alias(p, p.add_argument(
        "--train-size", default="10000", choices=["10000", "30000", "all", "none"],
        help="which training archive (default 10000; 'none' fetches val/test only)"), "--train")
    p.add_argument("--no-valtest", action="store_true", help="skip the val/test archive")
    p.add_argument("--data", type=Path, default=Path("data"), help="dataset folder (default ./data)")
    p.add_argument("--urls", type=Path, default=None, help="URL list (default: the bundled seed list)")
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")


def _run_fetch(args):
    from featuremass.io.fetch import fetch_seed

    written = fetch_seed(
        args.data, npix=args.npix, train=None if args.train_size == "none" else args.train_size,
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
    p.add_argument("--npix", type=int, default=69, help="cutout side in pixels")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="split the cutouts are written as")
    p.add_argument("--id-col", default="id", help="catalogue column with integer ids")
    p.add_argument("--ra-col", default="ra", help="catalogue column with RA in degrees")
    p.add_argument("--dec-col", default="dec", help="catalogue column with Dec in degrees")
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


COMMANDS = [
    ("simulate", _add_simulate, _run_simulate),
    ("data", _add_data, _run_data),
    ("fetch", _add_fetch, _run_fetch),
    ("cutout", _add_cutout, _run_cutout),
]
