"""An app of your own, as a user writes one: one folder, one descriptor (copy this to start yours).

``write_app(folder)`` writes the folder: ``app.py`` (the descriptor), ``compose.yaml``,
``compose.sandbox.yaml`` (host networking on the sandbox) and ``standin/hello.sh`` (the routes its
stand-in image answers on the sandbox: a health path and the one request its smoke test sends).
"""

from __future__ import annotations

from pathlib import Path

APP_PY = '''\
"""hello_app: one small HTTP service, deployed, checked and smoked like the built-in apps."""

from __future__ import annotations

from typing import Any

import requests

from gpuprov.apps.base import App, AppCheck, Service, ServiceCheck, SmokeFailed


def health(check: ServiceCheck) -> str | None:
    r = requests.get(f"{check.url}/healthz", timeout=check.timeout_s)
    if r.status_code != 200 or r.json().get("ok") is not True:
        return f"/healthz answered {r.status_code}"
    return None


def smoke(check: AppCheck) -> dict[str, Any]:
    r = requests.get(f"{check.urls['hello']}/hello", timeout=30)
    greeting = r.json().get("greeting") if r.status_code == 200 else None
    if not greeting:
        raise SmokeFailed("hello", f"/hello answered {r.status_code}: {r.text[:100]}")
    return {"hello": {"greeting": greeting}}


APP = App(
    name="NAME",
    summary="a greeting service",
    services=(Service(name="SERVICE", container="CONTAINER", port=PORT, image=lambda config: "example.org/hello:1",
                      health=health, log_activity=True),),
    smoke=smoke,
)
'''

COMPOSE = '''\
services:
  SERVICE:
    image: ${SERVICE_UPPER_IMAGE}
    container_name: CONTAINER
    command: [--host, "${SERVICE_UPPER_LISTEN}", --port, "PORT"]
    ports: ["${SERVICE_UPPER_BIND}:PORT:PORT"]
    labels:
      gpuprov.config: ${SERVICE_UPPER_CONFIG}
    restart: unless-stopped
'''

COMPOSE_SANDBOX = '''\
services:
  SERVICE:
    network_mode: host
    ports: !reset []
'''

STANDIN = '''\
# The stand-in of the greeting service: its health path and its one answer.
route() {
  case "$METHOD $REQ_PATH" in
    "GET /healthz") json "200 OK" '{"ok":true}' ;;
    "GET /hello") json "200 OK" '{"greeting":"hello from an app of your own"}' ;;
    *) json "404 Not Found" '{"detail":"Not Found"}' ;;
  esac
}
'''


def write_app(folder: Path, *, service: str = "hello", port: int = 8090, container: str | None = None,
              compose: bool = True, standin: bool = True, name: str | None = None) -> Path:
    """Write the app folder (its name is the folder's); the switches break it the ways tests need."""
    container = container or f"gpuprov-{service}"

    def fill(text: str) -> str:
        return (text.replace("SERVICE_UPPER", service.upper()).replace("SERVICE", service)
                .replace("CONTAINER", container).replace("PORT", str(port)).replace("NAME", name or folder.name))

    (folder / "standin").mkdir(parents=True)
    (folder / "app.py").write_text(fill(APP_PY))
    if compose:
        (folder / "compose.yaml").write_text(fill(COMPOSE))
    (folder / "compose.sandbox.yaml").write_text(fill(COMPOSE_SANDBOX))
    if standin:
        (folder / "standin" / f"{service}.sh").write_text(STANDIN)
    return folder
