"""Compiled Levenberg-Marquardt fits of :mod:`featuremass.features.sersic` (no sky pedestal).

The single Sérsic and the bulge + disk fits minimise ``|M f(p) - d|^2``
over a handful of parameters, where ``M`` maps the profile tabulated on a
radial grid to the annulus means (whitened) and ``f`` is the Sérsic profile
with its analytic derivatives (:func:`featuremass.features.sersic._profile_kernel`).
:func:`featuremass.features.sersic._levenberg_marquardt` runs that loop in
Python with a closure per model, about a hundred small NumPy calls per
iteration. :func:`lm_fit` runs the same algorithm (same damping schedule,
active set, projected steps and stopping rules) and the same model
evaluations in one compiled call, with the matrix products as plain loops.

Models (``model`` argument):

* :data:`SERSIC` — ``p = (ln I_e, ln r_e, ln n)``; residual ``e^{p_0} M f(r_e, n) - d``.
* :data:`BULGE_DISK` — ``p = (A_b, A_d, ln r_b, ln r_d)``, a de Vaucouleurs
  bulge (n = 4) plus an exponential disk (n = 1).
* :data:`BULGE_DISK_NESTED` — as above with ``p_2 = ln(r_b / r_d)``.

The Python versions stay as the references the tests compare against; the
two agree to rounding in each evaluation (dot products are summed in a
different order than BLAS), so a fit may stop one iteration apart, within
its own tolerances (``xtol = 1e-4`` in the log parameters).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, objmode
from scipy import special

from featuremass.features.sersic import _profile_kernel, _solve_small

__all__ = ["BULGE_DISK", "BULGE_DISK_NESTED", "SERSIC", "bn_scalar", "lm_fit"]

SERSIC, BULGE_DISK, BULGE_DISK_NESTED = 0, 1, 2


@njit(cache=True)
def _bn_low(n):
    """``gammaincinv(2 n, 1/2)`` (SciPy, outside the compiled code; only for n < 0.36)."""
    with objmode(b="float64"):
        b = float(special.gammaincinv(2.0 * n, 0.5))
    return b


@njit(cache=True)
def bn_scalar(n):
    """:func:`featuremass.features.sersic._bn_scalar`, compiled (float exponents, as Python's ``**``)."""
    if n < 0.36:
        return _bn_low(n)
    return (2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)
            + 131.0 / (1148175.0 * n ** 3.0) - 2194697.0 / (30690717750.0 * n ** 4.0))


@njit(cache=True)
def dbn_dn(n):
    """:func:`featuremass.features.sersic._dbn_dn`, compiled."""
    if n < 0.36:
        h = 1e-5 * max(n, 1e-3)
        return (bn_scalar(n + h) - bn_scalar(n - h)) / (2 * h)
    return (
        2.0
        - 4.0 / (405.0 * n ** 2.0)
        - 2 * 46.0 / (25515.0 * n ** 3.0)
        - 3 * 131.0 / (1148175.0 * n ** 4.0)
        + 4 * 2194697.0 / (30690717750.0 * n ** 5.0)
    )


@njit(cache=True)
def _evaluate(model, p, matrix, data, log_grid, wa, wb, res, jac):
    """Residuals and Jacobian of ``model`` at ``p`` into ``res`` and ``jac``; returns the cost."""
    nb, ng = matrix.shape
    if model == SERSIC:
        amp = math.exp(p[0])
        n = math.exp(p[2])
        _profile_kernel(log_grid, math.log(math.exp(p[1])), n, bn_scalar(n), dbn_dn(n), wa)
        for i in range(nb):
            s0 = s1 = s2 = 0.0
            for j in range(ng):
                m = matrix[i, j]
                s0 += m * wa[j, 0]
                s1 += m * wa[j, 1]
                s2 += m * wa[j, 2]
            jac[i, 0] = s0 * amp
            jac[i, 1] = s1 * amp
            jac[i, 2] = s2 * amp
            res[i] = jac[i, 0] - data[i]
    else:
        nested = model == BULGE_DISK_NESTED
        ln_rb = p[2] + p[3] if nested else p[2]
        _profile_kernel(log_grid, math.log(math.exp(ln_rb)), 4.0, bn_scalar(4.0), dbn_dn(4.0), wa)
        _profile_kernel(log_grid, math.log(math.exp(p[3])), 1.0, bn_scalar(1.0), dbn_dn(1.0), wb)
        for i in range(nb):
            s0 = s1 = s2 = s3 = 0.0
            for j in range(ng):
                m = matrix[i, j]
                s0 += m * wa[j, 0]
                s1 += m * wb[j, 0]
                s2 += m * wa[j, 1]
                s3 += m * wb[j, 1]
            s2 *= p[0]
            s3 *= p[1]
            if nested:
                s3 += s2
            jac[i, 0] = s0
            jac[i, 1] = s1
            jac[i, 2] = s2
            jac[i, 3] = s3
            res[i] = (p[0] * s0 + p[1] * s1) - data[i]
    cost = 0.0
    for i in range(nb):
        cost += res[i] * res[i]
    return cost


@njit(cache=True)
def lm_fit(model, p0, lower, upper, matrix, data, log_grid, max_iter=50, xtol=1e-4, ftol=1e-6):
    """:func:`featuremass.features.sersic._levenberg_marquardt` on ``model``, compiled.

    Returns ``(p, cost, converged)``.
    """
    npar = p0.size
    nb, ng = matrix.shape
    wa = np.empty((ng, 3))
    wb = np.empty((ng, 3))
    res = np.empty(nb)
    jac = np.empty((nb, npar))
    res_new = np.empty(nb)
    jac_new = np.empty((nb, npar))
    p = np.minimum(np.maximum(p0.copy(), lower), upper)
    cost = _evaluate(model, p, matrix, data, log_grid, wa, wb, res, jac)
    if not np.isfinite(cost):
        return p, cost, False
    lam = 1e-3
    jtj = np.empty((npar, npar))
    g = np.empty(npar)
    p_new = np.empty(npar)
    for _ in range(max_iter):
        for a in range(npar):
            acc = 0.0
            for i in range(nb):
                acc += jac[i, a] * res[i]
            g[a] = acc
            for b in range(npar):
                acc = 0.0
                for i in range(nb):
                    acc += jac[i, a] * jac[i, b]
                jtj[a, b] = acc
        free = np.empty(npar, dtype=np.bool_)
        n_free = 0
        for a in range(npar):
            free[a] = not ((p[a] <= lower[a] and g[a] > 0) or (p[a] >= upper[a] and g[a] < 0))
            n_free += free[a]
        if n_free == 0:
            return p, cost, True
        idx = np.flatnonzero(free)
        cost_new = np.inf
        stepped = False
        for _ in range(10):
            sub = np.empty((n_free, n_free))
            rhs = np.empty(n_free)
            for a in range(n_free):
                rhs[a] = -g[idx[a]]
                for b in range(n_free):
                    sub[a, b] = jtj[idx[a], idx[b]]
                sub[a, a] += lam * max(jtj[idx[a], idx[a]], 1e-12)
            sub_step, ok = _solve_small(sub, rhs)
            if not ok:  # singular, as np.linalg.solve's LinAlgError
                lam *= 10.0
                continue
            for a in range(npar):
                p_new[a] = p[a]
            for a in range(n_free):
                p_new[idx[a]] = p[idx[a]] + sub_step[a]
            for a in range(npar):
                p_new[a] = min(max(p_new[a], lower[a]), upper[a])
            cost_new = _evaluate(model, p_new, matrix, data, log_grid, wa, wb, res_new, jac_new)
            if cost_new < cost:  # False for NaN
                stepped = True
                break
            lam *= 8.0
        if not stepped:
            return p, cost, True  # no downhill step: at a (bounded) minimum
        moved = 0.0
        for a in range(npar):
            moved = max(moved, abs(p_new[a] - p[a]))
        drop = (cost - cost_new) / max(cost, 1e-300)
        p = p_new.copy()
        res, res_new = res_new, res
        jac, jac_new = jac_new, jac
        cost = cost_new
        lam = max(lam * 0.2, 1e-9)
        if moved < xtol or drop < ftol:
            return p, cost, True
    return p, cost, False
