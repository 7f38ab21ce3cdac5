"""The single source of featuremass's version."""

__version__ = "0.1.0"
