"""The ``featuremass`` command line: parse, validate, call the library, print.

Only this module configures logging. Heavy imports (GalSim, LightGBM,
TensorFlow, Dask) happen inside the command that needs them, so ``--help`` is
instant. A user mistake (:class:`featuremass.errors.FeaturemassError`, an
unreadable or unwritable path) becomes one line on stderr and exit status 2,
as argparse's usage errors; any other failure one line and status 1 (the
traceback with ``-v``).

One module per verb group holds each command's pair
``_add_<name>(subparsers)`` / ``_run_<name>(args)``: :mod:`~featuremass.cli.data`
(simulate, data, fetch, cutout), :mod:`~featuremass.cli.extract`,
:mod:`~featuremass.cli.models` (train, evaluate, predict, importance),
:mod:`~featuremass.cli.cnn`, :mod:`~featuremass.cli.report` (report, demo).
The work of the heavier ones (reading inputs, calling the library, writing)
sits in ``_extract``, ``_models`` and ``_cnn``, imported when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from featuremass._version import __version__
from featuremass.cli import cnn, data, extract, models, report
from featuremass.cli._options import Parser
from featuremass.errors import FeaturemassError

log = logging.getLogger("featuremass")

#: Exit status of a user mistake (bad argument, input or output; argparse's own), and of a
#: failure (anything else: a bug, a library that broke); 130 on Ctrl-C.
EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


#: (name, add its parser, run it), in the order ``--help`` lists them.
COMMANDS = [*data.COMMANDS, *extract.COMMANDS, *models.COMMANDS, *cnn.COMMANDS, *report.COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    # TensorFlow's C++ log lines (start-up probes, tf.data graph notices logged at ERROR level) only with -v
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.verbose else "3")
    run = {name: fn for name, _, fn in COMMANDS}[args.command]
    try:
        run(args)
    except FeaturemassError as exc:
        print(f"featuremass {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        # permission denied, disk full, not a directory...: the writers clean
        # up their temporary files, so one line naming the path is enough
        log.debug("OS error", exc_info=True)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"featuremass {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"featuremass {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a failure, not a user mistake: one line, or -v
        if args.verbose:
            traceback.print_exc()
        print(f"featuremass {args.command}: failed: {type(exc).__name__}: {exc}"
              + ("" if args.verbose else " (rerun with -v for the traceback)"), file=sys.stderr)
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
