"""Signals in the first instants of a Tune fit: before Tune installs its handlers, a SIGTERM must
neither kill the process (SIGUSR1's default action) nor be lost; it reaches Tune once Tune listens."""

import os
import signal
import threading
import time

import pytest

from adalase_tune.interrupts import Signals

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals only")


def _wait(event: threading.Event, seconds: float = 5.0) -> bool:
    deadline = time.time() + seconds
    while not event.is_set() and time.time() < deadline:
        time.sleep(0.02)  # the main thread must run for Python signal handlers to fire
    return event.is_set()


def test_a_signal_before_tune_listens_waits_for_tune_and_then_stops_it():
    signals, tune_stopped = Signals(), threading.Event()
    with signals.installed(), signals.fitting():
        os.kill(os.getpid(), signal.SIGTERM)  # Tune has not installed its handler yet
        time.sleep(0.3)
        assert signals.received == signal.SIGTERM and not tune_stopped.is_set()
        signal.signal(signal.SIGUSR1, lambda s, f: tune_stopped.set())  # what Tune's fit does when it starts
        assert _wait(tune_stopped), "the deferred stop never reached Tune"
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # put back after the fit


def test_a_signal_once_tune_listens_stops_it_at_once_and_a_second_raises():
    signals, tune_stopped = Signals(), threading.Event()
    with signals.installed(), signals.fitting():
        signal.signal(signal.SIGUSR1, lambda s, f: tune_stopped.set())
        os.kill(os.getpid(), signal.SIGTERM)
        assert _wait(tune_stopped)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)


def test_outside_a_fit_the_first_signal_is_only_recorded():
    signals = Signals()
    with signals.installed():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert signals.received == signal.SIGINT


def test_ctrl_c_in_the_middle_of_a_checkpoint_write_comes_after_it_and_the_file_is_whole(tmp_path):
    """A KeyboardInterrupt raised inside torch.save's writer turns into torch's "enforce fail", the
    write is lost and the run said "cannot write ... free space". A stop signal during the write now
    waits for it: the checkpoint is whole, then the interrupt is raised as usual."""
    import torch

    from adalase_tune.checkpoint import atomic_save, safe_load

    state = {"w": torch.arange(40_000_000, dtype=torch.float32)}  # 160 MB: a write long enough to hit
    path = tmp_path / "last.pt"
    mid_write = []

    def interrupt_mid_write() -> None:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(".last.pt.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        mid_write.append(bool(list(tmp_path.glob(".last.pt.*.tmp"))))

    sender = threading.Thread(target=interrupt_mid_write)
    sender.start()
    with pytest.raises(KeyboardInterrupt):
        atomic_save(state, path)
        time.sleep(5)  # the interrupt comes after the save, not never
    sender.join()
    assert mid_write == [True], "the signal came after the write: make the state larger"
    assert torch.equal(safe_load(path)["w"], state["w"])
    assert not list(tmp_path.glob("*.tmp"))


def test_ctrl_c_inside_an_mlflow_write_of_train_comes_after_it_and_the_run_ends_killed(tmp_path):
    """`adalase-tune train`, Ctrl-C as an epoch's metrics are written: a KeyboardInterrupt raised
    inside SQLAlchemy's flush left SQLite's write lock taken, and ending the run KILLED failed with
    "database is locked" (exit 1; CI). The signal now waits for the write: the epoch is in the store,
    then the interrupt is raised, and the run ends KILLED."""
    import sqlite3

    import sqlalchemy
    from mlflow.tracking import MlflowClient

    from adalase_tune.tracking import Tracking
    from adalase_tune.tracking.train_run import TrainRun

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    run = TrainRun(Tracking(uri, "t"))
    run.logger = run.tracking.run_logger("train", {"run_kind": "train"}, {})
    inside = []

    def interrupt(conn, cursor, statement, *args):  # in the main thread: the row written, not committed
        if statement.startswith("INSERT INTO metrics") and not inside:
            inside.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", interrupt)
    committed = None
    try:
        run.on_epoch_end(None, {"epoch": 1, "val/acc": 0.5, "train/loss": 1.0})
    except KeyboardInterrupt:  # by then the epoch is committed: another connection reads it
        with sqlite3.connect(tmp_path / "m.db") as db:
            committed = db.execute("SELECT count(*) FROM metrics WHERE key = 'val/acc'").fetchone()[0]
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "after_cursor_execute", interrupt)
    assert inside == [True] and committed == 1
    run.on_exception(None, KeyboardInterrupt())
    client = MlflowClient(uri)
    ended = client.get_run(run.logger.run_id)
    assert ended.info.status == "KILLED"
    assert [m.value for m in client.get_metric_history(ended.info.run_id, "val/acc")] == [0.5]
