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


def on_host(cfg: StackConfig, host: GpuHost, command: str) -> str:
    """Run ``command`` on the stack's host as the deploy does (the stack's key, the pinned host key); its stdout."""
    from gpuprov.provisioning.ssh import Remote, target_for

    with Remote(target_for(cfg, host)) as remote:
        code, out, err = remote.script(command)
    assert code == 0, out + err
    return out
