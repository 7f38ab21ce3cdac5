"""LightGBM on a Dask cluster: the same booster as a local fit, trained data-parallel.

:func:`fit_gbm_dask` trains ``lightgbm.dask.DaskLGBMRegressor`` with the
parameters of a :class:`~featuremass.models.gbm.GBMRegressor` on Dask
DataFrames, and returns a fitted ``GBMRegressor`` around the resulting
booster, so the model store saves it like any local model and ``predict``
without a scheduler loads it.

Early stopping is not available in ``lightgbm.dask``; the validation loss is
recorded every round and the round where LightGBM's own early-stopping rule
(no improvement for ``early_stopping_rounds`` rounds) would have stopped is
kept, so the kept model is the one a local fit would choose from the same
loss curve.

:func:`predict_partitions` maps a saved model over the partitions of a Dask
DataFrame; each task loads the model from its folder (shared storage), so no
model object travels through the scheduler.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from featuremass.errors import FeaturemassError
from featuremass.models.gbm import GBMRegressor, forward_target

log = logging.getLogger(__name__)

__all__ = ["best_iteration", "fit_gbm_dask", "lightgbm_machines", "predict_partitions"]

LOOPBACK = "127.0.0.1"


def best_iteration(valid_loss, patience: int) -> int:
    """Rounds kept by LightGBM's early-stopping rule on a recorded loss curve.

    The first round whose loss was not beaten within the next ``patience``
    rounds (1-based); with ``patience`` 0, all rounds.
    """
    loss = np.asarray(valid_loss, dtype=np.float64)
    if not len(loss):
        return 0
    if patience <= 0:
        return len(loss)
    best = 0
    for i in range(1, len(loss)):
        if loss[i] < loss[best]:
            best = i
        elif i - best >= patience:
            break
    return best + 1


def lightgbm_machines(client) -> list[str]:
    """Hosts of the cluster's workers: where LightGBM's ``machines`` list points."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return sorted({urlparse(addr).hostname for addr in workers})


def _partitions(client) -> int:
    return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))


def fit_gbm_dask(client, estimator: GBMRegressor, X_fit: pd.DataFrame, y_fit, X_stop: pd.DataFrame,
                 y_stop, *, local_cluster: bool = False) -> GBMRegressor:
    """Fit ``estimator``'s LightGBM model on the cluster behind ``client``.

    Parameters
    ----------
    client : distributed.Client
    estimator : GBMRegressor
        Unfitted; its parameters (loss, target, rounds, learning rate, leaves,
        bagging, seed, early-stopping patience) are used.
    X_fit, y_fit : training rows and linear M/L
    X_stop, y_stop : the early-stopping rows and linear M/L
    local_cluster : bool
        The cluster was started by this command on 127.0.0.1: refuse any
        worker elsewhere, so LightGBM's ``machines`` list stays on loopback.

    Returns
    -------
    GBMRegressor
        Fitted, around the booster trained on the cluster, with
        ``best_iteration_`` chosen from the validation loss and
        ``evals_result_`` holding it.
    """
    import dask.dataframe as dd
    from lightgbm.dask import DaskLGBMRegressor

    hosts = lightgbm_machines(client)
    if local_cluster and hosts != [LOOPBACK]:
        raise FeaturemassError(f"a local cluster must have its workers on {LOOPBACK}; found {hosts}")
    params = estimator.lgb_params()
    names = [str(c) for c in X_fit.columns]
    # LightGBM's own network (one listener per worker holding data) binds every
    # interface, 0.0.0.0, and has no option to change that. On a cluster whose
    # workers all live on this machine, the rows go to one worker instead:
    # LightGBM then trains with num_machines = 1 and opens no socket at all.
    # Only a cluster spread over several hosts uses LightGBM's network.
    n_parts = 1 if hosts == [LOOPBACK] else _partitions(client)

    def frame(X, y):
        # y is given the same index as X so both split into the same partitions
        X = X.reset_index(drop=True).astype(np.float64)
        z = pd.Series(forward_target(y, estimator.target), index=X.index, name="target")
        return dd.from_pandas(X, npartitions=n_parts), dd.from_pandas(z, npartitions=n_parts)

    Xd, yd = frame(X_fit, y_fit)
    Xs, ys = frame(X_stop, y_stop)
    objective = params.pop("objective")
    params.pop("num_threads", None)
    params.pop("verbosity", None)
    # one LightGBM thread per Dask worker thread: the workers already share the cores
    # lightgbm.dask gives each worker as many LightGBM threads as Dask threads
    model = DaskLGBMRegressor(client=client, objective=objective,
                              n_estimators=int(estimator.n_estimators), tree_learner="data",
                              verbose=-1, **params)
    evals = ({"eval_X": (Xs,), "eval_y": (ys,)}
             if "eval_X" in inspect.signature(model.fit).parameters else {"eval_set": [(Xs, ys)]})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Parameter .* will be ignored")
        model.fit(Xd, yd, eval_names=["valid"], **evals)
    local = model.to_local()
    curve = next(iter(local.evals_result_["valid"].values()))
    best = best_iteration(curve, int(estimator.early_stopping_rounds))
    booster = local.booster_
    fitted = GBMRegressor.from_booster(booster, best_iteration=best, **estimator.get_params())
    fitted.feature_names_in_ = np.asarray(names, dtype=object)
    fitted.evals_result_ = {"valid": {k: list(v) for k, v in local.evals_result_["valid"].items()}}
    log.info("lightgbm.dask on %d workers (%s): %d rounds, kept %d", n_parts, ",".join(hosts),
             len(curve), best)
    return fitted


def _predict_partition(part: pd.DataFrame, model_dir: str, metadata, impute: bool) -> pd.DataFrame:
    from featuremass.models.store import load_model
    from featuremass.models.workflow import predict_table

    part = part.reset_index(drop=True)
    part.attrs["source"] = "a partition of the feature table"
    return predict_table(load_model(model_dir), part, metadata, impute=impute)


def predict_partitions(client, model_dir, table: pd.DataFrame | str | Path, out: Path,
                       metadata: pd.DataFrame | None = None, *, impute: bool = False):
    """Predict every partition of ``table`` on the cluster; one Parquet file per partition.

    ``table`` is a feature table in memory or the path of a (partitioned)
    Parquet table. The parts are written into a temporary sibling folder that
    then replaces ``out`` (the caller has checked that ``out`` may be replaced).

    Returns
    -------
    (n_rows, n_nan, n_parts)
    """
    import shutil

    import dask.dataframe as dd

    n_parts = _partitions(client)
    if isinstance(table, str | Path):
        ddf = dd.read_parquet(str(table))
        if ddf.npartitions < n_parts:
            ddf = ddf.repartition(npartitions=n_parts)
    else:
        ddf = dd.from_pandas(table.reset_index(drop=True), npartitions=n_parts)
    model_dir = str(Path(model_dir).resolve())
    # the output schema comes from one real prediction on the first rows
    sample = _predict_partition(ddf.head(2, npartitions=-1), model_dir, metadata, impute)
    pred = ddf.map_partitions(_predict_partition, model_dir, metadata, impute, meta=sample.iloc[:0])
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        pred.to_parquet(str(tmp), write_index=False)
        written = pd.read_parquet(tmp, columns=["ml_pred"])
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(written), int(written["ml_pred"].isna().sum()), len(list(out.glob("*.parquet")))
