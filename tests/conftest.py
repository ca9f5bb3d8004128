"""Shared fixtures: an isolated state root per test, the CLI as a user runs it, the local sandbox host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI") == "true"


def need(condition: bool, why: str) -> None:
    """Skip on a developer machine that lacks something; under CI a missing tool is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {why}")
    pytest.skip(why)


def need_sandbox() -> None:
    need(os.geteuid() == 0, "the local sandbox host needs root (network namespace, dockerd)")
    for tool in ("sshd", "dockerd", "ip", "nsenter", "busybox"):
        need(bool(shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()), f"{tool} is not installed (make setup)")


@pytest.fixture(scope="session")
def egress_echo() -> Iterator:
    """The egress echo stand-in (:mod:`gpuprov.testing.egress_echo`), shared by the session."""
    from gpuprov.testing.egress_echo import EgressEcho

    with EgressEcho() as echo:
        yield echo


@pytest.fixture(autouse=True)
def egress_address(egress_echo, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Every test (and every gpuprov it starts) asks the stand-in echo for this machine's egress address,
    never the real service; it answers 203.0.113.7 unless a test changes ``egress_echo.answer``."""
    from gpuprov.testing.egress_echo import DEFAULT_ANSWER

    egress_echo.answer = DEFAULT_ANSWER
    monkeypatch.setenv("GPUPROV_EGRESS_URL", egress_echo.url)
    return egress_echo


@pytest.fixture(autouse=True)
def gpuprov_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own state root, so records and keys never leak between tests."""
    home = tmp_path / "gpuprov-home"
    monkeypatch.setenv("GPUPROV_HOME", str(home))
    return home


def existing_config(box: Any, *extra: str) -> str:
    """A ``cloud: existing`` config for a local sandbox box, as its owner would write it: its address, login key,
    and its SSH host key (``host_key``), which the owner knows and gpuprov verifies at the first connect."""
    host = box.host()
    key = " ".join((box.dir / "host_ed25519.pub").read_text().split()[:2])
    return "".join(f"{line}\n" for line in (
        "cloud: existing", f"host: {host.ssh_user}@{host.address}:{host.ssh_port}",
        f"ssh_private_key_path: {box.client_key}", f'host_key: "{key}"', *extra))


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``gpuprov ARGS`` in a subprocess, exactly as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "gpuprov", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, input=input,
    )


@pytest.fixture(scope="session")
def sandbox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandboxes")


@pytest.fixture(scope="session")
def sandbox(sandbox_root: Path) -> Iterator:
    """One local sandbox host shared by the session's deploy tests; removed at the end, checked empty."""
    need_sandbox()
    from gpuprov.infra.clouds.local.sandbox import LocalSandbox

    box = LocalSandbox(f"t-{uuid.uuid4().hex[:6]}", root=sandbox_root)
    box.create()
    try:
        yield box
    finally:
        box.destroy()
