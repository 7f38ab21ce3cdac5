"""``featuremass extract``: check the arguments and inputs, measure, write one table.

Reads the command line, refuses unsafe outputs, then calls
:func:`featuremass.features.batch.extract_features` (on this machine or a Dask
cluster) and prints its summary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featuremass.errors import DataError, FeaturemassError
from featuremass.features.batch import (
    DATASET_METADATA,
    extract_features,
    image_source,
    summarize,
    with_psf,
)


def extract_cli(args) -> None:
    """``featuremass extract``: validate the arguments, extract, print a summary.

    The output is refused when it is an input or exists without ``--overwrite``,
    and is locked while being written, so a second extract to it is refused.
    """
    from featuremass.io.layout import as_int64_ids, guarded_output, load_npy

    images, names = getattr(args, "images", None), getattr(args, "names", None)
    maps = [m for m in (getattr(args, "masks", None), getattr(args, "weights", None)) if m is not None]
    stack = None
    if images is not None:  # refuse complex/text stacks, non-seed-log "seed-log", uint64 ids
        stack = read_images(images, names, args.scale)
    elif names is not None:
        as_int64_ids(load_npy(names, mmap=False), names)
    folder = getattr(args, "scheduler", None) is not None  # a Dask run writes a folder of parts
    # an unfinished partitioned table of an interrupted run is resumed, not replaced
    resuming = folder and _unfinished_dataset(Path(args.out))
    with guarded_output(args.out, inputs=[images, names, *maps], folder=folder,
                        overwrite=getattr(args, "overwrite", False) or resuming):
        _extract_cli(args, stack)


def read_images(images, names, scale: str, **hint):
    """``(ImageSource, ids or None)`` of ``--images`` and ``--names``, checked.

    ``--images`` is an ``(n, ny, nx)`` .npy stack, an HDF5 file or a folder of
    2-D .npy stamps (:func:`featuremass.features.batch.image_source`); its
    dtype must be real, a stack declared seed-log must lie in the seed's range
    (HDF5 and folders are checked on their first 1000 rows, never read whole
    here), and ``--names`` must hold one integer id per image that fits int64.
    ``ids`` is None when neither ``--names`` nor the HDF5 file gives them.
    ``hint=`` ends the message refusing a stack that is not seed-log.
    """
    from featuremass.io.layout import as_int64_ids, check_image_stack, load_npy

    source, ids = image_source(Path(images))
    n = source.stack_shape()[0]
    rows = load_npy(images, mmap=True) if source.kind == "npy" else source.read(0, min(n, 1000))
    check_image_stack(rows, images, scale, **hint)
    if names is not None:
        values = np.asarray(load_npy(names, mmap=False))
        if values.ndim != 1 or len(values) != n or not np.issubdtype(values.dtype, np.integer):
            raise DataError(
                f"{names} must hold {n} integer ids (one per image in {images}); got dtype "
                f"{values.dtype}, shape {values.shape}")
        ids = as_int64_ids(values, names, n)
    return source, ids


def _unfinished_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds only the parts of an interrupted partitioned extract."""
    if not folder.is_dir() or (folder / DATASET_METADATA).exists():
        return False
    names = [p.name for p in folder.iterdir()]
    return all(n.startswith("part-") and n.endswith(".parquet") or n.startswith(".")
               for n in names)


def _extract_cli(args, stack) -> None:
    data_mode = any(getattr(args, a, None) is not None for a in ("data", "npix", "split", "train_size"))
    images_mode = any(getattr(args, a, None) is not None for a in ("images", "names"))
    if data_mode == images_mode:
        raise FeaturemassError(
            "give exactly one input: either --data DIR --npix N --split S, or --images FILE.npy"
            + (" (both were given)" if data_mode else "")
        )
    scheduler = getattr(args, "scheduler", None)
    out = Path(args.out)
    if scheduler is None and out.suffix != ".parquet":
        raise FeaturemassError(f"--out must end in .parquet; got {out}")
    if data_mode:
        missing = [f"--{a}" for a in ("data", "npix", "split") if getattr(args, a, None) is None]
        if missing:
            raise FeaturemassError(f"--data mode also needs {', '.join(missing)}")
        if args.train_size is not None and args.split != "train":
            raise FeaturemassError(f"--train-size applies to --split train only (got --split {args.split})")
        from featuremass.io.layout import load_split

        ds = load_split(args.data, npix=args.npix, split=args.split, train_size=args.train_size,
                        mmap=True, drop_invalid=getattr(args, "drop_invalid", False))
        images, ids = ds.images, ds.ids
        scale = args.scale or "auto"
        description = {"mode": "dataset", "data": str(args.data), "npix": int(args.npix),
                       "split": args.split, "train_size": args.train_size, "file": str(ds.source)}
    else:
        if args.images is None:
            raise FeaturemassError("--names needs --images")
        images, ids = stack
        scale = args.scale or "auto"
        description = {"mode": "images", "images": str(args.images),
                       "names": None if args.names is None else str(args.names)}
    masks, weights = _pixel_maps(args, data_mode)
    for name, path in (("masks", args.masks), ("weights", args.weights)):
        if path is not None:
            description[name] = str(path)

    config = None
    if args.backend == "native":
        from featuremass.features.measure import MorphologyConfig

        config = MorphologyConfig()
        if args.psf_fwhm is not None:
            config = with_psf(config, args.psf_fwhm)
    elif args.psf_fwhm is not None:
        config = with_psf(None, args.psf_fwhm)
    psf_fwhm = None
    if getattr(args, "psf_table", None) is not None:
        from featuremass.io.psf_table import read_psf_table

        n_images = images.stack_shape()[0] if hasattr(images, "stack_shape") else len(images)
        table_ids = np.arange(n_images, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        psf_fwhm = read_psf_table(args.psf_table, table_ids)
        description["psf_table"] = str(args.psf_table)
    from featuremass.features.execution import open_executor, terminate_on_signals

    with terminate_on_signals(), open_executor(args.jobs, scheduler) as executor:
        df = extract_features(
            images, ids, scale=scale, backend=args.backend,
            feature_set=getattr(args, "feature_set", "full"), config=config, psf_fwhm=psf_fwhm,
            n_jobs=args.jobs, chunk_size=args.chunk_size, out=out, resume=not args.no_resume,
            progress=True, input_description=description, executor=executor,
            partitioned=scheduler is not None, masks=masks, weights=weights,
        )
    print(summarize(df, out))


def _pixel_maps(args, data_mode: bool):
    """``(masks, weights)`` sources of ``--masks`` / ``--weights`` (each None when not given)."""
    given = [f"--{name}" for name in ("masks", "weights") if getattr(args, name, None) is not None]
    if given and data_mode:
        raise FeaturemassError(f"{' and '.join(given)} go with --images (a dataset split has no "
                               "per-pixel maps)")
    if getattr(args, "weights", None) is not None and args.scale != "linear":
        raise FeaturemassError(
            f"--weights are 1-sigma errors in the units of the pixels, so the pixels must be linear "
            f"flux: pass --scale linear (got --scale {args.scale})")
    return tuple(None if getattr(args, name, None) is None else image_source(Path(getattr(args, name)))[0]
                 for name in ("masks", "weights"))
