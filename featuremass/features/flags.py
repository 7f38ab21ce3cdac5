"""One bit-flag registry for every reason a quantity could not be measured.

A feature that cannot be measured is NaN, and the galaxy's integer ``flag``
column gets the bit that says why. ``flag == 0`` means every feature was
measured. Decode with :func:`decode_flags`.
"""

from __future__ import annotations

import enum

import numpy as np


class MorphFlag(enum.IntFlag):
    """Reasons a galaxy's features may be NaN or unreliable (one bit each)."""

    BAD_PIXELS = 1 << 0  #: non-finite pixels were present and masked
    BLANK_IMAGE = 1 << 1  #: constant, blank or all non-positive image: nothing to measure
    NO_SOURCE = 1 << 2  #: segmentation found no central source
    SMALL_SOURCE = 1 << 3  #: the central source has too few pixels for reliable statistics
    EDGE_TOUCH = 1 << 4  #: the source touches the stamp edge (it may be truncated)
    FILLS_STAMP = 1 << 5  #: the source fills most of the stamp; little sky left
    SKY_FAILED = 1 << 6  #: the sky level / noise could not be estimated
    CONTAMINATED = 1 << 7  #: neighbours or stars were masked near the galaxy
    PETROSIAN_FAILED = 1 << 8  #: the Petrosian radius could not be found
    RADII_FAILED = 1 << 9  #: r20 / r50 / r80 or the half-light radii failed
    ASYMMETRY_FAILED = 1 << 10  #: asymmetry (or its centre search) failed
    SMOOTHNESS_FAILED = 1 << 11  #: smoothness failed
    GINI_M20_FAILED = 1 << 12  #: Gini or M20 failed
    MID_FAILED = 1 << 13  #: multimode, intensity or deviation failed
    SHAPE_ASYMMETRY_FAILED = 1 << 14  #: outer or shape asymmetry failed
    SERSIC_FAILED = 1 << 15  #: the single Sérsic fit did not converge
    SERSIC_AT_BOUND = 1 << 16  #: a Sérsic parameter ended on a fit bound
    BULGE_DISK_FAILED = 1 << 17  #: the bulge + disk fit did not converge
    PROFILE_FAILED = 1 << 18  #: radial-profile features failed
    LOW_SN = 1 << 19  #: S/N per pixel below 2.5 (statmorph's threshold for reliable CAS)
    MULTIPLE_SOURCES = 1 << 20  #: a second bright source overlaps the galaxy (merger or blend)
    BACKEND_ERROR = 1 << 21  #: an unexpected error inside the backend; all features NaN
    SKY_UNCERTAIN = 1 << 22  #: too little clean sky: level from the outer profile or the border mode (warning)
    STRETCH_UNCERTAIN = 1 << 23  #: the stretch detection or its inverse's parameter is uncertain (--scale auto)


#: Flags that mean "do not trust this galaxy" (statmorph's ``flag >= 2`` analogue).
SERIOUS_FLAGS = (
    MorphFlag.BLANK_IMAGE
    | MorphFlag.NO_SOURCE
    | MorphFlag.SMALL_SOURCE
    | MorphFlag.SKY_FAILED
    | MorphFlag.PETROSIAN_FAILED
    | MorphFlag.BACKEND_ERROR
)


def decode_flags(value: int) -> list[str]:
    """Names of the bits set in ``value``, lowest bit first.

    >>> decode_flags(MorphFlag.EDGE_TOUCH | MorphFlag.LOW_SN)
    ['EDGE_TOUCH', 'LOW_SN']
    """
    value = int(value)
    unknown = value & ~sum(int(f) for f in MorphFlag)
    if value < 0 or unknown:
        raise ValueError(f"flag value {value} holds bits featuremass does not define")
    return [f.name for f in MorphFlag if value & f]


def is_good(flags) -> np.ndarray:
    """Boolean mask: True where none of :data:`SERIOUS_FLAGS` is set."""
    return (np.asarray(flags, dtype=np.int64) & int(SERIOUS_FLAGS)) == 0
