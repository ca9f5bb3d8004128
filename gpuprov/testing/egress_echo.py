"""A stand-in for the egress echo service (https://checkip.amazonaws.com): answers ``GET /`` with one line,
the caller's public IPv4 address as the real service would see it.

The real service cannot tell a test what address to expect, and a sandbox or CI runner sits behind
NATs of its own, so tests and the fault suite point ``GPUPROV_EGRESS_URL`` at this server and set
the answer (:attr:`EgressEcho.answer`; change it to play a moved NAT). The default answer is
``203.0.113.7`` (TEST-NET-3, RFC 5737: an address no real machine has). Nothing about it is
special-cased in gpuprov: it is parsed and checked as the real service's answer is.

Run it: ``python -m gpuprov.testing.egress_echo --port 8766 --answer 203.0.113.7``.
"""

from __future__ import annotations

import argparse
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_ANSWER = "203.0.113.7"


class EgressEcho:
    """The echo stand-in on ``127.0.0.1:port`` (0: any free port); ``requests`` counts the answers it gave."""

    def __init__(self, answer: str = DEFAULT_ANSWER, port: int = 0, host: str = "127.0.0.1"):
        self.answer = answer
        self.requests = 0
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (stdlib name)
                echo.requests += 1
                body = f"{echo.answer}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (stdlib signature)
                return

        self._host = host
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._server.server_port}/"

    def start(self) -> EgressEcho:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="egress-echo")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EgressEcho:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--answer", default=DEFAULT_ANSWER)
    args = parser.parse_args()
    echo = EgressEcho(args.answer, args.port).start()
    print(echo.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        echo.stop()


if __name__ == "__main__":
    main()
