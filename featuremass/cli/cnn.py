"""``featuremass cnn train / predict``: their options; the work is in :mod:`featuremass.cli._cnn`."""

from __future__ import annotations

from pathlib import Path

from featuremass.cli._options import int_at_least


def _add_cnn(sub):
    p = sub.add_parser("cnn", help="the bundled Keras CNN (needs the cnn extra)")
    csub = p.add_subparsers(dest="cnn_command", required=True, metavar="{train,predict}")
    t = csub.add_parser("train", help="train the seed's CNN on a dataset split")
    t.add_argument("--data", required=True, type=Path)
    t.add_argument("--npix", type=int, default=69)
    t.add_argument("--train-size", default=None)
    t.add_argument("--extra-inputs", action="store_true", help="add distance and L_g")
    t.add_argument("--epochs", type=int_at_least(1), default=50)
    t.add_argument("--batch-size", type=int_at_least(1), default=32)
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
    from featuremass.cli._cnn import cnn_cli

    cnn_cli(args)


COMMANDS = [("cnn", _add_cnn, _run_cnn)]
