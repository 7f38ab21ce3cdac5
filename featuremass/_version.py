"""The single source of featuremass's version and of its feature-engine version."""

__version__ = "0.1.0"

#: Version of the feature measurements (segmentation, sky, stretch handling,
#: every feature kernel). A feature table and a model record it; predict and
#: evaluate refuse a table measured by a different engine than the model's.
#: Bump it whenever a change can alter a feature value. 1 was featuremass
#: 0.1.0 at 84bb0c8; 2 adds the auto stretch detection, the censored-sky and
#: Petrosian changes of this release; 3 drops float rounding from the residuals
#: that detect the stretch (upsampled linear stamps were read as log stretches)
#: and fits the censored sky of a clipped-log stamp again away from its sources;
#: 4 leaves significant secondary peaks too faint to deblend and joined to the
#: galaxy only through its wings (faint companions) out of its segment: they
#: pulled its centroid.
FEATURE_ENGINE_VERSION = 4
