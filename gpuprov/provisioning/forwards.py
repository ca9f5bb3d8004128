"""The local half every gpuprov tunnel shares: one listener on 127.0.0.1 per service, each accepted
connection forwarded in its own thread, held until Ctrl-C, closed without a stray line.

A subclass says how one connection reaches its service (:meth:`LocalForwards._forward`): over the
stack's one SSH connection (:mod:`gpuprov.provisioning.tunnel`) or through the Kubernetes API's
port-forward (:mod:`gpuprov.infra.clouds.kubernetes.portforward`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

Progress = Callable[[str], None]


def listen(preferred: int | None) -> socket.socket:
    """A listening socket on 127.0.0.1: ``preferred`` when it is free, else any free port."""
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


class LocalForwards:
    """``urls[SERVICE]`` -> ``http://127.0.0.1:PORT`` once :meth:`_listen_all` ran; :meth:`close` ends it all."""

    def __init__(self, services: list[str], ports: dict[str, int], *, same_ports: bool,
                 local_ports: dict[str, int] | None, progress: Progress | None):
        self.services = services
        self.ports = ports  # each service's port where it runs
        self.same_ports = same_ports  # the CLI asks for each service's own port locally when it is free
        self.local_ports = local_ports or {}  # preferred local port per service (kept across restarts)
        self.progress = progress or (lambda _m: None)
        self.urls: dict[str, str] = {}
        self._listeners: dict[str, socket.socket] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _forward(self, service: str, client: socket.socket, peer: tuple[str, int]) -> None:
        """Carry one accepted connection to ``service`` until either end closes (the subclass's part)."""
        raise NotImplementedError

    def _listen_all(self) -> None:
        for service in self.services:
            wanted = self.local_ports.get(service) or (self.ports[service] if self.same_ports else None)
            sock = listen(wanted)
            self._listeners[service] = sock
            got = sock.getsockname()[1]
            self.urls[service] = f"http://127.0.0.1:{got}"
            if wanted and got != wanted:
                # Said loudly: a client set for the usual port would reach whatever holds it instead.
                self.progress(f"WARNING: local port {wanted} is taken; {service} is on 127.0.0.1:{got} "
                              f"instead (a client set for {wanted} would reach whatever holds it). "
                              f"`--port {service}=PORT` picks the port")
            self._thread(self._serve, service, sock)

    def _thread(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _serve(self, service: str, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, peer = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._carry, args=(service, client, peer), daemon=True).start()

    def _carry(self, service: str, client: socket.socket, peer: tuple[str, int]) -> None:
        # One connection's failure is one line, and the tunnel goes on; one cut by close() is no failure at all.
        try:
            self._forward(service, client, peer)
        except Exception as err:  # noqa: BLE001 (a thread's exception would print a traceback, and end nothing)
            if not self._stop.is_set():
                self.progress(f"forward to {service} failed: {err}")
        finally:
            client.close()

    def close(self) -> None:
        self._stop.set()
        for sock in self._listeners.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for t in self._threads:
            t.join(timeout=3)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_forever(self) -> None:
        """Block until interrupted (Ctrl-C)."""
        while not self._stop.is_set():
            time.sleep(0.5)
