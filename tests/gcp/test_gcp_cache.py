"""The stack cache on GCP (``cache: true``): a pd-balanced disk made once in the stack's zone by the real dynamic
provider, through the SDK seam against the Compute REST stand-in, attached as a secondary disk and mounted by the
VM's startup script (the Deep Learning VM images have no cloud-init); ``down`` keeps it and says what it costs, ``down --purge`` deletes it (retried while a
VM still holds it) and checks; ``status``/``cost`` list it; the reaper reports and never removes it.

Stand-in: the Compute REST API (gpuprov/testing/compute_api.py, no emulator exists) and, for the engine's own
resources (network, firewall, VM), Pulumi mocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import gpuprov.infra
from gpuprov.infra.cache import DISK_MOUNT_ROOT, cache_name_for, mount_point, mount_script
from gpuprov.infra.clouds.gcp import sdk
from gpuprov.infra.config import build_config
from gpuprov.infra.mock_runtime import EngineMocks, MockStateFile, run_program
from gpuprov.infra.plan import placeholders
from gpuprov.infra.settings import Settings
from gpuprov.infra.stacks import mock_state_path
from gpuprov.infra.tags import TAG_EXPIRES_AT, TAG_MANAGED, TAG_STACK
from gpuprov.testing.compute_api import ComputeStandIn
from tests.conftest import run_cli
from tests.gcp.conftest import compute  # noqa: F401  (the shared stand-in fixture)

PROJECT = "gpuprov-test"
ZONE = "us-central1-a"
ME = "pd-test@lab"
NAME = cache_name_for("gc", ME)
ENV = {"GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "20",
       "GPUPROV_OWNER": ME, "GOOGLE_CLOUD_PROJECT": PROJECT}
VALUES = {"cloud": "gcp", "stack": "gc", "cache": True, "cache_size_gb": 50, "ssh_cidrs": ["203.0.113.7/32"],
          "image": "projects/deeplearning-platform-release/global/images/test-image"}


@pytest.fixture
def gcp(compute: ComputeStandIn, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        gpuprov_home: Path) -> ComputeStandIn:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("GPUPROV_OWNER", ME)
    # The VM itself is mocked here (only the cache disk's provider runs for real), so no guest agent publishes
    # its host key: tests/gcp/test_gcp_host_key.py covers that reading.
    monkeypatch.setattr("gpuprov.infra.clouds.gcp.host_keys.wait_for_host_key",
                        lambda *_a, **_k: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNhY2hlLXRlc3Qtb25seS1ub3QtYS1rZXk")
    ENV["GPUPROV_GCP_API_ENDPOINT"] = compute.url
    return compute


def _up() -> dict[str, list[dict[str, Any]]]:
    """The stack's program as the mock-runtime backend runs it for `gpuprov up`: the cache disk's provider for real
    (on the stand-in), the engine's resources mocked; its state saved where `gpuprov down` reads it."""
    config = build_config(VALUES)
    calls, outputs_of = placeholders("gcp")
    state = MockStateFile(mock_state_path(config, Settings.from_env()))
    mocks = EngineMocks(prior=state.load(), call_dynamic_providers=True, calls=calls, output_defaults=outputs_of)
    outputs = run_program(lambda: gpuprov.infra.build(config), mocks, stack=config.stack, project=config.pulumi_project)
    state.save({**state.load(), **mocks.state}, outputs, cloud="gcp")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in mocks.resources:
        by_type.setdefault(r.type, []).append({"name": r.name, "delete_before_replace": r.delete_before_replace, **r.inputs})
    return by_type


def _forget_state() -> None:
    """What `gpuprov down` leaves of the stack's state: none (the disk outlives it)."""
    MockStateFile(mock_state_path(build_config(VALUES), Settings.from_env())).remove()


def _config_file(tmp_path: Path) -> str:
    path = tmp_path / "gcp.yaml"
    path.write_text(json.dumps(VALUES))
    return str(path)


def test_up_makes_the_disk_once_in_the_zone_attaches_and_mounts_it(gcp: ComputeStandIn) -> None:
    res = _up()
    [(where, disk)] = list(gcp.disks.items())
    assert where == (ZONE, NAME)
    assert (disk["sizeGb"], disk["type"].rsplit("/", 1)[-1]) == ("50", "pd-balanced")
    labels = disk["labels"]
    assert labels[sdk.LABEL_CACHE] == NAME and labels[TAG_STACK] == "gc" and labels[TAG_MANAGED] == "true"
    assert TAG_EXPIRES_AT not in labels  # kept on purpose: no expiry for the reaper to act on
    [vm] = res["gcp:compute/instance:Instance"]
    # the cache goes to one VM at a time: a replacement (a newer image at a later up) lets go first
    assert vm["delete_before_replace"] is True
    assert vm["attachedDisks"] == [{"source": disk["selfLink"], "deviceName": "gpcache", "mode": "READ_WRITE"}]
    # Compute Engine's startup script mounts it (the Deep Learning VM images have no cloud-init)
    assert "user-data" not in vm["metadata"]
    assert vm["metadata"]["startup-script"] == "#!/bin/sh\n" + mount_script("/dev/disk/by-id/google-gpcache",
                                                                               mount_point(NAME, DISK_MOUNT_ROOT))
    assert vm["bootDisk"]["autoDelete"] is True  # the boot disk goes with the VM; the cache disk is not auto-deleted

    _forget_state()
    _up()  # a later up, after `down` (or on a machine without the state): the same disk found again
    assert list(gcp.disks) == [(ZONE, NAME)]


def test_a_cache_disk_in_another_zone_is_refused_with_the_way_out(gcp: ComputeStandIn) -> None:
    _up()
    gcp.disks[("us-central1-b", NAME)] = {**gcp.disks.pop((ZONE, NAME)),
                                          "zone": f"projects/{PROJECT}/zones/us-central1-b"}
    _forget_state()
    with pytest.raises(Exception, match="is in zone us-central1-b, not us-central1-a.*zone: us-central1-b"):
        _up()


def test_down_keeps_the_disk_says_its_price_and_purge_deletes_it(gcp: ComputeStandIn, tmp_path: Path) -> None:
    cfg = _config_file(tmp_path)
    _up()
    status = run_cli("status", "--json", env=ENV)
    assert status.returncode == 0, status.stderr
    [listed] = json.loads(status.stdout)["caches"]
    assert (listed["cloud"], listed["name"], listed["gb"], listed["usd_month"]) == ("gcp", NAME, 50.0, 5.0)
    assert "cloud.google.com/compute/disks-image-pricing" in listed["price_source"]

    down = run_cli("down", "-c", cfg, env=ENV)
    assert down.returncode == 0, down.stderr
    assert (f"kept cache {NAME} in {ZONE} (balanced persistent disk): about $5.00/month of 50.0 GB at "
            "$0.10/GB-month" in down.stdout)
    assert "verified: the gcp API lists nothing left of stack 'gc'" in down.stderr  # a kept cache is no leak
    assert list(gcp.disks) == [(ZONE, NAME)]

    cost = run_cli("cost", "--json", env=ENV)
    assert [c["name"] for c in json.loads(cost.stdout)["caches"]] == [NAME]

    purge = run_cli("down", "--purge", "-c", cfg, env=ENV)
    assert purge.returncode == 0, purge.stderr
    assert "gcp cache deleted (the stack itself was already down)" in purge.stdout
    assert "verified: the gcp API lists no cache of stack 'gc'" in purge.stderr
    assert gcp.disks == {}


def test_the_reaper_keeps_an_owned_cache_and_reports_an_ownerless_one(gcp: ComputeStandIn) -> None:
    _up()
    orphan = cache_name_for("gone", "bob@elsewhere")
    sdk.ComputeApi(gcp.url).ensure_cache_disk(PROJECT, "us-central1-b", orphan, 20, {TAG_MANAGED: "true",
                                                                                      TAG_STACK: "gone"})
    reap = run_cli("reap", "--json", "--cloud", "gcp", env=ENV)
    assert reap.returncode == 0, reap.stderr
    report = json.loads(reap.stdout)
    assert {c["name"]: c["verdict"] for c in report["caches"]} == {NAME: "kept", orphan: "ownerless"}
    assert report["found"] == [] and len(gcp.disks) == 2


def test_deleting_a_disk_a_vm_still_holds_waits_for_it_and_says_so_when_it_never_frees(gcp: ComputeStandIn) -> None:
    import threading

    api = sdk.ComputeApi(gcp.url)
    api.ensure_cache_disk(PROJECT, ZONE, NAME, 20, {TAG_MANAGED: "true", TAG_STACK: "gc"})
    gcp.attach_disk(ZONE, NAME, "gpuprov-gc-vm")
    with pytest.raises(sdk.GcpError, match="already being used"):
        api.delete_disk(PROJECT, ZONE, NAME, timeout_s=0.5)
    freed = threading.Timer(1.0, lambda: gcp.disks[(ZONE, NAME)]["users"].clear())  # the VM's delete finishes
    freed.start()
    api.delete_disk(PROJECT, ZONE, NAME, timeout_s=30)
    freed.join()
    assert gcp.disks == {}
    api.delete_disk(PROJECT, ZONE, NAME)  # gone already is fine
