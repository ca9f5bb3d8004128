"""Helpers of the cluster targets' tests: the CLI as a user runs it, without cloud credentials."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CLOUD_ENV_PREFIXES = ("AWS_", "GOOGLE_", "CLOUDSDK_", "LAMBDA_", "GPUPROV_AWS", "GPUPROV_GCP", "GPUPROV_GKE",
                      "KUBECONFIG")

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def gpuprov_cli(tmp_path: Path) -> Cli:
    """``gpuprov ARGS`` in a subprocess with no cloud credential in its environment, a HOME and GPUPROV_HOME
    of the test's own; ``config`` (YAML text) becomes ``--config FILE``; ``offline``: in an empty network
    namespace when this machine lets us make one."""
    def run(*args: str, config: str | None = None, env: dict[str, str] | None = None,
            offline: bool = False) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(CLOUD_ENV_PREFIXES)}
        base |= {"HOME": str(tmp_path), "GPUPROV_HOME": str(tmp_path / "gpuprov-home"), **(env or {})}
        cmd = [sys.executable, "-m", "gpuprov", *args]
        if config is not None:
            path = tmp_path / "stack.yaml"
            path.write_text(config)
            cmd += ["--config", str(path)]
        if offline and os.geteuid() == 0 and shutil.which("unshare"):
            cmd = ["unshare", "--net", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=base, cwd=tmp_path)
    return run


@pytest.fixture
def moto_url() -> Iterator[str]:
    """A moto server (EKS, EC2, IAM...) on a free port; moto's state is the process's, so it is reset first and
    no other test's cluster is seen."""
    import urllib.request

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
        yield url
    finally:
        server.stop()


@pytest.fixture
def gcp_apis() -> Iterator[tuple[Any, Any, dict[str, str]]]:
    """The Compute and GKE stand-ins (gpuprov/testing), GKE's node VMs in the Compute one: (compute, gke, the
    environment that points gpuprov at them, project ``gke-test``)."""
    from gpuprov.testing.compute_api import ComputeStandIn
    from gpuprov.testing.container_api import ContainerStandIn

    compute = ComputeStandIn()
    gke = ContainerStandIn(compute)
    env = {"GPUPROV_GCP_API_ENDPOINT": compute.start(), "GPUPROV_GKE_API_ENDPOINT": gke.start(),
           "GOOGLE_CLOUD_PROJECT": "gke-test"}
    try:
        yield compute, gke, env
    finally:
        gke.stop()
        compute.stop()
