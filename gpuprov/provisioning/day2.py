"""Day-2 work on a deployed host (the library behind the ``fab`` tasks): logs, restart, redeploy
one app. Backups: :mod:`gpuprov.provisioning.backup` (``gpuprov backup`` and ``fab backup``)."""

from __future__ import annotations

import shlex

from gpuprov.apps import registry
from gpuprov.apps.base import App, AppError
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.deploy import DeployResult, deploy
from gpuprov.provisioning.errors import ProvisioningError
from gpuprov.provisioning.hostpaths import ROOT, on_host
from gpuprov.provisioning.ssh import Remote, target_for

SUDO = 'if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi\n'
COMPOSE_FILES = ("compose.yaml", "compose.gpu.yaml", "compose.sandbox.yaml")


def _container(service: str) -> str:
    """The container name of ``service`` (fixed in its app's compose file): what `docker logs` addresses."""
    return registry().service(service)[1].container


def logs(config: StackConfig, host: GpuHost, service: str, lines: int = 200) -> str:
    """The last ``lines`` log lines of one service."""
    container = shlex.quote(_container(service))
    with Remote(target_for(config, host)) as remote:
        code, out, err = remote.script(f"{SUDO}$SUDO docker logs --tail {int(lines)} {container} 2>&1")
    if code:
        raise ProvisioningError(f"could not read the logs of {service}: {out[-500:]}{err[-500:]}")
    return out


def restart(config: StackConfig, host: GpuHost, service: str) -> None:
    """Restart one service's container (same config, same image)."""
    container = shlex.quote(_container(service))
    with Remote(target_for(config, host)) as remote:
        code, out, err = remote.script(f"{SUDO}$SUDO docker restart {container} >/dev/null")
    if code:
        raise ProvisioningError(f"could not restart {service}: {err[-500:]}")


def _deployed_app(config: StackConfig, name: str) -> App:
    app = registry().app(name)
    if name not in config.apps:
        raise AppError(f"app {name!r} is not deployed on this stack; deployed: {', '.join(config.apps)}")
    return app


def redeploy(config: StackConfig, host: GpuHost, app_name: str) -> DeployResult:
    """Bring the host in line with the config, then recreate every container of one app."""
    app = _deployed_app(config, app_name)
    result = deploy(config, host)
    directory = on_host(f"{ROOT}/{app.name}")
    files = f"$(for f in {' '.join(COMPOSE_FILES)}; do [ -f $f ] && printf -- '-f %s ' $f; done)"
    with Remote(target_for(config, host)) as remote:
        code, out, err = remote.script(
            f"{SUDO}cd {directory} && $SUDO docker compose -p {shlex.quote(app.project)} {files} up -d --force-recreate 2>&1")
        result.ssh_round_trips += remote.round_trips
    if code:
        raise ProvisioningError(f"could not recreate {app.name}: {out[-1000:]}")
    result.changed += [s.name for s in app.services if s.name not in result.changed]
    return result
