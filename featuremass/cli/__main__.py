"""``python -m featuremass.cli``: the same as the ``featuremass`` command."""

import sys

from featuremass.cli import main

sys.exit(main())
