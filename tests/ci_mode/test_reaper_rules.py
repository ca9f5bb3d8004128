"""Which tagged resources the reaper removes, and why: the rules as data."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from gpuprov.infra import records
from gpuprov.infra.host import GpuHost, utcnow
from gpuprov.infra.lease import CiLease
from gpuprov.infra.reaper import reason_for, stack_known_here
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT

NOW = utcnow()
GRACE = timedelta(minutes=30)


def tags(created_ago: timedelta, ttl: timedelta) -> dict[str, str]:
    created = NOW - created_ago
    return {TAG_CREATED_AT: str(int(created.timestamp())), TAG_EXPIRES_AT: str(int((created + ttl).timestamp()))}


@pytest.mark.parametrize("stack, known, abandoned, created_ago, ttl, expected", [
    ("a", True, False, timedelta(hours=13), timedelta(hours=12), "expired"),  # expiry wins, even for a known stack
    ("a", True, False, timedelta(hours=1), timedelta(hours=12), None),  # a stack this machine runs
    ("a", True, True, timedelta(hours=1), timedelta(hours=12), "abandoned"),  # its gpuprov ci process is gone
    ("a", False, False, timedelta(hours=1), timedelta(hours=12), "orphaned"),  # nobody here has it
    ("a", False, False, timedelta(minutes=5), timedelta(hours=12), None),  # maybe launching elsewhere right now
    (None, False, False, timedelta(hours=1), timedelta(hours=12), None),  # no stack tag: never guessed at
])
def test_reason(stack, known, abandoned, created_ago, ttl, expected):
    if known:
        records.save("a", "lambda", GpuHost(cloud="lambda", address="192.0.2.1", ssh_user="ubuntu"))
    assert reason_for(stack, tags(created_ago, ttl), NOW, GRACE, {"a"} if abandoned else set()) == expected


def test_a_lease_counts_only_while_its_process_runs():
    CiLease.claim("leased", "lambda", 600)
    assert stack_known_here("leased")  # this test's own process holds it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease = CiLease.load("leased")
    assert lease is not None
    lease.pid = int(dead.stdout)
    CiLease.path("leased").write_text(__import__("json").dumps(lease.__dict__))
    assert not CiLease.load("leased").alive  # type: ignore[union-attr]
    assert not stack_known_here("leased")  # a dead lease means the stack is up for grabs
    assert os.getpid() != lease.pid
