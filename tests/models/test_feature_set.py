"""The feature set travels from the feature table to the model's sidecar to ``predict --images``."""

import json

import numpy as np
import pandas as pd
import pytest

from featuremass.cli import main
from featuremass.models.inputs import NOISE_COLUMN


@pytest.fixture(scope="module")
def fast_survey(tmp_path_factory):
    """Seed-stretched exponential discs (60 train, 12 test, 40 px), metadata and fast-tier tables."""
    import featuremass.features.batch as batch
    from featuremass.io.layout import write_metadata
    from featuremass.io.stretch import seed_stretch

    root = tmp_path_factory.mktemp("fastset")
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:40, :40] - 19.5
    metas = []
    for split, n, offset in (("train", 60, 1000), ("test", 12, 5000)):
        ids = offset + np.arange(n, dtype=np.int64)
        size = rng.uniform(1.5, 6.0, n)
        stack = np.stack([seed_stretch(300 * np.exp(-np.hypot(x, y) / s) + rng.normal(size=x.shape))
                          for s in size])
        np.save(root / f"{split}_images.npy", stack)
        np.save(root / f"{split}_names.npy", ids)
        batch.extract_features(stack, ids, scale="seed-log", feature_set="fast", n_jobs=1,
                               out=root / f"{split}_fast.parquet")
        metas.append(pd.DataFrame({"M/L": 1.0 + 0.1 * size, "L_g": np.full(n, 1e10),
                                   "distance_Mpc": np.full(n, 100.0), "galsize_kpc": size},
                                  index=pd.Index(ids, name="SDSS_ID")))
    write_metadata(root, pd.concat(metas))
    return root


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_fast_model_records_its_set_and_predict_images_extracts_it(fast_survey, tmp_path, capsys):
    d = fast_survey
    model = tmp_path / "model"
    code, _, err = _run(["train", "--features", d / "train_fast.parquet", "--data", d, "-j", "1",
                         "--n-estimators", "20", "--out", model], capsys)
    assert code == 0, err
    sidecar = json.loads((model / "model.json").read_text())
    assert sidecar["feature_set"] == "fast"
    assert all(c.startswith("fast_") for c in sidecar["feature_names"] if c != NOISE_COLUMN)
    # predict --images measures the fast set (a full-set table would lack every model column) ...
    pred_img = tmp_path / "from_images.parquet"
    code, _, err = _run(["predict", "--model", model, "--scale", "seed-log",
                         "--images", d / "test_images.npy",
                         "--names", d / "test_names.npy", "--out", pred_img], capsys)
    assert code == 0, err
    # ... and agrees with predicting from the fast table extract wrote.
    pred_tab = tmp_path / "from_table.parquet"
    code, _, err = _run(["predict", "--model", model, "--features", d / "test_fast.parquet",
                         "--out", pred_tab], capsys)
    assert code == 0, err
    a, b = pd.read_parquet(pred_img), pd.read_parquet(pred_tab)
    np.testing.assert_array_equal(a["galaxy_id"], b["galaxy_id"])
    np.testing.assert_allclose(a["ml_pred"], b["ml_pred"], rtol=1e-12)


def test_a_table_of_the_other_set_is_refused_with_the_command_to_remeasure(fast_survey, tmp_path, capsys):
    from featuremass.errors import SchemaError
    from featuremass.models.store import load_model
    from featuremass.models.workflow import check_compatible

    d = fast_survey
    model_dir = tmp_path / "model"
    code, _, err = _run(["train", "--features", d / "train_fast.parquet", "--data", d, "-j", "1",
                         "--n-estimators", "5", "--out", model_dir], capsys)
    assert code == 0, err
    model = load_model(model_dir)
    assert model.feature_set == "fast"
    record = {"feature_engine_version": model.feature_engine_version, "scale": model.scale,
              "feature_set": "full", "input": {"mode": "images", "images": "x.npy"}}
    with pytest.raises(SchemaError, match="--feature-set fast"):
        check_compatible(model, record, "t.parquet")
