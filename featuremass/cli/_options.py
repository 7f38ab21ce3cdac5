"""Option types and help texts shared by the commands."""

from __future__ import annotations

import argparse
import math
import sys


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: ...)`` to every option's help that does not state its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" in text or "default" in text or not action.option_strings
                or action.nargs == 0 or action.default in (None, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """The featuremass parser: every subcommand (``add_subparsers`` reuses the class) shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def deprecated_alias(parser, action: argparse.Action, *aliases: str) -> argparse.Action:
    """Let ``action`` also answer to old spellings, hidden from ``--help``.

    The old name still works (scripts and notes written for it keep running)
    and prints one line on stderr naming the new one. The alias is the same
    argparse action, so ``required=True`` is met by either spelling.
    """
    new = action.option_strings[-1]
    base = type(action)

    class Aliased(base):
        def __call__(self, parser, namespace, values, option_string=None):
            if option_string in aliases:
                print(f"featuremass: warning: {option_string} is deprecated; use {new}",
                      file=sys.stderr)
            super().__call__(parser, namespace, values, option_string)

    Aliased.__name__ = base.__name__
    action.__class__ = Aliased
    action.deprecated_aliases = tuple(aliases)
    for alias in aliases:
        if alias in parser._option_string_actions:
            raise ValueError(f"{alias} already names another option")
        # argparse finds an option through this table (the action's own list
        # stays as it is, so help, usage and error messages show the new name)
        parser._option_string_actions[alias] = action
    return action


def npix_list(values):
    return [int(v) for v in values]


def add_scheduler(p, what: str) -> None:
    p.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help=f"{what} on Dask: tcp://HOST:PORT of a running dask.distributed scheduler, or "
             "'local' to start a LocalCluster of -j worker processes on 127.0.0.1 "
             "(needs the dask extra; default: this machine, without Dask)",
    )


def int_at_least(low: int):
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


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


positive_float.__name__ = "number > 0"


def cv_folds(text: str) -> int:
    """An argparse type: 0 (no cross-validation) or at least 2 folds."""
    value = int_at_least(0)(text)
    if value == 1:
        raise argparse.ArgumentTypeError("1 fold is no cross-validation; give 0 (off) or >= 2")
    return value


JOBS = int_at_least(1)


SCALE_HELP = (
    "how the pixels were scaled (default: auto, which detects the stretch of each stamp, inverts it "
    "and records it in stretch_code/stretch_param/censored_fraction); seed-log: the seed's shifted log; "
    "linear: pixels are linear flux; shifted-log, clipped-log, asinh: invert that stretch"
)
SCALE_CHOICES = ["auto", "seed-log", "linear", "shifted-log", "clipped-log", "asinh"]


IMAGES_HELP = ("an (n, ny, nx) .npy stack, an HDF5 file (datasets data, sdss_id) or a folder of 2-D "
               ".npy stamps")
NAMES_HELP = "a .npy of integer ids for --images (default: the HDF5 file's sdss_id, else 0..n-1)"
