"""What --resume lets Ray unpickle, and Ray's token file: real sweeps on a real local Ray, real
pickles (one that would write a marker file if it were ever loaded)."""

import os
import pickle
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from adalase_tune.config import ConfigError
from adalase_tune.experiment import sweep
from adalase_tune.tuning import DIGESTS, STATE_BACKUP, SweepOptions

from conftest import tiny_config

pytestmark = pytest.mark.xdist_group("security")  # one worker makes the module's sweep, not each


class _Payload:
    """Unpickling this runs code: it writes ``path`` (what an attacker's tuner.pkl would do)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("pwned",))


@pytest.fixture(scope="module")
def _swept(ray_local, tmp_path_factory):
    """One finished sweep for the module; each test tampers with a copy of it."""
    storage = tmp_path_factory.mktemp("swept") / "ray"
    cfg = tiny_config(**{"data.n_train": 60, "train.epochs": 1})
    opts = SweepOptions(seeds=[0], budgets={"random": {"num_samples": 1}}, storage=str(storage), name="sec")
    sweep(cfg, "random", opts, tracking_uri=None)
    return cfg, opts, storage


@pytest.fixture
def finished_sweep(_swept, tmp_path):
    """A finished experiment of its own (a copy, as moved to another folder, which a resume takes)."""
    cfg, opts, storage = _swept
    shutil.copytree(storage, tmp_path / "ray", symlinks=True)
    folder = next((tmp_path / "ray").glob("sec*"))
    assert (folder / STATE_BACKUP / DIGESTS).is_file() and (folder / "tuner.pkl").is_file()
    return cfg, replace(opts, storage=str(tmp_path / "ray"), resume=True), folder


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_a_resume_refuses_a_pickle_that_is_not_the_one_ray_wrote(finished_sweep, tmp_path):
    cfg, opts, folder = finished_sweep
    marker = tmp_path / "pwned"
    (folder / "tuner.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ConfigError, match=r"tuner.pkl is not the file Ray wrote during this experiment") as err:
        sweep(cfg, "random", opts, tracking_uri=None)
    assert "\n" not in str(err.value) and "run code" in str(err.value)
    assert not marker.exists()  # refused before anything unpickled it


@pytest.mark.slow  # the fast tier's budget (issue 22)
@pytest.mark.parametrize("what", ["folder", "tuner.pkl"])
def test_a_resume_refuses_state_that_others_can_write(finished_sweep, what):
    cfg, opts, folder = finished_sweep
    path = folder if what == "folder" else folder / "tuner.pkl"
    path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWOTH)
    with pytest.raises(ConfigError, match=r"can be written by others \(mode \d+\)"):
        sweep(cfg, "random", opts, tracking_uri=None)


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_an_untouched_experiment_resumes(finished_sweep):
    cfg, opts, folder = finished_sweep
    rows = sweep(cfg, "random", opts, tracking_uri=None).rows
    assert len(rows) == 1 and (rows["status"] == "TERMINATED").all()


def test_the_local_ray_token_file_is_private(ray_local):
    token = Path.home() / ".ray" / "auth_token"
    if not token.is_file():
        pytest.skip("this Ray keeps no token file")
    assert stat.S_IMODE(token.stat().st_mode) & 0o077 == 0 and token.stat().st_uid == os.getuid()
