"""Hybrid model: the CNN's embedding plus classical morphology, fed to LightGBM.

Dobbels et al. (2019, A&A 624, A102, section 5) fed the penultimate-layer
activations of their CNN to a gradient-boosted tree model. featuremass adds the
classical morphology features (and, optionally, the extra inputs) beside that
embedding, so the trees can combine what the network saw with interpretable
measurements::

    images -> CNN -> 512-d embedding -> PCA (n_components) --+
    morphology feature table ---------------------------------+--> LightGBM -> M/L
    [extra inputs: distance, L_g] ----------------------------+

Caveat: when the CNN is trained on the same galaxies as the trees, its
training-set embedding is more informative than on unseen galaxies, so the
trees may lean on it too much; early stopping of LightGBM on the validation
split (unseen by the CNN's weights, though used for its early stopping) limits
the damage. Pass an already-fitted CNN trained elsewhere with ``prefit=True``
to avoid it (and to train no CNN twice).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_array, check_is_fitted

from featuremass.errors import DataError, FeaturemassError, SchemaError
from featuremass.models.cnn import CNNRegressor
from featuremass.models.gbm import GBMRegressor

SIDECAR_FILE = "model.json"
SIDECAR_KIND = "hybrid"
BOOSTER_FILE = "lgbm.txt"
CNN_DIR = "cnn"

def _as_frame(features, names=None, *, what="features") -> pd.DataFrame:
    if isinstance(features, pd.DataFrame):
        df = features.drop(columns=[c for c in ("galaxy_id", "flag") if c in features.columns])
    else:
        arr = np.asarray(features, dtype=np.float64)
        if arr.ndim != 2:
            raise DataError(f"{what} must be a 2-D table; got shape {arr.shape}")
        cols = names if names is not None else [f"feature_{i}" for i in range(arr.shape[1])]
        df = pd.DataFrame(arr, columns=list(cols))
    if names is not None:
        missing = [c for c in names if c not in df.columns]
        extra = [c for c in df.columns if c not in names]
        if missing or extra:
            raise SchemaError(
                f"{what} do not match the hybrid's features: missing {missing[:8]}, "
                f"unexpected {extra[:8]}"
            )
        df = df[list(names)]
    return df.astype(np.float64).reset_index(drop=True)


class HybridRegressor(RegressorMixin, BaseEstimator):
    """CNN embedding (PCA-reduced) + morphology features -> LightGBM (a scikit-learn regressor).

    **Input.** ``fit(X, y, features=table)`` takes the stamps ``X`` (as
    :class:`~featuremass.models.cnn.CNNRegressor` does) and the morphology
    table beside them. Without ``features``, ``X`` is one table whose first
    ``npix * npix`` columns are the flattened stamp and the rest the
    morphology features, so the model sits in scikit-learn pipelines and checks.

    Parameters
    ----------
    npix : int, optional
        Stamp side in pixels (required for the one-table input).
    cnn : CNNRegressor, optional
        The CNN to embed with. Without ``prefit`` a clone of it is trained in
        :meth:`fit`; default ``CNNRegressor(npix, extra_inputs, epochs, seed,
        verbose)``.
    prefit : bool
        ``cnn`` is already fitted: use it as it is and train only the PCA and
        the trees (as ``CalibratedClassifierCV(cv="prefit")`` reuses its
        estimator).
    n_components : int or None
        Principal components kept of the 512-d embedding (None: all 512).
    extra_inputs : bool
        Give the CNN and the trees the extra inputs (distance, L_g).
    epochs : int
        Epochs of the default CNN (without ``cnn``).
    gbm_params : dict, optional
        Parameters of the :class:`~featuremass.models.gbm.GBMRegressor` on top
        (its defaults otherwise: L2 loss, early stopping on ``val``).
    seed : int
    verbose : int

    Attributes
    ----------
    cnn_ : CNNRegressor
        The fitted CNN (``cnn`` itself with ``prefit``).
    n_features_in_ : int
        ``npix ** 2`` plus the morphology columns: the width of one-table input.
    pca_mean_, pca_components_ : ndarray
        The embedding projection ``(E - mean) @ components.T``.
    feature_names_ : list of str
        Columns the trees see, in order: ``cnn_pc00..``, morphology, extras.
    gbm_ : GBMRegressor
    """

    def __init__(self, *, npix: int | None = None, cnn: CNNRegressor | None = None,
                 prefit: bool = False, n_components: int | None = 32, extra_inputs: bool = False,
                 epochs: int = 50, gbm_params: dict | None = None, seed: int = 0, verbose: int = 0):
        self.npix = npix
        self.cnn = cnn
        self.prefit = prefit
        self.n_components = n_components
        self.extra_inputs = extra_inputs
        self.epochs = epochs
        self.gbm_params = gbm_params
        self.seed = seed
        self.verbose = verbose

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "gbm_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # morphology is NaN where unmeasurable
        # A one-epoch CNN on scikit-learn's random check tables is no test of skill.
        tags.regressor_tags.poor_score = True
        return tags

    # ---------------------------------------------------------------- design

    def _split(self, X, features, npix):
        """``(stamps, morphology)`` from the two-part or the one-table input."""
        if features is not None:
            return X, features
        if isinstance(X, pd.DataFrame):
            raise FeaturemassError("pass the stamps as X and the morphology table as features=")
        table = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan", input_name="X")
        if npix is None:
            raise DataError("one-table input needs npix: the first npix * npix columns are the stamp")
        width = int(npix) ** 2
        if table.shape[1] <= width:
            raise DataError(f"X has {table.shape[1]} features, but HybridRegressor is expecting "
                            f"more than {width} features as input ({npix} x {npix} px stamp, "
                            "then the morphology)")
        return table[:, :width], table[:, width:]

    def _embedding(self, images, extra) -> np.ndarray:
        emb = self.cnn_.embed(images, extra if self.cnn_.extra_inputs else None)
        return (emb - self.pca_mean_) @ self.pca_components_.T

    def _design(self, images, features, extra, names=None) -> pd.DataFrame:
        feats = _as_frame(features, names)
        if len(feats) != len(images):
            raise DataError(f"{len(feats)} feature rows for {len(images)} images")
        emb = self._embedding(images, extra)
        parts = [pd.DataFrame(emb, columns=[f"cnn_pc{i:02d}" for i in range(emb.shape[1])]), feats]
        if self.extra_inputs:
            e = np.asarray(extra, dtype=np.float64).reshape(len(images), -1)
            parts.append(pd.DataFrame(e, columns=[f"extra_{i}" for i in range(e.shape[1])]))
        return pd.concat(parts, axis=1)

    # ---------------------------------------------------------------- fit

    def fit(self, X, y, *, features=None, extra=None, val=None) -> HybridRegressor:
        """Train the CNN (unless ``prefit``), the PCA, then LightGBM.

        Parameters
        ----------
        X : array (n, npix, npix), or the one table (n, npix * npix + k)
            The stamps; see the class docstring for the one-table form.
        y : array (n,)
        features : DataFrame or array (n, k), optional
            Morphology features aligned with ``X`` (``galaxy_id`` and
            ``flag`` columns are dropped); NaN is allowed.
        extra : array (n, m), optional
            Required when ``extra_inputs=True``.
        val : tuple ``(images, features, y[, extra])``, optional
            Early stopping of the CNN and of LightGBM.
        """
        t0 = time.perf_counter()
        images, features = self._split(X, features, self.npix)
        if y is None:
            raise DataError("HybridRegressor requires y to be passed, but the target y is None")
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y").ravel()
        if self.extra_inputs and extra is None:
            raise FeaturemassError("extra_inputs=True needs extra=(n, m) array")
        v_images = v_feats = v_y = v_extra = None
        if val is not None:
            if len(val) not in (3, 4):
                raise FeaturemassError("val must be (images, features, y) or (images, features, y, extra)")
            v_images, v_feats, v_y = val[0], val[1], np.asarray(val[2], dtype=np.float64).ravel()
            v_extra = val[3] if len(val) == 4 else None

        if self.prefit:
            if self.cnn is None:
                raise FeaturemassError("prefit=True needs a fitted cnn")
            check_is_fitted(self.cnn, msg="prefit=True needs a fitted cnn; this one is not")
            self.cnn_ = self.cnn
        else:
            self.cnn_ = clone(self.cnn) if self.cnn is not None else CNNRegressor(
                npix=self.npix, extra_inputs=self.extra_inputs, epochs=self.epochs,
                seed=self.seed, verbose=self.verbose)
            cnn_val = None
            if val is not None:
                cnn_val = (v_images, v_y, v_extra) if self.extra_inputs else (v_images, v_y)
            self.cnn_.fit(images, y, extra=extra if self.extra_inputs else None, val=cnn_val)

        emb = self.cnn_.embed(images, extra if self.cnn_.extra_inputs else None)
        self.pca_mean_ = emb.mean(axis=0)
        k = emb.shape[1] if self.n_components is None else int(min(self.n_components, *emb.shape))
        if k < emb.shape[1]:
            from sklearn.decomposition import PCA

            pca = PCA(n_components=k, random_state=self.seed).fit(emb)
            self.pca_components_ = pca.components_
            self.pca_explained_ = pca.explained_variance_ratio_
        else:
            self.pca_components_ = np.eye(emb.shape[1])
            self.pca_explained_ = np.full(emb.shape[1], np.nan)

        self.morph_names_ = list(_as_frame(features).columns)
        X = self._design(images, features, extra, self.morph_names_)
        self.feature_names_ = list(X.columns)
        self.n_features_in_ = self.cnn_.npix_ ** 2 + len(self.morph_names_)
        Xv = yv = None
        if val is not None:
            Xv, yv = self._design(v_images, v_feats, v_extra, self.morph_names_), v_y
        params = {"random_state": int(self.seed), **(self.gbm_params or {})}
        self.gbm_ = GBMRegressor(**params).fit(X, y, X_val=Xv, y_val=yv)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _check_fitted(self):
        check_is_fitted(self, msg="this HybridRegressor is not fitted yet; call fit() or load()")

    def predict(self, X, features=None, extra=None) -> np.ndarray:
        """Predicted M/L, shape (n,), of stamps ``X`` and their morphology (as in :meth:`fit`)."""
        self._check_fitted()
        images, features = self._split(X, features, self.cnn_.npix_)
        if features is not None and not isinstance(features, pd.DataFrame):
            width = np.shape(features)[1] if np.ndim(features) == 2 else None
            if width is not None and width != len(self.morph_names_):
                raise SchemaError(f"X has {self.cnn_.npix_ ** 2 + width} features, but "
                                  f"HybridRegressor is expecting {self.n_features_in_} features "
                                  f"as input ({len(self.morph_names_)} morphology columns)")
        if self.extra_inputs and extra is None:
            raise FeaturemassError("this hybrid was trained with extra inputs; pass extra=")
        X = self._design(images, features, extra, self.morph_names_)
        return np.asarray(self.gbm_.predict(X), dtype=np.float64)

    def importance(self, kind: str = "gain") -> pd.Series:
        """LightGBM ``'gain'`` or ``'split'`` importance per input column, largest first."""
        self._check_fitted()
        return self.gbm_.feature_importance(kind).sort_values(ascending=False)

    # ---------------------------------------------------------------- persistence

    def save(self, directory, *, metrics: dict | None = None, overwrite: bool = True) -> Path:
        """Save ``cnn/`` (the CNN), ``lgbm.txt`` (LightGBM text) and ``model.json``.

        One atomic save through the model store: the CNN is staged inside the
        same temporary folder, so the hybrid and its CNN always match.
        """
        from featuremass.models import store

        self._check_fitted()
        fields = {
            "params": {"npix": int(self.cnn_.npix_), "n_components": self.n_components,
                       "extra_inputs": bool(self.extra_inputs), "epochs": int(self.epochs),
                       "seed": int(self.seed), "gbm_params": self.gbm_.get_params()},
            "feature_names": self.feature_names_,
            "morphology_columns": self.morph_names_,
            "best_iteration": int(self.gbm_.best_iteration_),
            "pca": {"mean": self.pca_mean_.tolist(), "components": self.pca_components_.tolist(),
                    "explained_variance_ratio": [None if not np.isfinite(v) else float(v)
                                                 for v in self.pca_explained_]},
            "cnn_fingerprint": self.cnn_.fingerprint_,
        }

        def write_files(directory: Path) -> None:
            store.stage(directory / CNN_DIR, **self.cnn_._stage_arguments(None))
            (directory / BOOSTER_FILE).write_text(self.gbm_.model_to_string())

        return store.save(directory, overwrite=overwrite, kind=SIDECAR_KIND,
                          write_files=write_files, fields=fields,
                          feature_columns=self.feature_names_, scale=None,
                          metrics=metrics or {}, libraries=("lightgbm", "tensorflow", "keras"))

    @classmethod
    def load(cls, directory) -> HybridRegressor:
        """Load a hybrid written by :meth:`save` (every file checksum-verified first)."""
        from featuremass.models import store

        stored = store.open_model(directory, kinds=(SIDECAR_KIND,))
        side, where = stored.sidecar, str(stored.sidecar_path)
        store.check_fields(side, {"params": dict, "feature_names": list,
                                  "morphology_columns": list, "best_iteration": int,
                                  "pca": dict}, where)
        with store.malformed(where, "params"):
            p = side["params"]
            self = cls(npix=int(p["npix"]), n_components=p["n_components"],
                       extra_inputs=bool(p["extra_inputs"]), epochs=int(p["epochs"]),
                       gbm_params=dict(p["gbm_params"]), seed=int(p["seed"]))
        booster = stored.lightgbm_booster(BOOSTER_FILE)
        with store.malformed(where, "pca"):
            self.pca_mean_ = np.asarray(side["pca"]["mean"], dtype=np.float64)
            self.pca_components_ = np.asarray(side["pca"]["components"], dtype=np.float64)
            self.pca_explained_ = np.asarray(
                [np.nan if v is None else v for v in side["pca"]["explained_variance_ratio"]],
                dtype=np.float64)
            self.gbm_ = GBMRegressor.from_booster(booster, best_iteration=side["best_iteration"],
                                                  **p["gbm_params"])
        self.cnn_ = CNNRegressor.load(stored.path / CNN_DIR)
        self.feature_names_ = [str(c) for c in side["feature_names"]]
        self.morph_names_ = [str(c) for c in side["morphology_columns"]]
        self.n_features_in_ = self.cnn_.npix_ ** 2 + len(self.morph_names_)
        self.metrics_ = side["metrics"]
        return self
