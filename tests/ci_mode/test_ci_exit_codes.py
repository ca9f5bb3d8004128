"""The exit-code contract of ``gpuprov ci``, including a signal that library code wrapped in its own error."""

from __future__ import annotations

import signal

from gpuprov.ci.signals import CiSignal, CiTimeout
from gpuprov.ci.summary import EXIT_INFRA, EXIT_TIMEOUT, CiSummary
from gpuprov.ci.summary import record as _record
from gpuprov.infra.errors import GpuprovError


def recorded(exc: BaseException, phase: str = "deploy") -> CiSummary:
    summary = CiSummary(stack="s", cloud="lambda", phase=phase)
    _record(summary, exc)
    return summary


def test_each_failure_has_its_code_and_says_where():
    assert (recorded(CiSignal(signal.SIGTERM)).exit_code, recorded(CiSignal(signal.SIGINT)).exit_code) == (143, 130)
    assert recorded(CiSignal(signal.SIGTERM)).error == "SIGTERM during deploy"
    assert recorded(CiTimeout(), "health").exit_code == EXIT_TIMEOUT
    failed = recorded(GpuprovError("no capacity anywhere"), "up")
    assert (failed.exit_code, failed.outcome, failed.error) == (EXIT_INFRA, "infra-failed", "up failed: no capacity anywhere")


def test_a_signal_wrapped_by_python_is_still_the_signal():
    # A signal landing inside a class body comes out of Python as "RuntimeError: Error calling __set_name__".
    try:
        try:
            raise CiSignal(signal.SIGTERM)
        except CiSignal as sig:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance") from sig
    except RuntimeError as wrapped:
        summary = recorded(wrapped)
    assert (summary.exit_code, summary.outcome) == (143, "interrupted")
