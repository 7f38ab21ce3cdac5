"""``python -m featuremass``: the same commands as the ``featuremass`` script."""

import sys

from featuremass.cli import main

if __name__ == "__main__":
    sys.exit(main())
