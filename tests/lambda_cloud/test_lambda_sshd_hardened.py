"""After deploy, the host's sshd refuses password login: on a Lambda stand-in instance whose box runs sshd as a
cloud image may ship it (password and keyboard-interactive login on, ``/etc/ssh/sshd_config.d`` read first).

The box's login user ``ubuntu`` is an alias of root (the sandbox needs root for its Docker engine), so the
hardened sshd (``PermitRootLogin no``) refuses it too after the deploy: the test asks sshd what it offers
instead of logging in again.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import paramiko
import pytest

from gpuprov.infra import records
from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.infra.config import load_config
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.deploy import deploy
from gpuprov.provisioning.sshd import DROP_IN
from gpuprov.testing.lambda_api import LambdaStandIn
from tests.conftest import need_sandbox, run_cli

pytestmark = pytest.mark.sandbox
MOCK = {"GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "30"}


def _transport(host: GpuHost) -> paramiko.Transport:
    t = paramiko.Transport(socket.create_connection((host.address, host.ssh_port), timeout=10))
    t.start_client(timeout=10)
    return t


def offered(host: GpuHost) -> list[str]:
    """The login methods sshd offers the stack's user (what ``ssh -v`` prints as "can continue")."""
    t = _transport(host)
    try:
        t.auth_none(host.ssh_user)
    except paramiko.BadAuthenticationType as err:
        return sorted(err.allowed_types)
    finally:
        t.close()
    raise AssertionError("sshd let the user in with no authentication at all")


def try_password(host: GpuHost) -> type[Exception]:
    t = _transport(host)
    try:
        t.auth_password(host.ssh_user, "correct horse battery staple")
    except paramiko.SSHException as err:  # BadAuthenticationType is one
        return type(err)
    finally:
        t.close()
    raise AssertionError("sshd accepted a password")


@pytest.mark.timeout(900)
def test_password_login_is_refused_after_deploy(standin: LambdaStandIn, tmp_path: Path, gpuprov_home: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    need_sandbox()
    box = LocalSandbox("pwbox", root=tmp_path / "boxes", login_user="ubuntu", image_sshd=True)
    box.create()
    stack_file = tmp_path / "pw.yaml"
    stack_file.write_text(json.dumps({"stack": "pw", "cloud": "lambda", "apps": ["vllm_cxr"]}))
    try:
        standin.attach(box)
        up = run_cli("up", "--no-deploy", "-c", str(stack_file), env=MOCK)
        assert up.returncode == 0, up.stderr
        record = records.load("pw")
        assert record is not None
        host = record.host
        assert "password" in offered(host)  # the image's sshd, as it came up
        assert try_password(host) is paramiko.AuthenticationException  # tried, and only the password was wrong

        for name, value in MOCK.items():
            monkeypatch.setenv(name, value)
        result = deploy(load_config(stack_file, {}), host)
        assert "sshd" in result.changed
        assert (box.dir / "host" / DROP_IN.lstrip("/")).exists()
        assert offered(host) == ["publickey"]  # no password, no keyboard-interactive
        assert try_password(host) is paramiko.BadAuthenticationType  # refused before any password is read
    finally:
        run_cli("down", "-c", str(stack_file), env=MOCK)
        box.destroy()
