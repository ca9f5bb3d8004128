"""Health checks say which service is unhealthy and why (against small local HTTP answers)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpuprov.infra.config import load_config
from gpuprov.provisioning.errors import ServiceUnhealthy
from gpuprov.provisioning.health import check_service, wait_until_healthy


@pytest.fixture
def vllm_serving_another_model() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"" if self.path == "/health" else json.dumps({"object": "list", "data": [{"id": "other"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_vllm_is_unhealthy_until_it_lists_the_served_model(vllm_serving_another_model):
    cfg = load_config(None, {"stack": "h"})
    why = check_service("vllm", vllm_serving_another_model, cfg, {"vllm_api_key": "sk-x"})
    assert why is not None and "monai-reasoning-cxr-3b" in why and "other" in why


def test_the_wait_names_the_failing_service(vllm_serving_another_model):
    cfg = load_config(None, {"stack": "h"})
    with pytest.raises(ServiceUnhealthy) as err:
        wait_until_healthy(cfg, {"monai_label": closed_port()}, timeout_s=0.5)
    assert err.value.service == "monai_label" and "fab logs --service monai_label" in str(err.value)
