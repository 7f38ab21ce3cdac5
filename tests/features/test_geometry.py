import numpy as np
import pytest

from featuremass.features import geometry


def test_centroid_and_shape_of_sheared_gaussian(sersic):
    # A GalSim Gaussian sheared to q = b/a = 0.5 at 30 deg, offset by (+2.3, -1.6)
    # px: its moments are exactly those of a Gaussian with that axis ratio
    # (pixel integration adds 1/12 px^2 to both axes, negligible for sigma = 4 px).
    import galsim
    gal = galsim.Gaussian(sigma=4.0).shear(q=0.5, beta=30 * galsim.degrees)
    img = gal.drawImage(nx=69, ny=69, scale=1.0, offset=(2.3, -1.6)).array.astype(float)
    xc, yc = geometry.centroid(img)
    assert (xc, yc) == pytest.approx((36.3, 32.4), abs=0.01)
    ellip, elong, theta = geometry.shape_from_covariance(geometry.covariance(img, (xc, yc)))
    assert ellip == pytest.approx(0.5, abs=0.01)
    assert elong == pytest.approx(2.0, rel=0.02)
    assert theta == pytest.approx(np.deg2rad(30), abs=0.01)


def test_nan_for_non_positive_flux():
    assert np.isnan(geometry.centroid(np.zeros((5, 5)))[0])
    assert np.isnan(geometry.covariance(-np.ones((5, 5)), (2, 2))).all()


def test_single_pixel_is_regularised_round():
    img = np.zeros((5, 5))
    img[2, 2] = 1
    ellip, elong, _ = geometry.shape_from_covariance(geometry.covariance(img, (2, 2)))
    assert ellip == pytest.approx(0.0) and elong == pytest.approx(1.0)
