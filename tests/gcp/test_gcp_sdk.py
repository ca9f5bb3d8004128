"""The google-cloud-compute helpers against the local STAND-IN of the Compute Engine REST API."""

from __future__ import annotations

import pytest

from gpuprov.infra.clouds.gcp import sdk
from gpuprov.infra.tags import TAG_EXPIRES_AT, TAG_MANAGED, TAG_STACK

PROJECT, ZONE = "my-project", "us-central1-a"


def _labels(stack: str) -> dict[str, str]:
    return {TAG_MANAGED: "true", TAG_STACK: stack, TAG_EXPIRES_AT: "1800000000"}


def test_image_family_resolves_to_the_current_image(compute):
    link = f"https://www.googleapis.com/compute/v1/projects/{sdk.DLVM_PROJECT}/global/images/dlvm-20261101"
    compute.images[(sdk.DLVM_PROJECT, sdk.DLVM_FAMILY)] = {"kind": "compute#image", "name": "dlvm-20261101",
                                                          "family": sdk.DLVM_FAMILY, "selfLink": link}
    assert sdk.ComputeApi(compute.url).resolve_image() == link
    assert ("GET", f"/compute/v1/projects/{sdk.DLVM_PROJECT}/global/images/family/{sdk.DLVM_FAMILY}") in compute.requests


def test_gone_image_family_says_how_to_find_a_current_one(compute):
    with pytest.raises(sdk.ImageNotFound, match="common-cu121-debian-11.*gcloud compute images list"):
        sdk.ComputeApi(compute.url).resolve_image("common-cu121-debian-11")


def test_machine_and_gpu_offer_checks(compute):
    compute.machine_types.add((ZONE, "n1-standard-4"))
    compute.accelerators.add((ZONE, "nvidia-tesla-t4"))
    assert sdk.ComputeApi(compute.url).machine_type_offered(PROJECT, ZONE, "n1-standard-4")
    assert not sdk.ComputeApi(compute.url).machine_type_offered(PROJECT, ZONE, "g2-standard-4")
    sdk.ComputeApi(compute.url).check_machine_offered(PROJECT, ZONE, "n1-standard-4", "nvidia-tesla-t4")
    with pytest.raises(sdk.NotOfferedInZone, match="accelerator nvidia-l4 is not offered in zone us-central1-a"):
        sdk.ComputeApi(compute.url).check_machine_offered(PROJECT, ZONE, "n1-standard-4", "nvidia-l4")
    with pytest.raises(sdk.NotOfferedInZone, match="machine type g2-standard-4"):
        sdk.ComputeApi(compute.url).check_machine_offered(PROJECT, ZONE, "g2-standard-4", None)


def test_finds_only_gpuprov_instances_and_firewalls_of_the_stack_and_deletes_them(compute):
    compute.add_instance(PROJECT, ZONE, "gpuprov-a-vm", _labels("a"))
    compute.add_instance(PROJECT, "europe-west4-a", "gpuprov-b-vm", _labels("b"), status="TERMINATED")
    compute.add_instance(PROJECT, ZONE, "someone-elses", {"team": "x"})
    compute.add_firewall(PROJECT, "gpuprov-a-ssh-1234", [sdk.network_tag("a")], ["35.235.240.0/20"])
    compute.add_firewall(PROJECT, "gpuprov-b-ssh-5678", [sdk.network_tag("b")], ["198.51.100.0/24"])
    compute.add_firewall(PROJECT, "default-allow-ssh", [], ["0.0.0.0/0"])

    mine = sdk.ComputeApi(compute.url).find_labelled_instances(PROJECT, stack="a")
    assert [(i.name, i.zone, i.status, i.stack) for i in mine] == [("gpuprov-a-vm", ZONE, "RUNNING", "a")]
    assert mine[0].expires_at is not None and int(mine[0].expires_at.timestamp()) == 1800000000
    everyone = sdk.ComputeApi(compute.url).find_labelled_instances(PROJECT)
    assert {(i.name, i.zone) for i in everyone} == {("gpuprov-a-vm", ZONE), ("gpuprov-b-vm", "europe-west4-a")}
    rules = sdk.ComputeApi(compute.url).find_gpuprov_firewalls(PROJECT, stack="a")
    assert [(r.name, r.stack) for r in rules] == [("gpuprov-a-ssh-1234", "a")]
    assert {r.name for r in sdk.ComputeApi(compute.url).find_gpuprov_firewalls(PROJECT)} == {"gpuprov-a-ssh-1234", "gpuprov-b-ssh-5678"}

    sdk.ComputeApi(compute.url).delete_all([*mine, *rules])
    assert sdk.ComputeApi(compute.url).find_labelled_instances(PROJECT, stack="a") == []
    assert sdk.ComputeApi(compute.url).find_gpuprov_firewalls(PROJECT, stack="a") == []
    assert ("DELETE", f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances/gpuprov-a-vm") in compute.requests
    # again, as a reaper re-running after a partial pass: nothing left, no error
    sdk.ComputeApi(compute.url).delete_instance(PROJECT, ZONE, "gpuprov-a-vm")
    sdk.ComputeApi(compute.url).delete_firewall(PROJECT, "gpuprov-a-ssh-1234")
    assert set(compute.instances) == {("europe-west4-a", "gpuprov-b-vm"), (ZONE, "someone-elses")}
    assert set(compute.firewalls) == {"gpuprov-b-ssh-5678", "default-allow-ssh"}


def test_preflight_checks_the_zone_and_resolves_the_family(compute, monkeypatch):
    compute.machine_types.add((ZONE, "n1-standard-4"))
    compute.accelerators.add((ZONE, "nvidia-tesla-t4"))
    compute.images[(sdk.DLVM_PROJECT, "other-family")] = {"name": "o", "selfLink": "projects/x/global/images/o"}
    with pytest.raises(sdk.ImageNotFound, match=sdk.DLVM_FAMILY):
        sdk.ComputeApi(compute.url).preflight(PROJECT, ZONE, "n1-standard-4", "nvidia-tesla-t4")
    assert sdk.ComputeApi(compute.url).preflight(PROJECT, ZONE, "n1-standard-4", "nvidia-tesla-t4",
                         image="family/other-family") == "projects/x/global/images/o"
    with pytest.raises(sdk.NotOfferedInZone):
        sdk.ComputeApi(compute.url).preflight(PROJECT, "europe-west4-a", "n1-standard-4", "nvidia-tesla-t4")
