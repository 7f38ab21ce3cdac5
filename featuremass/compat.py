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
    """Import TensorFlow quietly, or raise the 'install the cnn extra' message."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return optional_import("tensorflow", purpose=purpose)
