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
