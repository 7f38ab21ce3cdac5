"""Data layer: the seed layout, the stretch, fetching, cutouts and the simulated survey."""
