"""The figures draw what they say: labels, the data itself, the ranges."""

import numpy as np
import pandas as pd
import pytest

from featuremass.inspect import plots
from featuremass.models.inputs import NOISE_COLUMN

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, in order (each is still written as a PNG)."""
    figures = []
    save = plots._save

    def keep(fig, path):
        figures.append(fig)
        out = save(fig, path)
        assert out.read_bytes()[:8] == PNG_MAGIC
        return out

    monkeypatch.setattr(plots, "_save", keep)
    return figures


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


def _main_axes(fig):
    return fig.axes[0]


def test_true_vs_predicted_bins_every_galaxy_and_writes_the_metrics(tmp_path, data, drawn):
    y, p, _, _ = data
    plots.true_vs_predicted(y, p, tmp_path / "tvp.png", title="test", lim=(0.0, 10.0))
    ax = _main_axes(drawn[0])
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "true M/L", "predicted M/L", "test")
    assert ax.get_xlim() == (0.0, 10.0) and ax.get_ylim() == (0.0, 10.0)
    counts = np.nan_to_num(np.asarray(ax.collections[0].get_array(), dtype=float))
    inside = ((y >= 0) & (y <= 10) & (p >= 0) & (p <= 10)).sum()
    assert counts.sum() == inside
    rmse = np.sqrt(np.mean((p - y) ** 2))
    text = " ".join(t.get_text() for t in ax.texts)
    assert f"RMSE = {rmse:.3f}" in text and "N = 500" in text


def test_residuals_median_follows_the_data(tmp_path, data, drawn):
    y, p, _, _ = data
    plots.residuals_vs_true(y, p, tmp_path / "res.png")
    ax = _main_axes(drawn[0])
    assert ax.get_ylabel() == "predicted - true M/L"
    points = ax.collections[0].get_offsets()
    np.testing.assert_allclose(points[:, 1], p - y)
    median = next(line for line in ax.lines if line.get_label() == "median")
    # The noise is N(0, 0.3) whatever M/L: every running median sits near zero.
    assert np.all(np.abs(median.get_ydata()) < 0.15)
    assert len(median.get_xdata()) == 15


def test_importance_bars_shows_the_control_in_red(tmp_path, data, drawn):
    table = pd.DataFrame({"v": [3.0, 2.0, 0.1], "e": [0.1, 0.1, 0.1]},
                         index=["gini", "m20", NOISE_COLUMN])
    plots.importance_bars(table, "v", tmp_path / "bars.png", top=1, errors="e")
    ax = _main_axes(drawn[0])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    # top=1 keeps the largest; the control is added whatever its rank, drawn in red (C3).
    assert labels == [NOISE_COLUMN, "gini"]
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == [0.1, 3.0]
    import matplotlib.colors as mcolors

    assert mcolors.to_hex(ax.patches[0].get_facecolor()) == mcolors.to_hex("C3")
    assert ax.get_xlabel() == "v"


def test_shap_summary_orders_features_by_mean_abs_shap(tmp_path, data, drawn):
    _, _, X, shap = data
    plots.shap_summary(shap, X, tmp_path / "shap.png")
    ax = _main_axes(drawn[0])
    # Bottom to top: the smallest mean |SHAP| first, so the largest (gini, 0.5x) is on top.
    assert [t.get_text() for t in ax.get_yticklabels()] == [NOISE_COLUMN, "m20", "gini"]
    dots = sum(len(c.get_offsets()) for c in ax.collections)
    assert dots == 3 * len(X)
    top_row = np.concatenate([c.get_offsets() for c in ax.collections])
    top_row = top_row[np.abs(top_row[:, 1] - 2) < 0.5]
    np.testing.assert_allclose(np.sort(top_row[:, 0]), np.sort(shap["gini"].to_numpy()))


def test_partial_dependence_and_coverage_draw_their_curves(tmp_path, data, drawn):
    _, _, X, _ = data
    curves = pd.DataFrame({"feature": ["gini"] * 5 + ["m20"] * 5, "value": np.r_[0:5, 0:5],
                           "mean_prediction": np.r_[0:5, 5:0:-1] * 1.0})
    plots.partial_dependence_plot(curves, tmp_path / "pd.png", X=X)
    panels = [ax for ax in drawn[0].axes if ax.get_visible()]
    assert [ax.get_xlabel() for ax in panels] == ["gini", "m20"]
    np.testing.assert_array_equal(panels[1].lines[0].get_ydata(), [5, 4, 3, 2, 1])
    rug = panels[0].lines[1].get_xdata()
    np.testing.assert_allclose(rug, np.nanquantile(X["gini"], np.linspace(0.1, 0.9, 9)))

    plots.coverage_plot([0.68, 0.95], [0.7, 0.94], tmp_path / "cov.png")
    ax = _main_axes(drawn[1])
    assert ax.get_xlim() == (0.5, 1) and ax.get_ylabel() == "empirical coverage (test)"
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), [0.7, 0.94])
