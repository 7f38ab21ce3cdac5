"""Models: LightGBM, baselines, conformal intervals, CNN and hybrid."""
