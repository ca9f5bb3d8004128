"""The reaper on Compute Engine, against the Compute REST stand-in, from a fresh home that knows no stack:
the expired instance goes with its firewall rule; a colleague's live one, and its rule, stay at any grace."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gpuprov.infra.host import utcnow
from gpuprov.infra.owner import owner_label
from gpuprov.infra.reaper import reap
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_MANAGED, TAG_ORIGIN, TAG_OWNER, TAG_STACK
from gpuprov.testing.compute_api import ComputeStandIn
from tests.gcp.conftest import compute  # noqa: F401  (the shared stand-in fixture)

PROJECT = "gpuprov-test"


def labels(stack: str, expires_in: timedelta, owner: str = "colleague@m2", origin: str = "stack") -> dict[str, str]:
    now = utcnow()
    return {TAG_MANAGED: "true", TAG_STACK: stack, TAG_CREATED_AT: str(int((now - timedelta(hours=1)).timestamp())),
            TAG_EXPIRES_AT: str(int((now + expires_in).timestamp())), TAG_OWNER: owner_label(owner),
            TAG_ORIGIN: origin}


@pytest.mark.parametrize("grace", [timedelta(0), timedelta(minutes=30)])
def test_reap_deletes_the_expired_instance_and_its_rule_and_keeps_a_colleagues(
        compute: ComputeStandIn, monkeypatch: pytest.MonkeyPatch, grace: timedelta):  # noqa: F811
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("GPUPROV_OWNER", "me@m1")
    compute.add_instance(PROJECT, "us-central1-a", "gpuprov-old", labels("old", timedelta(minutes=-1)))
    compute.add_firewall(PROJECT, "gpuprov-old-ssh", ["gpuprov-old"], ["203.0.113.0/24"])
    compute.add_instance(PROJECT, "us-central1-a", "gpuprov-live", labels("live", timedelta(hours=2)))
    compute.add_firewall(PROJECT, "gpuprov-live-ssh", ["gpuprov-live"], ["203.0.113.0/24"])
    compute.add_firewall(PROJECT, "default-allow-ssh", ["web"], ["0.0.0.0/0"])  # not ours

    report = reap(["gcp"], grace=grace)  # nothing in this home knows "live": it is someone else's
    assert report.ok, report.errors
    assert sorted((f.item.kind, f.item.id, f.reason) for f in report.removed) == [
        ("firewall", "gpuprov-old-ssh", "with-instance"), ("instance", "gpuprov-old", "expired")]
    from gpuprov.infra.clouds.gcp import sdk

    assert [i.name for i in sdk.ComputeApi(compute.url).find_labelled_instances(PROJECT)] == ["gpuprov-live"]
    assert [f.name for f in sdk.ComputeApi(compute.url).find_gpuprov_firewalls(PROJECT)] == ["gpuprov-live-ssh"]


def test_the_owner_sweep_takes_only_that_owners_ci_instances(compute: ComputeStandIn,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    compute.add_instance(PROJECT, "us-central1-a", "gpuprov-ci-a", labels("ci-a", timedelta(hours=1), "gha:org/a", "ci"))
    compute.add_instance(PROJECT, "us-central1-a", "gpuprov-ci-b", labels("ci-b", timedelta(hours=1), "gha:org/b", "ci"))
    compute.add_instance(PROJECT, "us-central1-a", "gpuprov-dev", labels("dev", timedelta(hours=1), "gha:org/a"))
    report = reap(["gcp"], sweep_owner="gha:org/a", grace=timedelta(minutes=30))
    assert report.ok, report.errors
    assert [(f.item.id, f.reason) for f in report.removed] == [("gpuprov-ci-a", "orphaned")]


def test_extend_moves_the_expiry_label_and_the_instance_survives_its_first_expiry(
        compute: ComputeStandIn, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    from tests.conftest import run_cli

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    compute.add_instance(PROJECT, "us-central1-a", "gpuprov-dev", labels("dev", timedelta(seconds=2), "me@m1"))
    result = run_cli("extend", "--cloud", "gcp", "--stack", "dev", "--hours", "1", env={"GPUPROV_OWNER": "me@m1"})
    assert result.returncode == 0, result.stderr
    assert "1 cloud resource(s) retagged" in result.stdout
    report = reap(["gcp"], now=utcnow() + timedelta(minutes=30))  # past the first expiry, before the new one
    assert report.ok and report.found == []
    set_labels = ("POST", f"/compute/v1/projects/{PROJECT}/zones/us-central1-a/instances/gpuprov-dev/setLabels")
    assert set_labels in compute.requests
