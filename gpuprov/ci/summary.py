"""What one ``gpuprov ci`` run did, for CI logs (``--json`` / ``--summary FILE``), and how an exception
becomes its outcome and exit code."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from gpuprov.ci.signals import CiSignal, CiTimeout
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import utcnow

EXIT_INFRA = 90
EXIT_TIMEOUT = 91
EXIT_TEARDOWN = 92


@dataclass
class CiSummary:
    """What one ``gpuprov ci`` run did, for CI logs (``--json`` / ``--summary FILE``). Holds no secret."""

    stack: str
    cloud: str
    outcome: str = "running"  # passed | command-failed | infra-failed | timeout | interrupted | teardown-failed
    exit_code: int | None = None
    command_exit_code: int | None = None
    phase: str = "start"
    error: str | None = None
    instance_id: str | None = None
    region: str | None = None
    instance_type: str | None = None
    address: str | None = None
    usd_hour: float = 0.0
    cost_usd: float = 0.0
    teardown: str = "not-run"  # verified | failed
    teardown_error: str | None = None
    signals_during_teardown: list[str] = field(default_factory=list)
    # The stack's cache (cache: true) that teardown kept on purpose, as `status --json` lists it: it bills on.
    caches_kept: list[dict[str, Any]] = field(default_factory=list)
    deploy: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    # Seconds per phase (gpuprov.provisioning.phases.PHASES): launch, boot, ssh_ready, bootstrap,
    # image_pull/image_build, services_started, model_download/model_cache_hit, service_healthy.
    phases_s: dict[str, float] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: utcnow().isoformat())
    finished_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def timed(summary: CiSummary, phase: str) -> Iterator[None]:
    summary.phase = phase
    start = time.monotonic()
    try:
        yield
    finally:
        summary.timings_s[phase] = round(time.monotonic() - start, 3)


def _signal_in_chain(exc: BaseException) -> BaseException:
    """The CiSignal/CiTimeout behind ``exc`` when library code wrapped it (e.g. a RuntimeError from Python
    itself when the signal landed inside a class definition), else ``exc``."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, CiSignal | CiTimeout):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return exc


def record(summary: CiSummary, exc: BaseException) -> None:
    exc = _signal_in_chain(exc)
    if isinstance(exc, CiSignal):
        summary.outcome, summary.error = "interrupted", f"{signal.Signals(exc.signum).name} during {summary.phase}"
        if exc.__cause__ is not None:
            summary.error += f" ({exc.__cause__})"
        summary.exit_code = 128 + exc.signum
    elif isinstance(exc, CiTimeout):
        summary.outcome, summary.error = "timeout", f"time limit reached during {summary.phase}"
        summary.exit_code = EXIT_TIMEOUT
    elif isinstance(exc, GpuprovError):
        summary.outcome, summary.error = "infra-failed", f"{summary.phase} failed: {exc}"
        summary.exit_code = EXIT_INFRA
    else:
        summary.outcome = "infra-failed"
        summary.error = f"{summary.phase} failed unexpectedly: {type(exc).__name__}: {exc}"
        summary.exit_code = EXIT_INFRA
