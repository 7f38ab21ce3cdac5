import numpy as np
import pytest

from featuremass.features import gini_m20


def test_gini_limits():
    assert gini_m20.gini(np.ones(100)) == pytest.approx(0.0)
    x = np.zeros(100)
    x[3] = 5.0
    assert gini_m20.gini(x) == pytest.approx(1.0)
    # Closed form for values 1..n: G = (n+1)/(3(n-1)) * ... -> for n=3, [1,2,3]: 2/9 * 3/2 = 1/3
    assert gini_m20.gini([1.0, 2.0, 3.0]) == pytest.approx(1 / 3)
    assert np.isnan(gini_m20.gini([1.0]))
    assert np.isnan(gini_m20.gini(np.zeros(5)))


def test_m20_two_point_sources():
    # Centre pixel holds 90% of the flux, four satellites at distance 3 hold 10%.
    img = np.zeros((11, 11))
    img[5, 5] = 90.0
    for y, x in ((2, 5), (8, 5), (5, 2), (5, 8)):
        img[y, x] = 2.5
    seg = img > 0
    # The brightest 20% is the centre pixel alone, whose moment is zero: NaN.
    assert np.isnan(gini_m20.m20(img, seg))
    img[5, 5] = 10.0  # now 20% needs all pixels above the threshold...
    img[5, 8] = 30.0
    seg = img > 0
    xs = np.array([5, 5, 2, 8, 5])
    ys = np.array([2, 8, 5, 5, 5])
    v = img[ys, xs]
    xc, yc = v @ xs / v.sum(), v @ ys / v.sum()
    r2 = (xs - xc) ** 2 + (ys - yc) ** 2
    # brightest pixel (30 of 47.5 > 20%) alone
    expected = np.log10(30 * r2[3] / (v @ r2))
    assert gini_m20.m20(img, seg) == pytest.approx(expected)


def test_bulge_and_merger_statistics():
    assert gini_m20.gini_m20_bulge(0.6, -2.0) == pytest.approx(-0.693 * -2.0 + 4.95 * 0.6 - 3.96)
    assert gini_m20.gini_m20_merger(0.6, -2.0) == pytest.approx(0.139 * -2.0 + 0.990 * 0.6 - 0.327)
    assert np.isnan(gini_m20.gini_m20_bulge(np.nan, -2.0))
