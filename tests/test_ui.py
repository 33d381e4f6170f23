"""The MLflow UI, started by `adalase-tune ui`, checked in a real headless Chromium (Playwright): a person
opening the comparison view it prints sees the methods and their comparison metrics at first load.
ADALASE_SCREENSHOTS=docs/screenshots writes the screenshots of the docs."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from adalase_tune.tracking import Tracking
from adalase_tune.tuning import SweepOptions

from conftest import free_port, spawn, stop_group, tiny_config

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("ADALASE_SCREENSHOTS", "/tmp/adalase_tune_screenshots"))


def _log_three_methods(uri, tmp_path):
    """A real three-method benchmark (two seeds each) on a real local Ray, logged to ``uri``."""
    from adalase_tune import run_benchmark

    cfg = tiny_config(**{"train.epochs": 2, "data.n_train": 100})
    run_benchmark(
        cfg,
        ["adalase", "uniform", "grid"],
        SweepOptions(seeds=[0, 1], storage=str(tmp_path / "ray"), name="uibench"),
        out=str(tmp_path / "out"),
        tracking_uri=uri,
        experiment="ui-test",
    )
    return Tracking(uri, "ui-test", create=False)


def _wait_for(url: str) -> None:
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert time.time() < deadline, "the MLflow UI did not come up"
            time.sleep(0.5)


def _metrics_row(page, method: str):
    """The metric cells of a run's row (the grid keeps the pinned run name and the rest in two rows)."""
    name_row = page.locator(".ag-pinned-left-cols-container [role=row]", has_text=method).first
    index = name_row.get_attribute("row-index")
    return page.locator(f".ag-center-cols-container [role=row][row-index='{index}']")


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (.ci/run installs it)")
def test_mlflow_ui_shows_the_methods_compared_at_first_load(tmp_path, ray_local):
    from playwright.sync_api import sync_playwright

    uri = f"sqlite:///{tmp_path}/ui.db"
    tracking = _log_three_methods(uri, tmp_path)
    runs = tracking.client.search_runs([tracking.experiment_id], "tags.run_kind = 'method'")
    parents = {r.data.tags["method"]: r.data.metrics for r in runs}
    port = free_port()
    ui = spawn(
        [sys.executable, "-m", "adalase_tune", "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning" in ui.stdout.readline()
        line = ui.stdout.readline()  # the experiment's comparison view, as `adalase-tune ui` prints it
        assert line.startswith("  ui-test: the methods compared at http://")
        comparison = line.split(" at ", 1)[1].strip()
        assert comparison.endswith("runs?viewStateShareKey=comparison&workflowType=machine_learning")
        _wait_for(f"http://127.0.0.1:{port}/health")
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
            page = browser.new_page(viewport={"width": 1500, "height": 900})  # a fresh profile: a first visit
            page.goto(comparison)
            for header in ("test_acc_selected", "cost/plain_run_multiple", "answer_found"):
                page.locator("[role=columnheader]", has_text=header).first.wait_for(timeout=90_000)
            assert page.get_by_text("Model training", exact=True).first.is_visible()  # not the GenAI pages
            for method, metrics in parents.items():  # short names, whole, and their comparison beside them
                assert page.get_by_role("link", name=method, exact=True).first.is_visible()
                cells = _metrics_row(page, method).inner_text()
                assert f"{metrics['test_acc_selected']:g}" in cells, (method, cells)
                assert f"{metrics['cost/plain_run_multiple']:g}" in cells, (method, cells)
            assert parents["grid"]["answer_found"] == 1.0  # the grid selects its own best arm, the target here
            page.screenshot(path=str(SHOTS / "mlflow_ui_comparison.png"))
            # the expand toggle of a parent run sits in its run-name cell
            expanders = page.locator("button[data-component-id*='runnamecellrenderer']")
            assert expanders.count() == 3  # three parents; their trials stay folded until expanded
            for parent in ("uniform", "adalase"):
                row = page.locator(".ag-pinned-left-cols-container [role=row]", has_text=parent).first
                row.locator("button[data-component-id*='runnamecellrenderer']").click()
            for child in ("adalase seed 0", "adalase seed 1", "uniform seed 0", "uniform seed 1"):
                page.get_by_text(child, exact=False).first.wait_for(timeout=30_000)
            page.screenshot(path=str(SHOTS / "mlflow_ui_children.png"))
            # the comparison table (log_table) in the artifact view of the run named "comparison"
            page.get_by_role("link", name="comparison", exact=True).first.click()
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("comparison.json", exact=True).first.click()
            page.locator("[role=columnheader], th", has_text="test_acc_selected").first.wait_for(timeout=60_000)
            page.screenshot(path=str(SHOTS / "mlflow_ui_table.png"))
            browser.close()
    finally:
        stop_group(ui)
    for shot in ("mlflow_ui_comparison.png", "mlflow_ui_children.png", "mlflow_ui_table.png"):
        assert (SHOTS / shot).stat().st_size > 10_000
