"""Launch -> SSH -> terminate for real: the stand-in's instances answer at the local sandbox host's address."""

from __future__ import annotations

import pytest

from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud
from gpuprov.infra.clouds.lambda_cloud.launch import (
    LaunchSpec,
    launch_with_failover,
    matching_offers,
    terminate_and_confirm,
)
from gpuprov.testing.lambda_api import LambdaStandIn

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+Eslvmtt60T test"


@pytest.mark.sandbox
def test_a_launched_instance_is_reachable_over_ssh_then_terminated(standin: LambdaStandIn, sandbox) -> None:  # type: ignore[no-untyped-def]
    from fabric import Connection

    box = sandbox.host()
    standin.instance_ip = box.address
    api = LambdaCloud()
    api.add_ssh_key("gpuprov-s", PUB)
    inst = launch_with_failover(api, matching_offers(api.instance_types(), instance_type="gpu_1x_a10"),
                                LaunchSpec(name_prefix="gpuprov-s", ssh_key_name="gpuprov-s"))
    assert inst.ip == box.address
    with Connection(inst.ip, user=box.ssh_user, port=box.ssh_port,
                    connect_kwargs={"key_filename": str(sandbox.client_key), "look_for_keys": False,
                                    "allow_agent": False}) as conn:
        assert conn.run("echo reached-$((40+2))", hide=True, in_stream=False).stdout.strip() == "reached-42"
    assert terminate_and_confirm(api, inst.id, poll_s=1.0) == "terminated"
    assert standin.instances(include_terminated=False) == []
