"""Compatibility names: tabular models are saved and loaded by :mod:`featuremass.models.store`."""

from __future__ import annotations

from featuremass.models.store import (
    BOOSTER,
    SCHEMA_VERSION,
    SIDECAR,
    TABULAR_KINDS,
    ModelStoreError,
    TrainedModel,
    data_fingerprint,
    load_model,
    read_sidecar,
    save_model,
)

KINDS = TABULAR_KINDS

__all__ = ["BOOSTER", "KINDS", "SCHEMA_VERSION", "SIDECAR", "ModelStoreError", "TrainedModel",
           "data_fingerprint", "load_model", "read_sidecar", "save_model"]
