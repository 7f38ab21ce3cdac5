import numpy as np
import pandas as pd
import pytest

from featuremass.inspect.importance import (
    control_rank,
    family_importance,
    feature_family,
    importance_study,
    partial_dependence,
    permutation_importance,
    rank_stability,
)
from featuremass.models.gbm import GBMRegressor, cross_validate
from featuremass.models.inputs import NOISE_COLUMN, noise_control


@pytest.fixture(scope="module")
def informative():
    """12 features plus the noise control; a fitted GBM and test data.

    Three features are strongly informative; like real morphology features, the
    others carry weak, decreasing information (weights 0.1 x 0.75^k), and one
    ("feat11") none at all. The control must rank in the bottom quartile.
    """
    rng = np.random.default_rng(0)
    weak = 0.1 * 0.75 ** np.arange(8)

    def draw(n, offset):
        ids = np.arange(n, dtype=np.int64) + offset
        X = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"feat{i}" for i in range(12)])
        X[NOISE_COLUMN] = noise_control(ids, seed=0)
        y = 1.5 + 0.6 * X["feat0"] + 0.4 * np.tanh(X["feat1"]) + 0.3 * X["feat2"] ** 2
        y = y + X[[f"feat{i}" for i in range(3, 11)]].to_numpy() @ weak
        return X, (y + rng.normal(0, 0.2, n)).to_numpy()

    X, y = draw(1500, 0)
    Xt, yt = draw(600, 10**6)
    params = {"n_estimators": 200, "learning_rate": 0.1, "n_jobs": 1}
    model = GBMRegressor(**params).fit(X, y)
    return model, X, y, Xt, yt, params


def test_noise_control_in_bottom_quartile(informative, tmp_path):
    model, X, y, Xt, yt, params = informative
    cv = cross_validate(GBMRegressor(**params), X, y, n_splits=3)
    res = importance_study(model, Xt, yt, out=tmp_path, cv_gain=cv.gain, n_repeats=3, plots=False)
    for column, rank in res["noise_control"].items():
        if column != "cv_gain_mean_rank":
            assert rank["bottom_quartile"], (column, rank)
    assert res["noise_control"]["cv_gain_mean_rank"]["quantile"] >= 0.75
    top3 = set(res["importance"].index[:3])
    assert top3 == {"feat0", "feat1", "feat2"}
    for name in ("importance.csv", "importance_families.csv", "rank_stability.csv",
                 "partial_dependence.csv", "noise_control.json"):
        assert (tmp_path / name).is_file()
    # SHAP rows + expected value reproduce the fitted-space prediction
    np.testing.assert_allclose(res["shap"].sum(axis=1) + res["expected_value"],
                               model.predict_raw(Xt), atol=1e-9)


def test_permutation_of_unused_feature_is_zero():
    X = pd.DataFrame({"a": np.arange(10.0), "b": np.ones(10) * np.arange(10)[::-1]})
    y = 2 * X["a"].to_numpy()
    res = permutation_importance(lambda d: 2 * d["a"].to_numpy(), X, y, n_repeats=4)
    assert res.loc["b", "importance_mean"] == 0.0
    assert res.loc["a", "importance_mean"] > 0


def test_partial_dependence_of_linear_model():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.uniform(0, 10, 500), "b": rng.normal(size=500)})
    curve = partial_dependence(lambda d: 3 * d["a"].to_numpy() + d["b"].to_numpy(), X, "a",
                               grid_resolution=11)
    # PD(a) = 3 a + mean(b): slope exactly 3
    slope = np.polyfit(curve["value"], curve["mean_prediction"], 1)[0]
    assert slope == pytest.approx(3.0)
    assert curve["value"].min() == pytest.approx(np.quantile(X["a"], 0.05))


def test_rank_stability_by_hand():
    f1 = pd.Series({"a": 3.0, "b": 2.0, "c": 1.0})
    f2 = pd.Series({"a": 2.0, "b": 3.0, "c": 1.0})
    st = rank_stability([f1, f2])
    # ranks: a -> (1, 2), b -> (2, 1), c -> (3, 3): means 1.5, 1.5, 3; std (ddof 0) 0.5, 0.5, 0
    assert st.loc["a", "mean_rank"] == 1.5 and st.loc["a", "std_rank"] == 0.5
    assert st.loc["c", "mean_rank"] == 3.0 and st.loc["c", "std_rank"] == 0.0


def test_control_rank_quantile():
    v = pd.Series({"a": 4.0, "b": 3.0, "c": 2.0, NOISE_COLUMN: 1.0, "d": 0.5})
    r = control_rank(v)
    # rank 4 of 5 -> (4 - 1) / (5 - 1) = 0.75
    assert r["rank"] == 4 and r["quantile"] == 0.75 and r["bottom_quartile"]


@pytest.mark.parametrize("name,family", [
    ("concentration", "CAS"), ("asymmetry", "CAS"), ("smoothness", "CAS"),
    ("gini", "Gini-M20"), ("m20", "Gini-M20"), ("multimode", "MID"), ("deviation", "MID"),
    ("shape_asymmetry", "shape asymmetry"), ("outer_asymmetry", "shape asymmetry"),
    ("sersic_n", "Sérsic"), ("bd_bulge_to_total", "bulge-disk"), ("rpetro_circ", "radii"),
    ("r50", "radii"), ("ellipticity_centroid", "geometry"), ("sky_sigma", "sky/noise"),
    ("prof_slope_inner", "profile"), ("fast_gini80", "fast tier"),
    ("L_g", "extra inputs"), ("distance_Mpc", "extra inputs"), (NOISE_COLUMN, "control"),
    ("xyzzy", "other"),
])
def test_feature_family(name, family):
    assert feature_family(name) == family


def test_every_feature_column_declares_its_family():
    from featuremass.features.fast import FAST_COLUMNS, FAST_FAMILY
    from featuremass.features.measure import FEATURE_COLUMNS, FEATURE_FAMILY

    assert set(FEATURE_FAMILY) == set(FEATURE_COLUMNS)
    assert list(FAST_FAMILY) == list(FAST_COLUMNS)
    assert "other" not in {feature_family(c) for c in FEATURE_COLUMNS + FAST_COLUMNS}


def test_family_importance_sums():
    t = pd.DataFrame({"gain": [1.0, 2.0, 4.0]}, index=["gini", "m20", "concentration"])
    fam = family_importance(t)
    assert fam.loc["Gini-M20", "gain"] == 3.0 and fam.loc["Gini-M20", "n_features"] == 2
    assert fam.index[0] == "CAS"
