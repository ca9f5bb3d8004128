"""Day-2 work on a deployed host (the library behind the ``fab`` tasks): logs, restart, redeploy
one app, backup of the folders an app declares (its data: predictions, studies, ...)."""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timezone
from pathlib import Path

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


def backup(config: StackConfig, host: GpuHost, destination: Path, s3_uri: str | None = None,
           app_name: str | None = None) -> Path:
    """Tar the folders an app declares for backup on the host and stream them here (one round trip);
    optionally upload the archive to ``s3://bucket/prefix`` (boto3, credentials from the environment).
    ``app_name``: which app; needed only when more than one deployed app declares backups."""
    if app_name is not None:
        app = _deployed_app(config, app_name)
    else:
        candidates = [a for a in registry().selected(config.apps) if a.backup]
        if len(candidates) != 1:
            names = ", ".join(a.name for a in candidates) or "none of the deployed apps declares one"
            raise AppError(f"say which app to back up (--app NAME); apps with backups: {names}")
        app = candidates[0]
    if not app.backup:
        raise AppError(f"app {app.name!r} declares nothing to back up")
    directory = on_host(f"{ROOT}/{app.name}")
    destination.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    archive = destination / f"{config.stack}-{app.name.replace('_', '-')}-{stamp}.tar.gz"
    # 0600 from the first byte: the archive holds an app's data (studies: likely patient data).
    fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with Remote(target_for(config, host)) as remote, os.fdopen(fd, "wb") as sink:
        code = remote.stream_to(f"{SUDO}$SUDO tar -czf - -C {directory} {' '.join(shlex.quote(p) for p in app.backup)}",
                                sink)
    if code:
        archive.unlink(missing_ok=True)
        raise ProvisioningError(f"the backup tar on the host failed (exit {code}); are {', '.join(app.backup)} "
                                f"there under {ROOT}/{app.name}?")
    if s3_uri:
        import boto3  # lazily: only backups to S3 need it

        if not s3_uri.startswith("s3://"):
            raise ProvisioningError(f"expected s3://bucket/prefix, got {s3_uri!r}")
        bucket, _, prefix = s3_uri[5:].partition("/")
        key = f"{prefix.rstrip('/')}/{archive.name}" if prefix else archive.name
        boto3.client("s3").upload_file(str(archive), bucket, key)
    return archive
