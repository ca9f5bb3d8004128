"""``plan``: what the Pulumi program would create, who could reach what, and what it would cost.

The real program runs on Pulumi's mock runtime with mocks that only record, so a
plan needs no credentials, no network and no Pulumi CLI.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from infra.config import StackConfig
from infra.mock_runtime import CallHandler, EngineMocks, OutputDefaults, run_program


def plan(
    config: StackConfig,
    calls: dict[str, CallHandler] | None = None,
    output_defaults: OutputDefaults | None = None,
) -> dict[str, Any]:
    """``{"resources": [...], "exposure": [...], "cost": {...}}`` for ``config``."""
    import infra
    from cost.estimate import estimate_for

    if config.cloud in ("local", "existing"):
        resources: list[dict[str, Any]] = []
    else:
        mocks = EngineMocks(calls=calls, output_defaults=output_defaults)
        run_program(lambda: infra.build(config), mocks, stack=config.stack)
        resources = [{"type": r.type, "name": r.name, "inputs": r.inputs} for r in mocks.resources]
    return {"resources": resources, "exposure": exposure(config), "cost": asdict(estimate_for(config))}


def exposure(config: StackConfig) -> list[dict[str, Any]]:
    """Who can reach which port from where, as the config opens it."""
    rows: list[dict[str, Any]] = []
    ssh_from = list(config.allowed_cidrs)
    rows.append({"port": 22, "service": "ssh", "from": ssh_from, "via": "direct" if ssh_from else "see cloud notes"})
    names = {8000: "vllm", 3000: "open_webui", 8002: "monai_label"}
    for port in config.open_ports:
        rows.append({"port": port, "service": names.get(port, "custom"), "from": list(config.allowed_cidrs),
                     "via": "direct"})
    for port, service in names.items():
        if port not in config.open_ports:
            rows.append({"port": port, "service": service, "from": [], "via": "ssh tunnel only"})
    return rows
