"""Smoke requests a user would send, each app's own (:mod:`gpuprov.apps`), each answer checked for its shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuprov.apps import registry
from gpuprov.apps.base import AppCheck
from gpuprov.infra.config import StackConfig
from gpuprov.provisioning.secrets import app_secrets


def smoke(config: StackConfig, urls: Mapping[str, str]) -> dict[str, Any]:
    """Run the smoke test of every deployed app whose services are in ``urls``; raise SmokeFailed on a wrong answer.
    Returns service -> what its answer showed."""
    apps = [a for a in registry().selected(config.apps) if a.smoke and all(s.name in urls for s in a.services)]
    secrets, _ = app_secrets(config, apps)
    result: dict[str, Any] = {}
    for app in apps:
        assert app.smoke is not None
        app_urls = {s.name: urls[s.name] for s in app.services if s.name in urls}
        result.update(app.smoke(AppCheck(app.name, app_urls, config, secrets[app.name])))
    return result
