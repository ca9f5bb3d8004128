"""``plan``: what the Pulumi program would create, who could reach what, and what it would cost.

The real program runs on Pulumi's mock runtime with mocks that only record, so a
plan needs no credentials, no network and no Pulumi CLI. What only the cloud
knows (the AMI id today, the image of a family today, the public address) is
answered by placeholders that say "resolved at up time" / "assigned at up time".

Exposure is read from the firewall resources the program declared (AWS security
group ingress, GCP firewall rules), not from the config, so it shows what would
really be opened; every port without a rule says how it is reached instead.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pulumi.runtime import MockResourceArgs

from gpuprov.infra.clouds import driver_for
from gpuprov.infra.config import StackConfig
from gpuprov.infra.mock_runtime import CallHandler, EngineMocks, OutputDefaults, run_program
from gpuprov.infra.settings import Settings

RESOLVED_AT_UP = "(resolved at up time)"
ASSIGNED_AT_UP = "(assigned at up time)"

def generic_outputs(args: MockResourceArgs) -> dict[str, Any]:
    """Outputs every cloud assigns (names, ARNs), as labelled placeholders."""
    outs: dict[str, Any] = {"arn": f"{ASSIGNED_AT_UP} {args.name}"}
    if "name" not in args.inputs:
        outs["name"] = f"{args.name}"  # Pulumi's auto-name starts with the resource name
    return outs


def placeholders(cloud: str) -> tuple[dict[str, CallHandler], OutputDefaults]:
    """The mocks' answers for what only ``cloud`` knows: its invokes, and the outputs it assigns."""
    driver = driver_for(cloud, Settings())

    def outputs(args: MockResourceArgs) -> dict[str, Any]:
        return {**generic_outputs(args), **driver.plan_outputs(args)}

    return driver.plan_calls(), outputs


# --- the plan ----------------------------------------------------------------------------------


def plan(
    config: StackConfig,
    calls: dict[str, CallHandler] | None = None,
    output_defaults: OutputDefaults | None = None,
) -> dict[str, Any]:
    """``{"resources": [...], "exposure": [...], "cost": {...}, "idle_protection": ..., "serving": {...}}``
    for ``config``. ``idle_protection``: what protects the host when its idle agent cannot act, else None;
    ``serving``: the apps sized for the instance type's GPU (:mod:`gpuprov.apps.fit`): settings, the GPU
    memory budget, and what stops the stack there.
    """
    from gpuprov import infra
    from gpuprov.infra.keys import forget_keypair, key_dir
    from gpuprov.infra.prices import estimate_for

    config = _with_egress(config)

    cloud_calls, cloud_outputs = placeholders(config.cloud)
    mocks = EngineMocks(calls={**cloud_calls, **(calls or {})}, output_defaults=output_defaults or cloud_outputs)
    keys = key_dir(config.stack)
    had_keys = keys.exists()
    try:
        run_program(lambda: infra.build(config), mocks, stack=config.stack)
    finally:
        if not had_keys:  # the program makes the stack's key pair to name it; a plan leaves nothing behind
            forget_keypair(config.stack)
    resources = [{"type": r.type, "name": r.name, "inputs": r.shown} for r in mocks.resources]  # secrets hidden
    cost: dict[str, Any] = asdict(estimate_for(config))
    if config.spot:
        cost["note"] = "spot capacity: billed at the market price, usually far below this on-demand ceiling"
    from gpuprov.apps.fit import planned
    from gpuprov.infra.clouds import driver_for

    sized = planned(config)
    serving: dict[str, Any] = sized.to_json() if sized else {
        "gpu": None, "note": "sized at deploy, for the GPU and CPU architecture the host reports"}
    result = {"resources": resources, "exposure": exposure(config, resources), "cost": cost,
              "idle_protection": driver_for(config.cloud).idle_protection(config), "serving": serving}
    pools = driver_for(config.cloud).node_pools(config)
    if pools:  # a cluster target: each pool at its minimum and maximum, and the totals
        from gpuprov.cost.estimate import estimate

        result["node_pools"] = pools
        cost["at_min"] = asdict(estimate(sum(p["usd_hour_at_min"] for p in pools), "every node pool at its minimum"))
        cost["note"] = "the cost above is every node pool at its maximum; at_min is the idle cluster"
    return result


def _with_egress(config: StackConfig) -> StackConfig:
    """``config`` with this machine's egress address, where SSH opens to by default, when it can be told now;
    a plan needs no network, so without one the SSH row says the address is detected at up instead."""
    from gpuprov.infra.egress import EgressUnknown, resolve

    try:
        return resolve(config, Settings.from_env())
    except EgressUnknown:
        return config


def exposure(config: StackConfig, resources: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Who can reach which port from where: ``[{port, service, from, via}]``, as the cloud's driver reads
    the firewall resources the program declares."""
    return [row.to_json() for row in driver_for(config.cloud, Settings()).exposure(config, resources or [])]


# --- key settings, for the human-readable plan ----------------------------------------------------

def dig(inputs: dict[str, Any], path: str) -> Any:
    """``inputs["a"]["b"]`` for ``"a.b"``; None when a part is missing."""
    value: Any = inputs
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def key_settings(config: StackConfig, resource: dict[str, Any]) -> dict[str, Any]:
    """The few inputs of a resource a reader checks first (instance type, image, encryption, ranges...)."""
    return driver_for(config.cloud, Settings()).key_settings(resource)
