"""``gpuprov sandbox lambda-api`` as a user (or the fault suite) runs it: a separate process, faults over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from base64 import b64decode

import pytest
import requests

from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud
from gpuprov.infra.clouds.lambda_cloud.errors import InsufficientCapacity, InvalidApiKey
from gpuprov.testing.lambda_api import RecordedRequest
from tests.lambda_cloud.conftest import conformance_errors


def test_the_standin_runs_as_a_command_takes_faults_over_http_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov", "sandbox", "lambda-api", "--port", "0",
                             "--boot-seconds", "0.1"],  # the key by environment: never on a command line
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GPUPROV_STANDIN_API_KEY": "cli-key"})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        requests.post(f"{url}/_standin/faults", json={"kind": "capacity", "region": "us-west-1"}, timeout=5)
        api = LambdaCloud(api_key="cli-key", base_url=url, min_interval_s=0.01)
        api.add_ssh_key("k", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+Eslvmtt60T t")
        try:
            api.launch("us-west-1", "gpu_1x_a10", "k", name="x")
            raise AssertionError("the injected capacity fault did not apply")
        except InsufficientCapacity:
            pass
        recorded = requests.get(f"{url}/_standin/requests", timeout=5).json()["requests"]
        assert [r["path"] for r in recorded] == ["/api/v1/ssh-keys", "/api/v1/instance-operations/launch"]
        records = [RecordedRequest(method=r["method"], path=r["path"], query=r["query"],
                                   headers={"Authorization": f"{r['authorization_scheme']} cli-key"},
                                   body=b64decode(r["body"]), at=r["at"], status=r["status"],
                                   answer=b64decode(r["answer"])) for r in recorded]
        assert conformance_errors(records) == []
        with pytest.raises(InvalidApiKey):  # the key from the environment is the only one it accepts
            LambdaCloud(api_key="another-key", base_url=url).list_instances()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
