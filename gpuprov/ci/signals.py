"""Signals during a ``gpuprov ci`` run: raise at once, wait for the cloud calls in flight (``up``), or
only note them (teardown, which no signal may cut short)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any


class CiSignal(BaseException):  # noqa: N818  (BaseException: library `except Exception` must not swallow it)
    """SIGINT or SIGTERM arrived while the run could stop."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received")


class CiTimeout(BaseException):  # noqa: N818
    """The run's time limit passed."""


class RunSignals:
    """SIGINT/SIGTERM/SIGALRM while a run is in flight: raise at once, defer (up), or note only (teardown)."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress = progress
        self.mode = "raise"
        self.pending: list[BaseException] = []
        self.noted: list[str] = []
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            self._old[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._old.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        exc: BaseException = CiTimeout() if signum == signal.SIGALRM else CiSignal(signum)
        name = "time limit" if signum == signal.SIGALRM else signal.Signals(signum).name
        if self.mode == "raise":
            # One exception only: whatever comes after it is teardown, which no later signal may cut short.
            self.teardown_mode()
            raise exc
        if self.mode == "defer":
            self.pending.append(exc)
            self.progress(f"{name}: waiting for the cloud calls in flight to finish, then tearing down")
            return
        self.noted.append(name)
        self.progress(f"{name} during teardown: teardown goes on (a kill -9 now leaves resources for `gpuprov reap`)")

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.mode = "defer"
        try:
            yield
        except BaseException as err:
            self.teardown_mode()
            if self.pending:  # the cloud code stopped because of the signal (a launch cancels itself)
                raise self.pending.pop(0) from err
            raise
        if self.pending:
            self.teardown_mode()
            raise self.pending.pop(0)
        self.mode = "raise"

    def teardown_mode(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.mode = "teardown"
