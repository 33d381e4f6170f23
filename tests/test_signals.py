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
