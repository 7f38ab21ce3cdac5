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
import os
import sys

from featuremass._version import __version__
from featuremass.cli import cnn, data, extract, models, report
from featuremass.errors import FeaturemassError

log = logging.getLogger("featuremass")


#: (name, add its parser, run it), in the order ``--help`` lists them.
COMMANDS = [*data.COMMANDS, *extract.COMMANDS, *models.COMMANDS, *cnn.COMMANDS, *report.COMMANDS]


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
