"""Seeded synthetic feature tables and metadata for the model tests (a helper module)."""

import numpy as np
import pandas as pd

FEATURES = ["concentration", "asymmetry", "gini", "m20", "sersic_n", "rpetro_circ",
            "ellipticity", "sky_noise"]


def synthetic_survey(n, seed=0, id_offset=10_000_000):
    """A feature table and matching metadata; M/L depends on 3 features and distance."""
    rng = np.random.default_rng(seed)
    ids = id_offset + np.arange(n, dtype=np.int64) * 7
    f = {name: rng.normal(size=n) for name in FEATURES}
    f["asymmetry"][rng.random(n) < 0.05] = np.nan  # unmeasurable sometimes
    distance = rng.uniform(50, 300, n)
    log_ml = (0.15 * f["concentration"] + 0.1 * np.tanh(f["gini"]) - 0.08 * f["sersic_n"] ** 2 / 2
              + 0.05 * np.log10(distance / 100) + rng.normal(0, 0.05, n))
    ml = 1.5 * 10**log_ml
    table = pd.DataFrame({"galaxy_id": ids, **f, "flag": np.zeros(n, dtype=np.int64)})
    meta = pd.DataFrame({"M/L": ml, "L_g": 10 ** rng.uniform(9, 11, n), "distance_Mpc": distance,
                         "galsize_kpc": rng.uniform(2, 20, n)}, index=pd.Index(ids, name="SDSS_ID"))
    return table, meta


