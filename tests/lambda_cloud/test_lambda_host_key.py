"""Host keys known before the first connect on Lambda: gpuprov makes the stack's host key pair, the launch's
cloud-init user data installs it, and the first SSH connection is checked against it.

The stand-in's instances are a local sandbox box that honours the user data's ``ssh_keys`` as cloud-init
would (stand-in behaviour, from cloud-init's contract); its ``impostor`` fault puts a box with another host
key at the instance's address.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import paramiko
import pytest
import yaml

from gpuprov.infra import records
from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.infra.config import build_config
from gpuprov.infra.host_keys import HOST_KEY
from gpuprov.provisioning.ssh import Remote, known_hosts_path, target_for
from gpuprov.testing.lambda_api import LambdaStandIn
from tests.conftest import need_sandbox, run_cli

MOCK = {"GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "30"}


def _launch_user_data(standin: LambdaStandIn) -> str:
    [launch] = [r for r in standin.requests() if r.path.endswith("/instance-operations/launch")]
    return str(json.loads(launch.body)["user_data"])


def test_the_launch_installs_the_stacks_host_key_and_the_host_declares_it(standin: LambdaStandIn,
                                                                          gpuprov_home: Path) -> None:
    up = run_cli("up", "--no-deploy", "--cloud", "lambda", "--stack", "hk", env=MOCK)
    assert up.returncode == 0, up.stderr
    private = gpuprov_home / "keys" / "hk" / HOST_KEY
    public = " ".join(private.with_suffix(".pub").read_text().split()[:2])
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    cloud_config = yaml.safe_load(_launch_user_data(standin))  # what cloud-init's cc_ssh module reads
    assert _launch_user_data(standin).startswith("#cloud-config\n")
    assert cloud_config["ssh_keys"] == {"ed25519_private": private.read_text(), "ed25519_public": public}
    assert (cloud_config["ssh_deletekeys"], cloud_config["ssh_genkeytypes"]) == (True, [])  # only ours
    record = records.load("hk")
    assert record is not None and record.host.host_key == public  # the pin, before any connection
    # The private host key is only in its 0600 file: not in the stack's state, record or anything else.
    secret_lines = private.read_text().splitlines()[-3:-1]  # the private part (the first lines are header)
    for path in (p for p in gpuprov_home.rglob("*") if p.is_file() and p != private):
        assert not any(line in path.read_text(errors="ignore") for line in secret_lines), path
    assert run_cli("down", "--stack", "hk", env=MOCK).returncode == 0
    assert not private.exists()  # gone with the stack's keys


def test_user_data_over_lambdas_limit_is_refused_by_the_stand_in(standin: LambdaStandIn) -> None:
    from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud
    from gpuprov.infra.clouds.lambda_cloud.errors import InvalidParameters

    api = LambdaCloud()
    api.add_ssh_key("gpuprov-big", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+Eslvmtt60T")
    with pytest.raises(InvalidParameters):
        api.launch("us-east-1", "gpu_1x_a10", "gpuprov-big", name="gpuprov-big-1", user_data="#" * (1024 * 1024 + 1))


@pytest.fixture
def box(tmp_path: Path, standin: LambdaStandIn):  # type: ignore[no-untyped-def]
    need_sandbox()
    made = LocalSandbox("hkbox", root=tmp_path / "boxes", login_user="ubuntu")
    made.create()
    try:
        standin.attach(made)
        yield made
    finally:
        made.destroy()


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.sandbox
@pytest.mark.timeout(300)
def test_the_first_connect_is_verified_against_the_generated_key(standin: LambdaStandIn, box: LocalSandbox,
                                                                 gpuprov_home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    before = (box.dir / "host_ed25519.pub").read_text().split()[1]
    up = run_cli("up", "--no-deploy", "--cloud", "lambda", "--stack", "hkv", env=MOCK)
    assert up.returncode == 0, up.stderr
    generated = " ".join((gpuprov_home / "keys" / "hkv" / f"{HOST_KEY}.pub").read_text().split()[:2])
    presented = (box.dir / "host_ed25519.pub").read_text().split()[1]
    assert presented == generated.split()[1] != before  # cloud-init (the stand-in) installed the stack's key
    for name, value in MOCK.items():
        monkeypatch.setenv(name, value)
    record = records.load("hkv")
    assert record is not None and record.host.host_key == generated
    cfg = build_config({"stack": "hkv", "cloud": "lambda"})
    known = known_hosts_path("hkv")
    with Remote(target_for(cfg, record.host)) as remote:
        code, out, _ = remote.script("echo verified-$((40+2))")
    assert (code, out.strip()) == (0, "verified-42")
    assert known.read_text().split()[1:] == generated.split()  # pinned: the key it was checked against
    assert run_cli("down", "--stack", "hkv", env=MOCK).returncode == 0


@pytest.mark.sandbox
@pytest.mark.timeout(300)
def test_a_host_presenting_another_key_is_refused_before_anything_is_sent(standin: LambdaStandIn, box: LocalSandbox,
                                                                          gpuprov_home: Path) -> None:
    standin.add_fault("impostor", count=1)  # someone else answers at the instance's address
    up = run_cli("up", "--no-deploy", "--cloud", "lambda", "--stack", "hki", env=MOCK)
    assert up.returncode == 0, up.stderr
    generated = (gpuprov_home / "keys" / "hki" / f"{HOST_KEY}.pub").read_text().split()[1]
    assert (box.dir / "host_ed25519.pub").read_text().split()[1] != generated
    log_before = (box.dir / "sshd.log").read_text()

    deploy = run_cli("deploy", "--stack", "hki", env=MOCK, timeout=120)
    assert deploy.returncode == 5, deploy.stdout + deploy.stderr  # README: host key mismatch
    [line] = deploy.stderr.strip().splitlines()[-1:]
    assert "is not the one its target declared" in line and "gpuprov stopped without sending anything" in line
    assert "Traceback" not in deploy.stderr
    # Nothing reached the box: no file of gpuprov's under its /opt/gpuprov (or anywhere in its root), and sshd
    # never authenticated anyone, so no channel, no sftp, no secret could have been opened.
    assert _files_under(box.dir / "host") == []
    new_log = (box.dir / "sshd.log").read_text()[len(log_before):]
    assert "Accepted" not in new_log
    assert not (gpuprov_home / "known_hosts" / "hki").read_text().strip()  # the impostor's key was not pinned
    # A direct look: the impostor's key, offered to a client expecting the generated one, is refused at key exchange.
    client = paramiko.SSHClient()
    record = records.load("hki")
    assert record is not None
    client.get_host_keys().add(record.host.address, "ssh-ed25519",
                               paramiko.Ed25519Key(data=base64.b64decode(generated)))
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(record.host.address, port=record.host.ssh_port, username="ubuntu",
                       key_filename=str(gpuprov_home / "keys" / "hki" / "id_ed25519"), look_for_keys=False,
                       allow_agent=False, timeout=10)
    client.close()
    assert run_cli("down", "--stack", "hki", env=MOCK).returncode == 0
