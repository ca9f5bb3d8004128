"""Day-2 work on a deployed host (the library behind the ``fab`` tasks): logs, restart, redeploy
one stack, backup of MONAI Label's predictions and studies."""

from __future__ import annotations

import shlex
from datetime import datetime, timezone
from pathlib import Path

from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.deploy import DeployResult, deploy
from gpuprov.provisioning.desired import COMPOSE_PROJECTS, STACK_SERVICES
from gpuprov.provisioning.errors import ProvisioningError
from gpuprov.provisioning.ssh import Remote, target_for

# Fixed container names (compose files): what `docker logs` / `docker restart` address.
CONTAINERS = {"vllm": "vllm", "open_webui": "open-webui", "monai_label": "monai_sam2"}
SUDO = 'if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi\n'


def _container(service: str) -> str:
    if service not in CONTAINERS:
        raise ProvisioningError(f"unknown service {service!r}; expected one of: {', '.join(CONTAINERS)}")
    return CONTAINERS[service]


def logs(config: StackConfig, host: GpuHost, service: str, lines: int = 200) -> str:
    """The last ``lines`` log lines of one service."""
    with Remote(target_for(config, host)) as remote:
        code, out, err = remote.script(f"{SUDO}$SUDO docker logs --tail {int(lines)} {_container(service)} 2>&1")
    if code:
        raise ProvisioningError(f"could not read the logs of {service}: {out[-500:]}{err[-500:]}")
    return out


def restart(config: StackConfig, host: GpuHost, service: str) -> None:
    """Restart one service's container (same config, same image)."""
    with Remote(target_for(config, host)) as remote:
        code, out, err = remote.script(f"{SUDO}$SUDO docker restart {_container(service)} >/dev/null")
    if code:
        raise ProvisioningError(f"could not restart {service}: {err[-500:]}")


def redeploy(config: StackConfig, host: GpuHost, stack: str) -> DeployResult:
    """Bring the host in line with the config, then recreate every container of one seed stack."""
    if stack not in STACK_SERVICES or stack not in config.stacks:
        raise ProvisioningError(f"stack {stack!r} is not deployed here; deployed: {', '.join(config.stacks)}")
    result = deploy(config, host)
    target = target_for(config, host)
    directory = shlex.quote(f"{target.remote_root}/{stack}")
    files = "$(for f in compose.yaml compose.gpu.yaml compose.sandbox.yaml; do [ -f $f ] && printf -- '-f %s ' $f; done)"
    with Remote(target) as remote:
        code, out, err = remote.script(
            f"{SUDO}cd {directory} && $SUDO docker compose -p {COMPOSE_PROJECTS[stack]} {files} up -d --force-recreate 2>&1")
        result.ssh_round_trips += remote.round_trips
    if code:
        raise ProvisioningError(f"could not recreate {stack}: {out[-1000:]}")
    result.changed += [s for s in STACK_SERVICES[stack] if s not in result.changed]
    return result


def backup(config: StackConfig, host: GpuHost, destination: Path, s3_uri: str | None = None) -> Path:
    """Tar MONAI Label's predictions and studies on the host and stream them here (one round trip);
    optionally upload the archive to ``s3://bucket/prefix`` (boto3, credentials from the environment)."""
    if "monai_label" not in config.stacks:
        raise ProvisioningError("nothing to back up: the monai_label stack is not deployed on this host")
    target = target_for(config, host)
    data = shlex.quote(f"{target.remote_root}/monai_label/data")
    destination.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    archive = destination / f"{config.stack}-monai-label-{stamp}.tar.gz"
    with Remote(target) as remote, archive.open("wb") as sink:
        code = remote.stream_to(f"{SUDO}$SUDO tar -czf - -C {data} predictions studies", sink)
    if code:
        archive.unlink(missing_ok=True)
        raise ProvisioningError(f"the backup tar on the host failed (exit {code}); is {data} there?")
    if s3_uri:
        import boto3  # lazily: only backups to S3 need it

        if not s3_uri.startswith("s3://"):
            raise ProvisioningError(f"expected s3://bucket/prefix, got {s3_uri!r}")
        bucket, _, prefix = s3_uri[5:].partition("/")
        key = f"{prefix.rstrip('/')}/{archive.name}" if prefix else archive.name
        boto3.client("s3").upload_file(str(archive), bucket, key)
    return archive
