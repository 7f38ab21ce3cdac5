"""The hybrid (CNN embedding + morphology -> LightGBM) end to end on a tiny survey."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featuremass.compat import has_module


@pytest.mark.cnn
@pytest.mark.slow
@pytest.mark.skipif(not has_module("tensorflow"),
                    reason="TensorFlow is not installed (pip install 'featuremass[cnn]')")
def test_hybrid_end_to_end_on_a_tiny_survey(tmp_path):
    from featuremass.features.batch import extract_features
    from featuremass.io.layout import load_split
    from featuremass.io.simulate import SurveyConfig, simulate_survey
    from featuremass.models.cnn import extra_inputs_from_metadata
    from featuremass.models.hybrid import HybridRegressor
    from featuremass.models.inputs import morphology_columns

    root = tmp_path / "survey"
    simulate_survey(root, SurveyConfig(n_train=240, n_val=60, n_test=80, npix=(32,), seed=5),
                    n_jobs=1)
    ds = {s: load_split(root, npix=32, split=s) for s in ("train", "val", "test")}
    feats = {s: extract_features(d.images, d.ids, scale="seed-log", n_jobs=1)
             for s, d in ds.items()}
    cols = morphology_columns(feats["train"])
    extra = {s: extra_inputs_from_metadata(d.metadata) for s, d in ds.items()}
    tr, va, te = ds["train"], ds["val"], ds["test"]

    model = HybridRegressor(npix=32, epochs=1, n_components=4, extra_inputs=True, seed=0,
                            gbm_params={"min_child_samples": 5, "n_jobs": 1})
    model.fit(tr.images, tr.target, features=feats["train"][cols], extra=extra["train"],
              val=(va.images, feats["val"][cols], va.target, extra["val"]))
    assert model.feature_names_[:4] == ["cnn_pc00", "cnn_pc01", "cnn_pc02", "cnn_pc03"]
    assert model.feature_names_[4:4 + len(cols)] == cols
    assert len(model.feature_names_) == 4 + len(cols) + 2
    pred = model.predict(te.images, feats["test"][cols], extra["test"])
    assert pred.shape == (len(te),) and np.isfinite(pred).all()
    # Skill: L_g and distance with the morphology must beat the training mean by a margin.
    rmse = np.sqrt(np.mean((pred - te.target) ** 2))
    rmse_mean = np.sqrt(np.mean((tr.target.mean() - te.target) ** 2))
    assert rmse < 0.8 * rmse_mean

    model.save(tmp_path / "hybrid", metrics={"test": {"n": len(te)}})
    side = json.loads((tmp_path / "hybrid" / "model.json").read_text())
    assert side["kind"] == "hybrid" and side["morphology_columns"] == cols
    again = HybridRegressor.load(tmp_path / "hybrid")
    np.testing.assert_array_equal(again.predict(te.images, feats["test"][cols], extra["test"]), pred)

    # Reordered feature columns are realigned by name; a missing one is refused.
    shuffled = feats["test"][cols[::-1]]
    np.testing.assert_array_equal(again.predict(te.images, shuffled, extra["test"]), pred)
    from featuremass.errors import SchemaError

    with pytest.raises(SchemaError, match="missing"):
        again.predict(te.images, feats["test"][cols[1:]], extra["test"])
