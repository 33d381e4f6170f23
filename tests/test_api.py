"""The README's Python example runs as written and gives the same MLflow tree as the command line."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).parent.parent


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def tree(db: Path, experiment: str) -> dict:
    """The shape of a benchmark's MLflow tree: run kinds, names, statuses, param and metric keys."""
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    shape = {}
    for r in runs:
        kind = r.data.tags.get("run_kind")
        name = re.sub(r" [0-9a-f]{5}_\d{5}$", "", r.data.tags["mlflow.runName"])  # without the Ray trial id
        name = re.sub(r"\(.*\)", "(bench)", name)
        shape.setdefault((kind, name, r.info.status), []).append(
            (tuple(sorted(r.data.params)), tuple(sorted(r.data.metrics)))
        )
    return {k: sorted(v) for k, v in shape.items()}


@pytest.mark.slow
def test_the_readme_python_example_gives_the_cli_s_mlflow_tree(tmp_path):
    (tmp_path / "search_spaces").symlink_to(ROOT / "search_spaces")
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "adalase" in done.stdout and "grid" in done.stdout  # the printed table
    assert (tmp_path / "results/mini/report.md").is_file()
    cli = tmp_path / "cli"
    cli.mkdir()
    (cli / "search_spaces").symlink_to(ROOT / "search_spaces")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "adalase_tune",
            "benchmark",
            "search_spaces/motifs.yaml",
            "--methods",
            "adalase,grid",
            "--seeds",
            "1",
            "--set",
            "train.epochs=3",
            "--name",
            "mini",
            "--out",
            "results/mini",
            "--tracking-uri",
            "sqlite:///mlflow.db",
            "--experiment",
            "motifs",
        ],
        cwd=cli,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    python_tree, cli_tree = tree(tmp_path / "mlflow.db", "motifs"), tree(cli / "mlflow.db", "motifs")
    assert python_tree == cli_tree
    kinds = sorted((k[0], len(v)) for k, v in python_tree.items())
    assert ("summary", 1) in kinds and sum(n for kind, n in kinds if kind == "trial") == 1 + 3  # adalase, the grid's 3
