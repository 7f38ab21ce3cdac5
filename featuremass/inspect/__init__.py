"""Inspection: metrics, importance, partial dependence, plots."""
