"""Exceptions that signal a user mistake.

The CLI turns any :class:`FeaturemassError` into one clear line on stderr and a
non-zero exit status; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FeaturemassError(ValueError):
    """A user mistake: bad input file, bad value, missing optional dependency."""


class DataError(FeaturemassError):
    """A dataset on disk is malformed (bad shape, dtype, ids, truncation)."""


class SchemaError(FeaturemassError):
    """A feature table does not match the schema a model was trained on."""


class MissingDependencyError(FeaturemassError):
    """An optional dependency (an extra) is not installed."""


class FetchError(FeaturemassError):
    """Downloading or unpacking a remote archive failed."""
