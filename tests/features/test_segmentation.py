import numpy as np

from featuremass.features.segmentation import ascent_labels, segment_central_source


def _gauss(x0, y0, s, amp, n=69):
    y, x = np.mgrid[:n, :n]
    return amp * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * s * s))


def test_star_on_galaxy_is_deblended_and_masked():
    rng = np.random.default_rng(0)
    img = _gauss(34, 34, 5, 1.0) + _gauss(44, 34, 0.8, 5.0) + rng.normal(0, 0.01, (69, 69))
    src = segment_central_source(img, 0.01)
    assert src.found and src.n_blended == 1
    assert src.neighbour_mask[34, 44] and not src.segmap[34, 44]
    assert src.segmap[34, 34]


def test_separate_neighbour_masked_and_nothing_found_in_noise():
    rng = np.random.default_rng(1)
    img = _gauss(34, 34, 3, 1.0) + _gauss(60, 10, 2, 1.0) + rng.normal(0, 0.01, (69, 69))
    src = segment_central_source(img, 0.01)
    # Noise blobs above the 2-sigma smoothed threshold can add a few more.
    assert src.n_masked_neighbours >= 1 and src.neighbour_mask[10, 60]
    assert not src.neighbour_mask[34, 34]
    assert not segment_central_source(rng.normal(0, 1, (69, 69)), 1.0).found


def test_ascent_labels_two_peaks():
    img = _gauss(20, 34, 3, 1.0) + _gauss(48, 34, 3, 1.0)
    labels, peaks = ascent_labels(img, img > 1e-6)
    assert peaks.size == 2
    assert labels[34, 20] != labels[34, 48]


def _exponential(x0, y0, h, amp, n=69):
    y, x = np.mgrid[:n, :n]
    return amp * np.exp(-np.hypot(x - x0, y - y0) / h)


def test_faint_companion_in_the_wings_is_left_out_unmasked():
    # An exponential disk (h = 4 px, peak 200 sigma) whose 2-sigma smoothed isophote
    # reaches r ~ 23 px, and a compact companion 17 px away holding ~1.5 % of the
    # disk's flux: one footprint, a significant secondary peak, below the 2 % contrast.
    n, sigma = 69, 1.0
    disk = _exponential(34, 34, 4.0, 200.0)
    comp = _gauss(48, 44, 1.2, 33.0)
    assert 0.01 < comp.sum() / disk.sum() < 0.02
    for seed in range(3):
        img = disk + comp + np.random.default_rng(seed).normal(0, sigma, (n, n))
        src = segment_central_source(img, sigma)
        assert src.found and src.n_blended == 0
        assert src.segmap[34, 34]
        assert not src.segmap[44, 48] and not src.neighbour_mask[44, 48]
        # the disk's own wings on the far side stay in the segment
        assert src.segmap[34, 34 - 12] and src.segmap[34 - 12, 34]


def test_faint_knot_joined_near_the_core_stays_in_the_segment():
    # The same disk with a compact knot 4 px from the centre: a significant peak of the
    # smoothed image (~40 sigma above its saddle) with little flux above that saddle, and
    # the saddle ~0.9 of the central peak, so it is the galaxy's structure.
    n, sigma = 69, 1.0
    disk = _exponential(34, 34, 4.0, 200.0)
    knot = _gauss(38, 34, 0.8, 200.0)
    for seed in range(3):
        img = disk + knot + np.random.default_rng(seed).normal(0, sigma, (n, n))
        src = segment_central_source(img, sigma)
        assert src.found and src.n_blended == 0
        assert src.segmap[34, 34] and src.segmap[34, 38] and not src.neighbour_mask[34, 38]


def test_faint_companion_left_out_still_flags_contamination():
    from featuremass.features.flags import MorphFlag
    from featuremass.features.measure import measure_galaxy

    n = 69
    disk = _exponential(34, 34, 4.0, 200.0)
    comp = _gauss(48, 44, 1.2, 33.0)
    rng = np.random.default_rng(5)
    with_comp = measure_galaxy(disk + comp + rng.normal(0, 1.0, (n, n)))
    alone = measure_galaxy(disk + rng.normal(0, 1.0, (n, n)))
    assert with_comp["flag"] & MorphFlag.CONTAMINATED
    assert not alone["flag"] & MorphFlag.CONTAMINATED
