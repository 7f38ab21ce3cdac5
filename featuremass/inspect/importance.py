"""Which features carry the M/L: gain, split, permutation, SHAP, families, stability.

Every function takes a fitted model (anything with ``predict`` and, for the
tree-specific ones, a :class:`~featuremass.models.gbm.GBMRegressor`) and data,
and returns a :class:`pandas.DataFrame`. :func:`importance_study` runs them
all and writes CSV tables (and, with ``plots=True``, PNG figures).

* Gain / split: total loss reduction / number of splits per feature, from
  LightGBM (Ke et al. 2017). Biased toward high-cardinality features.
* Permutation: increase of the test RMSE when one column is shuffled
  (Breiman 2001, Machine Learning 45, 5; Fisher, Rudin & Dominici 2019,
  JMLR 20, 177), averaged over ``n_repeats`` shuffles.
* SHAP: mean |TreeSHAP value| (Lundberg et al. 2020, Nat. Mach. Intell. 2,
  56) from LightGBM's own ``pred_contrib=True``.
* Families: importances summed over the columns of each feature family.
* Stability: each feature's rank in each CV fold; mean ± std.
* Noise control: the rank of the :data:`~featuremass.models.inputs.NOISE_COLUMN`
  feature, which should sit in the bottom quartile.
* Partial dependence (Friedman 2001, Ann. Stat. 29, 1189): the mean
  prediction as one feature sweeps a grid, the others kept as observed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from featuremass.errors import FeaturemassError
from featuremass.models.inputs import NOISE_COLUMN
from featuremass.models.metrics import rmse


def _declared_families() -> dict:
    # Each feature module declares the family of its columns beside their names.
    from featuremass.features.fast import FAST_FAMILY
    from featuremass.features.measure import FEATURE_FAMILY
    from featuremass.models.inputs import INPUT_FAMILY

    return {**FEATURE_FAMILY, **FAST_FAMILY, **INPUT_FAMILY}


def feature_family(name: str) -> str:
    """The family its module declares for a feature column (``'other'`` for any other column)."""
    return _declared_families().get(name, "other")


def _booster_of(model):
    est = getattr(model, "estimator", model)
    if not hasattr(est, "booster_"):
        raise FeaturemassError(
            f"gain/split importance and SHAP need a LightGBM model, got {type(est).__name__}"
        )
    return est


def gain_split_importance(model) -> pd.DataFrame:
    """LightGBM gain and split importance; ``gain_frac`` normalised to sum 1."""
    est = _booster_of(model)
    gain = est.feature_importance("gain")
    split = est.feature_importance("split")
    total = gain.sum()
    df = pd.DataFrame({"gain": gain, "split": split,
                       "gain_frac": gain / total if total > 0 else gain * np.nan})
    df.index.name = "feature"
    return df


def permutation_importance(predict, X: pd.DataFrame, y, *, n_repeats: int = 5,
                           random_state=0, metric=rmse) -> pd.DataFrame:
    """Increase of ``metric`` (RMSE) when each column of ``X`` is shuffled.

    Parameters
    ----------
    predict : callable
        ``predict(X) -> y_pred`` (linear M/L).
    X : DataFrame
    y : array
        True M/L.
    n_repeats : int
        Shuffles per column; each column gets its own generator spawned from
        ``random_state``, so the result does not depend on column order.

    Returns
    -------
    DataFrame indexed by feature with ``importance_mean`` and ``importance_std``.
    """
    y = np.asarray(y, dtype=np.float64)
    base = float(metric(y, predict(X)))
    seeds = np.random.SeedSequence(random_state).spawn(X.shape[1])
    rows = {}
    for col, seed in zip(X.columns, seeds, strict=True):
        rng = np.random.default_rng(seed)
        scores = []
        shuffled = X.copy()
        original = X[col].to_numpy()
        for _ in range(n_repeats):
            shuffled[col] = original[rng.permutation(len(original))]
            scores.append(float(metric(y, predict(shuffled))) - base)
        rows[col] = (np.mean(scores), np.std(scores))
    df = pd.DataFrame.from_dict(rows, orient="index", columns=["importance_mean", "importance_std"])
    df.index.name = "feature"
    df.attrs["baseline_score"] = base
    return df


def shap_values(model, X: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """TreeSHAP values (fitted space) and the expected value, from ``pred_contrib``."""
    est = _booster_of(model)
    contrib = est.predict_contrib(X)
    names = list(est.feature_names_in_)
    return pd.DataFrame(contrib[:, :-1], columns=names, index=X.index), float(contrib[0, -1])


def shap_importance(shap: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| per feature."""
    df = pd.DataFrame({"mean_abs_shap": shap.abs().mean(axis=0)})
    df.index.name = "feature"
    return df


def family_importance(table: pd.DataFrame, columns=None) -> pd.DataFrame:
    """Sum each importance column over the features of each family.

    Also reports the number of features per family (``n_features``).
    """
    columns = list(table.columns if columns is None else columns)
    fam = pd.Series([feature_family(str(f)) for f in table.index], index=table.index, name="family")
    grouped = table[columns].groupby(fam).sum()
    grouped.insert(0, "n_features", fam.value_counts().reindex(grouped.index))
    grouped.index.name = "family"
    return grouped.sort_values(columns[0], ascending=False)


def ranks(values: pd.Series) -> pd.Series:
    """Rank 1 = most important; ties share the mean rank."""
    return values.rank(ascending=False, method="average")


def rank_stability(per_fold: list[pd.Series]) -> pd.DataFrame:
    """Mean and standard deviation of each feature's rank across CV folds."""
    if not per_fold:
        raise FeaturemassError("rank stability needs at least one fold's importances")
    table = pd.concat([ranks(s) for s in per_fold], axis=1)
    df = pd.DataFrame({"mean_rank": table.mean(axis=1), "std_rank": table.std(axis=1, ddof=0),
                       "n_folds": table.shape[1]})
    df.index.name = "feature"
    return df.sort_values("mean_rank")


def control_rank(values: pd.Series, column: str = NOISE_COLUMN) -> dict:
    """Rank of the noise control among ``values`` and its rank quantile.

    ``quantile`` is ``(rank - 1) / (n - 1)``: 0 for the most important feature,
    1 for the least; the control is "in the bottom quartile" when it is >= 0.75.
    """
    if column not in values.index:
        raise FeaturemassError(f"the noise control {column!r} is not among the model's features")
    r = ranks(values)
    n = len(values)
    quantile = float((r[column] - 1) / (n - 1)) if n > 1 else 1.0
    return {"rank": float(r[column]), "n_features": int(n), "quantile": quantile,
            "bottom_quartile": bool(quantile >= 0.75)}


def partial_dependence(predict, X: pd.DataFrame, feature: str, *, grid_resolution: int = 30,
                       percentiles=(0.05, 0.95), max_rows: int = 2000,
                       random_state=0) -> pd.DataFrame:
    """Mean prediction as ``feature`` sweeps an even grid between two percentiles.

    Rows with the feature measured are used as the background (at most
    ``max_rows``, a seeded subsample). Returns columns ``value`` and
    ``mean_prediction``; empty when the feature is never finite.
    """
    col = X[feature].to_numpy(dtype=np.float64)
    finite = col[np.isfinite(col)]
    if finite.size == 0:
        return pd.DataFrame({"value": [], "mean_prediction": []})
    lo, hi = np.quantile(finite, percentiles)
    grid = np.unique(np.linspace(lo, hi, grid_resolution))
    background = X
    if len(X) > max_rows:
        rows = np.random.default_rng(random_state).choice(len(X), max_rows, replace=False)
        background = X.iloc[np.sort(rows)]
    stacked = pd.concat([background] * len(grid), ignore_index=True)
    stacked[feature] = np.repeat(grid, len(background))
    pred = np.asarray(predict(stacked), dtype=np.float64).reshape(len(grid), len(background))
    return pd.DataFrame({"value": grid, "mean_prediction": pred.mean(axis=1)})


def importance_study(model, X: pd.DataFrame, y, *, out=None, cv_gain: list[pd.Series] | None = None,
                     n_repeats: int = 5, n_pd: int = 4, random_state=0, plots: bool = True,
                     prefix: str = "") -> dict:
    """Every importance measure of a fitted LightGBM model on ``(X, y)``.

    Parameters
    ----------
    model : GBMRegressor or TrainedModel
    X, y : test features (model columns) and true M/L
    out : path, optional
        Folder for ``{prefix}importance.csv``, ``{prefix}importance_families.csv``,
        ``{prefix}rank_stability.csv`` (with ``cv_gain``), ``{prefix}partial_dependence.csv``,
        ``{prefix}noise_control.json`` and, with ``plots``, PNG figures.
    cv_gain : list of Series, optional
        Gain importance of each CV fold, for :func:`rank_stability`.
    n_pd : int
        Partial-dependence curves for this many top features (by mean |SHAP|).

    Returns
    -------
    dict with DataFrames ``importance``, ``families``, ``stability`` (or None),
    ``partial_dependence``, ``shap``, the ``expected_value``, and ``noise_control``
    (one dict per importance column, or None without a control feature).
    """

    est = _booster_of(model)
    X = X[list(est.feature_names_in_)]
    table = gain_split_importance(est)
    perm = permutation_importance(est.predict, X, y, n_repeats=n_repeats, random_state=random_state)
    shap, expected = shap_values(est, X)
    table = table.join(perm).join(shap_importance(shap))
    table.insert(0, "family", [feature_family(str(f)) for f in table.index])
    table = table.sort_values("mean_abs_shap", ascending=False)
    value_cols = ["gain", "split", "importance_mean", "mean_abs_shap"]
    families = family_importance(table[value_cols])
    stability = rank_stability(cv_gain) if cv_gain else None
    top = [f for f in table.index if f != NOISE_COLUMN][:n_pd]
    pd_curves = pd.concat(
        [partial_dependence(est.predict, X, f, random_state=random_state).assign(feature=f)
         for f in top], ignore_index=True,
    ) if top else pd.DataFrame(columns=["value", "mean_prediction", "feature"])
    noise = None
    if NOISE_COLUMN in table.index:
        noise = {c: control_rank(table[c]) for c in value_cols}
        if stability is not None and NOISE_COLUMN in stability.index:
            n = len(stability)
            mr = float(stability.loc[NOISE_COLUMN, "mean_rank"])
            noise["cv_gain_mean_rank"] = {"mean_rank": mr, "n_features": n,
                                          "quantile": (mr - 1) / (n - 1) if n > 1 else 1.0}
    result = {"importance": table, "families": families, "stability": stability,
              "partial_dependence": pd_curves, "shap": shap, "expected_value": expected,
              "noise_control": noise}
    if out is not None:
        out = Path(out)
        from featuremass.io.layout import write_frame, write_json

        out.mkdir(parents=True, exist_ok=True)
        write_frame(table, out / f"{prefix}importance.csv")
        write_frame(families, out / f"{prefix}importance_families.csv")
        write_frame(pd_curves, out / f"{prefix}partial_dependence.csv", index=False)
        if stability is not None:
            write_frame(stability, out / f"{prefix}rank_stability.csv")
        if noise is not None:
            write_json(out / f"{prefix}noise_control.json", noise)
        if plots:
            from featuremass.inspect import plots as fmplots

            result["figures"] = [
                fmplots.importance_bars(table, "mean_abs_shap", out / f"{prefix}importance_shap.png",
                                        xlabel="mean |SHAP| (fitted space)"),
                fmplots.importance_bars(table, "importance_mean", out / f"{prefix}importance_permutation.png",
                                        xlabel="RMSE increase when shuffled", errors="importance_std"),
                fmplots.importance_bars(table, "gain_frac", out / f"{prefix}importance_gain.png",
                                        xlabel="fraction of total gain"),
                fmplots.importance_bars(families, "mean_abs_shap", out / f"{prefix}importance_families.png",
                                        xlabel="summed mean |SHAP|", top=len(families)),
                fmplots.shap_summary(shap, X, out / f"{prefix}shap_summary.png"),
                fmplots.partial_dependence_plot(pd_curves, out / f"{prefix}partial_dependence.png",
                                                X=X),
            ]
    return result
