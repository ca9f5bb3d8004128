"""The viewer's SSH tunnel to MONAI Label: a background gpuprov process that outlives ``viewer up``.

``viewer up`` starts it (``python -m gpuprov.viewer.tunnel``), or reuses the one an earlier ``up``
started when it still runs, still answers and still points at the stack's current host. It is the
:class:`~gpuprov.provisioning.tunnel.Tunnel` every other command uses (one SSH connection, pinned
host key, reconnects on its own), forwarding 127.0.0.1:<port> on this machine to the host's
127.0.0.1:8002. Its record (pid, port, host) lives beside the viewer's other files; it holds no secret.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import GpuHost
from gpuprov.infra.processes import alive
from gpuprov.infra.settings import Settings
from gpuprov.viewer.errors import TunnelFailed
from gpuprov.viewer.paths import viewer_dir

APP = SERVICE = "monai_label"  # the MONAI Label app, and its one service


@dataclass(frozen=True)
class TunnelRecord:
    pid: int
    port: int
    host: str  # which machine it reaches (gpuprov.provisioning.ssh.host_identity)
    address: str
    started_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def record_path(stack: str) -> Path:
    return viewer_dir(stack) / "tunnel.json"


def log_path(stack: str) -> Path:
    return viewer_dir(stack) / "tunnel.log"


def read_record(stack: str) -> TunnelRecord | None:
    try:
        return TunnelRecord(**json.loads(record_path(stack).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def _write_record(stack: str, record: TunnelRecord) -> None:
    path = record_path(stack)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)


def _is_our_tunnel(pid: int) -> bool:
    """A recorded pid is only ever signalled when it is still a viewer tunnel (pids are reused)."""
    try:
        return b"gpuprov.viewer.tunnel" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return alive(pid)  # no /proc (macOS): trust the record


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        return True
    return False


def running(stack: str) -> TunnelRecord | None:
    """The stack's viewer tunnel when its process runs, else None."""
    record = read_record(stack)
    if record is None or not alive(record.pid) or not _is_our_tunnel(record.pid):
        return None
    return record


def ensure(config: StackConfig, host: GpuHost, *, config_path: Path | None, timeout_s: float = 60.0) -> tuple[TunnelRecord, bool]:
    """The viewer's tunnel to ``host``: reused when it runs and reaches that host, else (re)started.
    Returns (record, started_now)."""
    from gpuprov.provisioning.ssh import host_identity

    ident = host_identity(host)
    current = running(config.stack)
    if current is not None and current.host == ident and _answers(current.port):
        return current, False
    earlier = read_record(config.stack)
    stop(config.stack)
    # The port it had, when free again: the viewer's nginx config need not change.
    return _start(config, config_path, ident, earlier.port if earlier else 0, timeout_s), True


def _start(config: StackConfig, config_path: Path | None, ident: str, port: int, timeout_s: float) -> TunnelRecord:
    viewer_dir(config.stack, create=True)
    log = log_path(config.stack)
    argv = [sys.executable, "-m", "gpuprov.viewer.tunnel", "--stack", config.stack, "--cloud", config.cloud,
            "--port", str(port)]
    if config_path is not None:
        argv += ["--config", str(Path(config_path).resolve())]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        # Its own session: Ctrl-C in the terminal that ran `viewer up` does not reach it.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = read_record(config.stack)
        if record is not None and record.pid == proc.pid and record.host == ident:
            return record
        if proc.poll() is not None:
            last = [line for line in log.read_text().splitlines() if line.strip()][-1:] or ["no output"]
            raise TunnelFailed(f"the SSH tunnel to MONAI Label did not start: {last[0].strip()} (log: {log})")
        time.sleep(0.1)
    _terminate(proc.pid)
    raise TunnelFailed(f"the SSH tunnel to MONAI Label did not come up within {timeout_s:.0f}s (log: {log})")


def _terminate(pid: int, timeout_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def stop(stack: str) -> None:
    """Stop the stack's viewer tunnel (nothing to do when none runs); it is gone when this returns."""
    record = read_record(stack)
    if record is not None and alive(record.pid) and _is_our_tunnel(record.pid):
        _terminate(record.pid)
        if alive(record.pid):
            raise TunnelFailed(f"the viewer's SSH tunnel (pid {record.pid}) did not stop; end it with `kill {record.pid}`")
    record_path(stack).unlink(missing_ok=True)


# --- the background process itself ------------------------------------------------------------


def _still_the_stack_host(config: StackConfig, settings: Settings, ident: str) -> bool:
    """Whether the stack's running host, found as every command finds it, is still the one forwarded to."""
    from gpuprov.infra.stacks import StackNotUp, running_host
    from gpuprov.provisioning.ssh import host_identity

    try:
        return host_identity(running_host(config, settings)) == ident
    except StackNotUp:
        return False


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuprov.viewer.tunnel")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--cloud", required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    from gpuprov.infra.config import load_config
    from gpuprov.infra.stacks import running_host
    from gpuprov.provisioning.ssh import host_identity
    from gpuprov.provisioning.tunnel import Tunnel

    stopping = False

    def on_signal(_signo: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        config = load_config(args.config, {"stack": args.stack, "cloud": args.cloud})
        settings = Settings.from_env()
        host = running_host(config, settings)
        ports = {SERVICE: args.port} if args.port else {}
        with Tunnel(config, host, services=[SERVICE], local_ports=ports,
                    progress=lambda m: print(m, flush=True)) as tunnel:
            port = int(tunnel.urls[SERVICE].rsplit(":", 1)[1])
            _write_record(config.stack, TunnelRecord(os.getpid(), port, host_identity(host), host.address, time.time()))
            print(f"forwarding 127.0.0.1:{port} to {host.address}:127.0.0.1:{tunnel.ports[SERVICE]}", flush=True)
            checked = time.monotonic()
            while not stopping:
                time.sleep(0.2)
                if time.monotonic() - checked > 5:
                    checked = time.monotonic()
                    # `gpuprov down` forgot the host, or `up` replaced it: nothing left to forward to.
                    if not _still_the_stack_host(config, settings, host_identity(host)):
                        print("the stack's host is gone or was replaced; tunnel closed", flush=True)
                        break
    except GpuprovError as err:
        print(f"error: {err}", flush=True)
        return err.exit_code
    finally:
        record = read_record(args.stack)
        if record is not None and record.pid == os.getpid():
            record_path(args.stack).unlink(missing_ok=True)
    print("tunnel closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
