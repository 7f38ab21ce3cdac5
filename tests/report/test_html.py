"""The HTML report: self-contained, every section present, missing parts tolerated."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from featuremass.errors import FeaturemassError
from featuremass.models.metrics import regression_report
from featuremass.report.html import SECTIONS, build_report


def _png_bytes():
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def run_dir(tmp_path):
    rng = np.random.default_rng(1)
    n = 40
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    y = rng.uniform(0.5, 3.0, n)
    pred = pd.DataFrame({"galaxy_id": ids, "ml_true": y,
                         "ml_pred_lgbm": y + rng.normal(0, 0.2, n),
                         "ml_pred_cnn": y + rng.normal(0, 0.4, n)})
    pred.to_parquet(tmp_path / "predictions.parquet")
    metrics = {k: regression_report(y, pred[f"ml_pred_{k}"].to_numpy(), n_boot=50)
               for k in ("lgbm", "cnn")}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "features").mkdir()
    pd.DataFrame({"galaxy_id": ids, "gini": rng.uniform(0.3, 0.7, n),
                  "m20": rng.uniform(-2.5, -1, n), "flag": 0}).to_parquet(
        tmp_path / "features" / "test.parquet")
    (tmp_path / "gallery").mkdir()
    np.save(tmp_path / "gallery" / "stamps.npy", rng.normal(size=(n, 12, 12)).astype(np.float32))
    np.save(tmp_path / "gallery" / "ids.npy", ids)
    (tmp_path / "importance").mkdir()
    pd.DataFrame({"feature": ["m20", "gini"], "gain": [5.0, 3.0]}).to_csv(
        tmp_path / "importance" / "gain.csv", index=False)
    (tmp_path / "importance" / "gain.png").write_bytes(_png_bytes())
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"root": "survey", "npix": 12, "simulated": True, "splits": {"train": 80, "test": n}}))
    (tmp_path / "commands.json").write_text(json.dumps(
        {"commands": [{"step": "simulate", "command": "featuremass simulate --out survey"}],
         "versions": {"featuremass": "0.1.0", "numpy": np.__version__}, "date": "2025-01-01"}))
    (tmp_path / "benchmark.json").write_text(json.dumps({"rows": [
        {"model": m, "npix": 12, "n_train": nt, "inputs": "image", "rmse": r,
         "rmse_ci": [r - 0.05, r + 0.05], "r2": 0.5, "r2_ci": [0.4, 0.6], "seconds": 1.0}
        for m, r0 in (("lgbm", 0.8), ("cnn", 0.9)) for nt, r in ((100, r0), (300, r0 - 0.1))]}))
    return tmp_path


def test_report_is_self_contained_with_every_section(run_dir):
    out = build_report(run_dir)
    assert out == run_dir / "report.html"
    page = out.read_text(encoding="utf-8")
    # No network: no http(s) URL in any src or href, no external stylesheet or script.
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert "<script" not in page and "<link" not in page
    for sid, _title in SECTIONS:
        assert f'id="{sid}"' in page, sid
    # Every <img> is an embedded PNG that decodes to a PNG signature.
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) >= 2 + 3 * 4  # plots + gallery stamps (best, typical, worst)
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # Content from each artefact made it in.
    assert "featuremass simulate --out survey" in page
    assert "best" in page and "worst" in page
    assert "Not available" not in page
    assert "learning curves" in page.lower()


def test_report_of_empty_run_says_what_is_missing(tmp_path):
    page = build_report(tmp_path, out=tmp_path / "r.html").read_text()
    for sid, _ in SECTIONS:
        assert f'id="{sid}"' in page
    assert page.count("Not available") == len(SECTIONS)


def test_report_of_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FeaturemassError, match="run folder not found"):
        build_report(tmp_path / "nope")


def test_report_takes_a_benchmark_from_elsewhere(tmp_path):
    bench = tmp_path / "elsewhere" / "benchmark.json"
    bench.parent.mkdir()
    rows = [{"npix": 69, "n_train": n, "inputs": "-", "model": "mean", "rmse": 1.2,
             "rmse_ci": [1.1, 1.3], "r2": 0.0, "r2_ci": [0.0, 0.0], "seconds": 0.0}
            for n in (100, 300)]
    rows += [{"npix": 69, "n_train": n, "inputs": "image", "model": "cnn", "rmse": r,
              "rmse_ci": [r - 0.05, r + 0.05], "r2": 0.5, "r2_ci": [0.4, 0.6], "seconds": 1.0}
             for n, r in ((100, 0.9), (300, 0.8))]
    bench.write_text(json.dumps({"rows": rows, "command": "python benchmarks/bench_accuracy.py X"}))
    run = tmp_path / "run"
    run.mkdir()
    page = build_report(run, benchmark=bench).read_text()
    assert "python benchmarks/bench_accuracy.py X" in page
    assert "learning curves" in page.lower()
    # Not a benchmark table: one clear error naming the file.
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(FeaturemassError, match="bad.json: not a benchmark table"):
        build_report(run, benchmark=bad)
    with pytest.raises(FeaturemassError, match="missing.json: not a benchmark table"):
        build_report(run, benchmark=tmp_path / "missing.json")
