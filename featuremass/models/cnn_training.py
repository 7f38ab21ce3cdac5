"""Training machinery of :class:`featuremass.models.cnn.CNNRegressor`: batches, seeds, backup.

Imports TensorFlow and Keras at the top, so only ``CNNRegressor.fit`` imports
this module, after :func:`featuremass.compat.import_tensorflow` has checked the
``cnn`` extra.

A training run is reproducible epoch by epoch: epoch ``e`` shuffles the
training set with a permutation drawn from ``(seed, e)`` and seeds the
augmentation layers from ``(seed, e, layer)``, whatever happened before it. With
TensorFlow's op determinism (on in ``fit``) the same weights, optimizer state
and epoch number then give the same next epoch, which is what lets
:class:`TrainingBackup` resume an interrupted run bit for bit. Keras' own
``BackupAndRestore`` keeps weights and the epoch number but not the
early-stopping and learning-rate schedule state, the best weights so far, the
history, or the random streams (Keras' array shuffling and the augmentation
layers' seed generators live in the process), so a run it resumes drifts from
the uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from featuremass.errors import FeaturemassError
from featuremass.io.layout import atomic_output, write_json

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


def epoch_batches(inputs, target: np.ndarray, *, batch_size: int, seed: int, first_epoch: int,
                  epochs: int) -> tf.data.Dataset:
    """Training batches of epochs ``first_epoch .. epochs - 1``, one after the other.

    Epoch ``e`` visits every sample once in the order
    ``numpy.random.default_rng([seed, e]).permutation(n)`` (the last batch may
    be short), so resuming at epoch ``e`` needs no state from earlier epochs.
    Pass ``steps_per_epoch = ceil(n / batch_size)`` to ``fit`` so Keras reads
    the epochs from one iterator. Batches are gathered from tensors made once,
    as Keras does for arrays.
    """
    n = len(target)
    orders = np.stack([np.random.default_rng([int(seed), e]).permutation(n)
                       for e in range(int(first_epoch), int(epochs))]).astype(np.int64)
    data = tf.nest.map_structure(tf.convert_to_tensor, (inputs, target))
    index = tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(int(batch_size)))
    batches = tf.data.Dataset.zip((index, tf.data.Dataset.from_tensors(data).repeat()))
    return batches.map(lambda idx, d: tf.nest.map_structure(lambda t: tf.gather(t, idx), d),
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class EpochSeeds(keras.callbacks.Callback):
    """Reseeds every random layer of the model at the start of each epoch from ``(seed, epoch)``.

    Keras' augmentation layers draw from a seed generator whose counter
    advances with every batch and is not part of the saved weights; resetting
    it per epoch makes epoch ``e``'s augmentation a function of the seed and
    ``e`` alone.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        generators = [layer.generator for layer in self.model.layers
                      if isinstance(getattr(layer, "generator", None), keras.random.SeedGenerator)]
        for i, generator in enumerate(generators):
            key = np.random.SeedSequence([self.seed, int(epoch), i]).generate_state(1)[0]
            generator.state.assign(np.array([key, 0], dtype=generator.state.dtype))


# The attributes that carry EarlyStopping's and ReduceLROnPlateau's state between
# epochs (both reset them in on_train_begin); the best weights are saved apart.
_MONITOR_STATE = ("wait", "stopped_epoch", "best", "best_epoch", "cooldown_counter")


def _monitor_state(callback) -> dict:
    state = {}
    for name in _MONITOR_STATE:
        if hasattr(callback, name):
            value = getattr(callback, name)
            state[name] = None if value is None else float(value) if name == "best" else int(value)
    return state


class TrainingBackup(keras.callbacks.Callback):
    """Writes the whole training state after every epoch; :meth:`restore` reads it back.

    The state is the model's weights and optimizer variables (one Keras
    ``.weights.h5`` file, learning rate included), the early-stopping and
    learning-rate schedule counters, early stopping's best weights so far
    (``.npz``), the history, the training seconds so far, and ``run``: a
    description of the data and settings, which must match for a backup to be
    used. Each epoch's files get new names and ``state.json``, replaced
    atomically, names the current ones, so an interruption while writing
    leaves the previous epoch's state intact. When training ends (cap reached
    or stopped early) the final state is written with ``finished: true``;
    restoring it skips training altogether.

    Parameters
    ----------
    directory : path
        Backup folder; holds nothing else.
    run : dict
        JSON-serialisable description of the training run.
    monitors : list of keras callbacks
        The EarlyStopping / ReduceLROnPlateau instances whose state is kept.
    """

    def __init__(self, directory, run: dict, monitors=()):
        super().__init__()
        self.directory = Path(directory)
        self.run = json.loads(json.dumps(run))  # as it will read back from JSON
        self.monitors = list(monitors)
        self.initial_epoch, self.history, self.seconds, self.finished = 0, {}, 0.0, False
        self._pending = None
        self._clock = None

    # ------------------------------------------------------------------ restore

    def restore(self, model) -> int:
        """Load a backup into ``model`` (compiled); returns the epoch to continue from."""
        path = self.directory / STATE_FILE
        if not path.is_file():
            if self.directory.is_dir() and any(self.directory.iterdir()):
                log.warning("%s holds no %s; starting the training from scratch",
                            self.directory, STATE_FILE)
            return 0
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FeaturemassError(f"cannot read the training backup {path}: {exc}; "
                                   "remove the folder to start again") from None
        if state.get("run") != self.run:
            diff = sorted(k for k in set(self.run) | set(state.get("run") or {})
                          if (state.get("run") or {}).get(k) != self.run.get(k))
            raise FeaturemassError(
                f"{self.directory} holds the backup of a different training run (differs in "
                f"{diff}); remove it or train into another output folder")
        model.optimizer.build(model.trainable_variables)
        best = None
        try:
            model.load_weights(self.directory / state["weights"])
            if state.get("best_weights"):
                with np.load(self.directory / state["best_weights"], allow_pickle=False) as npz:
                    best = [npz[f"arr_{i}"] for i in range(len(npz.files))]
        except (OSError, ValueError, KeyError) as exc:
            raise FeaturemassError(f"cannot restore the training backup in {self.directory}: "
                                   f"{exc}; remove the folder to start again") from None
        self.initial_epoch, self.history = int(state["epoch"]), state["history"]
        self.seconds, self.finished = float(state["seconds"]), bool(state["finished"])
        self._pending = (state["monitors"], best)
        log.info("resuming the training from %s after epoch %d%s", self.directory,
                 self.initial_epoch, " (finished)" if self.finished else "")
        return self.initial_epoch

    def on_train_begin(self, logs=None):
        # Runs after the monitors' own on_train_begin, which resets them.
        self._clock = time.perf_counter()
        if self._pending is None:
            return
        states, best = self._pending
        for callback, state in zip(self.monitors, states, strict=True):
            for name, value in state.items():
                setattr(callback, name, value)
            if best is not None and getattr(callback, "restore_best_weights", False):
                callback.best_weights = best
        self._pending = None

    # ------------------------------------------------------------------ backup

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self._write(epoch + 1, finished=False)

    def on_train_end(self, logs=None):
        # After early stopping's on_train_end: the model holds the weights it keeps.
        self._write(len(self.history.get("loss", [])), finished=True)

    def _write(self, epoch: int, *, finished: bool) -> None:
        now = time.perf_counter()
        self.seconds += now - self._clock
        self._clock = now
        self.directory.mkdir(parents=True, exist_ok=True)
        tag = f"{epoch:04d}" + ("-final" if finished else "")
        weights = f"epoch-{tag}.weights.h5"
        self.model.save_weights(self.directory / weights, overwrite=True)
        best_file = None
        best = next((cb.best_weights for cb in self.monitors
                     if getattr(cb, "best_weights", None) is not None), None)
        if best is not None and not finished:
            best_file = f"best-{tag}.npz"
            with atomic_output(self.directory / best_file) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, *best)
        state = {"run": self.run, "epoch": epoch, "finished": finished, "weights": weights,
                 "best_weights": best_file, "history": self.history, "seconds": self.seconds,
                 "monitors": [_monitor_state(cb) for cb in self.monitors]}
        # written last: it names the files above, so it never points at a half-written one
        write_json(self.directory / STATE_FILE, state, indent=None)
        for old in self.directory.iterdir():
            if old.name not in (STATE_FILE, weights, best_file):
                old.unlink()

    def remove(self) -> None:
        """Delete the backup folder (after the model it protected has been kept)."""
        shutil.rmtree(self.directory, ignore_errors=True)
