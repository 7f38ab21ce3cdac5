import json

import numpy as np
import pandas as pd
import pytest

from featuremass._version import __version__
from featuremass.errors import DataError, SchemaError
from featuremass.models.inputs import NOISE_COLUMN, build_design
from featuremass.models.store import data_fingerprint, load_model, save_model
from featuremass.models.workflow import fit_model

FAST = {"n_estimators": 150, "learning_rate": 0.1, "n_jobs": 1}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, synth):
    table, meta = synth.survey(500, seed=0)
    design = build_design(table, "image+dl", metadata=meta, noise=True, seed=5)
    models = {}
    for kind in ("lgbm", "ridge", "mean"):
        m = fit_model(design.X, design.y, design.ids, kind=kind, input_set="image+dl",
                      noise_seed=5, n_boot=20, **FAST)
        path = save_model(tmp_path_factory.mktemp(kind) / "model", m)
        models[kind] = (m, path)
    test_table, test_meta = synth.survey(200, seed=1, id_offset=50_000_000)
    return models, test_table, test_meta


@pytest.mark.parametrize("kind", ["lgbm", "ridge", "mean"])
def test_save_load_identical_predictions(fitted, kind):
    models, table, meta = fitted
    model, path = models[kind]
    loaded = load_model(path)
    a = model.predict_frame(model.design(table, meta).X)
    b = loaded.predict_frame(loaded.design(table, meta).X)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(a.columns) == ["ml_pred", "ml_lo68", "ml_hi68", "ml_lo95", "ml_hi95"]
    # no pickle anywhere: only text and JSON files
    assert {p.suffix for p in path.iterdir()} <= {".txt", ".json"}


def test_sidecar_contents(fitted):
    models, _, _ = fitted
    _, path = models["lgbm"]
    sidecar = json.loads((path / "model.json").read_text())
    assert sidecar["featuremass_version"] == __version__
    assert sidecar["lightgbm_version"]
    assert sidecar["input_set"] == "image+dl" and sidecar["target"] == "linear"
    assert sidecar["feature_names"][-3:] == ["distance_Mpc", "L_g", NOISE_COLUMN]
    assert sidecar["noise_control"] == {"column": NOISE_COLUMN, "seed": 5}
    assert sidecar["training_data"]["fingerprint"].startswith("sha256:")
    assert sidecar["conformal"]["method"] == "cqr"
    assert set(sidecar["metrics"]) == {"train", "calibration"}
    ridge = json.loads((models["ridge"][1] / "model.json").read_text())
    assert len(ridge["coefficients"]["coef"]) == len(ridge["feature_names"])


def test_schema_missing_and_extra_columns_refused(fitted):
    models, table, meta = fitted
    loaded = load_model(models["lgbm"][1])
    with pytest.raises(SchemaError, match=r"missing column\(s\) \[gini\]"):
        loaded.design(table.drop(columns=["gini"]), meta)
    with pytest.raises(SchemaError, match=r"unexpected column\(s\) \[bogus_feature\]"):
        loaded.design(table.assign(bogus_feature=1.0), meta)


def test_schema_reordered_columns_realigned(fitted):
    models, table, meta = fitted
    loaded = load_model(models["lgbm"][1])
    cols = list(table.columns)
    shuffled = table[cols[::-1]]
    a = loaded.predict_frame(loaded.design(table, meta).X)
    b = loaded.predict_frame(loaded.design(shuffled, meta).X)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_fingerprint_sensitive_to_values_and_ids():
    X = pd.DataFrame({"a": [1.0, np.nan], "b": [2.0, 3.0]})
    ids = np.array([1, 2])
    f = data_fingerprint(ids, X)
    assert f == data_fingerprint(ids, X.copy())
    assert f != data_fingerprint(np.array([1, 3]), X)
    assert f != data_fingerprint(ids, X.assign(b=[2.0, 3.0000001]))


def test_load_errors(tmp_path, fitted):
    with pytest.raises(DataError, match="not found"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no model.json"):
        load_model(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_model(bad)
    models, _, _ = fitted
    src = models["lgbm"][1]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text((src / "model.json").read_text())
    with pytest.raises(DataError, match="model.txt"):
        load_model(broken)
