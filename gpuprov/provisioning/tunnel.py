"""Local forwards to every deployed service over ONE SSH connection, reconnecting when it drops.

Each service gets a listener on 127.0.0.1 (its usual port when free, else any free port); each
accepted connection becomes a ``direct-tcpip`` channel to the service's port on the host's
loopback. The listeners outlive a dropped SSH connection: the next request (or the watchdog)
reconnects, so the URLs a user has open keep working.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from pathlib import Path

import paramiko

from gpuprov.apps import registry
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.deploy import deployed_services
from gpuprov.provisioning.errors import HostUnreachable
from gpuprov.provisioning.forwards import LocalForwards, Progress
from gpuprov.provisioning.ssh import Remote, target_for


def _live(remote: Remote | None) -> paramiko.Transport | None:
    """The connection's transport while it is up; None once it dropped (never reopened here: the caller counts that)."""
    transport = remote.conn.client.get_transport() if remote is not None else None
    return transport if transport is not None and transport.is_active() else None


class Tunnel(LocalForwards):
    """``with Tunnel(config, host) as t: t.urls[SERVICE]`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self, config: StackConfig, host: GpuHost, *, key_path: Path | None = None,
                 services: list[str] | None = None, same_ports: bool = False, progress: Progress | None = None,
                 local_ports: dict[str, int] | None = None):
        self.target = target_for(config, host, key_path)
        services = services or deployed_services(config)
        # Each service's port on the host; a name no app declares stops here, naming the known ones.
        super().__init__(services, {name: registry().service(name)[1].port for name in services},
                         same_ports=same_ports, local_ports=local_ports, progress=progress)
        self.reconnects = 0
        self._remote: Remote | None = None
        self._lock = threading.Lock()

    # --- the one SSH connection ---------------------------------------------------------

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if self._stop.is_set():  # closed: a connection still in flight must not open a new one
                raise HostUnreachable("the tunnel is closed")
            remote = self._remote
            live = _live(remote)
            if live is not None:
                return live
            if remote is not None:
                self.reconnects += 1
                self.progress("SSH connection lost; reconnecting")
                with contextlib.suppress(Exception):
                    remote.close()
            self._remote = Remote(self.target).open()
            transport = self._remote.transport
            transport.set_keepalive(15)  # notice a dead link without waiting for a request
            return transport

    def alive(self) -> bool:
        return _live(self._remote) is not None

    def drop_connection(self) -> None:
        """Close the SSH connection under the forwards (what a network blip does); used by tests."""
        if self._remote is not None:
            self._remote.conn.client.close()

    # --- forwarding ------------------------------------------------------------------------

    def _forward(self, service: str, client: socket.socket, peer: tuple[str, int]) -> None:
        remote_port = self.ports[service]
        chan = None
        try:
            for attempt in range(2):  # one retry on a fresh connection when the old one died under us
                try:
                    chan = self._transport().open_channel("direct-tcpip", ("127.0.0.1", remote_port), peer, timeout=15)
                    break
                except (paramiko.SSHException, OSError, EOFError):
                    if attempt or self._stop.is_set():
                        raise
                    self.drop_connection()
            assert chan is not None
            while True:
                ready, _, _ = select.select([client, chan], [], [], 1.0)
                if self._stop.is_set():
                    return
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        chan.shutdown_write()
                        # keep reading the answer until the service closes
                        while (chunk := chan.recv(65536)):
                            client.sendall(chunk)
                        return
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(65536)
                    if not data:
                        return
                    client.sendall(data)
        finally:
            if chan is not None:
                chan.close()

    def _watchdog(self) -> None:
        while not self._stop.wait(2.0):
            if not self.alive():
                with contextlib.suppress(HostUnreachable, paramiko.SSHException, OSError):
                    self._transport()

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Tunnel:
        self._transport()  # fail now, with a clear error, when the host cannot be reached
        try:
            self._listen_all()
            self._thread(self._watchdog)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        super().close()
        with self._lock:  # after the stop: no forward reopens it behind us
            if self._remote is not None:
                self._remote.close()
