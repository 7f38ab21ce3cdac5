"""Every optional import and version shim lives here.

Heavy optional packages (TensorFlow, Dask, statmorph) are imported lazily by
the function that needs them, so ``import featuremass`` stays fast and works
without the extras.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from featuremass.errors import MissingDependencyError

_EXTRA_FOR = {
    "tensorflow": "cnn",
    "keras": "cnn",
    "dask": "dask",
    "distributed": "dask",
}


def optional_import(name: str, *, purpose: str) -> ModuleType:
    """Import ``name`` or raise one clear :class:`MissingDependencyError`.

    Parameters
    ----------
    name : str
        Module to import (``"tensorflow"``, ``"dask.array"``...).
    purpose : str
        What the caller wanted it for; shown in the message.
    """
    top = name.split(".")[0]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        extra = _EXTRA_FOR.get(top)
        how = (
            f"pip install 'featuremass[{extra}]'" if extra else f"pip install {top}"
        )
        raise MissingDependencyError(
            f"{purpose} needs the optional package '{top}', which is not installed "
            f"({exc.__class__.__name__}: {exc}). Install it with: {how}"
        ) from None


def has_module(name: str) -> bool:
    """True when ``name`` can be imported (without importing heavy submodules)."""
    return importlib.util.find_spec(name) is not None


def import_tensorflow(purpose: str = "The CNN") -> ModuleType:
    """Import TensorFlow quietly, or raise the 'install the cnn extra' message.

    TensorFlow's C++ start-up lines (oneDNN, "could not find cuda drivers",
    cuInit) are written to file descriptor 2 before its logging is set up, so
    no environment variable silences them. Unless the ``featuremass`` logger is
    at DEBUG level (``featuremass -vv``), descriptor 2 is pointed at /dev/null
    while TensorFlow is imported and its devices are listed, then restored.
    """
    import logging
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or logging.getLogger("featuremass").isEnabledFor(logging.DEBUG):
        return optional_import("tensorflow", purpose=purpose)
    with _stderr_fd_silenced():
        tf = optional_import("tensorflow", purpose=purpose)
        tf.config.list_physical_devices()  # device discovery prints the CUDA lines
    return tf


class _stderr_fd_silenced:
    """Point file descriptor 2 at /dev/null for the ``with`` block (Python's own stderr too)."""

    def __enter__(self):
        import os
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def __exit__(self, *exc):
        import os
        import sys

        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        return False
