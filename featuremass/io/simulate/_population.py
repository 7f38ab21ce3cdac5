"""Latent parameters of one simulated galaxy and its g-band M/L.

Every distribution here is listed in ``docs/simulation.md``. The draw is a pure
function of a :class:`numpy.random.Generator`, so a galaxy depends only on its
own seed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special

from featuremass.io.simulate._config import SurveyConfig

#: Speed of light, km/s.
C_KMS = 299792.458
#: Absolute g-band (AB) magnitude of the Sun (Willmer 2018, ApJS 236, 47).
M_SUN_G = 5.11
#: Bell et al. (2003, ApJS 149, 289, Table 7): log10(M/L_g) = a + b (g - r).
BELL_A_G = -0.499
BELL_B_G = 1.519
#: Bell et al.'s "diet Salpeter" masses to a Chabrier (2003) IMF, as used by
#: GSWLC (the seed's M/L): 0.61 / 0.70 of the mass, i.e. -0.06 dex.
IMF_TO_CHABRIER_DEX = -0.06
#: Intrinsic thickness (edge-on axis ratio) of stellar disks.
DISK_Q0 = 0.12
ARCSEC_PER_RAD = 180.0 / math.pi * 3600.0

#: The latent parameters an image can show (morphology and observing
#: conditions). The oracle regression of the benchmark uses exactly these;
#: colours, dust optical depth and M/L itself stay hidden.
ORACLE_COLUMNS = (
    "bulge_to_total",
    "bulge_sersic_n",
    "bulge_re_kpc",
    "bulge_q",
    "disk_re_kpc",
    "inclination_deg",
    "n_arms",
    "arm_amplitude",
    "arm_pitch_deg",
    "has_bar",
    "bar_fraction",
    "clump_fraction",
    "n_clumps",
    "dust_lane_depth",
    "redshift",
    "psf_fwhm_arcsec",
)


def colour_to_ml(g_minus_r):
    """g-band stellar M/L (solar units) from the g-r colour.

    Bell, McIntosh, Katz & Weinberg (2003, ApJS 149, 289), Table 7, g band:

    .. math:: \\log_{10}(M/L_g) = -0.499 + 1.519\\,(g - r)

    (their "diet Salpeter" IMF), shifted by ``IMF_TO_CHABRIER_DEX`` to a
    Chabrier IMF.
    """
    colour = np.asarray(g_minus_r, dtype=np.float64)
    return 10.0 ** (BELL_A_G + IMF_TO_CHABRIER_DEX + BELL_B_G * colour)


def slab_attenuation(tau_face: float, cos_i: float) -> float:
    """g-band attenuation (mag) of a uniformly mixed dust-and-star slab.

    For optical depth ``tau = tau_face / cos i`` through the slab the escaping
    fraction is ``(1 - exp(-tau)) / tau`` (e.g. Disney, Davies & Phillipps
    1989, MNRAS 239, 939), so ``A = -2.5 log10((1 - e^-tau) / tau)``.
    """
    tau = tau_face / max(cos_i, DISK_Q0)
    if tau < 1e-8:
        return 0.0
    return float(-2.5 * math.log10(-math.expm1(-tau) / tau))


def sersic_b(n: float) -> float:
    """``b_n`` such that ``r_e`` encloses half the light: ``P(2n, b_n) = 1/2``."""
    return float(special.gammaincinv(2.0 * n, 0.5))


def enclosed_fraction(r, re: float, n: float) -> np.ndarray:
    """Fraction of a circular Sérsic profile's light inside radius ``r``.

    ``L(<r)/L = P(2n, b_n (r/r_e)^{1/n})`` with ``P`` the regularised lower
    incomplete gamma function (Graham & Driver 2005, PASA 22, 118, eq. 2).
    """
    r = np.asarray(r, dtype=np.float64)
    return special.gammainc(2.0 * n, sersic_b(n) * (r / re) ** (1.0 / n))


def light_radius(fraction: float, weights, radii, indices) -> float:
    """Radius enclosing ``fraction`` of the summed light of circular Sérsic components."""
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights / weights.sum()

    def excess(r):
        return sum(w * enclosed_fraction(r, re, n) for w, re, n in zip(weights, radii, indices, strict=True)) - fraction

    hi = 50.0 * max(radii)
    return float(optimize.brentq(excess, 1e-6 * min(radii), hi, xtol=1e-6))


def hubble_distance_mpc(z: float, h0: float) -> float:
    """Hubble-law distance ``c z / H0`` in Mpc."""
    return C_KMS * z / h0


def draw_galaxy(rng: np.random.Generator, config: SurveyConfig) -> dict:
    """Draw the latent parameters of one galaxy of the flux-limited sample.

    Galaxies fainter than ``config.mag_limit`` are redrawn from the same
    generator (the count is returned as ``n_draws``).

    Returns
    -------
    dict of floats and ints: morphology, colours, dust, masses, luminosities,
    distances and the total g-band M/L (``"M/L"``).
    """
    for n_draws in range(1, 10_001):  # noqa: B007 - n_draws is reported
        p = _draw_once(rng, config)
        if p["g_mag"] <= config.mag_limit:
            break
    p["n_draws"] = n_draws
    return p


def _draw_once(rng: np.random.Generator, cfg: SurveyConfig) -> dict:
    """One candidate galaxy (before the magnitude limit): the steps below, in this order.

    The order of the draws is part of the survey: a given seed gives the same
    galaxy only as long as every step draws the same numbers in the same order.
    """
    z = rng.uniform(*cfg.redshift_range)
    kind = _draw_kind(rng)
    colours = _draw_colours(rng, cfg, kind)
    tracers = _draw_star_formation_tracers(rng, kind)
    dust = _draw_orientation_and_dust(rng, kind, tracers["is_disk"])
    light = _luminosities_and_masses(rng, cfg, kind, colours, tracers, dust)
    sizes = _draw_sizes(rng, kind, light, tracers["has_bar"])
    dist = hubble_distance_mpc(z, cfg.h0)
    d_lum = dist * (1.0 + z)
    d_ang = dist / (1.0 + z)
    abs_mag = M_SUN_G - 2.5 * math.log10(light["l_obs"])
    g_mag = abs_mag + 5.0 * math.log10(d_lum * 1e5)  # 10 pc = 1e-5 Mpc
    flux = 10.0 ** (-0.4 * (g_mag - 22.5))  # nanomaggies
    l_obs = light["l_obs"]

    # The angles and bar shape below are drawn last, in this order.
    return {
        "redshift": z,
        "distance_Mpc": dist,
        "luminosity_distance_Mpc": d_lum,
        "kpc_per_arcsec": d_ang * 1e3 / ARCSEC_PER_RAD,
        "early_type": bool(kind["early"]),
        "bulge_to_total": float(kind["bt"]),
        "bulge_to_total_obs": float(light["lobs_bulge"] / l_obs),
        "sf_activity": float(kind["activity"]),
        "bulge_sersic_n": sizes["bulge_n"],
        "bulge_re_kpc": sizes["bulge_re"],
        "bulge_q": sizes["bulge_q"],
        "disk_re_kpc": sizes["disk_re"],
        "inclination_deg": dust["inclination"],
        "disk_q": dust["disk_q"],
        "position_angle_deg": float(rng.uniform(0.0, 180.0)),
        "bulge_pa_offset_deg": float(rng.normal(0.0, 10.0)),
        "n_arms": tracers["n_arms"],
        "arm_amplitude": tracers["arm_amplitude"],
        "arm_pitch_deg": tracers["arm_pitch"],
        "arm_phase_rad": float(rng.uniform(0.0, 2 * math.pi)),
        "has_bar": tracers["has_bar"],
        "bar_fraction": tracers["bar_fraction"],
        "bar_length_kpc": sizes["bar_length"],
        "bar_q": float(rng.uniform(0.2, 0.35)) if tracers["has_bar"] else 0.0,
        "bar_angle_deg": float(rng.uniform(0.0, 180.0)) if tracers["has_bar"] else 0.0,
        "clump_fraction": tracers["clump_fraction"],
        "n_clumps": tracers["n_clumps"],
        "tau_face": float(dust["tau_face"]),
        "dust_lane_depth": dust["dust_lane_depth"],
        "A_g_bulge": dust["a_bulge"],
        "A_g_disk": dust["a_disk"],
        "gr_bulge": float(colours["gr_bulge"]),
        "gr_disk": float(colours["gr_disk"]),
        "gr_clumps": float(colours["gr_clumps"]),
        "ml_bulge": light["ml_bulge"],
        "ml_disk": light["ml_disk"],
        "ml_clumps": light["ml_clumps"],
        "log_mass": math.log10(light["mass"]),
        "L_g_intrinsic": light["l_int"],
        "L_g": l_obs,
        "ml_sed_scatter_dex": float(light["sed_scatter"]),
        "M/L_true": light["ml_true"],
        "M/L": light["ml"],
        "r50_kpc": sizes["r50"],
        "galsize_kpc": sizes["r90"],
        "g_mag": g_mag,
        "flux_nmgy": flux,
        "flux_bulge_nmgy": flux * light["lobs_bulge"] / l_obs,
        "flux_disk_nmgy": flux * light["lobs_disk"] / l_obs,
        "flux_clumps_nmgy": flux * light["lobs_clumps"] / l_obs,
    }


def _draw_kind(rng: np.random.Generator) -> dict:
    """Morphological type, bulge-to-total, star-formation activity and intrinsic luminosity."""
    # Morphology: 27 % spheroid-dominated, 73 % disk-dominated.
    early = rng.random() < 0.27
    bt = rng.beta(6.0, 2.0) if early else rng.beta(1.3, 4.5)
    # Star-formation activity in [0, 1]: high in disks, low in spheroids. It sets
    # the disk colour and, with scatter, the visible clumps and arms.
    activity = rng.beta(1.0 + 3.0 * (1.0 - bt), 1.0 + 3.0 * bt)
    log_l_int = rng.normal(10.0, 0.45) + 0.4 * (bt - 0.3)
    return {"early": early, "bt": bt, "activity": activity, "log_l_int": log_l_int}


def _draw_colours(rng: np.random.Generator, cfg: SurveyConfig, kind: dict) -> dict:
    """g - r of the bulge, disk and clumps (they set the component M/L, Bell et al. 2003)."""
    sc = cfg.colour_scatter
    return {
        "gr_bulge": 0.72 + 0.08 * (kind["log_l_int"] - 10.0) + rng.normal(0.0, sc),
        "gr_disk": 0.57 - 0.42 * kind["activity"] + rng.normal(0.0, sc * 1.3),
        "gr_clumps": 0.12 + rng.normal(0.0, sc * 1.3),
    }


def _draw_star_formation_tracers(rng: np.random.Generator, kind: dict) -> dict:
    """Visible star-formation tracers, noisy functions of the activity: clumps, arms, bar."""
    bt, activity = kind["bt"], kind["activity"]
    is_disk = bt < 0.85
    clump_fraction = float(np.clip(0.28 * activity * rng.uniform(0.6, 1.4), 0.0, 0.45)) if is_disk else 0.0
    n_clumps = int(round(8 + 70 * activity * rng.uniform(0.5, 1.5))) if clump_fraction > 0 else 0
    if is_disk and activity > 0.12:
        arm_amplitude = float(np.clip(0.15 + 0.65 * activity + rng.normal(0.0, 0.12), 0.0, 0.95))
        n_arms = int(rng.choice([2, 3, 4], p=[0.7, 0.2, 0.1]))
        arm_pitch = float(np.clip(10.0 + 20.0 * activity + rng.normal(0.0, 4.0), 6.0, 40.0))
    else:
        arm_amplitude, n_arms, arm_pitch = 0.0, 0, 0.0
    has_bar = bool(is_disk and bt < 0.7 and rng.random() < 0.35)
    bar_fraction = float(rng.uniform(0.05, 0.2)) if has_bar else 0.0
    return {"is_disk": is_disk, "clump_fraction": clump_fraction, "n_clumps": n_clumps,
            "arm_amplitude": arm_amplitude, "n_arms": n_arms, "arm_pitch": arm_pitch,
            "has_bar": has_bar, "bar_fraction": bar_fraction}


def _draw_orientation_and_dust(rng: np.random.Generator, kind: dict, is_disk: bool) -> dict:
    """Inclination, projected disk axis ratio, slab attenuation and the dust lane of edge-on disks."""
    cos_i = rng.uniform(0.0, 1.0)
    inclination = math.degrees(math.acos(cos_i))
    disk_q = math.sqrt((1.0 - DISK_Q0**2) * cos_i**2 + DISK_Q0**2)
    tau_face = (0.05 + 0.7 * kind["activity"] * rng.uniform(0.3, 1.4)) if is_disk else rng.uniform(0.0, 0.05)
    a_disk = slab_attenuation(tau_face, cos_i)
    # A lane shows only in (nearly) edge-on disks; its depth follows the dust.
    edge_on = float(np.clip((inclination - 65.0) / 20.0, 0.0, 1.0))
    dust_lane_depth = float(edge_on * -math.expm1(-0.6 * tau_face / max(cos_i, DISK_Q0))) if is_disk else 0.0
    return {"inclination": inclination, "disk_q": disk_q, "tau_face": tau_face, "a_disk": a_disk,
            "a_bulge": 0.3 * a_disk, "dust_lane_depth": dust_lane_depth}


def _luminosities_and_masses(rng: np.random.Generator, cfg: SurveyConfig, kind: dict, colours: dict,
                             tracers: dict, dust: dict) -> dict:
    """Intrinsic and observed luminosities (L_sun) of each component, the stellar mass and the M/L.

    The reported M/L is the true one times the "SED-fit" scatter (``cfg.ml_scatter_dex``).
    """
    bt, clump_fraction = kind["bt"], tracers["clump_fraction"]
    l_int = 10.0 ** kind["log_l_int"]
    l_bulge = bt * l_int
    l_disk = (1.0 - bt) * (1.0 - clump_fraction) * l_int
    l_clumps = (1.0 - bt) * clump_fraction * l_int
    ml_bulge, ml_disk, ml_clumps = (float(colour_to_ml(colours[c])) for c in ("gr_bulge", "gr_disk", "gr_clumps"))
    mass = l_bulge * ml_bulge + l_disk * ml_disk + l_clumps * ml_clumps
    att_b, att_d = 10.0 ** (-0.4 * dust["a_bulge"]), 10.0 ** (-0.4 * dust["a_disk"])
    lobs_bulge, lobs_disk, lobs_clumps = l_bulge * att_b, l_disk * att_d, l_clumps * att_d
    l_obs = lobs_bulge + lobs_disk + lobs_clumps
    sed_scatter = rng.normal(0.0, cfg.ml_scatter_dex)
    ml_true = mass / l_obs
    return {"l_int": l_int, "l_disk": l_disk, "l_clumps": l_clumps, "l_bulge": l_bulge,
            "ml_bulge": ml_bulge, "ml_disk": ml_disk, "ml_clumps": ml_clumps, "mass": mass,
            "lobs_bulge": lobs_bulge, "lobs_disk": lobs_disk, "lobs_clumps": lobs_clumps, "l_obs": l_obs,
            "sed_scatter": sed_scatter, "ml_true": ml_true, "ml": ml_true * 10.0**sed_scatter}


def _draw_sizes(rng: np.random.Generator, kind: dict, light: dict, has_bar: bool) -> dict:
    """Disk and bulge sizes (kpc) from size-luminosity relations, bulge shape, bar length, r50 and r90."""
    disk_re = float(np.clip(4.0 * (max(light["l_disk"] + light["l_clumps"], 1e7) / 1e10) ** 0.3
                            * 10 ** rng.normal(0, 0.12), 0.8, 25.0))
    if kind["early"]:
        bulge_re = 2.0 * (light["l_bulge"] / 1e10) ** 0.5 * 10 ** rng.normal(0, 0.12)
        bulge_n = float(np.clip(rng.normal(4.0, 0.6), 2.5, 6.0))
    else:
        bulge_re = disk_re * rng.uniform(0.1, 0.35)
        bulge_n = float(np.clip(1.0 + 3.0 * kind["bt"] + rng.normal(0.0, 0.5), 0.8, 5.0))
    bulge_re = float(np.clip(bulge_re, 0.2, 12.0))
    # GalSim tabulates each Sérsic index once per process (and keeps at most
    # 100): a 0.25 grid bounds that cost without a visible effect.
    bulge_n = round(bulge_n * 4.0) / 4.0
    bulge_q = float(rng.uniform(0.55, 1.0))
    bar_length = float(disk_re / 1.678 * rng.uniform(0.8, 1.6)) if has_bar else 0.0
    r_light = (light["lobs_bulge"], light["lobs_disk"] + light["lobs_clumps"])
    radii, indices = (bulge_re, disk_re), (bulge_n, 1.0)
    return {"disk_re": disk_re, "bulge_re": bulge_re, "bulge_n": bulge_n, "bulge_q": bulge_q,
            "bar_length": bar_length, "r50": light_radius(0.5, r_light, radii, indices),
            "r90": light_radius(0.9, r_light, radii, indices)}
