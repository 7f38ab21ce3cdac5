"""``python -m featuremass`` runs the same CLI as the ``featuremass`` script."""

import subprocess
import sys

import featuremass


def test_python_m_featuremass_prints_the_package_version():
    out = subprocess.run([sys.executable, "-m", "featuremass", "--version"],
                         capture_output=True, text=True, check=True)
    assert featuremass.__version__ in out.stdout + out.stderr


def test_python_m_featuremass_user_error_exits_2():
    out = subprocess.run([sys.executable, "-m", "featuremass", "no-such-verb"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "no-such-verb" in out.stderr
