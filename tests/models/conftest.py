"""Seeded synthetic feature tables and metadata for the model tests."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from featuremass.io.layout import write_metadata

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




@pytest.fixture(scope="session")
def synth():
    """``synth.survey(n, seed, id_offset) -> (table, metadata)`` and ``synth.FEATURES``."""
    return SimpleNamespace(survey=synthetic_survey, FEATURES=FEATURES)


@pytest.fixture(scope="module")
def survey_dir(tmp_path_factory):
    """Dataset folder with metadata + train/val/test Parquet feature tables."""
    root = tmp_path_factory.mktemp("synth_survey")
    metas = []
    for i, (split, n) in enumerate((("train", 600), ("val", 200), ("test", 300))):
        table, meta = synthetic_survey(n, seed=i, id_offset=10_000_000 * (i + 1))
        table.to_parquet(root / f"{split}.parquet", index=False)
        metas.append(meta)
    write_metadata(root, pd.concat(metas))
    return root


@pytest.fixture
def eager_keras(monkeypatch):
    """Keras trains and predicts eagerly instead of tracing a graph first.

    For tests of plumbing (scikit-learn's API checks, callbacks) that fit a
    tiny network for one or two steps, often dozens of times: tracing the
    training graph (the Nadam update above all) takes about 4 s a fit here,
    running the steps eagerly well under 1 s. What they test does not depend
    on how Keras runs a step; the network's numbers, determinism and resumed
    training are tested in graph mode.
    """
    import keras

    compile_ = keras.Model.compile

    def compile_eagerly(self, *args, **kwargs):
        kwargs["run_eagerly"] = True
        return compile_(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "compile", compile_eagerly)
