"""Local TCP servers standing in for the pods' ports behind the stand-in Kubernetes API's port-forward
(gpuprov/testing/kube_api.py forwards a pod's port to one of these): real bytes, no container."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo:
    """A TCP server that answers each chunk with ``echo:`` + the chunk (the vLLM pod's port)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while (data := conn.recv(65536)):
                conn.sendall(b"echo:" + data)


class Page(BaseHTTPRequestHandler):
    """Open WebUI's port: HTTP/1.0, so the pod closes after each answer (the close travels back too)."""

    def do_GET(self) -> None:  # noqa: N802
        body = f"open-webui {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def pod_ports() -> Iterator[tuple[int, int]]:
    """(vLLM's pod port: an :class:`Echo`, Open WebUI's: a :class:`Page`), stopped after."""
    echo, page = Echo(), ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        yield echo.port, page.server_address[1]
    finally:
        page.shutdown()
        page.server_close()
        echo.sock.close()
