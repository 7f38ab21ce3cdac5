"""Where the native engine spends its time: cumulative seconds per stage (issue 13).

Each stage function that :func:`featuremass.features.measure.measure_galaxy`
calls is wrapped by a timer (in this process only; the library is not
changed). Time is *exclusive*: a stage called from inside another stage
counts for the outer one, and ``prepare_source`` keeps only what its sky and
segmentation calls leave (masks, checks). ``glue`` is the rest of
``measure_galaxy`` (dict building, flag logic).

Stages: sky, segmentation, centroid + moments, asymmetry-centre search,
Petrosian radii, other CAS (asymmetry at a fixed centre, smoothness, r20/50/80
and half-light radii), Gini/M20, MID, shape asymmetry (+ rmax, outer
asymmetry), Sérsic + bulge/disk, profiles.

Measured on simulated stamps (:func:`featuremass.io.simulate.simulate_survey`),
linear flux, one process, one BLAS thread: one galaxy measured repeatedly,
and a batch of ``--n`` galaxies, at each ``--npix``. A short cProfile of the
batch's first galaxies lists the hottest functions by own time.

Writes ``reports/profile.md``.

    python benchmarks/bench_profile.py --n 1000 --npix 69 128
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from featuremass.features import (
    cas,
    geometry,
    gini_m20,
    measure,
    mid,
    profile,
    radii,
    sersic,
    shape_asymmetry,
    sky,
)
from featuremass.io.layout import SeedLayout, load_npy
from featuremass.report.provenance import provenance_markdown

#: (stage, module, attribute names) wrapped by the timer.
STAGES = [
    ("sky", sky, ("estimate_sky", "sn_per_pixel")),
    ("segmentation", measure, ("detection_smoothing", "detection_mask", "segment_central_source")),
    ("prepare_source (rest)", measure, ("prepare_source",)),
    ("centroid + moments", geometry, ("centroid", "covariance", "shape_from_covariance")),
    ("asymmetry-centre search", cas, ("asymmetry_center",)),
    ("Petrosian radii", radii, ("petrosian_radius",)),
    ("other CAS (A at fixed centre, S, r20/50/80, rhalf)", cas, ("rotational_asymmetry", "smoothness")),
    ("other CAS (A at fixed centre, S, r20/50/80, rhalf)", radii, ("radius_at_fraction",)),
    ("Gini/M20", gini_m20, ("gini_segmap", "gini", "m20")),
    ("MID", mid, ("mid_segmap", "multimode", "intensity_deviation")),
    ("shape asymmetry, rmax, outer A", shape_asymmetry,
     ("shape_asymmetry_segmap", "rmax", "shape_asymmetry", "outer_asymmetry")),
    ("Sérsic + bulge/disk", sersic, ("fit_sersic_and_bulge_disk", "fit_sersic", "fit_bulge_disk")),
    ("profiles", profile, ("profile_features",)),
]


class StageTimer:
    """Exclusive wall time per stage; nested stage calls count for the outermost stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._stack: list[list] = []  # [stage, start, time spent in nested *counted* stages]

    def wrap(self, stage, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            # Only prepare_source lets its inner stages (sky, segmentation) count apart.
            if self._stack and self._stack[-1][0] != "prepare_source (rest)":
                return fn(*args, **kwargs)
            entry = [stage, time.perf_counter(), 0.0]
            self._stack.append(entry)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                spent = time.perf_counter() - entry[1]
                self.seconds[stage] = self.seconds.get(stage, 0.0) + spent - entry[2]
                if self._stack:
                    self._stack[-1][2] += spent

        return timed

    @contextlib.contextmanager
    def installed(self):
        saved = []
        for stage, module, names in STAGES:
            for name in names:
                fn = getattr(module, name)
                saved.append((module, name, fn))
                setattr(module, name, self.wrap(stage, fn))
        try:
            yield self
        finally:
            for module, name, fn in reversed(saved):
                setattr(module, name, fn)


def _profile(images) -> tuple[dict[str, float], float]:
    timer = StageTimer()
    with timer.installed():
        t0 = time.perf_counter()
        for img in images:
            measure.measure_galaxy(np.asarray(img, dtype=np.float64))
        total = time.perf_counter() - t0
    stages = dict(timer.seconds)
    stages["glue (measure_galaxy rest)"] = total - sum(stages.values())
    return stages, total


def _table(stages: dict[str, float], total: float, n: int) -> list[str]:
    lines = ["| stage | total s | ms per galaxy | share |", "|---|---|---|---|"]
    for stage, s in sorted(stages.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {stage} | {s:.3f} | {s / n * 1e3:.2f} | {s / total * 100:.1f}% |")
    lines.append(f"| **total** | {total:.3f} | {total / n * 1e3:.2f} | 100% |")
    return lines


def _hot_functions(images, top: int) -> list[str]:
    prof = cProfile.Profile()
    prof.enable()
    for img in images:
        measure.measure_galaxy(np.asarray(img, dtype=np.float64))
    prof.disable()
    lines = []
    for key, title in (("tottime", "by own time"), ("cumulative", "by cumulative time")):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(top)
        text = buf.getvalue()
        start = text.find("ncalls")
        lines += [f"Sorted {title}:", "", "```", text[start:].rstrip() if start >= 0 else text.rstrip(), "```", ""]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="galaxies in the batch (default 1000)")
    p.add_argument("--npix", type=int, nargs="+", default=[69, 128])
    p.add_argument("--repeat", type=int, default=30, help="repeats of the single galaxy (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=None, help="a simulated survey to reuse (test split)")
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--name", default="profile.md", help="report file name inside --out")
    args = p.parse_args(argv)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    provenance = provenance_markdown(None if argv is None else [f"benchmarks/{Path(__file__).name}", *argv])
    tmp = None
    root = args.data
    if root is None:
        from featuremass.io.simulate import SurveyConfig, simulate_survey

        tmp = tempfile.TemporaryDirectory(prefix="featuremass-profile-")
        root = Path(tmp.name) / "survey"
        cfg = SurveyConfig(n_train=max(1, args.n // 50), n_val=1, n_test=args.n, npix=tuple(args.npix),
                           seed=args.seed)
        simulate_survey(root, cfg, n_jobs=1, overwrite=True)
    layout = SeedLayout(root)

    lines = ["# Profile of the native engine, per stage", "", provenance,
             "- one process, one BLAS thread; linear-flux simulated stamps (test split); exclusive wall time "
             "per stage (see the script's docstring for what each stage holds)", ""]
    for npix in args.npix:
        stack = np.asarray(load_npy(layout.linear_path(npix, "test")))[: args.n]
        # "One galaxy": the galaxy of median cost among the first 20, measured repeatedly.
        costs = []
        for img in stack[:20]:
            t0 = time.perf_counter()
            measure.measure_galaxy(np.asarray(img, dtype=np.float64))
            costs.append(time.perf_counter() - t0)
        one = stack[int(np.argsort(costs)[len(costs) // 2])]
        one_stages, one_total = _profile([one] * args.repeat)
        batch_stages, batch_total = _profile(stack)
        lines += [f"## {npix} px", "",
                  f"### One galaxy (median-cost galaxy of the first 20, measured {args.repeat} times)", "",
                  *_table(one_stages, one_total, args.repeat), "",
                  f"### Batch of {len(stack)} galaxies", "", *_table(batch_stages, batch_total, len(stack)), "",
                  f"### Hottest functions (cProfile, first {min(100, len(stack))} galaxies)", "",
                  *_hot_functions(stack[:100], 25), ""]
        print(f"{npix} px: {batch_total / len(stack) * 1e3:.2f} ms per galaxy over {len(stack)}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.name).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / args.name}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
