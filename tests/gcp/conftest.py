"""The Compute Engine stand-in, started per test and pointed at through gpuprov's endpoint variable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gpuprov.infra.gcp import sdk
from tests.gcp.compute_standin import ComputeStandIn


@pytest.fixture
def compute(monkeypatch: pytest.MonkeyPatch) -> Iterator[ComputeStandIn]:
    standin = ComputeStandIn()
    url = standin.start()
    monkeypatch.setenv(sdk.ENDPOINT_ENV, url)
    for key in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    try:
        yield standin
    finally:
        standin.stop()
