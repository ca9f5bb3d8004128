"""The reaper on Compute Engine, against the Compute REST stand-in: an expired instance goes with its firewall rule."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gpuprov.infra.host import utcnow
from gpuprov.infra.reaper import reap
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_MANAGED, TAG_STACK
from gpuprov.testing.compute_api import ComputeStandIn
from tests.gcp.conftest import compute  # noqa: F401  (the shared stand-in fixture)

PROJECT = "gpuprov-test"


def labels(stack: str, expires_in: timedelta) -> dict[str, str]:
    now = utcnow()
    return {TAG_MANAGED: "true", TAG_STACK: stack, TAG_CREATED_AT: str(int((now - timedelta(hours=1)).timestamp())),
            TAG_EXPIRES_AT: str(int((now + expires_in).timestamp()))}


def test_reap_deletes_the_expired_instance_and_its_firewall_rule(compute: ComputeStandIn,  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    compute.add_instance(PROJECT, "us-central1-a", "gpuprov-old", labels("old", timedelta(minutes=-1)))
    compute.add_firewall(PROJECT, "gpuprov-old-ssh", ["gpuprov-old"], ["203.0.113.0/24"])
    compute.add_instance(PROJECT, "us-central1-a", "gpuprov-live", labels("live", timedelta(hours=2)))
    compute.add_firewall(PROJECT, "gpuprov-live-ssh", ["gpuprov-live"], ["203.0.113.0/24"])
    compute.add_firewall(PROJECT, "default-allow-ssh", ["web"], ["0.0.0.0/0"])  # not ours
    from gpuprov.infra import records
    from gpuprov.infra.host import GpuHost

    records.save("live", "gcp", GpuHost(cloud="gcp", address="192.0.2.3", ssh_user="ubuntu"))

    report = reap(["gcp"])
    assert report.ok, report.errors
    assert sorted((f.item.kind, f.item.id, f.reason) for f in report.removed) == [
        ("firewall", "gpuprov-old-ssh", "expired-with-instance"), ("instance", "gpuprov-old", "expired")]
    from gpuprov.infra.clouds.gcp import sdk

    assert [i.name for i in sdk.ComputeApi(compute.url).find_labelled_instances(PROJECT)] == ["gpuprov-live"]
    assert [f.name for f in sdk.ComputeApi(compute.url).find_gpuprov_firewalls(PROJECT)] == ["gpuprov-live-ssh"]
