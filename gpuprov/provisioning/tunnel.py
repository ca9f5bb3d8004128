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
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from gpuprov.apps import registry
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.deploy import deployed_services
from gpuprov.provisioning.errors import HostUnreachable
from gpuprov.provisioning.ssh import Remote, target_for

Progress = Callable[[str], None]


def _listen(preferred: int | None) -> socket.socket:
    for port in ([preferred] if preferred else []) + [0]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.listen(64)
        return sock
    raise OSError("no free local port")


class Tunnel:
    """``with Tunnel(config, host) as t: t.urls[SERVICE]`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self, config: StackConfig, host: GpuHost, *, key_path: Path | None = None,
                 services: list[str] | None = None, same_ports: bool = False, progress: Progress | None = None,
                 local_ports: dict[str, int] | None = None):
        self.target = target_for(config, host, key_path)
        self.services = services or deployed_services(config)
        # Each service's port on the host; a name no app declares stops here, naming the known ones.
        self.ports = {name: registry().service(name)[1].port for name in self.services}
        self.same_ports = same_ports  # the CLI asks for each service's own port locally when it is free
        self.local_ports = local_ports or {}  # preferred local port per service (kept across restarts)
        self.progress = progress or (lambda _m: None)
        self.urls: dict[str, str] = {}
        self.reconnects = 0
        self._remote: Remote | None = None
        self._lock = threading.Lock()
        self._listeners: dict[str, socket.socket] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- the one SSH connection ---------------------------------------------------------

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            remote = self._remote
            if remote is not None and remote.conn.is_connected and remote.transport.is_active():
                return remote.transport
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
        remote = self._remote
        return bool(remote and remote.conn.is_connected and remote.transport.is_active())

    def drop_connection(self) -> None:
        """Close the SSH connection under the forwards (what a network blip does); used by tests."""
        if self._remote is not None:
            self._remote.conn.client.close()

    # --- forwarding ------------------------------------------------------------------------

    def _serve(self, service: str, listener: socket.socket) -> None:
        remote_port = self.ports[service]
        while not self._stop.is_set():
            try:
                client, peer = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(client, peer, remote_port), daemon=True).start()

    def _forward(self, client: socket.socket, peer: tuple[str, int], remote_port: int) -> None:
        chan = None
        try:
            for attempt in range(2):  # one retry on a fresh connection when the old one died under us
                try:
                    chan = self._transport().open_channel("direct-tcpip", ("127.0.0.1", remote_port), peer, timeout=15)
                    break
                except (paramiko.SSHException, OSError, EOFError):
                    if attempt:
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
        except (paramiko.SSHException, OSError, EOFError, HostUnreachable) as err:
            self.progress(f"forward to port {remote_port} failed: {err}")
        finally:
            if chan is not None:
                chan.close()
            client.close()

    def _watchdog(self) -> None:
        while not self._stop.wait(2.0):
            if not self.alive():
                with contextlib.suppress(HostUnreachable, paramiko.SSHException, OSError):
                    self._transport()

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Tunnel:
        self._transport()  # fail now, with a clear error, when the host cannot be reached
        try:
            for service in self.services:
                wanted = self.local_ports.get(service) or (self.ports[service] if self.same_ports else None)
                sock = _listen(wanted)
                self._listeners[service] = sock
                got = sock.getsockname()[1]
                self.urls[service] = f"http://127.0.0.1:{got}"
                if wanted and got != wanted:
                    # Said loudly: a client set for the usual port would reach whatever holds it instead.
                    self.progress(f"WARNING: local port {wanted} is taken; {service} is on 127.0.0.1:{got} "
                                  f"instead (a client set for {wanted} would reach whatever holds it). "
                                  f"`--port {service}=PORT` picks the port")
                t = threading.Thread(target=self._serve, args=(service, sock), daemon=True)
                t.start()
                self._threads.append(t)
            watchdog = threading.Thread(target=self._watchdog, daemon=True)
            watchdog.start()
            self._threads.append(watchdog)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self._stop.set()
        for sock in self._listeners.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for t in self._threads:
            t.join(timeout=3)
        if self._remote is not None:
            self._remote.close()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_forever(self) -> None:
        """Block until interrupted (Ctrl-C); the watchdog keeps the connection up meanwhile."""
        while not self._stop.is_set():
            time.sleep(0.5)
