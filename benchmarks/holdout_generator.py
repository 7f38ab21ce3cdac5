"""An independent seed-layout survey: the hold-out nobody tuned featuremass on.

This generator shares no code and no assumption with ``featuremass.io.simulate``
(it does not import featuremass at all). Where the featuremass simulator makes
one choice, this one makes another:

================  ==============================  ====================================
                  featuremass.io.simulate          this hold-out
================  ==============================  ====================================
population        Bell et al. colour -> M/L,       log M/L linear in bulge fraction,
                  dust slab, arms, bars, clumps    bulge index, disk size, clump light,
                                                   plus two hidden "age" / "metallicity"
                                                   variables and scatter
PSF               Moffat (beta 3.5)                Gaussian
noise             Poisson on a sky, white          ``galsim.CCDNoise`` (Poisson + read)
neighbours        foreground stars                 faint companion galaxies
crop              2.5 x PSF-broadened R90          1.7-2.2 x R90: the galaxy's R90
                                                   diameter fills 90-120 % of the frame
order             stretch after resizing           resize (anti-aliased), then stretch
stretch           shifted log, scale = sky sigma   ``log10(1 + max(I, 0) / a)`` with
                                                   ``a = peak / 10**U(2, 3)``: the sky
                                                   is clipped, a third of the pixels at -1
================  ==============================  ====================================

and every image is normalised to [-1, 1] as in the seed. The output is the seed
layout (README "Data layout")::

    OUT/images/69pix_npy/train_images_{N}.npy, train_names_{N}.npy
    OUT/images/69pix_npy/{val,test}_images.npy, {val,test}_names.npy
    OUT/metadata/metadata.tsv          SDSS_ID, M/L, L_g, distance_Mpc, galsize_kpc
    OUT/split/{train,val,test}_labels.txt
    OUT/truth/truth.parquet            the latent parameters (for the oracle only)

Galaxy ``i`` draws from ``SeedSequence(seed, spawn_key=(i,))``, so the survey
does not depend on the number of processes. Usage::

    python benchmarks/holdout_generator.py --out bench-work/holdout --n-train 3000 --n-test 1000

The real hold-out of issue 10 was 10k / 1k / 3k; ``--n-train 10000 --n-val 1000
--n-test 3000`` makes one of that size.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

#: Native pixel scale (arcsec) the galaxies are drawn at before resizing.
NATIVE_SCALE = 0.396
#: Absolute g magnitude of the Sun (AB).
SUN_ABS_MAG = 5.11
#: Counts per second of a 0-mag source, i.e. counts = 10**(-0.4 (m - ZP)).
ZERO_POINT = 28.0
#: Sky counts per native pixel and read noise (electrons, gain 1).
SKY_COUNTS = 900.0
READ_NOISE = 6.0
#: Magnitude limit of the sample (fainter draws are redrawn).
MAG_LIMIT = 17.77
ID_BASE = 1237660000000000000
#: Latent parameters an image can show (the oracle's inputs).
VISIBLE = ("bulge_fraction", "bulge_n", "disk_hlr_kpc", "bulge_hlr_kpc", "disk_q", "clump_fraction",
           "redshift", "psf_fwhm_arcsec")


def draw_population(rng: np.random.Generator) -> dict:
    """Latent parameters and M/L of one galaxy of the magnitude-limited sample."""
    for n_draws in range(1, 1001):  # noqa: B007 - reported
        z = rng.uniform(0.02, 0.09)
        dist = 299792.458 * z / 70.0  # Mpc, Hubble law
        kpc_per_arcsec = dist * 1000.0 / 206264.806
        bt = float(rng.beta(0.9, 1.6))
        log_mass = rng.normal(10.35, 0.45) + 0.3 * (bt - 0.35)
        disk_hlr = 10 ** (0.55 + 0.22 * (log_mass - 10.3) - 0.15 * bt + rng.normal(0.0, 0.14))
        bulge_hlr = disk_hlr * rng.uniform(0.12, 0.45)
        bulge_n = float(np.clip(1.2 + 3.0 * bt + rng.normal(0.0, 0.6), 0.8, 6.0))
        disk_q = rng.uniform(0.2, 1.0)
        bulge_q = rng.uniform(0.65, 1.0)
        sf = float(rng.beta(1.0 + 4.0 * (1.0 - bt), 1.5 + 4.0 * bt))  # visible star formation
        clump_fraction = float(np.clip(0.3 * sf + rng.normal(0.0, 0.03), 0.0, 0.4)) * (1.0 - bt)
        age, metal = rng.normal(0.0, 1.0, 2)  # hidden: no image shows them
        log_ml = (0.35 + 0.42 * bt + 0.05 * (bulge_n - 3.0) + 0.18 * math.log10(disk_hlr / 3.5)
                  - 0.9 * clump_fraction + 0.10 * age + 0.05 * metal + rng.normal(0.0, 0.03))
        ml = 10**log_ml
        lum = 10**log_mass / ml
        mag = SUN_ABS_MAG - 2.5 * math.log10(lum) + 5.0 * math.log10(dist * 1e5)
        if mag <= MAG_LIMIT:
            break
    r_eff = bt * bulge_hlr + (1.0 - bt) * disk_hlr
    return {
        "redshift": z, "distance_Mpc": dist, "kpc_per_arcsec": kpc_per_arcsec,
        "bulge_fraction": bt, "bulge_n": bulge_n, "bulge_hlr_kpc": bulge_hlr, "bulge_q": bulge_q,
        "disk_hlr_kpc": disk_hlr, "disk_q": disk_q, "position_angle_deg": rng.uniform(0.0, 180.0),
        "clump_fraction": clump_fraction, "n_clumps": int(rng.integers(10, 60)),
        "hidden_age": float(age), "hidden_metal": float(metal),
        "log_mass": log_mass, "L_g": lum, "M/L": ml, "g_mag": mag,
        "galsize_kpc": 2.3 * r_eff, "n_draws": n_draws,
    }


def render(rng: np.random.Generator, p: dict, npix: int) -> tuple[np.ndarray, dict]:
    """Stretched [-1, 1] stamp of one galaxy, and the observation's parameters."""
    import galsim
    from skimage.transform import resize

    kpa = p["kpc_per_arcsec"]
    flux = 10 ** (-0.4 * (p["g_mag"] - ZERO_POINT))
    beta = p["position_angle_deg"] * galsim.degrees
    disk_flux = (1.0 - p["bulge_fraction"]) * flux
    disk_hlr = p["disk_hlr_kpc"] / kpa
    gal = galsim.Exponential(half_light_radius=disk_hlr, flux=disk_flux * (1 - p["clump_fraction"]))
    if p["clump_fraction"] > 0:
        gal = gal + galsim.RandomKnots(p["n_clumps"], half_light_radius=disk_hlr,
                                       flux=disk_flux * p["clump_fraction"],
                                       rng=galsim.BaseDeviate(int(rng.integers(1, 2**30))))
    gal = gal.shear(q=p["disk_q"], beta=beta)
    if p["bulge_fraction"] > 0.01:
        # n on a 0.1 grid so that GalSim's per-(n, trunc) tables are reused
        bulge = galsim.Sersic(n=round(p["bulge_n"], 1), half_light_radius=p["bulge_hlr_kpc"] / kpa,
                              flux=p["bulge_fraction"] * flux, trunc=12 * p["bulge_hlr_kpc"] / kpa,
                              flux_untruncated=True)
        gal = gal + bulge.shear(q=p["bulge_q"], beta=beta)
    fwhm = rng.uniform(1.0, 1.6)
    psf = galsim.Gaussian(fwhm=fwhm)
    r90 = p["galsize_kpc"] / kpa
    side = int(np.clip(round(rng.uniform(1.7, 2.2) * math.hypot(r90, fwhm) / NATIVE_SCALE),
                       24, 420))
    image = galsim.ImageD(side, side, scale=NATIVE_SCALE)
    offset = rng.uniform(-1.0, 1.0, 2)
    galsim.Convolve(gal, psf).drawImage(image=image, offset=tuple(offset))
    companion = rng.random() < 0.25
    if companion:  # a faint neighbour somewhere on the stamp
        c_flux = flux * 10 ** rng.uniform(-2.0, -0.7)
        c = galsim.Exponential(half_light_radius=rng.uniform(0.8, 3.0), flux=c_flux).shear(
            q=rng.uniform(0.3, 1.0), beta=rng.uniform(0, 180) * galsim.degrees)
        pos = rng.uniform(0.1, 0.9, 2) * side
        cimg = galsim.ImageD(side, side, scale=NATIVE_SCALE)
        galsim.Convolve(c, psf).drawImage(image=cimg, offset=tuple(pos - side / 2.0))
        image += cimg
    image.addNoise(galsim.CCDNoise(galsim.BaseDeviate(int(rng.integers(1, 2**30))),
                                   sky_level=SKY_COUNTS, gain=1.0, read_noise=READ_NOISE))
    small = resize(image.array, (npix, npix), order=1, anti_aliasing=side > npix, preserve_range=True)
    dyn = rng.uniform(2.0, 3.0)
    a = float(small.max()) / 10**dyn
    z = np.log10(1.0 + np.maximum(small, 0.0) / a)
    z = 2.0 * (z - z.min()) / max(z.max() - z.min(), 1e-30) - 1.0
    obs = {"psf_fwhm_arcsec": fwhm, "native_side_px": side, "frame_fill": 2.0 * math.hypot(r90, fwhm)
           / (side * NATIVE_SCALE), "stretch_a_over_peak_dex": dyn, "has_companion": companion}
    return z.astype(np.float32), obs


def _galaxy(seed: int, index: int, npix: int):
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    p = draw_population(rng)
    img, obs = render(rng, p, npix)
    return {**p, **obs}, img


def _chunk(seed: int, start: int, stop: int, npix: int):
    return [_galaxy(seed, i, npix) for i in range(start, stop)]


def generate(out: Path, *, n_train: int, n_val: int, n_test: int, npix: int = 69, seed: int = 2024,
             jobs: int = 1, overwrite: bool = False) -> pd.DataFrame:
    """Write the hold-out survey to ``out`` (built beside it, then renamed into place)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SystemExit(f"{out} exists and is not empty; pass --overwrite")
    n = n_train + n_val + n_test
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    bounds = [(s, min(s + 50, n)) for s in range(0, n, 50)]
    rows, images = [], []
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_chunk, *zip(*[(seed, a, b, npix) for a, b in bounds], strict=True)))
    else:
        results = [_chunk(seed, a, b, npix) for a, b in bounds]
    for chunk in results:
        for row, img in chunk:
            rows.append(row)
            images.append(img)
    images = np.stack(images)
    ids = ID_BASE + np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31,))).choice(
        10**12, size=n, replace=False).astype(np.int64)
    splits = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    try:
        img_dir = tmp / "images" / f"{npix}pix_npy"
        img_dir.mkdir(parents=True)
        (tmp / "metadata").mkdir()
        (tmp / "split").mkdir()
        (tmp / "truth").mkdir()
        for split, stem in (("train", f"train_%s_{n_train}"), ("val", "val_%s"), ("test", "test_%s")):
            sel = splits == split
            np.save(img_dir / f"{stem % 'images'}.npy", images[sel])
            np.save(img_dir / f"{stem % 'names'}.npy", ids[sel])
            np.savetxt(tmp / "split" / f"{split}_labels.txt", ids[sel], fmt="%d")
        truth = pd.DataFrame(rows)
        truth.insert(0, "split", splits)
        truth.insert(0, "galaxy_id", ids)
        meta = truth.set_index("galaxy_id")[["M/L", "L_g", "distance_Mpc", "galsize_kpc"]]
        meta.index.name = "SDSS_ID"
        meta.to_csv(tmp / "metadata" / "metadata.tsv", sep="\t", float_format="%.6g")
        truth.to_parquet(tmp / "truth" / "truth.parquet", index=False)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return truth


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output dataset folder")
    p.add_argument("--n-train", type=int, default=3000, help="training galaxies (default 3000)")
    p.add_argument("--n-val", type=int, default=0, help="validation galaxies (default 0)")
    p.add_argument("--n-test", type=int, default=1000, help="test galaxies (default 1000)")
    p.add_argument("--npix", type=int, default=69, help="stamp size (default 69)")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("-j", "--jobs", type=int, default=1)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    truth = generate(args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                     npix=args.npix, seed=args.seed, jobs=args.jobs, overwrite=args.overwrite)
    print(f"hold-out: {len(truth)} galaxies at {args.npix} px in {time.perf_counter() - t0:.1f} s -> "
          f"{args.out}; M/L median {truth['M/L'].median():.2f}, frame fill median "
          f"{truth['frame_fill'].median():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
