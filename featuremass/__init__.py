"""featuremass: how much of a galaxy's g-band M/L can one image tell us?

The package follows the pipeline::

    featuremass.io        datasets, stretch, fetch, cutouts, simulation
    featuremass.features  classical morphology (one module per family)
    featuremass.models    LightGBM, baselines, CNN, hybrid
    featuremass.inspect   metrics, uncertainty checks, importance
    featuremass.report    HTML report
    featuremass.cli       the thin command line
"""

from featuremass._version import __version__

__all__ = ["__version__"]
