"""The stack cache on AWS (``cache: true``): an EBS gp3 volume made once by the real dynamic provider (against moto
in server mode), the instance pinned to its zone, attached and mounted by user data; ``down`` keeps it and says what
it costs, ``down --purge`` deletes it and checks; ``status``/``cost`` list it; the reaper reports and never removes it.

Stand-in: the non-dynamic AWS resources (instance, attachment) are Pulumi mocks (no Pulumi AWS plugin runs here);
the volume, its zone and its tags are moto's answers to the real boto3 calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

import gpuprov.infra
from gpuprov.infra.cache import DISK_MOUNT_ROOT, cache_name_for, mount_point, mount_script, with_disk_mount
from gpuprov.infra.clouds.aws import sdk
from gpuprov.infra.config import build_config
from gpuprov.infra.mock_runtime import EngineMocks, MockStateFile, run_program
from gpuprov.infra.plan import placeholders
from gpuprov.infra.settings import Settings
from gpuprov.infra.stacks import mock_state_path
from gpuprov.infra.tags import TAG_EXPIRES_AT, TAG_MANAGED, TAG_STACK
from tests.aws.conftest import aws, moto_server  # noqa: F401  (the shared moto fixtures)
from tests.conftest import run_cli

REGION = "us-east-1"
ME = "ebs-test@lab"
NAME = cache_name_for("ec", ME)
ENV = {"GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "20",
       "GPUPROV_OWNER": ME, "GPUPROV_AWS_REGIONS": REGION}
VALUES = {"cloud": "aws", "stack": "ec", "cache": True, "cache_size_gb": 40, "image": "ami-0123456789abcdef0",
          "ssh_cidrs": ["203.0.113.7/32"]}


def _config_file(tmp_path: Path) -> str:
    path = tmp_path / "aws.yaml"
    path.write_text(json.dumps(VALUES))
    return str(path)


def _up(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The stack's program on the mock-runtime backend as `gpuprov up` runs it, its dynamic providers called for
    real (the cache volume, on moto), the engine's other resources mocked; its state saved where `down` reads it."""
    monkeypatch.setenv("GPUPROV_OWNER", ME)
    config = build_config(VALUES)
    calls, outputs_of = placeholders("aws")
    settings = Settings.from_env()
    state = MockStateFile(mock_state_path(config, settings))
    mocks = EngineMocks(prior=state.load(), call_dynamic_providers=True, calls=calls, output_defaults=outputs_of)
    outputs = run_program(lambda: gpuprov.infra.build(config), mocks, stack=config.stack, project=config.pulumi_project)
    state.save({**state.load(), **mocks.state}, outputs, cloud="aws")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in mocks.resources:
        by_type.setdefault(r.type, []).append({"name": r.name, "delete_before_replace": r.delete_before_replace, **r.inputs})
    return by_type, outputs


def _volumes(ec2: Any) -> list[dict[str, Any]]:
    return ec2.describe_volumes()["Volumes"]


def test_up_makes_the_volume_once_pins_the_instance_to_its_zone_and_mounts_it(
        aws: str, gpuprov_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    res, _ = _up(monkeypatch)
    [vol] = _volumes(ec2)
    tags = {t["Key"]: t["Value"] for t in vol["Tags"]}
    assert (vol["VolumeType"], vol["Size"], vol["Encrypted"]) == ("gp3", 40, True)
    assert tags[sdk.TAG_CACHE] == NAME and tags[TAG_STACK] == "ec" and tags[TAG_MANAGED] == "true"
    assert TAG_EXPIRES_AT not in tags  # kept on purpose: no expiry for the reaper to act on
    [inst] = res["aws:ec2/instance:Instance"]
    # the cache goes to one instance at a time: a replacement (a newer image at a later up) lets go first
    assert inst["delete_before_replace"] is True
    assert inst["availabilityZone"] == vol["AvailabilityZone"]  # an EBS volume attaches only in its zone
    [attach] = res["aws:ec2/volumeAttachment:VolumeAttachment"]
    assert (attach["volumeId"], attach["deviceName"]) == (vol["VolumeId"], sdk.CACHE_DEVICE)
    # the user data keeps the host key and mounts the volume, found by its NVMe serial, at the cache mount point
    body = yaml.safe_load(inst["userData"].removeprefix("#cloud-config\n"))
    assert "ed25519_public" in body["ssh_keys"]
    assert body["runcmd"] == [["sh", "-c", mount_script(sdk.cache_device_path(vol["VolumeId"]),
                                                        mount_point(NAME, DISK_MOUNT_ROOT))]]
    assert f"nvme-Amazon_Elastic_Block_Store_{vol['VolumeId'].replace('-', '')}" in body["runcmd"][0][2]

    MockStateFile(mock_state_path(build_config(VALUES), Settings.from_env())).remove()  # as `down` leaves it
    again, _ = _up(monkeypatch)  # a later up, after `down`: the same volume found again, the instance in its zone
    assert [v["VolumeId"] for v in _volumes(ec2)] == [vol["VolumeId"]]
    assert again["aws:ec2/volumeAttachment:VolumeAttachment"][0]["volumeId"] == vol["VolumeId"]
    assert again["aws:ec2/instance:Instance"][0]["availabilityZone"] == vol["AvailabilityZone"]


def test_down_keeps_the_volume_and_says_its_price_and_purge_deletes_it(
        aws: str, gpuprov_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    cfg = _config_file(tmp_path)
    _up(monkeypatch)
    [vol] = _volumes(ec2)

    status = run_cli("status", "--json", env=ENV)
    assert status.returncode == 0, status.stderr
    [listed] = json.loads(status.stdout)["caches"]
    assert (listed["cloud"], listed["name"], listed["gb"], listed["usd_month"]) == ("aws", NAME, 40.0, 3.2)
    assert "aws.amazon.com/ebs/pricing" in listed["price_source"]

    down = run_cli("down", "-c", cfg, env=ENV)
    assert down.returncode == 0, down.stderr
    assert (f"kept cache {NAME} in us-east-1 (EBS gp3 volume): about $3.20/month of 40.0 GB at $0.08/GB-month"
            in down.stdout)
    assert "verified: the aws API lists nothing left of stack 'ec'" in down.stderr  # the kept cache is no leak
    assert [v["VolumeId"] for v in _volumes(ec2)] == [vol["VolumeId"]]

    cost = run_cli("cost", "--json", env=ENV)
    assert cost.returncode == 0, cost.stderr
    assert [c["name"] for c in json.loads(cost.stdout)["caches"]] == [NAME]

    purge = run_cli("down", "--purge", "-c", cfg, env=ENV)  # the stack is gone: the kept cache alone goes
    assert purge.returncode == 0, purge.stderr
    assert "aws cache deleted (the stack itself was already down)" in purge.stdout
    assert "verified: the aws API lists no cache of stack 'ec'" in purge.stderr
    assert _volumes(ec2) == []


def test_down_purge_of_a_live_stack_deletes_the_attached_volume(
        aws: str, gpuprov_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    _up(monkeypatch)
    purge = run_cli("down", "--purge", "-c", _config_file(tmp_path), env=ENV)
    assert purge.returncode == 0, purge.stderr
    assert "aws stack removed, cache deleted" in purge.stdout and "kept cache" not in purge.stdout
    assert _volumes(ec2) == []


def test_a_cache_still_listed_after_purge_is_a_leftover(aws: str, gpuprov_home: Path,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuprov.infra.clouds import driver_for
    from gpuprov.infra.verify import LeftoverResources, verify_cache_gone

    monkeypatch.setenv("GPUPROV_OWNER", ME)
    _up(monkeypatch)
    config = build_config(VALUES)
    driver = driver_for("aws", Settings.from_env())
    assert driver.leftovers(config) == []  # kept on purpose: not what destroy verification counts
    with pytest.raises(LeftoverResources, match=NAME):  # but after --purge, one still there is
        verify_cache_gone(config)


def test_the_reaper_keeps_an_owned_cache_and_reports_an_ownerless_one(
        aws: str, gpuprov_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    _up(monkeypatch)
    orphan = cache_name_for("gone", "bob@elsewhere")  # a colleague's stack that no longer runs
    sdk.ensure_cache_volume(REGION, orphan, 20, "g5.xlarge", {TAG_MANAGED: "true", TAG_STACK: "gone"})

    reap = run_cli("reap", "--json", "--cloud", "aws", env=ENV)
    assert reap.returncode == 0, reap.stderr
    report = json.loads(reap.stdout)
    assert {c["name"]: c["verdict"] for c in report["caches"]} == {NAME: "kept", orphan: "ownerless"}
    assert report["found"] == []  # neither is the reaper's to remove
    assert len(_volumes(ec2)) == 2


def test_the_mount_script_formats_only_a_blank_device_and_is_quoted() -> None:
    script = mount_script("/dev/disk/by-id/x y", f"{DISK_MOUNT_ROOT}/gpcache-a-0123456789")
    assert "blkid '/dev/disk/by-id/x y' >/dev/null 2>&1 || mkfs.ext4" in script  # a kept cache is never wiped
    assert "mountpoint -q /mnt/gpuprov-cache/gpcache-a-0123456789 || mount" in script
    merged = yaml.safe_load(with_disk_mount("#cloud-config\nssh_deletekeys: true\n", "/dev/x", "/mnt/y")
                            .removeprefix("#cloud-config\n"))
    assert merged["ssh_deletekeys"] is True and merged["runcmd"] == [["sh", "-c", mount_script("/dev/x", "/mnt/y")]]


def test_deploy_takes_only_a_mounted_disk_for_the_cache_not_a_bare_folder(tmp_path: Path) -> None:
    """On AWS and GCP the cache is a block device: a folder at the mount point that nothing is mounted on (the
    mount failed) is the root disk, and deploy must say nothing is mounted rather than fill the root disk."""
    import subprocess

    from gpuprov.provisioning.facts import probe_script

    mount = mount_point(NAME, DISK_MOUNT_ROOT)
    [line] = [x for x in probe_script("/", [], [], mount).splitlines() if x.startswith("s cache;")]
    (tmp_path / mount.lstrip("/") / "huggingface").mkdir(parents=True)
    (tmp_path / mount.lstrip("/") / "huggingface" / "model").write_text("x")
    env = {"GPUPROV_HOST_ROOT": str(tmp_path), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    shown = subprocess.run(["bash", "-c", f"SUDO=; s() {{ echo \"== $1\"; }}; {line}"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "== cache"  # neither "mounted" nor "warm"
