"""Host keys known before the first connect on GCP: the guest agent publishes sshd's keys as guest attributes
(``hostkeys/``), gpuprov reads them through the Compute API after the launch and verifies the first connect.

The API is the Compute stand-in (built from ``instances.getGuestAttributes``' contract: a ``GuestAttributes``
with ``queryValue.items[]`` of ``{namespace, key, value}``, 404 while nothing is published); the host is a real
local sandbox box (OpenSSH), whose own key plays the published one. No GCP ``up`` runs here: the reading is
driven through its Pulumi dynamic provider, the connect through gpuprov's one SSH layer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprov.infra.clouds.gcp.host_keys import GcpHostKeysProvider, HostKeysNotPublished, wait_for_host_key
from gpuprov.infra.clouds.gcp.sdk import ComputeApi
from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.infra.config import build_config
from gpuprov.infra.host import GpuHost
from gpuprov.infra.keys import stack_keypair
from gpuprov.provisioning.errors import HostKeyChanged
from gpuprov.provisioning.ssh import Remote, known_hosts_path, target_for
from gpuprov.testing.compute_api import ComputeStandIn
from tests.conftest import need_sandbox
from tests.gcp.test_gcp_program import run_gcp

ZONE, PROJECT = "us-central1-a", "proj"
ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIHx1bGxhYnkgdGVzdCBrZXkgZm9yIGdwdXByb3Y"


def test_the_instance_publishes_its_host_keys_and_the_program_reads_them_before_the_host_exists() -> None:
    by_type, _host, _ = run_gcp()
    [vm] = by_type["gcp:compute/instance:Instance"]
    assert vm["metadata"]["enable-guest-attributes"] == "TRUE"
    readings = [r for r in by_type.get("pulumi-python:dynamic:Resource", []) if r["name"].endswith("-hostkeys")]
    assert len(readings) == 1 and readings[0]["zone"] == "us-central1-a"


def test_guest_attributes_give_the_keys_by_type_and_nothing_before_they_are_published(compute: ComputeStandIn) -> None:
    compute.add_instance(PROJECT, ZONE, "vm1", {})
    api = ComputeApi(compute.url)
    assert api.guest_host_keys(PROJECT, ZONE, "vm1") == {}  # 404: the agent has published nothing yet
    compute.publish_host_keys(ZONE, "vm1", {"ssh-ed25519": ED25519, "ssh-rsa": "AAAAB3NzaC1yc2EAAAADAQABAAABAQ"})
    assert api.guest_host_keys(PROJECT, ZONE, "vm1") == {
        "ssh-ed25519": f"ssh-ed25519 {ED25519}", "ssh-rsa": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ"}
    assert compute.requests[-1] == ("GET", f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances/vm1/getGuestAttributes")
    assert compute.guest_queries == ["hostkeys/", "hostkeys/"]  # the namespace, as the real call names it


def test_the_reading_waits_with_progress_until_the_key_appears(compute: ComputeStandIn) -> None:
    compute.add_instance(PROJECT, ZONE, "vm2", {})
    compute.publish_host_keys(ZONE, "vm2", {"ssh-ed25519": ED25519}, after_polls=3)  # the guest still booting
    said: list[str] = []
    key = wait_for_host_key(ComputeApi(compute.url), PROJECT, ZONE, "vm2", timeout_s=30, poll_s=0.01,
                            progress=said.append)
    assert key == f"ssh-ed25519 {ED25519}"
    assert said[0].startswith("gcp: waiting for instance vm2 to publish its SSH host key")
    assert "published its SSH host key ssh-ed25519" in said[-1]


def test_keys_that_never_appear_stop_with_one_line_and_exit_code_4(compute: ComputeStandIn) -> None:
    compute.add_instance(PROJECT, ZONE, "vm3", {})
    with pytest.raises(HostKeysNotPublished) as err:
        wait_for_host_key(ComputeApi(compute.url), PROJECT, ZONE, "vm3", timeout_s=0.2, poll_s=0.05)
    assert err.value.exit_code == 4
    message = str(err.value)
    assert "\n" not in message and "published no SSH host key" in message and "did not connect" in message


@pytest.fixture
def box(tmp_path: Path):  # type: ignore[no-untyped-def]
    need_sandbox()
    made = LocalSandbox("gcphk", root=tmp_path / "boxes")
    made.create()
    try:
        yield made
    finally:
        made.destroy()


def _gcp_host(box: LocalSandbox, host_key: str) -> GpuHost:
    local = box.host()
    assert local is not None
    return local.model_copy(update={"cloud": "gcp", "host_key": host_key, "instance_id": "4242"})


@pytest.mark.sandbox
@pytest.mark.timeout(300)
def test_the_first_connect_is_verified_against_the_published_key_and_an_impostor_is_refused(
        compute: ComputeStandIn, box: LocalSandbox, gpuprov_home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPROV_PULUMI", "mock")  # the pins travel with the stack: its state, here the mock engine's
    presented = (box.dir / "host_ed25519.pub").read_text().split()[1]
    compute.add_instance(PROJECT, ZONE, "gpuprov-g1-vm", {})
    compute.publish_host_keys(ZONE, "gpuprov-g1-vm", {"ssh-ed25519": presented}, after_polls=1)
    # The program's reading, as the engine drives it during `up` (the endpoint: the fixture's setting).
    outs = GcpHostKeysProvider().create({"project": PROJECT, "zone": ZONE, "instance": "gpuprov-g1-vm",
                                         "instance_id": "4242", "timeout_s": 30}).outs
    assert outs is not None
    assert outs["host_key"] == f"ssh-ed25519 {presented}"
    login_key, _ = stack_keypair(box.name, tmp_path / "boxes")
    cfg = build_config({"stack": "g1", "cloud": "gcp"})
    host = _gcp_host(box, outs["host_key"])
    with Remote(target_for(cfg, host, login_key)) as remote:
        code, out, _ = remote.script("echo verified-$((40+2))")
    assert (code, out.strip()) == (0, "verified-42")
    assert known_hosts_path("g1").read_text().split()[1:] == outs["host_key"].split()  # pinned: what was checked

    # Another stack's host, whose address someone else answers: the published key is not the one presented.
    box.replace_host_key(None)
    log_before = (box.dir / "sshd.log").read_text()
    other = build_config({"stack": "g2", "cloud": "gcp"})
    with pytest.raises(HostKeyChanged) as refused:
        Remote(target_for(other, host, login_key)).open()
    assert refused.value.exit_code == 5 and "is not the one its target declared" in str(refused.value)
    assert "Accepted" not in (box.dir / "sshd.log").read_text()[len(log_before):]  # never authenticated: nothing sent
    assert not known_hosts_path("g2").read_text().strip()  # the impostor's key was not pinned
