"""The bundled Keras CNN: builds, trains, round-trips, fails clearly without TensorFlow."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from featuremass.compat import has_module
from featuremass.errors import FeaturemassError, MissingDependencyError

needs_tf = pytest.mark.skipif(
    not has_module("tensorflow"),
    reason="TensorFlow is not installed (pip install 'featuremass[cnn]')",
)


def _tiny(n=64, npix=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(-0.5, 0.2, size=(n, npix, npix)).astype(np.float32)
    y = 1.0 + images[:, 6:10, 6:10].mean(axis=(1, 2)) + rng.uniform(0, 2, n)
    return images, y


@pytest.mark.cnn
@needs_tf
def test_architecture_matches_the_seed():
    from featuremass.models.cnn import build_cnn

    model = build_cnn(69, n_extra=2, target_mean=1.7)
    conv = [lay for lay in model.layers if type(lay).__name__ == "Conv2D"]
    assert [c.filters for c in conv] == [32, 64, 128, 128]
    assert [tuple(c.kernel_size) for c in conv] == [(5, 5), (4, 4), (3, 3), (3, 3)]
    assert all(c.get_config()["activation"] == "relu" for c in conv)
    assert len([lay for lay in model.layers if type(lay).__name__ == "MaxPooling2D"]) == 3
    assert model.get_layer("embedding").units == 512
    out = model.get_layer("ml")
    assert out.units == 1 and out.get_config()["activation"] == "linear"
    # The untrained network predicts the bias, i.e. the target mean, when the hidden
    # layer is silent: zero images give zero ReLU activations after global max pooling.
    x = {"image": np.zeros((2, 69, 69, 1), np.float32), "extra": np.zeros((2, 2), np.float32)}
    np.testing.assert_allclose(np.asarray(model(x, training=False)).ravel(), 1.7, rtol=1e-6)
    # Parameter count of the seed's layers, computed by hand (weights + biases):
    # conv 5*5*1*32+32, 4*4*32*64+64, 3*3*64*128+128, 3*3*128*128+128,
    # dense (128+2)*512+512, output 512+1.
    expected = (5 * 5 * 32 + 32) + (16 * 32 * 64 + 64) + (9 * 64 * 128 + 128) \
        + (9 * 128 * 128 + 128) + (130 * 512 + 512) + 513
    assert model.count_params() == expected


@pytest.mark.cnn
@needs_tf
def test_seed_padding_wherever_the_stamp_allows_it():
    from featuremass.models.cnn import build_cnn

    def last_map(npix):
        model = build_cnn(npix)
        paddings = {lay.get_config()["padding"] for lay in model.layers
                    if type(lay).__name__ == "Conv2D"}
        return paddings, tuple(model.get_layer("conv4").output.shape[1:3])

    # 'valid' by hand: 69 -> conv5 65 -> pool 32 -> conv4 29 -> pool 14 -> conv3 12 -> pool 6
    # -> conv3 4. 42 px ends at 1x1; 41 px would end at 0x0, so it gets 'same', whose maps
    # only halve at each pooling: 41 -> 20 -> 10 -> 5.
    assert last_map(69) == ({"valid"}, (4, 4))
    assert last_map(42) == ({"valid"}, (1, 1))
    assert last_map(41) == ({"same"}, (5, 5))


@pytest.mark.cnn
@needs_tf
def test_trains_one_epoch_and_round_trips(tmp_path):
    from featuremass.models.cnn import CNNRegressor

    images, y = _tiny()
    extra = np.random.default_rng(1).normal(size=(64, 2))
    model = CNNRegressor(npix=16, extra_inputs=True, epochs=1, seed=3)
    model.fit(images, y, extra=extra, val=(images[:16], y[:16], extra[:16]))
    assert set(model.history_) >= {"loss", "val_loss"} and len(model.history_["loss"]) == 1
    pred = model.predict(images, extra)
    assert pred.shape == (64,) and np.isfinite(pred).all()
    # A linear output with the mean as bias cannot collapse to zero.
    assert abs(pred.mean() - y.mean()) < 1.0
    emb = model.embed(images, extra)
    assert emb.shape == (64, 512) and (emb >= 0).all()  # ReLU activations

    model.save(tmp_path / "cnn", metrics={"test": {"rmse": 1.0}})
    side = json.loads((tmp_path / "cnn" / "model.json").read_text())
    assert side["kind"] == "cnn"
    assert side["params"]["npix"] == 16 and side["params"]["extra_inputs"] is True
    assert side["tensorflow_version"] and side["keras_version"] and side["data_fingerprint"]
    assert side["metrics"] == {"test": {"rmse": 1.0}}
    assert len(side["input_scaling"]["extra_mean"]) == 2

    loaded = CNNRegressor.load(tmp_path / "cnn")
    np.testing.assert_array_equal(loaded.predict(images, extra), pred)
    np.testing.assert_array_equal(loaded.embed(images, extra), emb)

    # A truncated .keras file is refused by its checksum before Keras opens it.
    from featuremass.models.store import ModelStoreError

    keras_file = tmp_path / "cnn" / "model.keras"
    keras_file.write_bytes(keras_file.read_bytes()[:1000])
    with pytest.raises(ModelStoreError, match=r"model\.keras does not match its checksum"):
        CNNRegressor.load(tmp_path / "cnn")


@pytest.mark.cnn
@needs_tf
def test_same_seed_same_model():
    from featuremass.models.cnn import CNNRegressor

    images, y = _tiny(n=32)
    a = CNNRegressor(npix=16, epochs=1, seed=7).fit(images, y).predict(images)
    b = CNNRegressor(npix=16, epochs=1, seed=7).fit(images, y).predict(images)
    np.testing.assert_array_equal(a, b)


@pytest.mark.cnn
@needs_tf
def test_user_callbacks_run_alongside_early_stopping(eager_keras):
    import keras

    from featuremass.models.cnn import CNNRegressor

    seen = []
    log_epochs = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(
        (epoch, sorted(logs))))
    images, y = _tiny(n=32)
    model = CNNRegressor(npix=16, epochs=2, seed=1)
    model.fit(images, y, val=(images[:8], y[:8]), callbacks=[log_epochs])
    assert [e for e, _ in seen] == [0, 1]
    assert all("val_loss" in keys for _, keys in seen)
    assert len(model.history_["val_loss"]) == 2


@pytest.mark.cnn
@needs_tf
def test_early_stopping_waits_patience_epochs_after_the_best(tmp_path, eager_keras):
    from featuremass.models.cnn import CNNRegressor

    # Learning rate 0: the weights never change, so the validation loss of epoch 1
    # is never beaten and training must end after exactly 1 + patience epochs.
    images, y = _tiny(n=32)
    model = CNNRegressor(npix=16, epochs=20, patience=2, learning_rate=0.0, seed=1)
    model.fit(images, y, val=(images[:8], y[:8]))
    assert len(model.history_["val_loss"]) == 3 and model.best_epoch_ == 1
    model.save(tmp_path / "cnn")
    assert json.loads((tmp_path / "cnn" / "model.json").read_text())["params"]["patience"] == 2
    assert CNNRegressor.load(tmp_path / "cnn").patience == 2


@pytest.mark.cnn
@needs_tf
def test_bad_input_is_a_clear_error(tmp_path):
    from featuremass.models.cnn import CNNRegressor

    images, y = _tiny(n=8)
    with pytest.raises(FeaturemassError, match=r"expects \(n, 20, 20\)"):
        CNNRegressor(npix=20, epochs=1).fit(images, y)
    with pytest.raises(FeaturemassError, match="extra_inputs=True"):
        CNNRegressor(npix=16, extra_inputs=True, epochs=1).fit(images, y)
    with pytest.raises(NotFittedError, match="not fitted"):
        CNNRegressor(npix=16).predict(images)
    with pytest.raises(FeaturemassError, match="no model.json"):
        CNNRegressor.load(tmp_path)


def test_missing_tensorflow_gives_the_install_hint(monkeypatch):
    # A None entry in sys.modules makes `import tensorflow` raise ImportError.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    from featuremass.models.cnn import CNNRegressor

    images, y = _tiny(n=8)
    with pytest.raises(MissingDependencyError, match=r"pip install 'featuremass\[cnn\]'"):
        CNNRegressor(npix=16, epochs=1).fit(images, y)


def test_missing_tensorflow_in_the_cli_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    from featuremass.cli import main

    rc = main(["cnn", "predict", "--model", str(tmp_path), "--data", str(tmp_path),
               "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "featuremass[cnn]" in err and "Traceback" not in err


@pytest.mark.cnn
@needs_tf
def test_interrupted_training_resumes_after_its_last_epoch(tmp_path):
    import keras

    from featuremass.models.cnn import CNNRegressor

    class InterruptInEpoch2(keras.callbacks.Callback):
        """Stops the run after the first batch of epoch 2: epoch 1 is the last completed."""

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 0:
                raise KeyboardInterrupt

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    images, y = _tiny(n=32)
    val = (images[:8], y[:8])
    backup = tmp_path / "cnn.backup"

    def run(callbacks, seed=2, keep_backup=False):
        return CNNRegressor(npix=16, epochs=3, batch_size=16, seed=seed).fit(
            images, y, val=val, callbacks=callbacks, backup_dir=backup, keep_backup=keep_backup)

    with pytest.raises(KeyboardInterrupt):
        run([InterruptInEpoch2()])
    assert json.loads((backup / "state.json").read_text())["epoch"] == 1
    # A backup of another run (here: another seed) is refused and left alone.
    with pytest.raises(FeaturemassError, match="different training run"):
        run([], seed=3)
    began = []
    count_epochs = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: began.append(epoch))
    resumed = run([count_epochs], keep_backup=True)
    assert began == [1, 2]  # 0-based: epochs 2 and 3 only
    # Kept until the caller saved the model (as `featuremass cnn train` does): a rerun
    # then restores the finished model without training, and removing it is explicit.
    again = run([count_epochs], keep_backup=True)
    assert began == [1, 2] and again.history_ == resumed.history_
    assert backup.exists()
    again.remove_backup()
    assert not backup.exists()

    # The same as never interrupted: op determinism makes equal inputs give equal
    # results, and each epoch's shuffle and augmentation depend on (seed, epoch) alone.
    whole = CNNRegressor(npix=16, epochs=3, batch_size=16, seed=2).fit(images, y, val=val)
    assert resumed.history_ == whole.history_ and len(whole.history_["loss"]) == 3
    for a, b, c in zip(resumed.model_.get_weights(), whole.model_.get_weights(),
                       again.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert resumed.best_epoch_ == whole.best_epoch_


@pytest.mark.cnn
@needs_tf
def test_cnn_predict_takes_images_like_predict(tmp_path, capsys):
    from featuremass.cli import main
    from featuremass.models.cnn import CNNRegressor

    images, y = _tiny(n=16)
    model = CNNRegressor(npix=16, epochs=1, seed=0).fit(images, y)
    model.save(tmp_path / "cnn")
    np.save(tmp_path / "stack.npy", images)
    np.save(tmp_path / "ids.npy", np.arange(100, 116))
    rc = main(["cnn", "predict", "--model", str(tmp_path / "cnn"), "--images",
               str(tmp_path / "stack.npy"), "--names", str(tmp_path / "ids.npy"),
               "--out", str(tmp_path / "p.csv")])
    assert rc == 0, capsys.readouterr().err
    import pandas as pd

    table = pd.read_csv(tmp_path / "p.csv")
    assert table["galaxy_id"].tolist() == list(range(100, 116))
    np.testing.assert_allclose(table.iloc[:, 1], model.predict(images), rtol=1e-6)
    assert "stretch_code" not in table
    # Linear stamps with --restretch: the CNN sees the seed's stretch of the same flux.
    from featuremass.io.stretch import STRETCH_CODES, apply_stretch

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:16, :16]
    flux = [300.0 * np.exp(-np.hypot(xx - 8, yy - 8) / rng.uniform(1.5, 3)) + rng.normal(size=(16, 16))
            for _ in range(5)]
    np.save(tmp_path / "linear.npy", np.stack(flux).astype(np.float32))
    rc = main(["cnn", "predict", "--model", str(tmp_path / "cnn"), "--images",
               str(tmp_path / "linear.npy"), "--out", str(tmp_path / "r.csv")])
    assert rc == 2 and "Pass --restretch auto" in capsys.readouterr().err
    rc = main(["cnn", "predict", "--model", str(tmp_path / "cnn"), "--images",
               str(tmp_path / "linear.npy"), "--restretch", "auto", "--out", str(tmp_path / "r.csv")])
    assert rc == 0, capsys.readouterr().err
    table = pd.read_csv(tmp_path / "r.csv")
    assert (table["stretch_code"] == STRETCH_CODES["linear"]).all()
    seed_stretched = np.stack([apply_stretch(f.astype(np.float32), "shifted-log") for f in flux])
    np.testing.assert_allclose(table["ml_pred"], model.predict(seed_stretched), rtol=1e-4)
    # A stack of another size is a user error, exit status 2.
    np.save(tmp_path / "small.npy", images[:, :8, :8])
    rc = main(["cnn", "predict", "--model", str(tmp_path / "cnn"), "--images",
               str(tmp_path / "small.npy"), "--out", str(tmp_path / "q.csv")])
    assert rc == 2 and "trained on (16, 16)" in capsys.readouterr().err


def test_unpredictable_stamps_are_flagged():
    from featuremass.cli._cnn import unpredictable_stamps
    from featuremass.features.flags import MorphFlag

    images, _ = _tiny(n=5)
    images[1] = 0.3  # constant: no galaxy
    images[2, 3, 4] = np.nan  # one bad pixel
    images[3] = np.nan  # nothing finite
    flag = unpredictable_stamps(images)
    assert flag.tolist() == [0, int(MorphFlag.BLANK_IMAGE), int(MorphFlag.BAD_PIXELS),
                             int(MorphFlag.BAD_PIXELS | MorphFlag.BLANK_IMAGE), 0]


@pytest.mark.cnn
@needs_tf
def test_cnn_predict_gives_blank_stamps_no_ml(tmp_path):
    from featuremass.cli import main
    from featuremass.features.flags import MorphFlag
    from featuremass.io.layout import write_metadata, write_split, write_split_labels
    from featuremass.models.cnn import CNNRegressor

    images, y = _tiny(n=24)
    CNNRegressor(npix=16, epochs=1, batch_size=8).fit(images, y).save(tmp_path / "model")
    test = images[:6].copy()
    test[2] = -1.0  # a blank stamp
    ids = np.arange(100, 106, dtype=np.int64)
    write_split(tmp_path / "data", npix=16, split="test", images=test, ids=ids)
    write_split_labels(tmp_path / "data", "test", ids)
    write_metadata(tmp_path / "data", pd.DataFrame(
        {"M/L": y[:6], "L_g": np.full(6, 1e10), "distance_Mpc": np.full(6, 100.0),
         "galsize_kpc": np.full(6, 5.0)}, index=pd.Index(ids, name="SDSS_ID")))
    out = tmp_path / "pred.csv"
    assert main(["cnn", "predict", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"),
                 "--npix", "16", "--split", "test", "--out", str(out)]) == 0
    pred = pd.read_csv(out)
    assert np.isnan(pred["ml_pred"][2]) and pred["flag"][2] == int(MorphFlag.BLANK_IMAGE)
    others = pred.drop(index=2)
    assert np.isfinite(others["ml_pred"]).all() and (others["flag"] == 0).all()
    # --restretch on a split: the blank stamp keeps no M/L and gets no stretch.
    assert main(["cnn", "predict", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"),
                 "--npix", "16", "--restretch", "linear", "--out", str(tmp_path / "re.csv")]) == 0
    again = pd.read_csv(tmp_path / "re.csv")
    assert np.isnan(again["ml_pred"][2]) and np.isnan(again["stretch_code"][2])
    assert np.isfinite(again["ml_pred"].drop(index=2)).all()
    assert (again["stretch_code"].drop(index=2) == 3).all()  # linear, as named
