"""The local half every tunnel shares: a connection's failure is one line and the tunnel goes on; a
connection cut by closing the tunnel is no failure at all, and never a thread's traceback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from gpuprov.provisioning.forwards import LocalForwards


class Echo(LocalForwards):
    """Answers each connection with one line, or fails as told (after ``gate`` opens, when it has one)."""

    def __init__(self, fail: str | None = None, gate: threading.Event | None = None) -> None:
        self.said: list[str] = []
        super().__init__(["svc"], {"svc": 1}, same_ports=False, local_ports=None, progress=self.said.append)
        self.fail, self.gate, self.entered = fail, gate, threading.Semaphore(0)

    def _forward(self, service: str, client: socket.socket, peer: tuple[str, int]) -> None:
        self.entered.release()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise ConnectionResetError(self.fail)
        client.sendall(b"hello\n")

    def __enter__(self) -> Echo:
        self._listen_all()
        return self


@pytest.fixture
def thread_errors() -> Iterator[list[BaseException | None]]:
    seen: list[BaseException | None] = []
    before = threading.excepthook
    threading.excepthook = lambda args: seen.append(args.exc_value)
    try:
        yield seen
    finally:
        threading.excepthook = before


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_each_connection_is_forwarded_on_its_own_loopback_listener(thread_errors):
    with Echo() as t:
        assert t.urls["svc"].startswith("http://127.0.0.1:")
        for _ in range(3):
            with _connect(t.urls["svc"]) as c:
                assert c.makefile().readline() == "hello\n"
    assert thread_errors == []


def test_a_failed_connection_is_one_line_and_the_tunnel_goes_on(thread_errors):
    with Echo(fail="the service reset it") as t:
        with _connect(t.urls["svc"]) as c:
            assert c.recv(10) == b""  # closed, not left hanging
        t.fail = None
        with _connect(t.urls["svc"]) as c:
            assert c.makefile().readline() == "hello\n"
    assert t.said == ["forward to svc failed: the service reset it"]
    assert thread_errors == []


def test_connections_cut_by_closing_the_tunnel_say_nothing(thread_errors):
    gate = threading.Event()
    t = Echo(fail="cut under it", gate=gate).__enter__()
    clients = [_connect(t.urls["svc"]) for _ in range(5)]
    for _ in clients:
        assert t.entered.acquire(timeout=10)  # every connection is inside its forward
    closer = threading.Thread(target=t.close)
    closer.start()
    while not t._stop.is_set():
        pass
    gate.set()  # each forward now fails, the way a channel does when close() took its SSH connection
    closer.join(10)
    for c in clients:
        assert c.recv(10) == b""
        c.close()
    assert t.said == [] and thread_errors == []
    with pytest.raises(OSError):
        _connect(t.urls["svc"])  # the listener is gone
