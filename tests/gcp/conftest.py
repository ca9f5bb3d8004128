"""The Compute Engine stand-in, started per test and pointed at through gpuprov's endpoint variable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gpuprov.testing.compute_api import ComputeStandIn


@pytest.fixture
def compute(monkeypatch: pytest.MonkeyPatch) -> Iterator[ComputeStandIn]:
    standin = ComputeStandIn()
    url = standin.start()
    monkeypatch.setenv("GPUPROV_GCP_API_ENDPOINT", url)  # the setting the GCP driver reads
    for key in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    try:
        yield standin
    finally:
        standin.stop()
