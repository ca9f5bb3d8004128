"""Health of the deployed services, checked through the SSH tunnel (nothing needs an open port).

Each service's probe is its app's (:mod:`gpuprov.apps`): None when healthy, else a one-line
reason. A name no app declares never reaches a probe: it fails at once, naming the known ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

from gpuprov.apps import registry
from gpuprov.apps.base import AppCheck, Secrets, ServiceCheck
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.errors import ServiceUnhealthy
from gpuprov.provisioning.phases import Phases
from gpuprov.provisioning.secrets import app_secrets
from gpuprov.provisioning.tunnel import Tunnel

Progress = Callable[[str], None]


def check_service(service: str, url: str, config: StackConfig, secrets: Mapping[str, str],
                  timeout_s: float = 5.0) -> str | None:
    """None when ``service`` at ``url`` is healthy, else why not (one line). ``secrets``: its app's."""
    _app, declared = registry().service(service)
    try:
        return declared.health(ServiceCheck(service, url, config, Secrets(secrets), timeout_s))
    except requests.RequestException as err:
        return f"no answer ({type(err).__name__})"
    except ValueError:
        return "answer is not JSON"


def check_all(config: StackConfig, urls: Mapping[str, str]) -> dict[str, str | None]:
    """Each service's health (None: healthy) through the given forwarded URLs."""
    owners = {name: registry().service(name)[0] for name in urls}
    secrets, _ = app_secrets(config, list({a.name: a for a in owners.values()}.values()))
    return {name: check_service(name, url, config, secrets[owners[name].name]) for name, url in urls.items()}


def wait_until_healthy(config: StackConfig, urls: Mapping[str, str], timeout_s: float,
                       progress: Progress | None = None,
                       on_poll: Callable[[set[str]], None] | None = None) -> None:
    """Poll every service through ``urls`` until all are healthy; raise ServiceUnhealthy naming the first that is not.
    ``on_poll``: told the services still failing after each round (an empty set at the end)."""
    say = progress or (lambda _m: None)
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    last_report = 0.0
    while True:
        status = check_all(config, urls)
        failing = {s: why for s, why in status.items() if why}
        if on_poll is not None:
            on_poll(set(failing))
        if not failing:
            return
        if time.monotonic() >= deadline:
            service, why = next(iter(failing.items()))
            raise ServiceUnhealthy(service, urls[service], why or "", timeout_s)
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            # A model server downloads its model on first start: say what we wait for.
            say(f"waiting for {', '.join(failing)} ({time.monotonic() - started:.0f}s): "
                + "; ".join(f"{s}: {w}" for s, w in failing.items()))
        time.sleep(1.0)


def wait_healthy(config: StackConfig, host: GpuHost, timeout_s: float, *, key_path: Path | None = None,
                 progress: Progress | None = None, phases: Phases | None = None,
                 model_cache: str | None = None) -> None:
    """Open a tunnel to the stack's host, wait until every deployed service is healthy, then run each
    app's after-healthy hook (a generated admin account must exist before anyone else can reach the UI).

    ``phases``: the wait is ``model_download`` (``model_cache_hit`` when ``model_cache`` is "warm": the
    deploy found the stack's cache holding a model) until every model server answers, then
    ``service_healthy``; the caller ends the last phase."""
    with Tunnel(config, host, key_path=key_path, progress=progress) as tunnel:
        models = {s for a in registry().selected(config.apps) for s in a.model_services if s in tunnel.urls}
        on_poll = None
        if phases is not None:
            phases.begin(("model_cache_hit" if model_cache == "warm" else "model_download") if models
                         else "service_healthy")

            def on_poll(failing: set[str]) -> None:
                if not failing & models:
                    phases.begin("service_healthy")
        wait_until_healthy(config, tunnel.urls, timeout_s, progress, on_poll)
        apps = [a for a in registry().selected(config.apps) if a.after_healthy]
        secrets, _ = app_secrets(config, apps)
        for app in apps:
            assert app.after_healthy is not None
            urls = {s.name: tunnel.urls[s.name] for s in app.services if s.name in tunnel.urls}
            said = app.after_healthy(AppCheck(app.name, urls, config, secrets[app.name]))
            if said and progress:
                progress(said)
