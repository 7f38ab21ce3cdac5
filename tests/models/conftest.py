"""Fixtures of the model tests."""

import pandas as pd
import pytest
from _model_synth import synthetic_survey

from featuremass.io.layout import write_metadata


@pytest.fixture(scope="module")
def survey_dir(tmp_path_factory):
    """Dataset folder with metadata + train/val/test Parquet feature tables."""
    root = tmp_path_factory.mktemp("synth_survey")
    tables = []
    metas = []
    for i, (split, n) in enumerate((("train", 600), ("val", 200), ("test", 300))):
        table, meta = synthetic_survey(n, seed=i, id_offset=10_000_000 * (i + 1))
        table.to_parquet(root / f"{split}.parquet", index=False)
        tables.append(table)
        metas.append(meta)
    write_metadata(root, pd.concat(metas))
    return root
