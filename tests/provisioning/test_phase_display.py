"""The phases while they run (#16): a deploy on a terminal (a pty) draws a row per phase, with the bytes of the
model download as they land on the host; without a terminal only the plain step and phase lines appear; no
secret of the stack in either."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import need_sandbox, run_cli

pytestmark = pytest.mark.sandbox

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _on_a_terminal(*args: str, timeout: float = 300) -> tuple[int, str]:
    """``gpuprov ARGS`` with a pty (160 columns) as its stdin, stdout and stderr; its exit code and output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal session of its own
        os.execvpe(sys.executable, [sys.executable, "-m", "gpuprov", *args],
                   {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"})
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def _secrets(home: Path, stack: str) -> list[str]:
    def leaves(v: object) -> list[str]:
        if isinstance(v, dict):
            return [x for w in v.values() for x in leaves(w)]
        return [v] if isinstance(v, str) and len(v) >= 12 else []
    values = leaves(json.loads((home / "secrets" / f"{stack}.json").read_text()))
    assert values, "the stack generated secrets (the check below must have something to find)"
    return values


@pytest.mark.timeout(900)
def test_a_terminal_sees_the_phases_live_with_the_model_bytes_and_a_log_sees_phase_lines(
        gpuprov_home: Path, tmp_path: Path) -> None:
    need_sandbox()
    from gpuprov.infra.clouds.local.sandbox import LocalSandbox

    stack = "ready2-disp"
    cfg = tmp_path / "stack.yaml"
    cfg.write_text(f"stack: {stack}\ncloud: local\napps: [vllm_cxr]\n")
    up = run_cli("up", "--config", str(cfg), "--no-deploy")
    assert up.returncode == 0, up.stderr
    try:
        plain = run_cli("deploy", "--config", str(cfg), "--timeout", "300", timeout=600)
        assert plain.returncode == 0, plain.stderr
        for phase in ("boot", "ssh_ready", "bootstrap", "services_started", "model_download", "service_healthy"):
            assert re.search(rf"^· phase {phase}: \d+\.\d s$", plain.stderr, re.M), (phase, plain.stderr)
        assert "\x1b[" not in plain.stderr and "\r" not in plain.stderr  # no live display in a log
        # A new vLLM container with an empty model volume: the next deploy's stand-in downloads again.
        docker = ["docker", f"--host=unix://{LocalSandbox(stack).docker_socket}"]
        subprocess.run([*docker, "rm", "-f", "vllm"], capture_output=True, check=True)
        volumes = subprocess.run([*docker, "volume", "ls", "-q", "--filter", "name=model-cache"],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert volumes, "vLLM's model volume"
        subprocess.run([*docker, "volume", "rm", *volumes], capture_output=True, check=True)

        code, raw = _on_a_terminal("deploy", "--config", str(cfg), "--timeout", "300")
        assert code == 0, raw[-3000:]
        assert "\x1b[" in raw  # a live display drew (and redrew) its rows
        shown = ANSI.sub("", raw)
        # The model row ends with what the model directory held: the stand-in's 64 MiB (67.1 MB, decimal).
        assert re.search(r"model_download .*\b6[5-9]\.\d MB", shown), shown[-3000:]
        assert re.search(r"service_healthy .*\d+\.\d s", shown), shown[-3000:]
        for secret in _secrets(gpuprov_home, stack):
            assert secret not in raw and secret not in plain.stdout + plain.stderr
    finally:
        down = run_cli("down", "--config", str(cfg))
        assert down.returncode == 0, down.stderr
