"""The seed's convolutional network, as an sklearn-like regressor.

Architecture (Dobbels et al. 2019, A&A 624, A102, section 3; the workshop's
"custom architecture")::

    image (npix, npix, 1)
      -> [training only] RandomRotation(full turn), RandomTranslation(+-10 %)
      -> Conv2D 32 5x5 ReLU -> MaxPool 2
      -> Conv2D 64 4x4 ReLU -> MaxPool 2
      -> Conv2D 128 3x3 ReLU -> MaxPool 2
      -> Conv2D 128 3x3 ReLU -> GlobalMaxPool
      -> [optional] concatenate standardised extra inputs (log10 distance, log10 L_g)
      -> Dense 512 ReLU  ("embedding", the penultimate layer)
      -> Dense 1 linear, bias initialised to the training-target mean

One deliberate departure from the seed, documented on :class:`CNNRegressor`:
a *linear* output whose bias starts at the mean M/L (the seed's ReLU output can
die at initialisation and predict zero for every galaxy). Convolutions keep the
seed's ``'valid'`` padding wherever the stamp allows it (42 px or more, so the
seed's 69 and 128 px stamps); smaller stamps, down to 8 px, get ``'same'``
padding so they still fit.

Training is resumable: :meth:`CNNRegressor.fit` with ``backup_dir`` writes the
whole training state after every epoch, and a later call with the same data,
settings and folder continues from the last completed epoch, ending with the
same weights and history as a run never interrupted
(:mod:`featuremass.models.cnn_training`).

TensorFlow is imported inside the functions that need it (through
:func:`featuremass.compat.import_tensorflow`), so ``import featuremass`` works
without the ``cnn`` extra and raises one clear message only when a CNN is used.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted

from featuremass._version import __version__
from featuremass.compat import import_tensorflow, optional_import
from featuremass.errors import DataError, FeaturemassError

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
SIDECAR_FILE = "model.json"
SIDECAR_KIND = "cnn"
#: Extra inputs of the seed's add-inputs model, in order, and how they enter.
EXTRA_INPUT_COLUMNS = ("distance_Mpc", "L_g")
#: The smallest stamp the architecture accepts (three 2x poolings).
MIN_NPIX = 8
#: The seed's convolutions, (filters, kernel size); each but the last is followed by 2x max pooling.
CONV_LAYERS = ((32, 5), (64, 4), (128, 3), (128, 3))


def _keras():
    """Import TensorFlow (for the clear error) and return the Keras 3 module."""
    import_tensorflow("The CNN")
    return optional_import("keras", purpose="The CNN")


def extra_inputs_from_metadata(metadata) -> np.ndarray:
    """The CNN's extra inputs from seed metadata: ``log10`` distance and ``log10`` L_g.

    Distance and luminosity span orders of magnitude, so their logarithms are
    fed to the network (then standardised inside :class:`CNNRegressor`).

    Parameters
    ----------
    metadata : pandas.DataFrame
        Rows aligned with the images, with columns ``distance_Mpc`` and ``L_g``.

    Returns
    -------
    ndarray, shape (n, 2)
        NaN where a value is missing or not positive.
    """
    missing = [c for c in EXTRA_INPUT_COLUMNS if c not in metadata.columns]
    if missing:
        raise DataError(f"metadata lacks the extra-input column(s) {missing}")
    values = metadata[list(EXTRA_INPUT_COLUMNS)].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(values > 0, np.log10(values), np.nan)
    return out


def data_fingerprint(images: np.ndarray, y: np.ndarray | None = None, extra=None) -> str:
    """A short SHA-256 of a training set (shape, target, and a strided pixel sample).

    Identifies the data a model saw without hashing gigabytes of pixels.
    """
    h = hashlib.sha256()
    h.update(repr(tuple(images.shape)).encode())
    step = max(1, len(images) // 256)
    h.update(np.ascontiguousarray(np.asarray(images[::step], dtype=np.float32)).tobytes())
    if y is not None:
        h.update(np.ascontiguousarray(np.asarray(y, dtype=np.float64)).tobytes())
    if extra is not None:
        h.update(np.ascontiguousarray(np.asarray(extra, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def _check_target(y, n: int) -> np.ndarray:
    """``y`` as ``n`` finite float64 values (a column vector is accepted), else DataError."""
    if y is None:
        raise DataError("CNNRegressor requires y to be passed, but the target y is None")
    y = np.asarray(y, dtype=np.float64)
    if y.ndim > 1 and y.shape[1:] != (1,):
        raise DataError(f"y should be a 1d array, got an array of shape {y.shape} instead")
    y = y.ravel()
    if len(y) != n or not np.isfinite(y).all():
        raise DataError(f"y must hold {n} finite values; got {y.shape} "
                        f"with {int((~np.isfinite(y)).sum())} non-finite")
    return y


def fits_valid_padding(npix: int) -> bool:
    """Whether a ``npix`` stamp survives the seed's convolutions with ``'valid'`` padding.

    Each ``'valid'`` convolution trims ``kernel - 1`` pixels and each pooling
    halves what is left; the last feature map must keep at least one pixel.
    True from 42 px, so for the seed's 69 and 128 px stamps.
    """
    size = int(npix)
    for i, (_, kernel) in enumerate(CONV_LAYERS):
        size -= kernel - 1
        if size < 1:
            return False
        if i < len(CONV_LAYERS) - 1:
            size //= 2
    return True


def build_cnn(
    npix: int,
    *,
    n_extra: int = 0,
    target_mean: float = 0.0,
    augment: bool = True,
    rotation: float = 0.5,
    translation: float = 0.1,
    padding: str | None = None,
):
    """Build (uncompiled) the seed's CNN as a Keras functional model.

    Parameters
    ----------
    npix : int
        Stamp side in pixels (at least 8).
    n_extra : int
        Number of standardised scalar inputs concatenated after global pooling
        (the seed's add-inputs model); 0 for image only.
    target_mean : float
        Initial bias of the linear output unit, so the untrained network
        predicts the mean M/L instead of zero.
    augment : bool
        Insert random rotation and translation layers; Keras applies them only
        during training (``training=True``), never in ``predict``.
    rotation, translation : float
        ``RandomRotation`` factor (0.5 = up to a half turn either way, i.e. any
        orientation) and ``RandomTranslation`` fraction of the stamp.
    padding : {'valid', 'same'}, optional
        Convolution padding. By default the seed's ``'valid'`` where
        :func:`fits_valid_padding` allows it, else ``'same'``. ``'same'`` on a
        69 px stamp keeps an 8x8 instead of a 4x4 map in the last convolution,
        1.65x the multiply-adds of the convolutions (the time it costs:
        ``reports/cnn_overhead.md``).

    Returns
    -------
    keras.Model
        Inputs ``image`` (and ``extra`` when ``n_extra > 0``); the Dense 512
        layer is named ``embedding`` and the output ``ml``.
    """
    keras = _keras()
    layers = keras.layers
    if int(npix) < MIN_NPIX:
        raise FeaturemassError(f"the CNN needs stamps of at least {MIN_NPIX} px; got npix={npix}")
    if padding is None:
        padding = "valid" if fits_valid_padding(npix) else "same"
    elif padding not in ("valid", "same"):
        raise FeaturemassError(f"padding must be 'valid' or 'same'; got {padding!r}")
    elif padding == "valid" and not fits_valid_padding(npix):
        raise FeaturemassError(f"a {npix} px stamp is too small for 'valid' padding; use 'same'")
    image = keras.Input(shape=(int(npix), int(npix), 1), name="image")
    x = image
    if augment:
        # 'reflect' fill keeps sky-like texture in the corners a rotation uncovers.
        x = layers.RandomRotation(rotation, fill_mode="reflect", name="aug_rotation")(x)
        x = layers.RandomTranslation(translation, translation, fill_mode="reflect",
                                     name="aug_translation")(x)
    for i, (filters, kernel) in enumerate(CONV_LAYERS, start=1):
        x = layers.Conv2D(filters, kernel, padding=padding, activation="relu", name=f"conv{i}")(x)
        if i < len(CONV_LAYERS):
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.GlobalMaxPooling2D(name="global_max")(x)
    inputs = [image]
    if n_extra:
        extra = keras.Input(shape=(int(n_extra),), name="extra")
        inputs.append(extra)
        x = layers.Concatenate(name="with_extra")([x, extra])
    x = layers.Dense(512, activation="relu", name="embedding")(x)
    out = layers.Dense(
        1, activation="linear", name="ml",
        bias_initializer=keras.initializers.Constant(float(target_mean)),
    )(x)
    return keras.Model(inputs=inputs if n_extra else image, outputs=out, name="featuremass_cnn")


def _architecture_summary(model) -> list[dict]:
    rows = []
    for layer in model.layers:
        cfg = layer.get_config()
        row = {"name": layer.name, "type": type(layer).__name__}
        for key in ("filters", "kernel_size", "pool_size", "units", "activation", "padding",
                    "factor", "height_factor", "width_factor"):
            if key in cfg:
                row[key] = cfg[key]
        row["params"] = int(layer.count_params()) if layer.built else 0
        rows.append(row)
    return rows


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class CNNRegressor(RegressorMixin, BaseEstimator):
    """The seed's CNN for M/L, a scikit-learn regressor.

    Architecture and training follow the workshop (Dobbels et al. 2019): four
    convolutions with 2x max pooling, global max pooling, Dense 512, one
    output; Nadam, mean-squared error, batch 32; random rotation and
    translation augmentation during training; early stopping (patience 6 by
    default, best weights restored) and learning-rate reduction (factor 0.3,
    patience 3) on the validation loss.

    **Output unit.** The seed used a ReLU output, which can die at
    initialisation (all pre-activations negative) and leave the model
    predicting 0 for every galaxy. Here the output is *linear* with its bias
    initialised to the mean training M/L: it cannot die, and training starts
    from the mean predictor (the RMSE baseline) rather than from zero.
    **Padding.** Convolutions keep the seed's ``'valid'`` padding on stamps of
    42 px or more (the seed's 69 and 128 px); smaller stamps, down to 8 px, get
    ``'same'`` padding so they fit (see :func:`build_cnn`).

    **Randomness.** Each epoch's shuffling and augmentation are drawn from
    ``(seed, epoch)`` alone, not from generator state carried over from earlier
    epochs, so a training resumed from a backup draws exactly what an
    uninterrupted one would have.

    **Input.** ``X`` is a stack of stamps ``(n, npix, npix)`` (or
    ``(n, npix, npix, 1)``), or, when ``npix`` is set, the same stamps
    flattened to ``(n, npix * npix)`` rows, so the model sits in any
    scikit-learn pipeline or check that passes tables.

    Parameters
    ----------
    npix : int, optional
        Stamp side in pixels. Default: taken from the first stack ``fit``
        sees; needed to read flattened ``(n, npix * npix)`` rows.
    extra_inputs : bool
        Concatenate extra scalar inputs (e.g. :func:`extra_inputs_from_metadata`)
        after global pooling; they are standardised with the training mean and
        standard deviation, which are saved with the model.
    epochs : int
        Maximum number of epochs (early stopping usually ends sooner).
    patience : int
        Early-stopping patience: epochs without a lower validation loss before
        training stops (the best epoch's weights are restored). The seed's 6
        by default; the learning-rate reduction keeps its patience of 3.
    batch_size : int
    learning_rate : float
        Initial Nadam learning rate.
    augment : bool
        Random rotation and translation during training.
    seed : int
        Seeds Keras, NumPy and Python and enables TensorFlow op determinism, so
        the same data and seed give the same model on the same machine.
    verbose : int
        Keras ``fit`` verbosity.

    Attributes
    ----------
    npix_ : int
        Stamp side the network was built for.
    n_features_in_ : int
        ``npix_ ** 2``, the width of flattened input rows.
    model_ : keras.Model
    history_ : dict of list
        Per-epoch ``loss``, ``val_loss``, ``learning_rate``.
    best_epoch_ : int
        Epoch (1-based) whose weights were kept.
    target_mean_, extra_mean_, extra_std_ : float, ndarray, ndarray
    fingerprint_ : str
        :func:`data_fingerprint` of the training set.
    fit_seconds_ : float
    """

    def __init__(
        self,
        *,
        npix: int | None = None,
        extra_inputs: bool = False,
        epochs: int = 50,
        patience: int = 6,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        augment: bool = True,
        seed: int = 0,
        verbose: int = 0,
    ):
        self.npix = npix
        self.extra_inputs = extra_inputs
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.augment = augment
        self.seed = seed
        self.verbose = verbose

    # ------------------------------------------------------------------ checks

    def _check_images(self, images, what: str = "images", *, npix: int | None = None) -> np.ndarray:
        """``images`` as float32 ``(n, npix, npix, 1)``; flattened rows are unfolded."""
        npix = npix if npix is not None else self.npix
        if not hasattr(images, "shape") or getattr(images, "ndim", 0) == 2 or hasattr(images, "tocsr"):
            # Tables (lists, DataFrames, sparse): scikit-learn's own checks and messages.
            rows = check_array(images, dtype=np.float32, input_name="X", allow_nd=True)
            if rows.ndim == 2:
                if npix is None:
                    raise DataError(f"{what} are flat rows of shape {rows.shape}; set npix to "
                                    "read them as (n, npix, npix) stamps")
                if rows.shape[1] != int(npix) ** 2:
                    raise DataError(f"X has {rows.shape[1]} features, but CNNRegressor is expecting "
                                    f"{int(npix) ** 2} features as input ({npix} x {npix} px)")
                rows = rows.reshape(len(rows), int(npix), int(npix))
            images = rows
        images = np.asarray(images)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        side = npix if npix is not None else (images.shape[1] if images.ndim == 3 else None)
        if images.ndim != 3 or side is None or images.shape[1:] != (int(side), int(side)):
            shown = "npix" if side is None else side
            raise DataError(
                f"{what} have shape {images.shape}; the CNN expects (n, {shown}, {shown})"
            )
        if len(images) == 0:
            raise DataError(f"{what} are empty")
        if np.iscomplexobj(images):
            raise DataError(f"{what} are complex; the CNN takes real pixels")
        bad = ~np.isfinite(images).all(axis=(1, 2))
        if bad.any():
            raise DataError(f"{what} hold non-finite pixels in rows {np.flatnonzero(bad)[:5].tolist()}")
        return np.asarray(images, dtype=np.float32)[..., None]

    def _check_extra(self, extra, n: int, what: str = "extra") -> np.ndarray | None:
        if not self.extra_inputs:
            if extra is not None:
                raise FeaturemassError(
                    "extra inputs were given but the CNN was built with extra_inputs=False"
                )
            return None
        if extra is None:
            raise FeaturemassError("the CNN was built with extra_inputs=True; pass extra=(n, k) array")
        extra = np.asarray(extra, dtype=np.float64)
        if extra.ndim == 1:
            extra = extra[:, None]
        if extra.ndim != 2 or len(extra) != n:
            raise DataError(f"{what} has shape {extra.shape}; expected ({n}, k)")
        bad = ~np.isfinite(extra).all(axis=1)
        if bad.any():
            raise DataError(
                f"{what} holds non-finite values in rows {np.flatnonzero(bad)[:5].tolist()} "
                f"({int(bad.sum())} in all)"
            )
        return extra

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # A few epochs on scikit-learn's random check tables is no test of a CNN's skill.
        tags.regressor_tags.poor_score = True
        return tags

    def _check_fitted(self):
        check_is_fitted(self, msg="this CNNRegressor is not fitted yet; call fit() or load()")

    def _inputs(self, images, extra, what="images"):
        x = self._check_images(images, what, npix=self.npix_)
        e = self._check_extra(extra, len(x), what.replace("images", "extra"))
        if e is None:
            return x
        if e.shape[1] != len(self.extra_mean_):
            raise DataError(f"extra has {e.shape[1]} columns; the CNN was trained with "
                            f"{len(self.extra_mean_)}")
        return {"image": x, "extra": ((e - self.extra_mean_) / self.extra_std_).astype(np.float32)}

    # ------------------------------------------------------------------ fit

    def fit(self, X, y, *, extra=None, val=None, callbacks=None, backup_dir=None,
            keep_backup: bool = False) -> CNNRegressor:
        """Train on stamps ``X`` (n, npix, npix) and M/L ``y``.

        Parameters
        ----------
        X : array, shape (n, npix, npix), or (n, npix * npix) when ``npix`` is set
            Seed-stretched stamps (any float; memory maps are fine).
        y : array, shape (n,)
        extra : array, shape (n, k), optional
            Extra scalar inputs; required when ``extra_inputs=True``.
        val : tuple ``(images, y)`` or ``(images, y, extra)``, optional
            The validation split for early stopping and learning-rate
            reduction. Without it the network trains for ``epochs`` epochs.
        callbacks : list of keras callbacks, optional
            Run after the built-in early stopping and learning-rate schedule
            (e.g. to log or time each epoch).
        backup_dir : path, optional
            Make the training resumable: after every epoch the whole training
            state (weights, optimizer, early-stopping and learning-rate
            schedule state, history) is written to this folder, and a call
            with the same data, settings and folder continues after the last
            completed epoch, ending with the weights and history an
            uninterrupted run would have (on the same machine). A backup of a
            different run is an error, never silently overwritten. The folder
            is removed when ``fit`` returns, unless ``keep_backup``.
        keep_backup : bool
            Keep the finished training's backup (e.g. until the caller has
            saved the model and can remove it with :meth:`remove_backup`); a
            later ``fit`` on it then restores the trained model without training.
        """
        tf = import_tensorflow("The CNN")
        keras = _keras()

        x = self._check_images(X)
        y = _check_target(y, len(x))
        e = self._check_extra(extra, len(x))
        self.npix_ = int(x.shape[1])
        self.n_features_in_ = self.npix_ ** 2
        keras.utils.set_random_seed(int(self.seed))
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # pragma: no cover - older TF or unsupported device
            log.debug("TensorFlow op determinism is not available here")

        self.target_mean_ = float(y.mean())
        self._fit_extra_scaling(e)
        model = build_cnn(self.npix_, n_extra=0 if e is None else e.shape[1], target_mean=self.target_mean_,
                          augment=self.augment)
        model.compile(optimizer=keras.optimizers.Nadam(learning_rate=self.learning_rate),
                      loss="mean_squared_error")
        self.model_ = model
        train_x = x if e is None else {
            "image": x, "extra": ((e - self.extra_mean_) / self.extra_std_).astype(np.float32)}
        self.fingerprint_ = data_fingerprint(x[..., 0], y, e)
        validation_data, val_fingerprint, monitors = self._validation(val, keras)
        backup = self._training_backup(backup_dir, val_fingerprint, monitors) if backup_dir is not None else None
        if backup is not None:
            backup.restore(model)

        t0 = time.perf_counter()
        if backup is None or not backup.finished:
            history = self._train(model, train_x, y, validation_data, monitors, backup, list(callbacks or []))
        if backup is not None:
            history = backup.history
            self.fit_seconds_ = backup.seconds
            self._backup = backup
            if not keep_backup:
                self.remove_backup()
        else:
            self.fit_seconds_ = time.perf_counter() - t0
        self.history_ = {k: [float(v) for v in vals] for k, vals in history.items()}
        if "val_loss" in self.history_:
            self.best_epoch_ = int(np.argmin(self.history_["val_loss"])) + 1
        else:
            self.best_epoch_ = len(self.history_.get("loss", []))
        self.devices_ = [d.name for d in tf.config.list_logical_devices()]
        return self

    def _fit_extra_scaling(self, e) -> None:
        """Mean and standard deviation (1 where constant) of the extra inputs, for standardising them."""
        if e is not None:
            self.extra_mean_ = e.mean(axis=0)
            std = e.std(axis=0)
            self.extra_std_ = np.where(std > 0, std, 1.0)
        else:
            self.extra_mean_ = np.zeros(0)
            self.extra_std_ = np.ones(0)

    def _validation(self, val, keras):
        """``(validation_data, fingerprint, monitors)`` of the validation split (``(None, None, [])`` without one).

        The monitors are early stopping (``patience`` epochs, best weights restored)
        and learning-rate reduction (x0.3 after 3 epochs without progress).
        """
        if val is None:
            return None, None, []
        if len(val) not in (2, 3):
            raise FeaturemassError("val must be (images, y) or (images, y, extra)")
        v_images, v_y = val[0], np.asarray(val[1], dtype=np.float64).ravel()
        v_extra = val[2] if len(val) == 3 else None
        vx = self._inputs(v_images, v_extra, "validation images")
        if len(v_y) != len(v_images) or not np.isfinite(v_y).all():
            raise DataError("validation y must be finite and match the validation images")
        monitors = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(self.patience),
                                          restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=3),
        ]
        return (vx, v_y.astype(np.float32)), data_fingerprint(np.asarray(v_images), v_y, v_extra), monitors

    def _training_backup(self, backup_dir, val_fingerprint, monitors):
        """The resumable-training backup in ``backup_dir``, keyed by the data, settings and version."""
        from featuremass.models import cnn_training

        run = {"data": self.fingerprint_, "val": val_fingerprint, "featuremass": __version__,
               "params": {k: getattr(self, k) for k in (
                   "npix", "extra_inputs", "epochs", "patience", "batch_size", "learning_rate",
                   "augment", "seed")}}
        run["params"]["npix"] = self.npix_
        return cnn_training.TrainingBackup(backup_dir, run, monitors)

    def _train(self, model, train_x, y, validation_data, monitors, backup, extra_callbacks) -> dict:
        """Keras training from the backup's epoch (or the first) to ``epochs``; the history."""
        from featuremass.models import cnn_training

        initial_epoch = backup.initial_epoch if backup else 0
        batches = cnn_training.epoch_batches(
            train_x, y.astype(np.float32), batch_size=int(self.batch_size),
            seed=int(self.seed), first_epoch=initial_epoch, epochs=int(self.epochs))
        hist = model.fit(
            batches, epochs=int(self.epochs), initial_epoch=initial_epoch,
            steps_per_epoch=-(-len(y) // int(self.batch_size)),
            validation_data=validation_data,
            callbacks=[cnn_training.EpochSeeds(self.seed), *monitors,
                       *([backup] if backup else []), *extra_callbacks],
            shuffle=False, verbose=self.verbose,  # epoch_batches shuffles, from the seed
        )
        return hist.history

    def remove_backup(self) -> None:
        """Delete the backup folder of the last ``fit(..., keep_backup=True)``, if any."""
        backup = getattr(self, "_backup", None)
        if backup is not None:
            backup.remove()
            self._backup = None

    # ------------------------------------------------------------------ predict

    def predict(self, X, extra=None, *, batch_size: int = 256) -> np.ndarray:
        """Predicted M/L, shape (n,), of stamps ``X`` (as in :meth:`fit`).

        Augmentation layers are inactive here.
        """
        self._check_fitted()
        x = self._inputs(X, extra)
        out = self.model_.predict(x, batch_size=batch_size, verbose=0)
        return np.asarray(out, dtype=np.float64).ravel()

    def embed(self, X, extra=None, *, batch_size: int = 256) -> np.ndarray:
        """The 512-d penultimate-layer activations (the ``embedding`` layer), shape (n, 512)."""
        self._check_fitted()
        x = self._inputs(X, extra)
        # One sub-model per fitted network: rebuilding it per call retraces the graph.
        if getattr(self, "_embedder", (None, None))[0] is not self.model_:
            keras = _keras()
            sub = keras.Model(inputs=self.model_.inputs,
                              outputs=self.model_.get_layer("embedding").output)
            self._embedder = (self.model_, sub)
        sub = self._embedder[1]
        return np.asarray(sub.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)

    # ------------------------------------------------------------------ persistence

    def sidecar(self, metrics: dict | None = None) -> dict:
        """The kind-specific sidecar fields of this model (the store adds the common ones)."""
        self._check_fitted()
        tf = import_tensorflow("The CNN")
        keras = _keras()
        return _jsonable({
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "python_version": platform.python_version(),
            "params": {
                "npix": int(self.npix_), "extra_inputs": bool(self.extra_inputs),
                "epochs": int(self.epochs), "patience": int(self.patience),
                "batch_size": int(self.batch_size),
                "learning_rate": float(self.learning_rate), "augment": bool(self.augment),
                "seed": int(self.seed),
            },
            "input_scaling": {
                "image": "seed-log stretch in [-1, 1], as stored in the seed layout",
                "extra_columns": list(getattr(self, "extra_names_", EXTRA_INPUT_COLUMNS))
                if self.extra_inputs else [],
                "extra_transform": "log10, then (x - mean) / std" if self.extra_inputs else None,
                "extra_mean": self.extra_mean_, "extra_std": self.extra_std_,
            },
            "output": "linear, bias initialised to the training-target mean",
            "target_mean": self.target_mean_,
            "architecture": _architecture_summary(self.model_),
            "n_params": int(self.model_.count_params()),
            "history": getattr(self, "history_", {}),
            "best_epoch": getattr(self, "best_epoch_", None),
            "fit_seconds": getattr(self, "fit_seconds_", None),
            "devices": getattr(self, "devices_", []),
            "data_fingerprint": getattr(self, "fingerprint_", None),
        })

    def _stage_arguments(self, metrics: dict | None) -> dict:
        """What :func:`featuremass.models.store.stage` needs to write this CNN."""
        if metrics is not None:
            self.metrics_ = dict(metrics)
        return {
            "kind": SIDECAR_KIND,
            "write_files": lambda directory: self.model_.save(directory / MODEL_FILE),
            "fields": self.sidecar(),
            "scale": "seed-log",
            "feature_engine_version": None,
            "metrics": _jsonable(metrics or getattr(self, "metrics_", {})),
            "libraries": ("tensorflow", "keras"),
        }

    def save(self, directory, *, metrics: dict | None = None, overwrite: bool = True) -> Path:
        """Save ``model.keras`` and the ``model.json`` sidecar through the model store.

        The sidecar holds the parameters, input scaling, architecture summary,
        versions, training history, data fingerprint and ``metrics``. The
        folder is written atomically; an existing one is replaced only with
        ``overwrite``.
        """
        from featuremass.models import store

        self._check_fitted()
        return store.save(directory, overwrite=overwrite, **self._stage_arguments(metrics))

    @classmethod
    def load(cls, directory) -> CNNRegressor:
        """Load a model written by :meth:`save`; the sidecar and checksums are checked first."""
        from featuremass.models import store

        stored = store.open_model(directory, kinds=(SIDECAR_KIND,))
        meta, where = stored.sidecar, str(stored.sidecar_path)
        store.check_fields(meta, {"params": dict, "input_scaling": dict,
                                  "target_mean": (int, float)}, where)
        with store.malformed(where, "params"):
            p = meta["params"]
            self = cls(npix=int(p["npix"]), extra_inputs=bool(p["extra_inputs"]),
                       epochs=int(p["epochs"]), patience=int(p.get("patience", 6)),
                       batch_size=int(p["batch_size"]),
                       learning_rate=float(p["learning_rate"]), augment=bool(p["augment"]),
                       seed=int(p["seed"]))
            self.npix_ = int(p["npix"])
            self.n_features_in_ = self.npix_ ** 2
        with store.malformed(where, "input_scaling"):
            scaling = meta["input_scaling"]
            self.extra_mean_ = np.asarray(scaling["extra_mean"], dtype=np.float64)
            self.extra_std_ = np.asarray(scaling["extra_std"], dtype=np.float64)
        path = stored.file(MODEL_FILE)
        keras = _keras()
        try:
            self.model_ = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad files
            raise store.ModelStoreError(f"cannot load the Keras model {path}: {exc}") from None
        self.target_mean_ = float(meta["target_mean"])
        self.history_ = meta.get("history", {})
        self.best_epoch_ = meta.get("best_epoch")
        self.fingerprint_ = meta.get("data_fingerprint")
        self.metrics_ = meta["metrics"]
        self.fit_seconds_ = meta.get("fit_seconds")
        self.devices_ = meta.get("devices", [])
        return self
