"""CLI glue of ``featuremass cnn train`` and ``featuremass cnn predict``.

Thin: load the seed-layout splits, call :class:`~featuremass.models.cnn.CNNRegressor`,
print. TensorFlow is imported only when a command runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass.cli._models import write_table
from featuremass.errors import DataError, FeaturemassError

log = logging.getLogger(__name__)

#: Column of the predicted M/L in prediction files (same as ``featuremass predict``).
PRED_COLUMN = "ml_pred"


def _extra(ds, use: bool):
    from featuremass.models.cnn import extra_inputs_from_metadata

    return extra_inputs_from_metadata(ds.metadata) if use else None


def train(args) -> dict:
    """``featuremass cnn train``: fit on train, early-stop on val, score on val/test, save.

    Training backs up after every epoch into ``OUT.backup`` beside the model
    folder; the same command run again after an interruption continues from the
    last completed epoch (or, if training had finished, only scores and saves).
    """
    from featuremass.io.layout import check_output, load_split
    from featuremass.models.cnn import CNNRegressor
    from featuremass.models.metrics import regression_report
    from featuremass.models.store import check_model_target

    overwrite = getattr(args, "overwrite", False)
    drop = getattr(args, "drop_invalid", False)
    check_output(args.out, overwrite=overwrite, folder=True)
    check_model_target(args.out, overwrite=overwrite)
    train_ds = load_split(args.data, npix=args.npix, split="train", train_size=args.train_size,
                          drop_invalid=drop)
    val_ds = load_split(args.data, npix=args.npix, split="val", drop_invalid=drop)
    model = CNNRegressor(npix=args.npix, extra_inputs=args.extra_inputs, epochs=args.epochs,
                         batch_size=args.batch_size, seed=args.seed, verbose=2 if args.verbose else 0)
    val = (val_ds.images, val_ds.target, _extra(val_ds, args.extra_inputs))
    # Rerunning an interrupted command resumes from this backup; it goes once the model is saved.
    out = Path(args.out).resolve()
    model.fit(train_ds.images, train_ds.target, extra=_extra(train_ds, args.extra_inputs), val=val,
              backup_dir=out.with_name(out.name + ".backup"), keep_backup=True)
    metrics = {}
    for split, ds in (("val", val_ds), ("test", None)):
        if ds is None:
            try:
                ds = load_split(args.data, npix=args.npix, split=split, drop_invalid=drop)
            except FeaturemassError as exc:
                log.info("no %s split scored: %s", split, exc)
                continue
        pred = model.predict(ds.images, _extra(ds, args.extra_inputs))
        metrics[split] = regression_report(ds.target, pred, n_boot=200)
    model.save(args.out, metrics=metrics, overwrite=overwrite)
    model.remove_backup()
    return metrics


def predict(args) -> Path:
    """``featuremass cnn predict``: M/L of one split, written as CSV/Parquet."""
    from featuremass.io.layout import guarded_output, load_split
    from featuremass.models.cnn import CNNRegressor

    images, names = getattr(args, "images", None), getattr(args, "names", None)
    if (args.data is None) == (images is None):
        raise FeaturemassError("give exactly one input: either --data DIR (--npix N --split S) or "
                               "--images FILE.npy" + (" (both were given)" if images else ""))
    if names is not None and images is None:
        raise FeaturemassError("--names needs --images")
    with guarded_output(args.out, inputs=[args.model, args.data, images, names],
                        overwrite=getattr(args, "overwrite", False)):
        model = CNNRegressor.load(args.model)
        if images is not None:
            return _predict_images(args, model)
        return _predict(args, model, load_split)


def _predict_images(args, model) -> Path:
    """M/L of an image stack in the training stamps' stretch (no metadata, so no extra inputs)."""
    from featuremass.cli._extract import read_images

    if model.extra_inputs:
        raise FeaturemassError(f"{args.model} was trained with extra inputs (distance, L_g): "
                               "predict on a --data split, which holds them")
    scale = getattr(args, "restretch", None) or "seed-log"
    hint = {"hint": "Pass --restretch auto (or the stamps' stretch)"}
    source, ids = read_images(args.images, args.names, scale, **hint)
    shape = source.stack_shape()
    if shape[1:] != (model.npix_, model.npix_):
        raise DataError(f"{args.images} has shape {shape}; {args.model} was trained on "
                        f"({model.npix_}, {model.npix_}) px stamps")
    images = source.read(0, shape[0])
    if source.kind != "npy":  # read_images checked an HDF5 file or folder on its first rows only
        from featuremass.io.layout import check_image_stack

        check_image_stack(images, args.images, scale, **hint)
    ids = np.arange(shape[0], dtype=np.int64) if ids is None else ids
    flag = unpredictable_stamps(images)
    pred = np.full(len(ids), np.nan)
    ok = flag == 0
    stamps, codes = _as_trained(args, images, ok)
    if ok.any():
        pred[ok] = model.predict(stamps)
    table = pd.DataFrame({"galaxy_id": ids, PRED_COLUMN: pred, "flag": flag})
    if codes is not None:
        table["stretch_code"] = codes
    return write_table(table, args.out)


def _as_trained(args, images, ok) -> tuple[np.ndarray, np.ndarray | None]:
    """The predictable stamps (``ok``) as the CNN was trained on them, and each stamp's input stretch.

    Without ``--restretch`` the stamps as stored and no stretch codes; with it,
    every predictable stamp inverted from its stretch and stretched the seed's way
    (:func:`~featuremass.features.seedlog.restretch_stack`), and the input stretch
    of every stamp (NaN for the unpredictable ones).
    """
    stamps = np.asarray(images)[ok]
    kind = getattr(args, "restretch", None)
    if kind is None:
        return stamps, None
    from featuremass.features.seedlog import restretch_stack

    codes = np.full(len(ok), np.nan)
    if len(stamps):
        stamps, codes[ok] = restretch_stack(stamps, "shifted-log", kind=kind)
    log.info("re-stretched %d stamps from %s to the seed's stretch", len(stamps), kind)
    return stamps, codes


def _predict(args, model, load_split) -> Path:
    ds = load_split(args.data, npix=args.npix, split=args.split,
                    drop_invalid=getattr(args, "drop_invalid", False))
    if ds.npix != model.npix:
        raise FeaturemassError(f"{args.model} was trained on {model.npix} px stamps; "
                               f"--npix {args.npix} was given")
    flag = unpredictable_stamps(ds.images)
    pred = np.full(len(ds.ids), np.nan)
    ok = flag == 0
    stamps, codes = _as_trained(args, ds.images, ok)
    if ok.any():
        extra = _extra(ds, model.extra_inputs)
        pred[ok] = model.predict(stamps, None if extra is None else extra[ok])
    if (~ok).any():
        log.warning("%d of %d stamps are blank or hold non-finite pixels: their M/L is NaN (see 'flag')",
                    int((~ok).sum()), len(ok))
    table = pd.DataFrame({"galaxy_id": ds.ids, PRED_COLUMN: pred, "flag": flag})
    if codes is not None:
        table["stretch_code"] = codes
    if "L_g" in ds.metadata.columns:
        table["stellar_mass"] = pred * ds.metadata["L_g"].to_numpy(dtype=np.float64)
    return write_table(table, args.out)


def unpredictable_stamps(images) -> np.ndarray:
    """Flag bits for stamps the CNN must not be given: blank or with non-finite pixels.

    A constant (or all-NaN) stamp carries no galaxy, yet a network still maps
    it to a confident-looking M/L; non-finite pixels poison every output.
    Returns an int64 array of :class:`~featuremass.features.flags.MorphFlag`
    bits, 0 where the stamp is fine.
    """
    from featuremass.features.flags import MorphFlag

    stack = np.asarray(images)
    flat = stack.reshape(len(stack), -1)
    finite = np.isfinite(flat)
    flag = np.where(finite.all(axis=1), 0, int(MorphFlag.BAD_PIXELS)).astype(np.int64)
    with np.errstate(invalid="ignore"):
        hi = np.where(finite, flat, -np.inf).max(axis=1)
        lo = np.where(finite, flat, np.inf).min(axis=1)
    blank = ~finite.any(axis=1) | (hi <= lo)
    flag[blank] |= int(MorphFlag.BLANK_IMAGE)
    return flag


def cnn_cli(args) -> None:
    """Dispatch ``featuremass cnn {train,predict}``."""
    from featuremass.compat import import_tensorflow
    from featuremass.models.metrics import format_metric

    # Fail first, with the install hint, when the cnn extra is missing.
    import_tensorflow(f"featuremass cnn {args.cnn_command}")
    args.verbose = getattr(args, "verbose", 0)
    if args.cnn_command == "train":
        metrics = train(args)
        for split, rep in metrics.items():
            print(f"{split}: RMSE {format_metric(rep['linear']['rmse'])}  "
                  f"R2 {format_metric(rep['linear']['r2'])}")
        print(f"model written to {Path(args.out)}")
    elif args.cnn_command == "predict":
        print(predict(args))
    else:  # argparse guarantees one of the above
        raise FeaturemassError(f"unknown cnn command {args.cnn_command!r}")


def summarise(model_dir) -> str:
    """One-line JSON summary of a saved CNN (for logs)."""
    from featuremass.models.store import read_sidecar

    side = read_sidecar(model_dir, kinds=("cnn",))
    return json.dumps({k: side.get(k) for k in ("params", "best_epoch", "n_params")})
