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


@pytest.mark.parametrize("theta", [0.0, 0.4, -1.2, np.pi / 2])
@pytest.mark.parametrize("elongation", [1.0, 1.7, 4.0])
def test_elliptical_distance_is_semi_major_axis_on_the_ellipse(theta, elongation):
    # Points (a cos t, b sin t) of an ellipse with semi-major axis a along theta.
    a = 7.5
    b = a / elongation
    t = np.linspace(0.0, 2 * np.pi, 37)
    u, v = a * np.cos(t), b * np.sin(t)
    dx = u * np.cos(theta) - v * np.sin(theta)
    dy = u * np.sin(theta) + v * np.cos(theta)
    np.testing.assert_allclose(geometry.elliptical_distance(dx, dy, elongation, theta), a, rtol=1e-12)
    # Along the minor axis a distance d is d * elongation in semi-major units.
    d = 2.0
    assert geometry.elliptical_distance(-d * np.sin(theta), d * np.cos(theta), elongation, theta) == pytest.approx(
        d * elongation, rel=1e-12)


def test_ellipticity_converts_to_elongation():
    assert geometry.elongation_from_ellipticity(0.0) == 1.0
    assert geometry.elongation_from_ellipticity(0.75) == pytest.approx(4.0)
    assert geometry.elongation_from_ellipticity(1.0) == pytest.approx(1000.0)  # b/a floored at 1e-3


def test_elliptical_radius_grid_matches_pixel_offsets():
    rho = geometry.elliptical_radius((5, 9), (3.0, 1.5), 2.0, 0.0)
    assert rho.shape == (5, 9)
    assert rho[1, 3] == pytest.approx(0.5 * 2.0)  # 0.5 px along y (the minor axis at theta=0)
    assert rho[2, 8] == pytest.approx(np.hypot(5.0, 0.5 * 2.0))


def test_numba_scalar_twin_is_identical():
    rng = np.random.default_rng(3)
    dx, dy = rng.normal(0, 10, (2, 500))
    for elongation, theta in [(1.0, 0.3), (2.3, 0.3), (5.0, -2.0)]:
        arr = geometry.elliptical_distance(dx, dy, elongation, theta)
        c, s = np.cos(theta), np.sin(theta)
        scal = [geometry.elliptical_distance_scalar(x, y, elongation, c, s) for x, y in zip(dx, dy, strict=True)]
        np.testing.assert_array_equal(arr, scal)
