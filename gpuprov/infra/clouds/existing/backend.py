"""``cloud: existing``: nothing to create or remove; the stack's record remembers the machine."""

from __future__ import annotations

from pathlib import Path

from gpuprov.infra import records
from gpuprov.infra.clouds.base import Progress
from gpuprov.infra.clouds.existing.host import existing_host
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.infra.stacks import recorded_host


class ExistingBackend:
    """The machine is the user's: ``up`` records it, ``destroy`` forgets it."""

    def __init__(self, progress: Progress | None = None):
        self.progress = progress or (lambda _m: None)

    def up(self, config: StackConfig) -> GpuHost:
        host = existing_host(config)
        key = config.ssh_private_key_path
        records.save(config.stack, config.cloud, host, ssh_key_path=str(Path(key).expanduser()) if key else None)
        return host

    def destroy(self, config: StackConfig) -> None:
        """The machine stays (gpuprov did not create it); what deploy installed there goes."""
        from gpuprov.provisioning.uninstall import uninstall

        record = records.load(config.stack)
        if record is not None and record.deployed:
            self.progress(f"existing host {config.host}: removing what gpuprov installed (its apps, idle agent, "
                          "files); the machine itself stays")
            uninstall(config, record.host)
        else:
            self.progress(f"existing host {config.host}: nothing was deployed there; the machine itself stays")
        records.forget(config.stack)

    def outputs(self, config: StackConfig) -> GpuHost | None:
        record = records.load(config.stack)
        return record.host if record else None

    def running_host(self, config: StackConfig) -> GpuHost:
        return recorded_host(config)
