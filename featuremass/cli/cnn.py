"""``featuremass cnn train / predict``: their options; the work is in :mod:`featuremass.cli._cnn`."""

from __future__ import annotations

from pathlib import Path

from featuremass.cli._options import IMAGES_HELP, NAMES_HELP, SCALE_CHOICES, int_at_least

#: ``cnn predict --restretch`` values: the input stamps' stretch (``--scale``'s choices).
RESTRETCH_CHOICES = SCALE_CHOICES


def _add_cnn(sub):
    p = sub.add_parser("cnn", help="the bundled Keras CNN (needs the cnn extra)")
    csub = p.add_subparsers(dest="cnn_command", required=True, metavar="{train,predict}")
    t = csub.add_parser("train", help="train the seed's CNN on a dataset split")
    t.add_argument("--data", required=True, type=Path, help="dataset folder in the seed layout")
    t.add_argument("--npix", type=int, default=69, help="image size within --data")
    t.add_argument("--train-size", default=None,
                   help="train file label (10000, 30000, all; default: the only or largest one)")
    t.add_argument("--extra-inputs", action="store_true", help="add distance and L_g")
    t.add_argument("--epochs", type=int_at_least(1), default=50,
                   help="most epochs (early stopping on the val split usually ends sooner)")
    t.add_argument("--batch-size", type=int_at_least(1), default=32, help="stamps per training batch")
    t.add_argument("--seed", type=int, default=0, help="random seed of weights, shuffling, augmentation")
    t.add_argument("--out", required=True, type=Path, help="model directory")
    t.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    t.add_argument("--drop-invalid", action="store_true",
                   help="drop galaxies with a missing id or an invalid M/L instead of stopping")
    pr = csub.add_parser("predict", help="predict M/L with a trained CNN")
    pr.add_argument("--model", required=True, type=Path, help="CNN model directory (from cnn train)")
    src = pr.add_argument_group("input (either a dataset split or an image stack)")
    src.add_argument("--data", type=Path, help="dataset folder in the seed layout")
    src.add_argument("--npix", type=int, default=69, help="image size within --data")
    src.add_argument("--split", default="test", choices=["train", "val", "test"],
                     help="split within --data")
    src.add_argument("--images", type=Path,
                     help=IMAGES_HELP + ", seed-log stretched like the training stamps (else see --restretch), "
                     "npix x npix")
    src.add_argument("--names", type=Path, help=NAMES_HELP)
    pr.add_argument("--restretch", default=None, choices=RESTRETCH_CHOICES, metavar="STRETCH",
                    help="the input stamps were stretched otherwise than the training stamps: "
                         "invert their stretch (auto: detected per stamp; or one of "
                         + ", ".join(RESTRETCH_CHOICES[1:]) + ") and give the CNN the seed's "
                         "stretch, as in training (default: the stamps as stored)")
    pr.add_argument("--out", required=True, type=Path, help="output .csv or .parquet")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    pr.add_argument("--drop-invalid", action="store_true",
                    help="drop galaxies with a missing id or an invalid M/L instead of stopping")


def _run_cnn(args):
    from featuremass.cli._cnn import cnn_cli

    cnn_cli(args)


COMMANDS = [("cnn", _add_cnn, _run_cnn)]
