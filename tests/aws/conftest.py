"""moto in server mode, the real AWS API contract on loopback, for the boto3 helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server (a thread of this process) for the session; its URL."""
    import os

    from moto.server import ThreadedMotoServer

    # moto reads this in the server thread: unknown instance types are refused, as AWS does.
    before = os.environ.get("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION")
    os.environ["MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION"] = "true"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        if before is None:
            os.environ.pop("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", None)
        else:
            os.environ["MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION"] = before


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3 pointed at a freshly reset moto through its own env chain (as a user's endpoint would be)."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_server
