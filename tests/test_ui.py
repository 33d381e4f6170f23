"""The MLflow UI, started by `adalase-tune ui`, checked in a real headless Chromium (Playwright)."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from adalase_tune.tracking import Tracking
from adalase_tune.tuning import SweepOptions

from conftest import tiny_config
from test_tracking import free_port

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("ADALASE_SCREENSHOTS", "/tmp/adalase_tune_screenshots"))


def _log_two_methods(uri, tmp_path):
    """A real two-method benchmark (two seeds each) on a real local Ray, logged to ``uri``."""
    from adalase_tune import run_benchmark

    cfg = tiny_config(**{"train.epochs": 1, "data.n_train": 40})
    run_benchmark(
        cfg,
        ["adalase", "uniform"],
        SweepOptions(seeds=[0, 1], storage=str(tmp_path / "ray"), name="uibench"),
        out=str(tmp_path / "out"),
        tracking_uri=uri,
        experiment="ui-test",
    )
    return Tracking(uri, "ui-test", create=False).experiment_id


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (.ci/run installs it)")
def test_mlflow_ui_shows_method_runs_and_their_trials(tmp_path, ray_local):
    from playwright.sync_api import sync_playwright

    uri = f"sqlite:///{tmp_path}/ui.db"
    exp_id = _log_two_methods(uri, tmp_path)
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "adalase_tune", "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert f"http://127.0.0.1:{port}" in ui.stdout.readline()
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "the MLflow UI did not come up"
                time.sleep(0.5)
        SHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs")
            for parent in ("adalase (uibench)", "uniform (uibench)"):
                page.get_by_text(parent, exact=False).first.wait_for(timeout=90_000)
            page.screenshot(path=str(SHOTS / "mlflow_ui_parents.png"))
            # the expand toggle of a parent run sits in its run-name cell
            expanders = page.locator("button[data-component-id*='runnamecellrenderer']")
            assert expanders.count() == 2  # two parents; their trials stay folded until expanded
            for parent in ("uniform (uibench)", "adalase (uibench)"):
                row = page.locator("[role=row]", has_text=parent).first
                row.locator("button[data-component-id*='runnamecellrenderer']").click()
            for child in ("adalase seed 0", "adalase seed 1", "uniform seed 0", "uniform seed 1"):
                page.get_by_text(child, exact=False).first.wait_for(timeout=30_000)
            page.screenshot(path=str(SHOTS / "mlflow_ui_children.png"))
            browser.close()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    assert (SHOTS / "mlflow_ui_children.png").stat().st_size > 10_000
