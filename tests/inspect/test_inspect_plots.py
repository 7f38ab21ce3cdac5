import numpy as np
import pandas as pd
import pytest

from featuremass.inspect import plots
from featuremass.models.inputs import NOISE_COLUMN

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 100
    return img


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.gamma(3, 0.5, 500)
    p = y + rng.normal(0, 0.3, 500)
    X = pd.DataFrame({"gini": rng.normal(size=500), "m20": rng.normal(size=500),
                      NOISE_COLUMN: rng.normal(size=500)})
    X.loc[::9, "m20"] = np.nan
    shap = X.fillna(0) * [0.5, 0.2, 0.01]
    return y, p, X, shap


def test_true_vs_predicted(tmp_path, data):
    y, p, _, _ = data
    _is_png(plots.true_vs_predicted(y, p, tmp_path / "tvp.png", title="test"))


def test_residuals(tmp_path, data):
    y, p, _, _ = data
    _is_png(plots.residuals_vs_true(y, p, tmp_path / "res.png"))


def test_importance_bars_shows_control(tmp_path, data):
    table = pd.DataFrame({"v": [3.0, 2.0, 0.1], "e": [0.1, 0.1, 0.1]},
                         index=["gini", "m20", NOISE_COLUMN])
    _is_png(plots.importance_bars(table, "v", tmp_path / "bars.png", top=1, errors="e"))


def test_shap_summary_and_pd(tmp_path, data):
    _, _, X, shap = data
    _is_png(plots.shap_summary(shap, X, tmp_path / "shap.png"))
    curves = pd.DataFrame({"feature": ["gini"] * 5 + ["m20"] * 5, "value": np.r_[0:5, 0:5],
                           "mean_prediction": np.r_[0:5, 5:0:-1] * 1.0})
    _is_png(plots.partial_dependence_plot(curves, tmp_path / "pd.png", X=X))
    _is_png(plots.coverage_plot([0.68, 0.95], [0.7, 0.94], tmp_path / "cov.png"))
