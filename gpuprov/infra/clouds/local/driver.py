"""The local sandbox host as a gpuprov target: a throwaway box on this machine, no cloud, no bill."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuprov.infra.clouds.base import CloudDriver, ExposureRow, IdleAction, Leftover, Progress

if TYPE_CHECKING:
    import pulumi

    from gpuprov.infra.config import StackConfig
    from gpuprov.infra.host import GpuHost
    from gpuprov.infra.stacks import StackBackend


class LocalDriver(CloudDriver):
    name = "local"
    title = "local sandbox host"
    creates_cloud_resources = False
    sandbox_hosts = True

    def build(self, config: StackConfig) -> pulumi.Output[dict[str, Any]]:
        from gpuprov.infra.clouds.local.resource import build_local_host

        return build_local_host(config)

    def backend(self, progress: Progress | None = None) -> StackBackend:
        from gpuprov.infra.clouds.local.backend import LocalBackend

        return LocalBackend(progress)

    def exposure(self, config: StackConfig, resources: list[dict[str, Any]]) -> list[ExposureRow]:
        from gpuprov.infra.exposure import rows_from_config

        return rows_from_config(config, list(config.allowed_cidrs),
                                "direct, from this machine only (the sandbox's own network namespace)")

    def inventory(self, stack: str | None = None, config: StackConfig | None = None) -> list[Leftover]:
        """What of the stack's sandbox is still on this machine (processes, namespace, links, files)."""
        from gpuprov.infra.clouds.local.sandbox import LocalSandbox

        if stack is None:
            return []
        return [Leftover(self.name, "sandbox", what, stack) for what in LocalSandbox(stack).leftovers()]

    def host_state(self, stack: str, host: GpuHost) -> str:
        from gpuprov.infra.clouds.local.sandbox import LocalSandbox

        return "running" if LocalSandbox(stack).is_running() else "gone"

    def idle_action(self, config: StackConfig, host: GpuHost) -> IdleAction:
        return IdleAction("stop-apps", "the sandbox is this machine: the agent stops gpuprov's apps, nothing else")
