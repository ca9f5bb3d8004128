"""Where the minutes of an ``up`` / ``deploy`` / ``ci`` went: seconds per phase, in the order they ran.

Phases (:data:`PHASES`): ``launch`` (the cloud accepted the launch and the machine booted: the
backends report both as one wait), ``ssh_ready``, ``bootstrap`` (facts, Docker/NVIDIA setup, files,
uploads), ``image_pull`` / ``image_build`` (told apart by the batch's own markers: a pull that finds
no image falls through to a build), ``services_started`` (compose up) and ``service_healthy`` (every
health check answers; a model download at container start is inside it).

Each finished phase is said on the progress callback as one plain line (``phase image_pull: 3.2 s``);
on a terminal the live spinner of ``deploy`` shows the elapsed time meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PHASES = ("launch", "ssh_ready", "bootstrap", "image_pull", "image_build", "services_started", "service_healthy")
MARKER = "@@gpuprov-phase "  # a batch line that starts a phase


class Phases:
    """A stopwatch per phase; re-entering a phase adds to it."""

    def __init__(self, say: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.seconds: dict[str, float] = {}
        self._say = say or (lambda _m: None)
        self._clock = clock
        self._current: str | None = None
        self._since = 0.0

    @property
    def current(self) -> str | None:
        return self._current

    def begin(self, name: str) -> None:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}")
        if name == self._current:
            return
        self.end()
        self._current, self._since = name, self._clock()

    def end(self) -> None:
        if self._current is None:
            return
        spent = self._clock() - self._since
        self.seconds[self._current] = self.seconds.get(self._current, 0.0) + spent
        self._say(f"phase {self._current}: {spent:.1f} s")
        self._current = None

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}

    def line(self) -> str:
        return ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()) or "none recorded"


def describe(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items()) or "none recorded"
