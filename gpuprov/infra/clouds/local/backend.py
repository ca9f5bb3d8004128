"""``cloud: local``: the stack's state is the sandbox itself (its processes and its state file)."""

from __future__ import annotations

from gpuprov.infra import records
from gpuprov.infra.clouds.base import Progress
from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.infra.stacks import StackNotUp


class LocalBackend:
    """Brings the stack's :class:`LocalSandbox` up and down; no Pulumi, no cloud."""

    def __init__(self, progress: Progress | None = None):
        self.progress = progress or (lambda _m: None)

    def _sandbox(self, config: StackConfig) -> LocalSandbox:
        return LocalSandbox(config.stack, progress=self.progress)

    def up(self, config: StackConfig) -> GpuHost:
        host = self._sandbox(config).create(max_lifetime_hours=config.max_lifetime_hours)
        records.save(config.stack, config.cloud, host)
        return host

    def destroy(self, config: StackConfig) -> None:
        self._sandbox(config).destroy()
        records.forget(config.stack)

    def outputs(self, config: StackConfig) -> GpuHost | None:
        return self._sandbox(config).host()

    def running_host(self, config: StackConfig) -> GpuHost:
        if records.load(config.stack) is None and not self._sandbox(config).dir.exists():
            raise StackNotUp(f"stack '{config.stack}' has no host; bring one up first: "
                             f"gpuprov up --cloud local --stack {config.stack}")
        running = self._sandbox(config).host()
        if running is None:
            raise StackNotUp(f"the local sandbox host of stack '{config.stack}' is not running; "
                             f"`gpuprov up --cloud local --stack {config.stack}` starts it")
        return running
