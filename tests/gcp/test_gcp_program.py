"""GcpGpuHost on Pulumi's mock runtime: GPU scheduling, spot fields, firewall ranges, SSH key, labels."""

from __future__ import annotations

from typing import Any

from gpuprov.infra.clouds.gcp import program
from gpuprov.infra.clouds.gcp.sdk import DLVM_FAMILY, DLVM_PROJECT
from gpuprov.infra.config import build_config
from gpuprov.infra.host import GpuHost
from gpuprov.infra.mock_runtime import EngineMocks, run_program
from gpuprov.infra.plan import placeholders
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_MANAGED, TAG_STACK

PLACEHOLDER_CALLS, placeholder_outputs = placeholders("gcp")

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx1bGxhYnkgdGVzdCBrZXkgZm9yIGdwdXByb3Y test@gpuprov"
FIREWALL = "gcp:compute/firewall:Firewall"
INSTANCE = "gcp:compute/instance:Instance"


def run_gcp(image: str | None = None, **values: Any) -> tuple[dict[str, list[dict[str, Any]]], GpuHost, list]:
    values.setdefault("egress_cidr", "203.0.113.7/32")  # as `gpuprov up` detects it
    cfg = build_config({"cloud": "gcp", "stack": "t2", "owner": "ada", "ssh_public_key": KEY, **values})
    invoked: list = []

    def image_lookup(args):
        invoked.append(dict(args.args))
        return PLACEHOLDER_CALLS["gcp:compute/getImage:getImage"](args)

    mocks = EngineMocks(calls={"gcp:compute/getImage:getImage": image_lookup}, output_defaults=placeholder_outputs)
    outputs = run_program(lambda: {"host": program.GcpGpuHost("gpuprov-t2", cfg, image=image).host}, mocks, stack="t2")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in mocks.resources:
        by_type.setdefault(r.type, []).append({"name": r.name, **r.inputs})
    return by_type, GpuHost.model_validate(outputs["host"]), invoked


def test_defaults_g2_with_its_l4_terminating_on_maintenance():
    res, host, invoked = run_gcp()
    (vm,) = res[INSTANCE]
    assert (vm["machineType"], vm["zone"]) == ("g2-standard-4", "us-central1-a")
    assert vm["guestAccelerators"] == []  # the L4 is built into g2 machines

    sched = vm["scheduling"]
    assert sched["onHostMaintenance"] == "TERMINATE"  # GPUs cannot live-migrate
    assert (sched["provisioningModel"], sched["preemptible"], sched["automaticRestart"]) == ("STANDARD", False, True)
    # the Deep Learning VM family is resolved at run time, not pinned to an image that will vanish
    assert invoked == [{"family": DLVM_FAMILY, "project": DLVM_PROJECT}]
    assert DLVM_FAMILY in vm["bootDisk"]["initializeParams"]["image"]
    assert vm["bootDisk"]["autoDelete"] is True and vm["bootDisk"]["initializeParams"]["size"] >= 100
    assert vm["metadata"]["ssh-keys"] == f"gpuprov:{KEY}"
    assert vm["metadata"]["block-project-ssh-keys"] == "true"
    assert "serviceAccount" not in vm  # the host needs no Google API
    assert (host.cloud, host.ssh_user, host.gpu, host.usd_hour, host.region) == ("gcp", "gpuprov", "L4", 0.71,
                                                                                  "us-central1")


def test_n1_gets_its_t4_attached():
    res, _host, _ = run_gcp(instance_type="n1-standard-4")
    (vm,) = res[INSTANCE]
    assert vm["guestAccelerators"] == [{"type": "nvidia-tesla-t4", "count": 1}]


def test_labels_and_network_tag_mark_the_stack():
    res, host, _ = run_gcp(max_lifetime_hours=3)
    (vm,) = res[INSTANCE]
    labels = vm["labels"]
    assert labels[TAG_MANAGED] == "true" and labels[TAG_STACK] == "t2"
    assert int(labels[TAG_EXPIRES_AT]) - int(labels[TAG_CREATED_AT]) == 3 * 3600
    assert vm["bootDisk"]["initializeParams"]["labels"] == labels
    assert vm["tags"] == ["gpuprov-t2"]
    assert all(fw["targetTags"] == ["gpuprov-t2"] for fw in res[FIREWALL])  # rules reach this VM only
    assert host.expires_at is not None and host.launched_at is not None
    assert (host.expires_at - host.launched_at).total_seconds() == 3 * 3600


def test_the_vm_and_its_rules_live_on_a_network_of_the_stacks_own():
    """Not `default`, whose usual rules open SSH to the world and every port to the project's VMs."""
    res, _, _ = run_gcp(allowed_cidrs=["198.51.100.0/24"], open_ports=[8002])
    (net,) = res["gcp:compute/network:Network"]
    (subnet,) = res["gcp:compute/subnetwork:Subnetwork"]
    (vm,) = res[INSTANCE]
    assert net["autoCreateSubnetworks"] is False and subnet["region"] == "us-central1"
    nic = vm["networkInterfaces"][0]
    assert nic["network"] != "default" and nic["network"] == subnet["network"] and nic["subnetwork"]
    assert {fw["network"] for fw in res[FIREWALL]} == {nic["network"]}


def test_no_allowed_cidrs_ssh_only_from_the_detected_egress_address_and_nothing_else():
    res, _, _ = run_gcp()  # egress_cidr as `gpuprov up` detects it
    (rule,) = res[FIREWALL]
    assert rule["sourceRanges"] == ["203.0.113.7/32"]
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["22"]}] and rule["direction"] == "INGRESS"
    assert "egress address (detected)" in rule["description"]
    res, _, _ = run_gcp(egress_cidr=None)  # no address known to the component: no rule at all, never the world
    assert res.get(FIREWALL, []) == []


def test_ssh_cidrs_can_name_the_iap_range():
    res, _, _ = run_gcp(ssh_cidrs=[program.IAP_RANGE], egress_cidr="203.0.113.7/32")
    (rule,) = res[FIREWALL]
    assert rule["sourceRanges"] == ["35.235.240.0/20"] and "from ssh_cidrs" in rule["description"]


def test_firewall_source_ranges_come_from_config_split_by_ip_version():
    res, _, _ = run_gcp(allowed_cidrs=["198.51.100.0/24", "2001:db8::/48"], open_ports=[8002, 3000])
    rules = {fw["name"]: fw for fw in res[FIREWALL]}
    assert set(rules) == {"gpuprov-t2-ssh", "gpuprov-t2-ssh-v6", "gpuprov-t2-services", "gpuprov-t2-services-v6"}
    assert rules["gpuprov-t2-ssh"]["sourceRanges"] == ["198.51.100.0/24"]
    assert rules["gpuprov-t2-ssh-v6"]["sourceRanges"] == ["2001:db8::/48"]
    assert rules["gpuprov-t2-services"]["allows"] == [{"protocol": "tcp", "ports": ["3000", "8002"]}]
    assert all("0.0.0.0/0" not in fw["sourceRanges"] for fw in res[FIREWALL])


def test_allow_public_is_marked_on_the_rules():
    res, _, _ = run_gcp(allowed_cidrs=["0.0.0.0/0"], allow_public=True, open_ports=[3000])
    assert all(program.ALLOW_PUBLIC_MARKER in fw["description"] for fw in res[FIREWALL])
    res, _, _ = run_gcp(allowed_cidrs=["203.0.113.7/32"], open_ports=[3000])
    assert not any(program.ALLOW_PUBLIC_MARKER in fw["description"] for fw in res[FIREWALL])


def test_spot_sets_every_field_spot_needs():
    res, _, _ = run_gcp(spot=True)
    assert res[INSTANCE][0]["scheduling"] == {
        "onHostMaintenance": "TERMINATE", "provisioningModel": "SPOT", "preemptible": True,
        "automaticRestart": False, "instanceTerminationAction": "DELETE"}


def test_g2_has_its_l4_built_in_and_an_image_can_be_injected():
    res, host, invoked = run_gcp(image="projects/p/global/images/my-image", instance_type="g2-standard-4",
                                 region="europe-west4")
    (vm,) = res[INSTANCE]
    assert vm["machineType"] == "g2-standard-4" and vm.get("guestAccelerators", []) == []
    assert vm["zone"] == "europe-west4-a" and host.gpu == "L4"
    assert vm["bootDisk"]["initializeParams"]["image"] == "projects/p/global/images/my-image" and invoked == []
