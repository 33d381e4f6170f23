"""Interrupts: SIGINT, SIGTERM and SIGHUP stop the work honestly (no traceback, runs closed, a
resume hint).

:class:`Signals` turns SIGTERM and SIGHUP (the terminal closed) into the same path as Ctrl-C.
Inside a Ray Tune fit the first signal asks Tune to stop gracefully (Tune saves its state for
``--resume``, and the trials that did not finish are reported as such); anywhere else, or on a
second signal, it raises KeyboardInterrupt at once. :class:`Interrupted` carries the signal and
a message with what finished and how to resume; the command line exits with 128 + the signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, NoReturn, Optional, Union

# what signal.signal takes and returns (typeshed names it signal._HANDLER, which is private)
Handler = Union[Callable[[int, Optional[FrameType]], Any], int, signal.Handlers, None]

# the signals that stop the work alike: Ctrl-C, a kill, the terminal closing
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(KeyboardInterrupt):
    """The work stopped on SIGINT or SIGTERM; runs are closed KILLED. ``exit_code`` is 128 + signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum, self.message = signum, message

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside a Tune fit: raised like Ctrl-C's KeyboardInterrupt, remembering the signal."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__()
        self.signum = signum


class Signals:
    """SIGINT, SIGTERM and SIGHUP, handled alike, for sweeps and benchmarks.

    Inside a Tune fit, the first signal stops Tune gracefully (SIGINT reaches Tune's own handler;
    SIGTERM and SIGHUP are passed on as SIGUSR1, Tune's other stop signal) and Tune saves its state for
    ``--resume``. Outside a fit, the first signal is only recorded and the work stops at the next
    safe point (:attr:`received`), so that no library call (an MLflow query, a file write) is cut
    in half. A second signal raises KeyboardInterrupt at once.
    """

    def __init__(self, deferred: bool = True):
        self.received: Optional[int] = None
        self.in_fit = False
        self.deferred = deferred  # False (a training loop): the first signal raises at once

    def handler(self, signum: int, frame: Optional[FrameType]) -> None:
        # once Tune's fit is under way it holds SIGINT: this handler sees a SIGINT only after Tune took the first
        tune_had_it = self.in_fit and self._tune_listens() and signum == signal.SIGINT
        if self.received is None and (self.deferred or self.in_fit) and not tune_had_it:
            self.received = signum
            if self.in_fit:
                self._stop_tune()
            return
        self.received = self.received or signum
        raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)

    @staticmethod
    def _not_yet(signum: int, frame: Optional[FrameType]) -> None:
        """SIGUSR1 between the start of a fit and the moment Tune takes it: ignored (its default ends the process)."""

    def _tune_listens(self) -> bool:
        return hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) not in (self._not_yet, signal.SIG_DFL)

    def _stop_tune(self) -> None:
        """Send Tune its graceful stop (SIGUSR1); if the fit has not yet installed Tune's handler,
        wait for it in a thread, so that a signal in the first instants of a fit is not lost."""
        if not hasattr(signal, "SIGUSR1"):
            return
        if self._tune_listens():
            os.kill(os.getpid(), signal.SIGUSR1)
            return

        def when_ready() -> None:
            while self.in_fit and not self._tune_listens():
                time.sleep(0.05)
            if self.in_fit:
                os.kill(os.getpid(), signal.SIGUSR1)

        threading.Thread(target=when_ready, daemon=True, name="adalase-stop-tune").start()

    def _install(self) -> dict[signal.Signals, Handler]:
        if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.handler) for sig in STOP_SIGNALS}

    @contextlib.contextmanager
    def installed(self) -> Iterator[Signals]:
        previous = self._install()
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def reclaim(self) -> None:
        """Take the signals back after ``ray.init``, which installs a C handler for SIGTERM that
        dumps a stack and aborts the driver."""
        self._install()

    @contextlib.contextmanager
    def fitting(self) -> Iterator[None]:
        """Around a Tune fit: SIGUSR1 is parked on a no-op until Tune installs its own handler."""
        park = hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGUSR1, self._not_yet) if park else None
        self.in_fit = True
        try:
            yield
        finally:
            self.in_fit = False
            if park:
                signal.signal(signal.SIGUSR1, previous)

    def signum(self) -> int:
        return self.received or signal.SIGINT


def install_for_command() -> None:
    """For the command line, first thing: SIGTERM and SIGHUP raise :class:`Terminated` (Python's
    default would end the process at once, with no message and runs left RUNNING)."""

    def terminate(signum: int, frame: Optional[FrameType]) -> NoReturn:
        raise Terminated(signum)

    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS[1:]:
            signal.signal(sig, terminate)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """A stop signal that arrives in the block is acted on when the block ends, by the handler that
    was in place. For a file write: a KeyboardInterrupt raised inside torch.save's writer turns into
    its "enforce fail", and the write would be lost. Handlers run in the main thread only, so
    elsewhere (a Ray trial's thread) this holds nothing and needs to hold nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    held = {sig: h for sig, h in held.items() if h is not None}  # a handler set outside Python stays
    for sig in held:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        for signum in caught:
            signal.raise_signal(signum)
