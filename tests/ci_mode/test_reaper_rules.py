"""Which tagged resources the reaper removes, and why: the rules as data, and the identities they rest on."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest

from gpuprov.infra import records
from gpuprov.infra.host import utcnow
from gpuprov.infra.lease import CiLease
from gpuprov.infra.owner import LABEL, OwnerUnknown, owner_label, owner_reference
from gpuprov.infra.reaper import Sweep, TtlPolicy
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_ORIGIN, TAG_OWNER

NOW = utcnow()
GRACE = timedelta(minutes=30)
ME, COLLEAGUE = owner_label("me@m1"), owner_label("colleague@m2")


def tags(created_ago: timedelta, ttl: timedelta, owner: str = COLLEAGUE, origin: str = "stack") -> dict[str, str]:
    created = NOW - created_ago
    return {TAG_CREATED_AT: str(int(created.timestamp())), TAG_EXPIRES_AT: str(int((created + ttl).timestamp())),
            TAG_OWNER: owner, TAG_ORIGIN: origin}


def policy(grace: timedelta = GRACE, abandoned: frozenset[str] = frozenset(), sweep: str | None = None,
           only_stack: str | None = None) -> TtlPolicy:
    return TtlPolicy(NOW, grace, set(abandoned), only_stack, ME, Sweep(sweep, grace) if sweep else None)


H1, H12 = timedelta(hours=1), timedelta(hours=12)


@pytest.mark.parametrize("grace", [timedelta(0), GRACE, timedelta(days=1)])
@pytest.mark.parametrize("origin", ["stack", "ci"])
def test_a_colleagues_live_host_is_kept_at_every_grace(grace, origin):
    """No record here, no lease here, old enough: still not ours to judge, at any grace (0 included)."""
    p = policy(grace)
    t = tags(H1, H12, COLLEAGUE, origin)
    assert p.instance_reason("theirs", t) is None
    assert p.dependent_reason("theirs", t, doomed=set(), live={"theirs"}) is None


@pytest.mark.parametrize("owner", [ME, COLLEAGUE])
def test_expiry_wins_for_everyone(owner):
    assert policy(timedelta(0)).instance_reason("a", tags(timedelta(hours=13), H12, owner)) == "expired"


def test_a_pulumi_up_stack_with_no_record_is_never_an_orphan_even_when_its_owner_is_swept():
    records.forget("mine")  # nothing here knows it
    assert policy(timedelta(0), sweep="me@m1").instance_reason("mine", tags(H1, H12, ME, "stack")) is None


def test_abandoned_only_for_the_callers_own_resources():
    p = policy(abandoned=frozenset({"a"}))
    assert p.instance_reason("a", tags(H1, H12, ME)) == "abandoned"
    assert p.instance_reason("a", tags(H1, H12, COLLEAGUE)) is None  # a colleague's stack of the same name


def test_the_orphan_sweep_takes_only_the_named_owners_ci_hosts_past_the_grace():
    p = policy(sweep="colleague@m2")
    assert p.instance_reason("ci-1", tags(H1, H12, COLLEAGUE, "ci")) == "orphaned"
    assert p.instance_reason("ci-2", tags(timedelta(minutes=5), H12, COLLEAGUE, "ci")) is None  # launching now
    assert p.instance_reason("ci-3", tags(H1, H12, ME, "ci")) is None  # not the named owner
    assert p.instance_reason("dev", tags(H1, H12, COLLEAGUE, "stack")) is None  # a stack: its expiry decides


def test_keys_and_rulesets_go_with_their_instances_or_past_their_own_grace():
    p = policy(timedelta(0))
    untagged: dict[str, str] = {}  # a Lambda SSH key: no tags, no creation time
    assert p.dependent_reason("a", untagged, doomed={"a"}, live=set()) == "with-instance"
    assert p.dependent_reason("a", untagged, doomed={"a"}, live={"a"}) is None  # another instance of it stays
    assert p.dependent_reason("a", untagged, doomed=set(), live=set()) is None  # no creation time: kept
    young = {TAG_CREATED_AT: str(int((NOW - timedelta(minutes=10)).timestamp()))}  # a launch in flight elsewhere
    old = {TAG_CREATED_AT: str(int((NOW - timedelta(minutes=31)).timestamp()))}
    assert p.dependent_reason("a", young, doomed=set(), live=set()) is None  # grace 0 does not go below 30 min
    assert p.dependent_reason("a", old, doomed=set(), live=set()) == "dangling"


def test_a_teardown_takes_only_the_callers_stack_of_that_name():
    p = policy(only_stack="dev")
    assert p.instance_reason("dev", tags(H1, H12, ME)) == "stack-teardown"
    assert p.instance_reason("dev", tags(H1, H12, COLLEAGUE)) is None
    assert p.instance_reason("other", tags(H1, H12, ME)) is None


# --- owner references -----------------------------------------------------------------------------


def test_owner_reference_from_github_actions_a_person_and_an_override():
    assert owner_reference({"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "Org/Repo.x"}) == "gha:org/repo.x"
    machine = open("/etc/machine-id").read().strip()
    assert owner_reference({"USER": "alice"}) == f"alice@{machine}"
    assert owner_reference({"GPUPROV_OWNER": "team@lab", "GITHUB_ACTIONS": "true"}) == "team@lab"
    with pytest.raises(OwnerUnknown):
        owner_reference({"GPUPROV_OWNER": "a b; rm -rf /"})


@pytest.mark.parametrize("ref", ["gha:org/a_b-c", "gha:org-a/b_c", "gha:org/a-b_c", "x" * 128 + "@m",
                                 "Alice@3d1219c7c4c5404aaa1f6d2a48adfda4"])
def test_owner_labels_are_valid_gcp_label_values_and_never_shared(ref):
    label = owner_label(ref)
    assert LABEL.fullmatch(label) and len(label) <= 63
    others = {"gha:org/a_b-c", "gha:org-a/b_c", "gha:org/a-b_c", "gha:org_a/b-c"} - {ref}
    assert label not in {owner_label(o) for o in others}


# --- CI leases ------------------------------------------------------------------------------------


def _rewrite(stack: str, **fields: object) -> None:
    data = json.loads(CiLease.path(stack).read_text())
    data.update(fields)
    CiLease.path(stack).write_text(json.dumps(data))


def test_a_lease_is_abandoned_only_when_its_process_is_provably_gone():
    CiLease.claim("leased", "lambda", 600)
    lease = CiLease.load("leased")
    assert lease is not None and lease.mine and not lease.abandoned  # this test's own process holds it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _rewrite("leased", pid=int(dead.stdout))
    assert CiLease.load("leased").abandoned  # type: ignore[union-attr]  # same machine, boot, namespace; pid free


def test_a_reused_pid_does_not_make_a_live_lease_look_abandoned_or_a_dead_one_alive():
    CiLease.claim("reused", "lambda", 600)
    other = subprocess.Popen(["sleep", "30"])  # a pid that runs, but is not the lease's process
    try:
        _rewrite("reused", pid=other.pid)  # the recorded start time is ours, not sleep's: the pid was reused
        assert CiLease.load("reused").abandoned  # type: ignore[union-attr]
    finally:
        other.kill()
        other.wait()
    for field, value in [("machine_id", "0" * 32), ("boot_id", "another-boot"), ("pid_ns", "pid:[1]"),
                         ("machine_id", "")]:
        CiLease.claim("elsewhere", "lambda", 600)
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        _rewrite("elsewhere", pid=int(dead.stdout), **{field: value})  # the pid is free *here*, which proves nothing
        assert not CiLease.load("elsewhere").abandoned, field  # type: ignore[union-attr]


def test_a_ci_run_elsewhere_on_a_shared_home_is_never_taken_over():
    """A lease written on another machine with a pid that is free here: a new run refuses, and tears nothing down."""
    from tests.conftest import run_cli

    CiLease.claim("shared", "local", 600)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _rewrite("shared", pid=int(dead.stdout), machine_id="f" * 32)
    result = run_cli("ci", "--cloud", "local", "--no-deploy", "--stack", "shared", "--", "true")
    assert result.returncode == 90, result.stderr
    assert "held by a gpuprov ci on another machine, boot or container" in result.stderr
    assert CiLease.load("shared") is not None  # still theirs
    reaped = run_cli("reap", "--json")
    assert json.loads(reaped.stdout)["stacks_torn_down"] == []
