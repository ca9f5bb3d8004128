"""``cloud: existing``: a machine you already have (a DGX Spark, a lab server). No cloud calls, no bill."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuprov.infra.clouds.base import CloudDriver, ExposureRow, IdleAction, Progress

if TYPE_CHECKING:
    from gpuprov.infra.config import StackConfig
    from gpuprov.infra.host import GpuHost
    from gpuprov.infra.stacks import StackBackend


class ExistingDriver(CloudDriver):
    name = "existing"
    title = "an existing machine"
    creates_cloud_resources = False

    def check_config(self, config: StackConfig) -> None:
        from gpuprov.infra.config import ConfigError

        if config.host is None:
            raise ConfigError("host", None, "cloud 'existing' needs host: user@address[:port]")
        if config.ssh_private_key_path is None:
            raise ConfigError("ssh_private_key_path", None, "cloud 'existing' needs the path of a private key it accepts")

    def build(self, config: StackConfig) -> dict[str, Any]:
        from gpuprov.infra.clouds.existing.host import existing_host

        return existing_host(config).to_outputs()

    def recorded_config(self, stack: str) -> dict[str, Any]:
        from gpuprov.infra import records

        record = records.load(stack)
        if record is None:
            return {}
        host = record.host
        return {"host": f"{host.ssh_user}@{host.address}:{host.ssh_port}", "ssh_private_key_path": record.ssh_key_path}

    def backend(self, progress: Progress | None = None) -> StackBackend:
        from gpuprov.infra.clouds.existing.backend import ExistingBackend

        return ExistingBackend(progress)

    def exposure(self, config: StackConfig, resources: list[dict[str, Any]]) -> list[ExposureRow]:
        from gpuprov.infra.exposure import rows_from_config

        return rows_from_config(config, list(config.allowed_cidrs),
                                "direct (the machine's own firewall decides; gpuprov opens nothing)")

    def idle_action(self, config: StackConfig, host: GpuHost) -> IdleAction:
        return IdleAction("stop-apps", "the machine is not gpuprov's to power off: the agent stops gpuprov's apps")
