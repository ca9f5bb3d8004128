"""A delaying TCP proxy: adds a fixed one-way delay in each direction (so a simulated round trip),
because `tc netem` is not in this kernel (`tc qdisc add ... netem` answers "Specified qdisc kind is unknown"). Also counts "turns": how
often the client speaks again after the server answered, a tool-neutral count of the round trips
a protocol exchange really waits for."""

from __future__ import annotations

import queue
import socket
import threading
import time


class DelayProxy:
    """``with DelayProxy(("10.213.0.2", 22), rtt_s=0.1) as p: connect to 127.0.0.1:p.port``."""

    def __init__(self, upstream: tuple[str, int], rtt_s: float = 0.1):
        self.upstream = upstream
        self.delay = rtt_s / 2
        self.turns = 0
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []

    def reset_counts(self) -> None:
        with self._lock:
            self.turns = 0

    def _pipe(self, src: socket.socket, dst: socket.socket, state: dict[str, str], direction: str) -> None:
        pending: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def writer() -> None:
            while True:
                due, data = pending.get()
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=writer, daemon=True).start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if data and direction == "up":
                with self._lock:
                    if state["last"] == "down":
                        self.turns += 1
                    state["last"] = "up"
            elif data:
                state["last"] = "down"
            pending.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            state = {"last": "down"}  # the client's first bytes count as the first turn
            threading.Thread(target=self._pipe, args=(client, upstream, state, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, state, "down"), daemon=True).start()

    def __enter__(self) -> DelayProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.close()
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass
