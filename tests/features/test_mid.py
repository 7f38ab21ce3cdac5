import numpy as np
import pytest

from featuremass.features import mid


def _blobs(sep, amp2):
    y, x = np.mgrid[:61, :61]
    img = np.exp(-((x - 30 + sep / 2) ** 2 + (y - 30) ** 2) / 8.0)
    img += amp2 * np.exp(-((x - 30 - sep / 2) ** 2 + (y - 30) ** 2) / 8.0)
    return img


def test_two_equal_blobs_have_multimode_and_intensity_one():
    img = _blobs(20, 1.0)
    seg = img > 1e-3
    # The MID segment keeps only the clump of the brightest pixel (the blobs
    # split long before eta = 0.2 is reached): one blob.
    assert mid.mid_segmap(img, seg).sum() < 0.6 * seg.sum()
    mseg = seg
    # Two identical, well separated blobs: at every splitting threshold the two
    # clumps have equal areas, and the two basins equal fluxes.
    assert mid.multimode(img, seg, mseg) == pytest.approx(1.0, abs=0.05)
    intensity, deviation = mid.intensity_deviation(img, mseg)
    assert intensity == pytest.approx(1.0, abs=0.02)


def test_single_gaussian_has_no_second_mode():
    img = _blobs(0, 0.0)
    seg = img > 1e-3
    mseg = mid.mid_segmap(img, seg)
    assert mid.multimode(img, seg, mseg) == 0.0
    intensity, deviation = mid.intensity_deviation(img, mseg)
    assert intensity == 0.0
    assert deviation == pytest.approx(0.0, abs=0.05)


def test_deviation_of_faint_companion():
    # Brightest peak at x=20, centroid pulled toward the companion at x=40.
    img = _blobs(20, 0.5)
    mseg = img > 1e-3
    cut = np.where(mseg, img, 0)
    ys, xs = np.nonzero(cut)
    xc = (cut[ys, xs] @ xs) / cut.sum()
    expected = np.sqrt(np.pi / mseg.sum()) * abs(20 - xc)
    assert mid.intensity_deviation(img, mseg)[1] == pytest.approx(expected, rel=0.05)


def test_empty_segment_is_nan():
    img = np.zeros((10, 10))
    seg = np.zeros((10, 10), bool)
    assert mid.mid_segmap(img, seg) is None
    assert np.isnan(mid.multimode(img, seg, seg))
    assert np.isnan(mid.intensity_deviation(img, seg)[0])
