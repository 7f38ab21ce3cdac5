"""Classical morphology: one module per family of features, each a pure function of arrays."""
