"""The local sandbox host as a Pulumi dynamic resource, so ``pulumi up`` with ``cloud: local`` works too."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

from gpuprov.infra.config import StackConfig


class LocalSandboxProvider(ResourceProvider):
    """Creates and removes a :class:`~gpuprov.infra.clouds.local.sandbox.LocalSandbox` on the machine running Pulumi."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        from gpuprov.infra.clouds.local.sandbox import LocalSandbox

        host = LocalSandbox(props["stack"]).create(max_lifetime_hours=props.get("max_lifetime_hours"))
        return CreateResult(id_=str(host.instance_id), outs={**props, "host": host.to_outputs()})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("stack", "max_lifetime_hours") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=True)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        from gpuprov.infra.clouds.local.sandbox import LocalSandbox

        LocalSandbox(props["stack"]).destroy()


class LocalSandboxHost(Resource):
    host: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, stack: str, max_lifetime_hours: float, opts: pulumi.ResourceOptions | None = None):
        super().__init__(
            LocalSandboxProvider(), name,
            {"stack": stack, "max_lifetime_hours": max_lifetime_hours, "host": None}, opts,
        )


def build_local_host(config: StackConfig) -> pulumi.Output[dict[str, Any]]:
    return LocalSandboxHost("sandbox", config.stack, config.max_lifetime_hours).host
