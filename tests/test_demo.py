"""``featuremass demo`` in fast mode: every artefact of the run folder, and the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from featuremass.compat import has_module


@pytest.mark.slow
def test_demo_fast_writes_the_run_folder_and_report(tmp_path):
    from featuremass.demo import run_demo

    lines = []
    report = run_demo(tmp_path / "run", fast=True, seed=1, n_jobs=1, cnn=True, echo=lines.append)
    run = tmp_path / "run"
    assert report == str(run / "report.html")
    for name in ("metrics.json", "predictions.parquet", "dataset.json", "commands.json",
                 "features/test.parquet", "importance/importance.csv", "report.html",
                 "models/lgbm_image/model.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    expected = {"lgbm_image", "lgbm_image+dl", "ridge_image", "mean"}
    if has_module("tensorflow"):
        expected |= {"cnn_image", "hybrid_image"}
    assert set(metrics) == expected
    pred = pd.read_parquet(run / "predictions.parquet")
    assert len(pred) == 40 and {f"ml_pred_{k}" for k in expected} <= set(pred.columns)
    page = (run / "report.html").read_text()
    assert "Not available" not in page.split('id="cnn"')[0]  # metrics, plots, importance present
    assert any(line.startswith("[1/") for line in lines)

    # A second run reuses the simulated survey.
    lines.clear()
    run_demo(tmp_path / "run", fast=True, seed=1, n_jobs=1, cnn=False, echo=lines.append)
    assert any("reusing the simulated survey" in line for line in lines)


def test_demo_cli_rejects_bad_jobs(capsys):
    from featuremass.cli import main

    with pytest.raises(SystemExit) as exc:  # argparse refuses it before the demo starts
        main(["demo", "--out", "unused", "-j", "-1"])
    assert exc.value.code == 2
    assert "-j/--jobs: must be an integer >= 1, got -1" in capsys.readouterr().err
