"""MLflow: a mini benchmark lands as a run tree, against a SQLite store and a real mlflow server."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from adalase_tune.cli import main
from adalase_tune.config import ConfigError
from adalase_tune.experiment import rebuild_report

ROOT = Path(__file__).parent.parent
SITES = ["input", "stage1", "stage2", "stage3", "stage4"]
FAST = ["--seeds", "1", "--set", "train.epochs=2", "--set", "data.n_train=60", "--set", "model.width=4"]


def run_mini_benchmark(tmp_path, uri, name="bench"):
    out = tmp_path / "out"
    code = main(
        [
            "benchmark",
            "search_spaces/digits.yaml",
            "--methods",
            "adalase,random",
            *FAST,
            "--storage",
            str(tmp_path / "ray"),
            "--out",
            str(out),
            "--name",
            name,
            "--tracking-uri",
            uri,
            "--experiment",
            "mini",
        ]
    )
    assert code == 0
    return out


def check_run_tree(uri):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("mini")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = {r.data.tags["method"]: r for r in runs if r.data.tags.get("run_kind") == "method"}
    assert set(parents) == {"adalase", "random"}
    for method, parent in parents.items():
        assert parent.data.tags["benchmark"] == "bench" and len(parent.data.tags["config_hash"]) == 12
        for key in (
            "cost/total_device_s",
            "cost/total_sample_passes",
            "cost/plain_run_multiple",
            "best_val_acc",
            "test_acc_selected",
        ):
            assert key in parent.data.metrics, (method, key)
    children = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    by_parent = {
        m: [c for c in children if c.data.tags["mlflow.parentRunId"] == p.info.run_id] for m, p in parents.items()
    }
    assert len(by_parent["adalase"]) == 1 and len(by_parent["random"]) == 4
    for method, kids in by_parent.items():
        for child in kids:
            assert child.info.status == "FINISHED"
            params, metrics = child.data.params, child.data.metrics
            assert params["train.epochs"] == "2" and params["data.name"] == "digits"
            if method == "random":
                ws = [float(params[f"da_prob/{s}"]) for s in SITES]
                qs = [float(params[f"q/{s}"]) for s in SITES]
                assert all(0 <= w <= 1 for w in ws) and sum(qs) == pytest.approx(1, abs=1e-5)
            for key in ("best_val_acc", "test_acc_at_best_val", "cost/total_device_s", "cost/total_sample_passes"):
                assert key in metrics
            hist = client.get_metric_history(child.info.run_id, "val/acc")
            epochs = 3 if method == "adalase" else 2  # adalase: a probe of 1 epoch, then the retrain of 2
            assert sorted(m.step for m in hist) == list(range(1, epochs + 1))
            for key in ("train/loss", "val/loss", "test/acc", "cost/device_s", "cost/sample_passes"):
                assert len(client.get_metric_history(child.info.run_id, key)) == epochs
            artifacts = [a.path for a in client.list_artifacts(child.info.run_id)]
            if method == "adalase":
                assert "q_trajectory.png" in artifacts
                assert len(client.get_metric_history(child.info.run_id, "adalase/q/stage2")) == epochs
    summary = next(r for r in runs if r.data.tags.get("run_kind") == "summary")
    assert {a.path for a in client.list_artifacts(summary.info.run_id)} >= {
        "report.md",
        "results.csv",
        "cost_vs_accuracy.png",
    }
    return client, exp


def test_benchmark_lands_in_a_sqlite_store_and_report_rebuilds_it(ray_local, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = run_mini_benchmark(tmp_path, uri)
    check_run_tree(uri)
    rebuilt = tmp_path / "rebuilt"
    assert main(["report", "--experiment", "mini", "--tracking-uri", uri, "--out", str(rebuilt)]) == 0
    a = pd.read_csv(out / "results.csv").sort_values(["method", "best_val_acc"]).reset_index(drop=True)
    b = pd.read_csv(rebuilt / "results.csv").sort_values(["method", "best_val_acc"]).reset_index(drop=True)
    assert list(a["method"]) == list(b["method"])
    for col in ("best_val_acc", "test_acc_at_best_val", "sample_passes"):
        assert a[col].tolist() == pytest.approx(b[col].tolist())
    table = lambda p: [l for l in p.read_text().splitlines() if l.startswith("| adalase") or l.startswith("| random")]  # noqa: E731,E741
    assert [row.split("|")[4] for row in table(out / "report.md")] == [
        row.split("|")[4] for row in table(rebuilt / "report.md")
    ]
    unknown = r"--benchmark 'nosuch': experiment 'mini' has no benchmark of that name \(it has"
    with pytest.raises(ConfigError, match=unknown):
        rebuild_report("mini", "nosuch", tracking_uri=uri, out=str(tmp_path / "none"))
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_benchmark_logs_to_a_real_mlflow_server(ray_local, tmp_path, mlflow_server):
    """The same run tree through a real server's REST API (the fast tier checks it on SQLite)."""
    run_mini_benchmark(tmp_path, mlflow_server.url)
    check_run_tree(mlflow_server.url)


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_resumed_sweep_reuses_its_runs(ray_local, tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    args = [
        "sweep",
        "search_spaces/digits.yaml",
        "--method",
        "random",
        "--num-samples",
        "2",
        *FAST,
        "--storage",
        str(tmp_path / "ray"),
        "--name",
        "s1",
        "--tracking-uri",
        uri,
        "--experiment",
        "e",
    ]
    assert main(args) == 0
    assert main(args + ["--resume"]) == 0
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert sum(r.data.tags.get("run_kind") == "method" for r in runs) == 1
    assert sum(r.data.tags.get("run_kind") == "trial" for r in runs) == 2


def test_train_logs_a_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/t.db"
    assert (
        main(
            [
                "train",
                "search_spaces/digits.yaml",
                "--quiet",
                "--set",
                "train.epochs=2",
                "--set",
                "data.n_train=60",
                "--set",
                "selection.method=adalase",
                "--tracking-uri",
                uri,
                "--experiment",
                "t",
            ]
        )
        == 0
    )
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["selection.method"] == "adalase"
    assert len(client.get_metric_history(run.info.run_id, "adalase/q/input")) == 3  # probe 1 + retrain 2
    phases = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "phase"), key=lambda m: m.step)]
    assert phases == [1, 2, 2]


def test_names_in_mlflow_filters_are_quoted_so_they_cannot_change_the_query(tmp_path):
    from adalase_tune.config import ConfigError
    from adalase_tune.tracking import Tracking, literal

    assert literal("plain") == "'plain'" and literal("it's") == '"it\'s"'
    with pytest.raises(ConfigError, match="both ' and"):
        literal("a'b\"c")
    tracking = Tracking(f"sqlite:///{tmp_path}/q.db", "quotes")
    parent = tracking.parent_run("random", "real", "h")
    # a crafted name would match every benchmark if it were pasted into the filter unquoted
    assert tracking.benchmark_meta("x' or tags.run_kind = 'method") == {}
    assert tracking.parent_run("random", "x' or tags.run_kind = 'method", "h") != parent


def test_experiments_it_creates_open_in_the_training_view_and_parents_are_named_by_method(tmp_path):
    from adalase_tune.tracking import Tracking

    tracking = Tracking(f"sqlite:///{tmp_path}/k.db", "fresh")
    exp = tracking.client.get_experiment(tracking.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3's model-training view
    view = json.loads(exp.tags["mlflow.sharedViewState.comparison"])
    assert "metrics.`test_acc_selected`" in view["selectedColumns"]
    assert "metrics.`cost/plain_run_multiple`" in view["selectedColumns"]
    run = tracking.client.get_run(tracking.parent_run("grid", "benchmark-20260101-120000", "h", tags={"seeds": "0,1"}))
    assert run.data.tags["mlflow.runName"] == "grid" and run.data.tags["seeds"] == "0,1"
    assert run.data.tags["benchmark"] == "benchmark-20260101-120000" and "mlflow.parentRunId" not in run.data.tags


def _runs(client, experiment_id):
    return {r.info.run_id: r for r in client.search_runs([experiment_id], max_results=1000)}


@pytest.mark.slow
def test_a_benchmark_nests_under_the_active_run_with_the_comparison_metrics_and_table(ray_local, tmp_path):
    import mlflow

    from adalase_tune import run_benchmark
    from adalase_tune.tuning import SweepOptions

    from conftest import tiny_config

    client = MlflowClient()  # the session's default store, which mlflow.start_run() uses as well
    exp_id = client.create_experiment("my-study")
    cfg = tiny_config(**{"train.epochs": 1, "data.n_train": 40})
    with mlflow.start_run(experiment_id=exp_id, run_name="my study") as mine:
        result = run_benchmark(
            cfg, ["uniform", "grid"], SweepOptions(seeds=[0], storage=str(tmp_path / "ray")), out=str(tmp_path / "o")
        )
    runs = _runs(client, exp_id)
    kids = {
        r.data.tags["mlflow.runName"]: r
        for r in runs.values()
        if r.data.tags.get("mlflow.parentRunId") == mine.info.run_id
    }
    assert set(kids) == {"uniform", "grid", "comparison"}
    for method in ("uniform", "grid"):
        parent = kids[method]
        assert parent.data.tags["benchmark"] == result.name and parent.data.tags["seeds"] == "0"
        trials = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(trials) == (5 if method == "grid" else 1)
        row = result.table.set_index("method").loc[method]
        assert parent.data.metrics["test_acc_selected"] == pytest.approx(row["test_acc"], abs=1e-4)  # rounded
        assert parent.data.metrics["cost/plain_run_multiple"] == pytest.approx(row["plain_run_multiple"], abs=1e-4)
    grid = kids["grid"].data
    assert grid.metrics["answer_found"] == 1.0 and grid.tags["answer_source"] == "grid"  # it picks its own best arm
    assert grid.tags["answer_target"] in SITES and "answer_found" not in kids["uniform"].data.metrics
    summary = kids["comparison"]
    logged = json.loads(summary.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "comparison.json", "type": "table"} in logged
    table = pd.read_json(
        client.download_artifacts(summary.info.run_id, "comparison.json", str(tmp_path)), orient="split"
    )
    assert sorted(table["method"]) == ["grid", "uniform"]
    assert {"test_acc_selected", "cost/plain_run_multiple", "answer_found"} <= set(table.columns)


@pytest.mark.slow
def test_a_sweep_nests_under_a_given_parent_run_id(ray_local, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/p.db"
    client = MlflowClient(tracking_uri=uri)
    theirs = client.create_run(client.create_experiment("theirs")).info.run_id
    args = ["sweep", "search_spaces/digits.yaml", "--method", "uniform", *FAST, "--tracking-uri", uri]
    assert main([*args, "--storage", str(tmp_path / "a"), "--parent-run-id", "0" * 32]) == 2
    assert f"--parent-run-id = '{'0' * 32}': no such run in {uri}" in capsys.readouterr().err
    assert main([*args, "--storage", str(tmp_path / "b"), "--parent-run-id", theirs, "--experiment", "x"]) == 2
    assert "the parent run" in capsys.readouterr().err and client.get_experiment_by_name("x") is None
    assert main([*args, "--storage", str(tmp_path / "c"), "--parent-run-id", theirs]) == 0
    runs = _runs(client, client.get_experiment_by_name("theirs").experiment_id)
    (parent,) = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == theirs]
    assert parent.data.tags["mlflow.runName"] == "uniform" and parent.info.status == "FINISHED"
    assert [r.data.tags.get("mlflow.parentRunId") for r in runs.values() if r.data.tags.get("run_kind") == "trial"] == [
        parent.info.run_id
    ]
    assert client.get_experiment_by_name("digits") is None


def test_a_bad_uri_from_the_environment_is_blamed_on_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://x")
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(ROOT / "search_spaces/digits.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adalase-tune: error: $MLFLOW_TRACKING_URI = 'bogus://x'")
    assert main(["train", str(ROOT / "search_spaces/digits.yaml"), "--quiet", "--tracking-uri", "bad://y"]) == 2
    assert "--tracking-uri = 'bad://y'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_train_run_nests_under_a_given_parent_or_the_active_run(tmp_path):
    import mlflow

    from adalase_tune.experiment import train

    from conftest import tiny_config

    uri = f"sqlite:///{tmp_path}/t.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("theirs")
    theirs = client.create_run(exp).info.run_id
    cfg = tiny_config(**{"train.epochs": 1, "data.n_train": 40})
    assert main(["train", "search_spaces/digits.yaml", *FAST[2:], "--quiet", "--tracking-uri", uri,
                 "--parent-run-id", theirs]) == 0  # fmt: skip
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=exp) as mine:
            train(cfg, tracking_uri=uri, progress=False)
    finally:
        mlflow.set_tracking_uri(None)
    kids = [r for r in _runs(client, exp).values() if r.data.tags.get("run_kind") == "train"]
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in kids) == sorted([theirs, mine.info.run_id])
    assert all(r.info.status == "FINISHED" for r in kids) and client.get_experiment_by_name("train") is None


@pytest.mark.parametrize("end", ["finish", "fail", "kill"])
def test_a_run_writes_its_epochs_tags_and_end_in_two_calls_to_the_store(tmp_path, end):
    """A short trial's run: its buffered epochs, its tags and its final metrics go in one batch,
    then its status; nothing is lost by waiting (the real SQLite store, the real client counted)."""
    from adalase_tune.tracking import Tracking

    uri = f"sqlite:///{tmp_path}/m.db"
    logger = Tracking(uri, "batched").run_logger("trial", {"run_kind": "trial"}, {"train.lr": 0.1})
    calls: list[str] = []
    for name in ("log_batch", "set_tag", "log_metric", "set_terminated"):
        real = getattr(logger.client, name)
        setattr(logger.client, name, lambda *a, _n=name, _f=real, **k: calls.append(_n) or _f(*a, **k))
    for epoch in (1, 2, 3):
        logger.log_epoch({"val/acc": 0.1 * epoch, "train/loss": 1.0 / epoch}, epoch)
    for key in ("node_id", "device", "threads"):
        logger.tag(key, f"{key}-value")
    {"finish": lambda: logger.finish({"best_val_acc": 0.3, "epochs": 3}),
     "fail": lambda: logger.fail("ValueError: bad"), "kill": logger.kill}[end]()  # fmt: skip
    assert calls == ["log_batch", "set_terminated"]
    run = MlflowClient(uri).get_run(logger.run_id)
    assert run.info.status == {"finish": "FINISHED", "fail": "FAILED", "kill": "KILLED"}[end]
    assert all(run.data.tags[k] == f"{k}-value" for k in ("node_id", "device", "threads"))
    assert [m.value for m in MlflowClient(uri).get_metric_history(logger.run_id, "val/acc")] == pytest.approx(
        [0.1, 0.2, 0.3]
    )
    assert (run.data.metrics.get("best_val_acc"), run.data.tags.get("error")) == {
        "finish": (0.3, None), "fail": (None, "ValueError: bad"), "kill": (None, None)}[end]  # fmt: skip
