"""Whole-stack inverse stretches in compiled calls (the fast tier's hot path).

Two stack versions of per-stamp inverses of :mod:`featuremass.io.stretch`:
:func:`seed_log_inverse_stack` (``--scale seed-log``) and
:func:`invert_stretch_stack` (``--scale auto``).

:func:`featuremass.io.stretch.inverse_seed_stretch` inverts one stamp: it
sorts the stamp's ``u = (y + 1) / 2``, finds the dynamic range ``R`` (dex)
whose recovered sky noise is ``1 / k`` of the scale
(:func:`featuremass.io.stretch.estimate_dynamic_range`) and returns
``10**(u R) - 1`` minus its clipped-median sky. Per stamp that is a sort, a
Brent root of the quartile equation, a few secant steps and about ten Python
calls, each evaluating ``10**(u R) - 1`` over every sky-like pixel.

:func:`seed_log_inverse_stack` does the same for an ``(n, ny, nx)`` stack:
sub-batches sorted across the stamp axis (float32 stamps are sorted as
float32, twice as fast), then one compiled loop over the stamps that finds
each ``R`` (:func:`featuremass.io.stretch_kernels._dynamic_range_kernel`,
which evaluates the map lazily) and the sky, then one vectorised ``exp``.
It agrees with the per-stamp inverse to rounding (the tests hold it to
``invert_stretch(stamp, 'seed-log')``).

:func:`invert_stretch_stack` is ``invert_stretch(stamp, 'auto')`` of every
stamp: the same batched sort, then one compiled loop
(:func:`featuremass.io.stretch_kernels._auto_kernel`) that detects each
stamp's stretch and finds its parameters reading the sorted stamp through
the candidate inverses lazily, then the winning inverse of each stamp as
the per-stamp NumPy expression, batched over the stamps that share it.
Clipped skies (a pile-up at the floor), stamps with non-finite pixels and
stamps outside [-1, 1] take the per-stamp path.

:func:`restretch_stack` puts stamps of any stretch into another one (a CNN's
training stretch): the inverse above, then
:func:`featuremass.io.stretch.apply_stretch`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from featuremass.io.stretch import (
    _N_LEVEL_BINS,
    _RANGE_SLACK,
    CLIPPED_FLOOR_FRACTION,
    DEFAULT_SCALE_FACTOR,
    STRETCH_CODES,
    STRETCH_COLUMNS,
    STRETCHES,
    apply_stretch,
    estimate_dynamic_range,
    inverse_seed_stretch,
    invert_stretch,
)
from featuremass.io.stretch_kernels import (
    _LN10,
    _auto_rows,
    _dynamic_range_kernel,
    _level_bins_rows,
    _robust_sky_g,
)

__all__ = ["invert_stretch_stack", "restretch_stack", "seed_log_inverse_stack"]

#: ``stretch_code`` of each kind code of the compiled detection (its index in ``STRETCHES``).
_KIND_CODES = np.array([STRETCH_CODES[kind] for kind in STRETCHES])
#: Stamps :func:`restretch_stack` inverts at a time.
RESTRETCH_BLOCK = 1024
#: Pixels inverted together (as :data:`featuremass.features.fast.SUB_BATCH_PIXELS`).
SUB_BATCH_PIXELS = 2**18


@njit(cache=True)
def _range_and_sky(u_sorted, scale_factor, params, sky):
    """Each sorted row's dynamic range ``R`` and the sky of ``expm1(u R ln 10)``, into ``params`` and ``sky``."""
    for s in range(u_sorted.shape[0]):
        row = u_sorted[s]
        R = _dynamic_range_kernel(row, scale_factor)
        params[s] = R
        sky[s] = _robust_sky_g(row, R, _LN10, 5, 3.0)[0]


def seed_log_inverse_stack(stack: np.ndarray, *, scale_factor: float = DEFAULT_SCALE_FACTOR
                           ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~featuremass.io.stretch.inverse_seed_stretch` of every stamp of an ``(n, ny, nx)`` stack.

    Returns ``(linear, R)``: the recovered stack (float64, NaN where the input
    is not finite) and each stamp's dynamic range in dex (NaN for a stamp with
    fewer than 10 finite pixels), as ``invert_stretch(stamp, 'seed-log')``
    records it. Stamps with a non-finite pixel, fewer than 10 pixels or
    constant values go through the per-stamp inverse.
    """
    raw = np.asarray(stack)
    if raw.dtype != np.float32:
        raw = raw.astype(np.float64, copy=False)
    n, ny, nx = raw.shape
    npx = ny * nx
    flat = raw.reshape(n, npx)
    out = np.empty((n, npx))
    params = np.full(n, np.nan)
    irregular = []
    # Sub-batches of ~2**18 pixels keep the temporaries in cache.
    step = max(1, SUB_BATCH_PIXELS // max(npx, 1))
    for start in range(0, n, step):
        block = flat[start:start + step]
        u = np.clip(block, -1.0, 1.0, dtype=np.float64)
        u += 1.0
        u /= 2.0
        regular = np.isfinite(u).all(axis=1) & (npx >= 10)
        if npx:
            regular &= u.max(axis=1) > u.min(axis=1)
        irregular.extend(start + np.flatnonzero(~regular))
        if not regular.any():
            continue
        if not regular.all():
            u, block = u[regular], block[regular]
        # y -> (clip(y) + 1) / 2 is non-decreasing, so sorting the raw values (float32
        # sorts twice as fast as float64) and mapping them gives the sorted u.
        u_sorted = np.clip(np.sort(block, axis=1), -1.0, 1.0, dtype=np.float64)
        u_sorted += 1.0
        u_sorted /= 2.0
        par, sky = np.empty(len(u)), np.empty(len(u))
        _range_and_sky(u_sorted, float(scale_factor), par, sky)
        # 10**(u R) - 1 - sky; exp then -1 is SIMD in NumPy (expm1 is not) and
        # differs from expm1 by one rounding of exp's value.
        u *= par[:, None]
        u *= _LN10
        np.exp(u, out=u)
        u -= (1.0 + sky)[:, None]
        rows = np.arange(start, min(start + step, n))[regular]
        if regular.all():
            out[start:start + step], params[start:start + step] = u, par
        else:
            out[rows], params[rows] = u, par
    for i in irregular:
        img = np.asarray(raw[i], dtype=np.float64)
        out[i] = inverse_seed_stretch(img, scale_factor=scale_factor).ravel()
        if np.isfinite(img).sum() >= 10:
            params[i] = estimate_dynamic_range(img, scale_factor=scale_factor)
    return out.reshape(n, ny, nx), params


def invert_stretch_stack(stack: np.ndarray, kind: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``invert_stretch(stamp, kind)`` of every stamp of an ``(n, ny, nx)`` stack.

    Returns ``(linear, meta, uncertain)``: the recovered stack (float64, NaN
    where the input is not finite), the :data:`~featuremass.io.stretch.STRETCH_COLUMNS`
    of each stamp (``Inversion.metadata()``) and its ``uncertain`` bit. With
    ``kind='auto'`` the regular stamps (every pixel finite, within [-1, 1],
    not constant, at most :data:`~featuremass.io.stretch.CLIPPED_FLOOR_FRACTION`
    at the floor) go through the compiled detection; every other stamp, and
    every other ``kind``, through :func:`~featuremass.io.stretch.invert_stretch`.
    """
    raw = np.asarray(stack)
    if raw.ndim != 3:
        raise ValueError(f"invert_stretch_stack expects an (n, ny, nx) stack; got shape {raw.shape}")
    if raw.dtype != np.float32:
        raw = raw.astype(np.float64, copy=False)
    n, ny, nx = raw.shape
    npx = ny * nx
    out = np.empty((n, ny, nx))
    meta = np.full((n, len(STRETCH_COLUMNS)), np.nan)
    uncertain = np.zeros(n, dtype=bool)
    per_stamp = list(range(n)) if kind != "auto" or min(ny, nx) < 3 else []
    step = max(1, SUB_BATCH_PIXELS // max(npx, 1))
    for start in range(0 if not per_stamp else n, n, step):
        block = raw[start:start + step].reshape(-1, npx)
        rows = np.arange(start, start + len(block))
        b64 = np.asarray(block, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            lo, hi = b64.min(axis=1), b64.max(axis=1)  # NaN where a pixel is NaN
            regular = (np.isfinite(lo) & np.isfinite(hi) & (hi > lo)
                       & (lo >= -1.0 - _RANGE_SLACK) & (hi <= 1.0 + _RANGE_SLACK))
        if npx < 10:
            regular[:] = False
        lo, hi, b64, block = lo[regular], hi[regular], b64[regular], block[regular]
        u = (b64 - lo[:, None]) / (hi - lo)[:, None]
        # a pile-up at the floor is a clipped sky: the per-stamp censored fit
        clipped = np.count_nonzero(u == 0.0, axis=1) / npx > CLIPPED_FLOOR_FRACTION
        if clipped.any():
            keep = ~clipped
            regular[np.flatnonzero(regular)[clipped]] = False
            lo, hi, u, block = lo[keep], hi[keep], u[keep], block[keep]
        per_stamp.extend(rows[~regular])
        rows = rows[regular]
        if not len(rows):
            continue
        # The affine map to u is increasing: sort the raw values (float32 sorts fast), then map.
        u_sorted = np.sort(block, axis=1).astype(np.float64)
        u_sorted -= lo[:, None]
        u_sorted /= (hi - lo)[:, None]
        m = len(rows)
        kinds, modes = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
        params, a, b, sky, sigma = (np.empty(m) for _ in range(5))
        unc = np.empty(m, dtype=np.bool_)
        bins = _level_bins_stack(u.reshape(m, ny, nx))
        _auto_rows(u_sorted, *bins, kinds, params, unc, modes, a, b, sky, sigma)
        done = kinds >= 0
        per_stamp.extend(rows[~done])
        x = np.zeros_like(u)
        # The per-stamp inverses' expressions (stretch._log_inverse, the asinh inverse), row-wise.
        for mode in (0, 1, 2):
            sel = done & (modes == mode)
            if not sel.any():
                continue
            if mode == 0:
                x[sel] = u[sel]
            elif mode == 1:
                x[sel] = np.expm1(u[sel] * a[sel, None] * np.log(10.0))
            else:
                x[sel] = np.sinh(a[sel, None] * (u[sel] - b[sel, None]))
        x -= sky[:, None]
        x /= sigma[:, None]
        out[rows[done]] = x[done].reshape(-1, ny, nx)
        meta[rows[done], 0] = _KIND_CODES[kinds[done]]
        meta[rows[done], 1] = params[done]
        meta[rows[done], 2] = 0.0
        uncertain[rows[done]] = unc[done]
    for i in sorted(per_stamp):
        with np.errstate(all="ignore"):
            inv = invert_stretch(np.asarray(raw[i], dtype=np.float64), kind)
        out[i] = inv.image
        m = inv.metadata()
        meta[i] = [m[c] for c in STRETCH_COLUMNS]
        uncertain[i] = inv.uncertain
    return out, meta, uncertain


def restretch_stack(stack: np.ndarray, to: str = "shifted-log", *, kind: str = "auto",
                    softening: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Stamps of any stretch re-stretched into ``to``: what a model trained on ``to`` expects.

    Each stamp's stretch is detected (``kind='auto'``) or taken as given, inverted
    to linear flux (:func:`invert_stretch_stack`) and stretched again with
    :func:`~featuremass.io.stretch.apply_stretch` (``to``, ``softening``). A stamp
    whose stretch already is ``to`` (detected or given) passes unchanged: the round
    trip is not exact (the inverse's parameter and sky are estimates) and would
    only add error. The default ``to`` is the seed's stretch, which the seed-layout
    stamps and the bundled CNN's training stamps have.

    Parameters
    ----------
    stack : array, shape (n, ny, nx)
        Stretched stamps (any range; each is re-normalised first).
    to : str
        One of :data:`~featuremass.io.stretch.STRETCHES`.
    kind : str
        The input stamps' stretch: ``auto`` (detected per stamp) or one of
        :data:`~featuremass.io.stretch.SCALE_MODES`.
    softening : float
        ``apply_stretch``'s softening of the new stretch, in sky sigmas (the
        seed's convention is 1).

    Returns
    -------
    (stamps, stretch_code) : float32 array of the stack's shape, values in
    [-1, 1]; and the input stretch of each stamp
    (:data:`~featuremass.io.stretch.STRETCH_CODES`, NaN where it could not be
    inverted; such a stamp is all -1, as ``apply_stretch`` maps an image
    without finite pixels).
    """
    if to not in STRETCHES:
        raise ValueError(f"unknown target stretch {to!r}; expected one of {', '.join(STRETCHES)}")
    raw = np.asarray(stack)
    if raw.ndim != 3:
        raise ValueError(f"restretch_stack expects an (n, ny, nx) stack; got shape {raw.shape}")
    out = np.empty(raw.shape, dtype=np.float32)
    codes = np.empty(len(raw))
    step = RESTRETCH_BLOCK
    for start in range(0, len(raw), step):  # blocks: the float64 inverse of a whole stack is 8 bytes a pixel
        block = raw[start:start + step]
        linear, meta, _ = invert_stretch_stack(block, kind)
        code = meta[:, STRETCH_COLUMNS.index("stretch_code")]
        codes[start:start + len(block)] = code
        for i, same in enumerate(code == STRETCH_CODES[to]):
            out[start + i] = block[i] if same else apply_stretch(linear[i], to, softening=softening)
    return out, codes


def _level_bins_stack(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`featuremass.io.stretch._level_bins` of every stamp of ``u`` (n, ny, nx), all pixels valid.

    Returns ``(levels, medians, counts)``, each (n, 16) over all 16 bins; the
    bins counting fewer than ``_MIN_BIN_PIXELS`` are the caller's to drop
    (every count is 0 where ``_level_bins`` returns nothing). Compiled
    (:func:`featuremass.io.stretch_kernels._level_bins_rows`: order statistics
    by selection, the same numbers as the per-stamp sorts).
    """
    n = len(u)
    levels, meds = np.empty((n, _N_LEVEL_BINS)), np.empty((n, _N_LEVEL_BINS))
    counts = np.empty((n, _N_LEVEL_BINS), dtype=np.int64)
    _level_bins_rows(np.ascontiguousarray(u, dtype=np.float64), levels, meds, counts)
    return levels, meds, counts
