"""What a seed-layout dataset holds: ``featuremass data info --data DIR``.

:func:`dataset_info` inspects a dataset without loading any image into
memory (image files are memory-mapped; only the id files and the metadata are
read), and works on partial datasets (say only val/test, or no metadata).
Problems in individual files are collected in ``info['problems']`` rather
than raised, so one bad file does not hide the rest; only a folder that is
not a dataset at all raises :class:`~featuremass.errors.DataError`.
:func:`format_info` renders the result as text.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featuremass.errors import DataError
from featuremass.io.layout import (
    SPLITS,
    TARGET_COLUMN,
    SeedLayout,
    as_int64_ids,
    load_npy,
    read_metadata,
    read_split_labels,
)

#: Percentiles reported for the target.
TARGET_PERCENTILES = (5, 25, 50, 75, 95)
#: How many example ids to show for each problem.
N_EXAMPLES = 5


def _examples(ids) -> list[int]:
    return [int(i) for i in list(ids)[:N_EXAMPLES]]


def _target_stats(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    stats = {"count": int(values.size), "n_finite": int(finite.size)}
    if finite.size:
        stats.update(mean=float(finite.mean()), std=float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
                     min=float(finite.min()), max=float(finite.max()))
        for q, v in zip(TARGET_PERCENTILES, np.percentile(finite, TARGET_PERCENTILES), strict=True):
            stats[f"p{q}"] = float(v)
    return stats


def dataset_info(root: str | os.PathLike) -> dict:
    """Summarise a dataset in the seed layout.

    Returns
    -------
    dict
        JSON-serialisable: ``root``; ``npix`` (sizes found); ``train_sizes``
        (per npix); ``files`` (one record per image file: npix, split,
        train_size, n, shape, dtype, ids missing from the metadata: count and
        examples, duplicate ids); ``splits`` (galaxies per split and npix);
        ``metadata`` (rows, columns, target statistics: count, finite, mean,
        std, min, percentiles, max) or None; ``split_labels`` (ids per label
        file, and those absent from every image file of that split);
        ``problems`` (one readable line per problem found).

    Raises
    ------
    DataError
        ``root`` is not a folder, or holds none of ``images/``, ``metadata/``, ``split/``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    layout = SeedLayout(root)
    if not any((root / d).is_dir() for d in ("images", "metadata", "split")):
        raise DataError(
            f"{root} is not a dataset in the seed layout: it has no images/, metadata/ or split/ folder"
        )
    problems: list[str] = []
    meta, meta_info = _metadata_info(layout, problems)
    meta_ids = meta.index.to_numpy() if meta is not None else None

    files = []
    ids_by_split: dict[str, set[int]] = {s: set() for s in SPLITS}
    npix_list = layout.available_npix()
    train_sizes = {}
    for npix in npix_list:
        train_sizes[str(npix)] = layout.available_train_sizes(npix)
        requests = [("train", t) for t in train_sizes[str(npix)]] + [("val", None), ("test", None)]
        for split, label in requests:
            if layout.image_path(npix, split, label).is_file() or layout.names_path(npix, split, label).is_file():
                rec, ids = _image_file_info(layout, npix, split, label, meta_ids, problems)
                files.append(rec)
                if ids is not None:
                    ids_by_split[split].update(ids.tolist())

    splits = {}
    for rec in files:
        if "n" in rec:
            key = f"{rec['split']}" + (f"_{rec['train_size']}" if rec["train_size"] else "")
            splits.setdefault(key, {})[str(rec["npix"])] = rec["n"]

    return {
        "root": str(root),
        "npix": npix_list,
        "train_sizes": train_sizes,
        "splits": splits,
        "files": files,
        "metadata": meta_info,
        "split_labels": _split_labels_info(layout, ids_by_split, problems),
        "problems": problems,
    }


def _metadata_info(layout: SeedLayout, problems: list[str]):
    """``(metadata, summary)`` of the metadata file (None, None when absent or unreadable).

    Non-finite and non-positive targets are reported in ``problems``.
    """
    if not layout.metadata_path.is_file():
        problems.append(f"no metadata file ({layout.metadata_path})")
        return None, None
    try:
        meta = read_metadata(layout.metadata_path)
    except DataError as exc:
        problems.append(str(exc))
        return None, None
    meta_info = {
        "path": str(layout.metadata_path),
        "n_rows": int(len(meta)),
        "columns": [str(c) for c in meta.columns],
        "target": _target_stats(meta[TARGET_COLUMN].to_numpy()),
    }
    n_bad = meta_info["target"]["count"] - meta_info["target"]["n_finite"]
    if n_bad:
        bad_ids = meta.index[~np.isfinite(meta[TARGET_COLUMN].to_numpy(dtype=np.float64))]
        problems.append(
            f"{layout.metadata_path}: {n_bad} rows with non-finite {TARGET_COLUMN}: "
            f"ids {_examples(bad_ids)}"
        )
    target = meta[TARGET_COLUMN].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        not_positive = np.isfinite(target) & (target <= 0)
    if not_positive.any():
        problems.append(
            f"{layout.metadata_path}: {int(not_positive.sum())} rows with {TARGET_COLUMN} "
            f"<= 0 (a mass-to-light ratio is positive): ids "
            f"{_examples(meta.index[not_positive])}"
        )
    return meta, meta_info


def _image_file_info(layout: SeedLayout, npix: int, split: str, label, meta_ids, problems: list[str]):
    """``(record, ids)`` of one image file and its names file (``ids`` None when unreadable).

    Wrong dtype or shape, a count mismatch, duplicate ids and ids missing
    from the metadata are reported in ``problems``.
    """
    img_path = layout.image_path(npix, split, label)
    names_path = layout.names_path(npix, split, label)
    rec = {"npix": npix, "split": split, "train_size": label, "path": str(img_path)}
    try:
        images = load_npy(img_path)
        rec.update(n=int(images.shape[0]) if images.ndim else 0, shape=list(images.shape),
                   dtype=str(images.dtype))
        if images.dtype != np.float32 or images.ndim != 3 or images.shape[1:] != (npix, npix):
            problems.append(f"{img_path} has {images.dtype} {images.shape}; expected float32 (n, {npix}, {npix})")
        del images
        ids = as_int64_ids(load_npy(names_path, mmap=False), names_path)
    except DataError as exc:
        problems.append(str(exc))
        rec["error"] = str(exc)
        return rec, None
    ids = ids.astype(np.int64)
    if len(ids) != rec["n"]:
        problems.append(f"{names_path} has {len(ids)} ids but {img_path} has {rec['n']} images")
    uniq, counts = np.unique(ids, return_counts=True)
    dups = uniq[counts > 1]
    rec["n_duplicate_ids"] = int(dups.size)
    if dups.size:
        problems.append(f"{names_path}: {dups.size} duplicate ids {_examples(dups)}")
    if meta_ids is not None:
        missing = ids[~np.isin(ids, meta_ids)]
        rec["n_missing_from_metadata"] = int(missing.size)
        rec["missing_from_metadata"] = _examples(missing)
        if missing.size:
            problems.append(
                f"{names_path}: {missing.size} ids missing from the metadata, e.g. {_examples(missing)}"
            )
    return rec, ids


def _split_labels_info(layout: SeedLayout, ids_by_split: dict[str, set[int]], problems: list[str]) -> dict:
    """Ids per split-label file, and those absent from every image file of that split."""
    labels_info = {}
    for split in SPLITS:
        path = layout.split_labels_path(split)
        if not path.is_file():
            continue
        try:
            labels = read_split_labels(path)
        except DataError as exc:
            problems.append(str(exc))
            continue
        entry = {"path": str(path), "n": int(labels.size), "has_images": bool(ids_by_split[split])}
        if ids_by_split[split]:
            absent = labels[~np.isin(labels, np.fromiter(ids_by_split[split], dtype=np.int64))]
            entry["n_not_in_images"] = int(absent.size)
            entry["not_in_images"] = _examples(absent)
        labels_info[split] = entry
    return labels_info


def _fmt(v: float) -> str:
    return "nan" if not np.isfinite(v) else f"{v:.3g}"


def format_info(info: dict) -> str:
    """Render :func:`dataset_info` as a readable text block."""
    out = [f"dataset {info['root']}"]
    out.append(f"  image sizes (npix): {', '.join(map(str, info['npix'])) or 'none'}")
    for npix, sizes in info["train_sizes"].items():
        out.append(f"  train sizes at {npix} px: {', '.join(sizes) or 'none'}")
    if info["files"]:
        out.append("  image files:")
        for rec in info["files"]:
            name = Path(rec["path"]).name
            if "error" in rec:
                out.append(f"    {rec['npix']:>4} px  {name:<28} unreadable")
                continue
            miss = rec.get("n_missing_from_metadata")
            extra = "" if miss is None else f", {miss} missing from metadata"
            if rec.get("n_duplicate_ids"):
                extra += f", {rec['n_duplicate_ids']} duplicate ids"
            out.append(f"    {rec['npix']:>4} px  {name:<28} {rec['n']:>7} galaxies{extra}")
    else:
        out.append("  image files: none")
    meta = info["metadata"]
    if meta:
        t = meta["target"]
        out.append(f"  metadata: {meta['n_rows']} galaxies, columns {', '.join(meta['columns'])}")
        if t["n_finite"]:
            pct = ", ".join(f"p{q} {_fmt(t[f'p{q}'])}" for q in TARGET_PERCENTILES)
            out.append(
                f"  {TARGET_COLUMN}: {t['n_finite']} finite of {t['count']}; mean {_fmt(t['mean'])}, "
                f"std {_fmt(t['std'])}, min {_fmt(t['min'])}, {pct}, max {_fmt(t['max'])}"
            )
        else:
            out.append(f"  {TARGET_COLUMN}: no finite values")
    else:
        out.append("  metadata: none")
    for split, entry in info["split_labels"].items():
        line = f"  split/{split}_labels.txt: {entry['n']} ids"
        if entry["has_images"]:
            line += f", {entry['n_not_in_images']} not in any {split} image file"
            if entry["n_not_in_images"]:
                line += f" (e.g. {entry['not_in_images']})"
        else:
            line += f" (no {split} images present)"
        out.append(line)
    if info["problems"]:
        out.append(f"  problems ({len(info['problems'])}):")
        out.extend(f"    - {p}" for p in info["problems"])
    else:
        out.append("  problems: none")
    return "\n".join(out)
