"""Health of the deployed services, checked through the SSH tunnel (nothing needs an open port).

vLLM: ``/health`` answers 200 and ``/v1/models`` lists the served model; Open WebUI: ``/health``
is ``{"status": true}``; MONAI Label: ``/info/`` lists its models (``/`` is Swagger HTML).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests

from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.errors import ServiceUnhealthy
from gpuprov.provisioning.secrets import stack_secrets
from gpuprov.provisioning.tunnel import Tunnel

Progress = Callable[[str], None]


def check_service(service: str, url: str, config: StackConfig, api_key: str, timeout_s: float = 5.0) -> str | None:
    """None when ``service`` at ``url`` is healthy, else why not (one line)."""
    try:
        if service == "vllm":
            r = requests.get(f"{url}/health", timeout=timeout_s)
            if r.status_code != 200:
                return f"/health answered {r.status_code}"
            r = requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s)
            if r.status_code != 200:
                return f"/v1/models answered {r.status_code}"
            ids = [m.get("id") for m in r.json().get("data", [])]
            if config.served_model_name not in ids:
                return f"/v1/models lists {ids}, not {config.served_model_name!r}"
            return None
        if service == "open_webui":
            r = requests.get(f"{url}/health", timeout=timeout_s)
            if r.status_code != 200 or r.json().get("status") is not True:
                return f"/health answered {r.status_code} {r.text[:80]!r}"
            return None
        if service == "monai_label":
            r = requests.get(f"{url}/info/", timeout=timeout_s)
            if r.status_code != 200:
                return f"/info/ answered {r.status_code}"
            models = r.json().get("models") or {}
            if not models:
                return "/info/ lists no models"
            return None
        return f"unknown service {service!r}"
    except requests.RequestException as err:
        return f"no answer ({type(err).__name__})"
    except ValueError:
        return "answer is not JSON"


def check_all(config: StackConfig, urls: dict[str, str]) -> dict[str, str | None]:
    """Each service's health (None: healthy) through the given forwarded URLs."""
    api_key = stack_secrets(config.stack)[0].vllm_api_key
    return {service: check_service(service, url, config, api_key) for service, url in urls.items()}


def wait_until_healthy(config: StackConfig, urls: dict[str, str], timeout_s: float,
                       progress: Progress | None = None) -> None:
    """Poll every service through ``urls`` until all are healthy; raise ServiceUnhealthy naming the first that is not."""
    say = progress or (lambda _m: None)
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    last_report = 0.0
    while True:
        status = check_all(config, urls)
        failing = {s: why for s, why in status.items() if why}
        if not failing:
            return
        if time.monotonic() >= deadline:
            service, why = next(iter(failing.items()))
            raise ServiceUnhealthy(service, urls[service], why or "", timeout_s)
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            # vLLM downloads the model (about 6 GB) on first start: say what we wait for.
            say(f"waiting for {', '.join(failing)} ({time.monotonic() - started:.0f}s): "
                + "; ".join(f"{s}: {w}" for s, w in failing.items()))
        time.sleep(1.0)


def wait_healthy(config: StackConfig, host: GpuHost, timeout_s: float, *, key_path: Path | None = None,
                 progress: Progress | None = None) -> None:
    """Open a tunnel to the stack's host, wait until every deployed service is healthy, and make
    sure Open WebUI's admin is the stack's generated account."""
    with Tunnel(config, host, key_path=key_path, progress=progress) as tunnel:
        wait_until_healthy(config, tunnel.urls, timeout_s, progress)
        if "open_webui" in tunnel.urls:
            # Login is on: the generated admin must exist before anyone else can reach the UI.
            from gpuprov.provisioning.webui import ensure_admin

            if ensure_admin(tunnel.urls["open_webui"], stack_secrets(config.stack)[0]) == "created" and progress:
                progress("Open WebUI admin account created")
