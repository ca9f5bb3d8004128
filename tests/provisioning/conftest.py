"""Fixtures for the deploy tests: the session's local sandbox host, deployed once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprov.infra import records
from gpuprov.infra.config import StackConfig, load_config
from gpuprov.infra.host import GpuHost


@pytest.fixture
def on_sandbox(sandbox, sandbox_root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[StackConfig, GpuHost]:
    """(config, host) of the shared sandbox. The state root is the sandbox's, so its key, pinned host
    key, stack secrets and record are found exactly as `gpuprov deploy` finds them."""
    monkeypatch.setenv("GPUPROV_HOME", str(sandbox_root))
    host = sandbox.host()
    assert host is not None
    cfg = load_config(None, {"stack": sandbox.name, "cloud": "local"})
    records.save(cfg.stack, "local", host)
    return cfg, host
