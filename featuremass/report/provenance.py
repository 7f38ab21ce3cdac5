"""Where a number came from: command, machine, date and versions.

Every benchmark report under ``reports/`` starts with :func:`provenance_markdown`
so anyone can rerun it and judge how comparable the timings are (the load
average says whether the machine was shared).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

from featuremass._version import __version__

_PACKAGES = ("numpy", "scipy", "lightgbm", "galsim", "statmorph", "scikit-image", "tensorflow")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance(argv: list[str] | None = None) -> dict:
    """Command, date, machine, load and versions as a JSON-serialisable dict."""
    argv = sys.argv if argv is None else argv
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "command": shlex.join(["python", *argv]),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}; {_cpu_model()}; {os.cpu_count()} CPUs",
        "load_average_1_5_15min": load,
        "python": platform.python_version(),
        "featuremass": __version__,
        "packages": {p: v for p in _PACKAGES if (v := _version(p))},
    }


def provenance_markdown(argv: list[str] | None = None) -> str:
    """Markdown bullet list of :func:`provenance` for the top of a report."""
    info = provenance(argv)
    load = info["load_average_1_5_15min"]
    pkgs = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    return "\n".join(
        [
            f"- command: `{info['command']}`",
            f"- date: {info['date']}",
            f"- machine: {info['machine']}"
            + (f"; load average at start {load[0]} / {load[1]} / {load[2]}" if load else ""),
            f"- featuremass {info['featuremass']}, Python {info['python']}; {pkgs}",
        ]
    )
