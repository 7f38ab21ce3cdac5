"""The train → evaluate → predict → importance commands, end to end."""

import json

import numpy as np
import pandas as pd
import pytest

from featuremass.cli import main


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_on_feature_tables(survey_dir, tmp_path, capsys):
    d = survey_dir
    model = tmp_path / "model"
    code, out, err = _run(["train", "--features", d / "train.parquet", "--val-features", d / "val.parquet",
                           "--data", d, "--inputs", "image+dl", "--cv", "2", "-j", "1",
                           "--n-estimators", "80", "--learning-rate", "0.2", "--out", model],
                          capsys)
    assert code == 0, err
    assert "2-fold CV" in out

    code, out, err = _run(["evaluate", "--model", model, "--features", d / "test.parquet",
                           "--data", d, "--json", "--n-boot", "50"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == 300 and result["input_set"] == "image+dl"
    r2 = result["metrics"]["linear"]["r2"]
    assert r2["ci95"][0] <= r2["value"] <= r2["ci95"][1]
    assert r2["value"] > 0.3  # M/L depends on the features by construction
    assert set(result["coverage"]) == {"68", "95"}

    code, out, err = _run(["evaluate", "--model", model, "--features", d / "test.parquet",
                           "--data", d, "--n-boot", "20"], capsys)
    assert code == 0 and "rmse" in out

    pred_path = tmp_path / "pred.csv"
    code, out, err = _run(["predict", "--model", model, "--features", d / "test.parquet",
                           "--data", d, "--out", pred_path], capsys)
    assert code == 0, err
    pred = pd.read_csv(pred_path)
    assert list(pred.columns[:6]) == ["galaxy_id", "ml_pred", "ml_lo68", "ml_hi68",
                                      "ml_lo95", "ml_hi95"]
    meta = pd.read_csv(d / "metadata" / "metadata.tsv", sep="\t", index_col=0)
    lg = meta.loc[pred["galaxy_id"], "L_g"].to_numpy()
    np.testing.assert_allclose(pred["stellar_mass"], pred["ml_pred"] * lg, rtol=1e-12)
    assert ((pred["ml_lo95"] <= pred["ml_lo68"]) & (pred["ml_lo68"] <= pred["ml_pred"])).all()

    imp = tmp_path / "imp"
    code, out, err = _run(["importance", "--model", model, "--features", d / "test.parquet",
                           "--data", d, "--out", imp, "--n-repeats", "1"], capsys)
    assert code == 0, err
    for name in ("importance.csv", "importance_families.csv", "rank_stability.csv",
                 "noise_control.json", "shap_summary.png", "partial_dependence.png",
                 "true_vs_predicted.png", "residuals_vs_true.png", "importance_shap.png"):
        assert (imp / name).is_file(), name
    table = pd.read_csv(imp / "importance.csv", index_col=0)
    assert "control_noise" in table.index and "family" in table.columns


def test_cli_user_mistakes_are_one_line(survey_dir, tmp_path, capsys):
    d = survey_dir
    code, _, err = _run(["train", "--features", d / "train.parquet", "--out", tmp_path / "m"], capsys)
    assert code == 2 and "--data" in err and "Traceback" not in err
    code, _, err = _run(["train", "--features", tmp_path / "nope.parquet", "--data", d,
                         "--out", tmp_path / "m"], capsys)
    assert code == 2 and "nope.parquet" in err
    # a table whose columns differ from the model's
    code, _, err = _run(["train", "--features", d / "train.parquet", "--data", d, "--model", "ridge",
                         "--out", tmp_path / "ridge"], capsys)
    assert code == 0, err
    bad = pd.read_parquet(d / "test.parquet").drop(columns=["gini"])
    bad.to_parquet(tmp_path / "bad.parquet")
    code, _, err = _run(["predict", "--model", tmp_path / "ridge", "--features",
                         tmp_path / "bad.parquet", "--out", tmp_path / "p.csv"], capsys)
    assert code == 2 and "gini" in err and "bad.parquet" in err
    code, _, err = _run(["predict", "--model", tmp_path / "ridge", "--features",
                         d / "test.parquet", "--out", tmp_path / "p.txt"], capsys)
    assert code == 2 and ".csv or .parquet" in err
    code, _, err = _run(["importance", "--model", tmp_path / "ridge", "--features",
                         d / "test.parquet", "--data", d, "--out", tmp_path / "i"], capsys)
    assert code == 2 and "lgbm" in err


@pytest.fixture(scope="module")
def tiny_survey(tmp_path_factory):
    """A tiny simulated survey (60/20/30 galaxies at 48 px) and its feature tables."""
    import featuremass.features.batch as batch
    import featuremass.io.simulate as simulate
    from featuremass.io.layout import load_split

    root = tmp_path_factory.mktemp("tiny") / "survey"
    simulate.simulate_survey(root, simulate.SurveyConfig(n_train=60, n_val=20, n_test=30,
                                                         npix=(48,), seed=1), n_jobs=1)
    for split in ("train", "val", "test"):
        ds = load_split(root, npix=48, split=split)
        table = batch.extract_features(ds.images, ds.ids, scale="auto", n_jobs=1)  # as predict --images
        table.to_parquet(root / f"{split}_features.parquet", index=False)
    return root


@pytest.mark.slow
def test_cli_end_to_end_on_simulated_survey(tiny_survey, tmp_path, capsys):
    d = tiny_survey
    model = tmp_path / "model"
    code, out, err = _run(["train", "--features", d / "train_features.parquet", "--val-features",
                           d / "val_features.parquet", "--data", d, "-j", "1",
                           "--n-estimators", "100", "--out", model], capsys)
    assert code == 0, err
    code, out, err = _run(["evaluate", "--model", model, "--features",
                           d / "test_features.parquet", "--data", d, "--json", "--n-boot", "20"],
                          capsys)
    assert code == 0, err
    assert json.loads(out)["n"] == 30
    # predict straight from the raw images (features measured on the fly) ...
    pred_img = tmp_path / "from_images.parquet"
    code, out, err = _run(["predict", "--model", model,
                           "--images", d / "images/48pix_npy/test_images.npy",
                           "--names", d / "images/48pix_npy/test_names.npy",
                           "--data", d, "--out", pred_img], capsys)
    assert code == 0, err
    # ... agrees with predicting from the stored feature table
    pred_tab = tmp_path / "from_table.parquet"
    code, out, err = _run(["predict", "--model", model, "--features",
                           d / "test_features.parquet", "--out", pred_tab], capsys)
    assert code == 0, err
    a, b = pd.read_parquet(pred_img), pd.read_parquet(pred_tab)
    np.testing.assert_array_equal(a["galaxy_id"], b["galaxy_id"])
    np.testing.assert_allclose(a["ml_pred"], b["ml_pred"], rtol=1e-12)
    assert "stellar_mass" in a.columns and "stellar_mass" not in b.columns
    code, out, err = _run(["importance", "--model", model, "--features",
                           d / "test_features.parquet", "--data", d, "--out", tmp_path / "imp",
                           "--n-repeats", "1"], capsys)
    assert code == 0, err
    assert (tmp_path / "imp" / "shap_summary.png").is_file()
