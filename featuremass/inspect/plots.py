"""Diagnostic figures (matplotlib, Agg backend, PNG).

Each function draws one figure, writes it to ``path`` and returns the path.
Nothing touches pyplot's global state beyond creating and closing its own
figure, so the functions are safe to call from scripts and tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _figure(figsize):
    # A bare Figure renders with the Agg canvas and never touches pyplot's state.
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _save(fig, path) -> Path:
    from featuremass.io.layout import save_figure

    return save_figure(fig, path, dpi=120)


def true_vs_predicted(y_true, y_pred, path, *, title: str = "", rmse=None, r2=None,
                      lim=None) -> Path:
    """2-D histogram of predicted against true M/L with RMSE and R² written on it.

    As in the seed's result plots: a density image (log colour scale), the
    one-to-one line, and the metrics in the upper-left corner. ``rmse`` and
    ``r2`` default to the values of these arrays.
    """
    from matplotlib.colors import LogNorm

    from featuremass.models.metrics import r2_score
    from featuremass.models.metrics import rmse as rmse_fn

    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    rmse = float(rmse_fn(y_true, y_pred)) if rmse is None else rmse
    r2 = float(r2_score(y_true, y_pred)) if r2 is None else r2
    if lim is None:
        both = np.concatenate([y_true, y_pred])
        lim = (min(0.0, np.quantile(both, 0.001)), np.quantile(both, 0.995) * 1.05)
    fig = _figure((5.2, 4.6))
    ax = fig.add_subplot()
    bins = np.linspace(lim[0], lim[1], 70)
    counts, xe, ye = np.histogram2d(y_true, y_pred, bins=[bins, bins])
    mesh = ax.pcolormesh(xe, ye, np.where(counts > 0, counts, np.nan).T, cmap="viridis",
                         norm=LogNorm(vmin=1, vmax=max(2, counts.max())))
    fig.colorbar(mesh, ax=ax, label="galaxies per bin")
    ax.plot(lim, lim, color="k", lw=1, ls="--")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("true M/L")
    ax.set_ylabel("predicted M/L")
    ax.text(0.04, 0.96, f"RMSE = {rmse:.3f}\n$R^2$ = {r2:.3f}\nN = {len(y_true)}",
            transform=ax.transAxes, va="top", ha="left",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    if title:
        ax.set_title(title)
    return _save(fig, path)


def residuals_vs_true(y_true, y_pred, path, *, title: str = "", n_bins: int = 15) -> Path:
    """Residual (predicted - true) against true M/L, with the running median and 16-84% band."""
    y_true = np.asarray(y_true, dtype=np.float64)
    resid = np.asarray(y_pred, dtype=np.float64) - y_true
    fig = _figure((5.6, 4.0))
    ax = fig.add_subplot()
    ax.scatter(y_true, resid, s=3, alpha=0.25, color="C0", rasterized=True, linewidths=0)
    edges = np.quantile(y_true, np.linspace(0, 1, n_bins + 1))
    centre, med, lo, hi = [], [], [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sel = (y_true >= a) & (y_true <= b)
        if sel.sum() >= 5:
            centre.append(np.median(y_true[sel]))
            q = np.quantile(resid[sel], [0.16, 0.5, 0.84])
            lo.append(q[0])
            med.append(q[1])
            hi.append(q[2])
    ax.plot(centre, med, color="C3", lw=2, label="median")
    ax.fill_between(centre, lo, hi, color="C3", alpha=0.2, label="16-84%")
    ax.axhline(0, color="k", lw=1, ls="--")
    ax.set_xlabel("true M/L")
    ax.set_ylabel("predicted - true M/L")
    ax.legend(loc="upper right", frameon=False)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def importance_bars(table: pd.DataFrame, column: str, path, *, top: int = 20, xlabel: str = "",
                    errors: str | None = None, title: str = "") -> Path:
    """Horizontal bars of the ``top`` largest values of ``table[column]``.

    The noise control, if present, is drawn in red whatever its rank, so a
    reader sees where "no information" sits.
    """
    from featuremass.models.inputs import NOISE_COLUMN

    order = table[column].sort_values(ascending=False)
    shown = list(order.index[:top])
    if NOISE_COLUMN in order.index and NOISE_COLUMN not in shown:
        shown.append(NOISE_COLUMN)
    values = order.loc[shown][::-1]
    fig = _figure((6.0, 0.28 * len(values) + 1.2))
    ax = fig.add_subplot()
    colors = ["C3" if name == NOISE_COLUMN else "C0" for name in values.index]
    xerr = table.loc[values.index, errors].to_numpy() if errors else None
    ax.barh(np.arange(len(values)), values.to_numpy(), color=colors, xerr=xerr)
    ax.set_yticks(np.arange(len(values)), [str(v) for v in values.index], fontsize=8)
    ax.set_xlabel(xlabel or column)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def shap_summary(shap: pd.DataFrame, X: pd.DataFrame, path, *, top: int = 15,
                 max_points: int = 3000, random_state=0) -> Path:
    """Beeswarm-like SHAP summary: one row per feature, dots coloured by feature value.

    Features are ordered by mean |SHAP|. Each dot is a galaxy; its colour is
    the feature's percentile rank among the galaxies (blue low, red high; grey
    where the feature is NaN). Vertical jitter is proportional to the local
    density of SHAP values, so the rows look like violins.
    """
    order = shap.abs().mean(axis=0).sort_values(ascending=False).index[:top]
    rng = np.random.default_rng(random_state)
    rows = np.arange(len(shap))
    if len(rows) > max_points:
        rows = np.sort(rng.choice(len(rows), max_points, replace=False))
    fig = _figure((6.4, 0.35 * len(order) + 1.3))
    ax = fig.add_subplot()
    for i, name in enumerate(order[::-1]):
        s = shap[name].to_numpy()[rows]
        v = X[name].to_numpy(dtype=np.float64)[rows]
        pct = pd.Series(v).rank(pct=True).to_numpy()
        hist, edges = np.histogram(s, bins=40)
        dens = hist[np.clip(np.searchsorted(edges, s, side="right") - 1, 0, len(hist) - 1)]
        width = 0.4 * dens / max(1, hist.max())
        y = i + rng.uniform(-1, 1, len(s)) * width
        nan = ~np.isfinite(v)
        ax.scatter(s[nan], y[nan], s=3, color="0.6", linewidths=0, rasterized=True)
        sc = ax.scatter(s[~nan], y[~nan], s=3, c=pct[~nan], cmap="coolwarm", vmin=0, vmax=1,
                        linewidths=0, rasterized=True)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(np.arange(len(order)), [str(n) for n in order[::-1]], fontsize=8)
    ax.set_xlabel("SHAP value (effect on the fitted target)")
    if len(order):
        fig.colorbar(sc, ax=ax, label="feature value (percentile)", ticks=[0, 1])
    return _save(fig, path)


def partial_dependence_plot(curves: pd.DataFrame, path, *, X: pd.DataFrame | None = None) -> Path:
    """One panel per feature: mean predicted M/L against the feature value.

    ``curves`` has columns ``feature``, ``value``, ``mean_prediction`` (as from
    :func:`featuremass.inspect.importance.partial_dependence`). With ``X``, a
    rug of the feature's deciles is drawn along the bottom.
    """
    features = list(dict.fromkeys(curves["feature"])) if len(curves) else []
    n = max(1, len(features))
    ncol = min(n, 2)
    nrow = int(np.ceil(n / ncol))
    fig = _figure((4.0 * ncol, 3.0 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, name in zip(axes, features, strict=False):
        c = curves[curves["feature"] == name]
        ax.plot(c["value"], c["mean_prediction"], color="C0", lw=2)
        if X is not None and name in X:
            dec = np.nanquantile(X[name].to_numpy(dtype=np.float64), np.linspace(0.1, 0.9, 9))
            ymin = c["mean_prediction"].min()
            ax.plot(dec, np.full_like(dec, ymin), "|", color="k", ms=10)
        ax.set_xlabel(name)
        ax.set_ylabel("mean predicted M/L")
    for ax in axes[len(features):]:
        ax.set_visible(False)
    return _save(fig, path)


def coverage_plot(nominal, empirical, path, *, title: str = "") -> Path:
    """Empirical against nominal interval coverage, with the ideal diagonal."""
    fig = _figure((4.0, 4.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=1)
    ax.plot(nominal, empirical, "o", color="C0")
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage (test)")
    ax.set_xlim(0.5, 1)
    ax.set_ylim(0.5, 1)
    if title:
        ax.set_title(title)
    return _save(fig, path)
