"""Where the minutes of an ``up`` / ``deploy`` / ``ci`` went: seconds per phase, in the order they ran.

Phases (:data:`PHASES`):

- ``launch``: until the cloud accepted the launch. A backend that sees the acceptance itself says so
  with :func:`note` (Lambda's launch, when its provider runs in this process); otherwise the backend's
  whole wait, up to the instance the cloud reports running, is ``launch``.
- ``boot``: from there until the host's SSH port answers with the SSH banner (the OS booting, sshd up).
- ``ssh_ready``: from the banner until gpuprov is logged in (key exchange, host key check, the key).
- ``bootstrap``: facts, Docker/NVIDIA setup, files, uploads.
- ``image_pull`` / ``image_build``: told apart by the batch's own markers (a pull that finds no image
  falls through to a build).
- ``services_started``: compose up.
- ``model_download`` / ``model_cache_hit``: from compose up until every model server (an app's
  ``model_services``) answers its health check: it downloads its model at first start, or finds it
  in the stack's kept cache (``model_cache_hit``: the deploy's facts saw the cache warm).
- ``service_healthy``: until every other health check answers.

Each finished phase is said on the progress callback as one plain line (``phase image_pull: 3.2 s``);
on a terminal :mod:`gpuprov.cli.phase_display` shows the phases live meanwhile, with bytes for image
pulls and the model download.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PHASES = ("launch", "boot", "ssh_ready", "bootstrap", "image_pull", "image_build", "services_started",
          "model_download", "model_cache_hit", "service_healthy")
MARKER = "@@gpuprov-phase "  # a batch line that starts a phase


_ACTIVE: list[Phases] = []  # the stopwatch of the `up` / `ci` running in this process, for note()


def note(name: str) -> None:
    """Begin ``name`` on the stopwatch of the running `up` / `ci`, if any (a backend that sees a phase
    boundary itself, such as Lambda's launch being accepted, says so here; without one it is a no-op)."""
    if _ACTIVE:
        _ACTIVE[-1].begin(name)


class Phases:
    """A stopwatch per phase; re-entering a phase adds to it."""

    def __init__(self, say: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.seconds: dict[str, float] = {}
        self._say = say or (lambda _m: None)
        self._clock = clock
        self._current: str | None = None
        self._since = 0.0
        # Told each phase as it begins (seconds None) and ends (its seconds): the live display's feed.
        self.listeners: list[Callable[[str, float | None], None]] = []

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
        for listen in list(self.listeners):
            listen(name, None)

    def end(self) -> None:
        if self._current is None:
            return
        spent = self._clock() - self._since
        self.seconds[self._current] = self.seconds.get(self._current, 0.0) + spent
        name, self._current = self._current, None
        for listen in list(self.listeners):
            listen(name, spent)
        self._say(f"phase {name}: {spent:.1f} s")

    @contextmanager
    def watching(self) -> Iterator[Phases]:
        """While inside, :func:`note` reaches this stopwatch."""
        _ACTIVE.append(self)
        try:
            yield self
        finally:
            _ACTIVE.remove(self)

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}

    def line(self) -> str:
        return ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()) or "none recorded"


def describe(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items()) or "none recorded"
