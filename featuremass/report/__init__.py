"""Reports: the self-contained HTML page."""
