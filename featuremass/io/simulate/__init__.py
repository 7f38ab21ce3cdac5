"""A simulated SDSS-like g-band survey in the seed layout, with its truth.

Galaxies are drawn from a population model (:mod:`._population`: bulge +
disk light, component colours turned into M/L by the Bell et al. 2003
colour-M/L relation, dust, a flux limit) and rendered with GalSim
(:mod:`._render`: Sérsic bulge, exponential disk with spiral arms, bars,
star-forming clumps, dust lanes, Moffat PSF, stars, sky and Poisson noise, a
size-scaled crop, the seed stretch). :mod:`._survey` runs it in parallel and
writes the dataset atomically. The model is documented in
``docs/simulation.md``.

>>> from featuremass.io.simulate import SurveyConfig, simulate_survey  # doctest: +SKIP
>>> print(simulate_survey("sim", SurveyConfig(n_train=100, n_val=20, n_test=20)))  # doctest: +SKIP
"""

from featuremass.io.simulate._config import ID_BASE, SurveyConfig
from featuremass.io.simulate._population import ORACLE_COLUMNS, colour_to_ml, draw_galaxy
from featuremass.io.simulate._survey import (
    SurveySummary,
    galaxy_ids,
    galaxy_rng,
    simulate_galaxy,
    simulate_survey,
)

__all__ = [
    "ID_BASE",
    "ORACLE_COLUMNS",
    "SurveyConfig",
    "SurveySummary",
    "colour_to_ml",
    "draw_galaxy",
    "galaxy_ids",
    "galaxy_rng",
    "simulate_galaxy",
    "simulate_survey",
]
