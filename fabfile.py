"""Day-2 tasks for a deployed stack (``fab --list``). Thin: each calls the library in ``provisioning``.

Every task takes ``--stack`` (default ``dev``) and optionally ``--cloud`` / ``--config`` like
``gpuprov``; the host comes from the stack's record (written by ``gpuprov up``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fabric import task

from gpuprov.apps import APP_PATH_ENV, use_app_path
from gpuprov.infra.config import StackConfig, load_config
from gpuprov.infra.host import GpuHost
from gpuprov.infra.stacks import running_host, stack_cloud

use_app_path(os.environ.get(APP_PATH_ENV))  # app folders of your own, besides the built-ins


def _stack(stack: str, cloud: str | None, config: str | None) -> tuple[StackConfig, GpuHost]:
    cfg = load_config(Path(config) if config else None, {"stack": stack, "cloud": cloud})
    known = stack_cloud(cfg) if cloud is None and config is None else None
    if known is not None and known != cfg.cloud:
        cfg = load_config(None, {"stack": stack, "cloud": known})  # the stack NAME is where its outputs say
    return cfg, running_host(cfg)


@task(help={"stack": "stack name", "cloud": "target cloud", "config": "YAML stack config"})
def deploy(c, stack="dev", cloud=None, config=None):
    """Deploy (only what differs changes) and print the JSON report."""
    from gpuprov.provisioning.deploy import deploy as run

    cfg, host = _stack(stack, cloud, config)
    print(json.dumps(run(cfg, host, print).to_json()))


@task(help={"only": "the app to recreate (`gpuprov apps` lists them)", "stack": "stack name"})
def redeploy(c, only, stack="dev", cloud=None, config=None):
    """Recreate every container of one app (after syncing files and images)."""
    from gpuprov.provisioning.day2 import redeploy as run

    cfg, host = _stack(stack, cloud, config)
    print(json.dumps(run(cfg, host, only).to_json()))


@task(help={"service": "a deployed service (`gpuprov apps` lists them)", "lines": "how many lines"})
def logs(c, service, stack="dev", lines=200, cloud=None, config=None):
    """Print the last lines of one service's log."""
    from gpuprov.provisioning.day2 import logs as run

    cfg, host = _stack(stack, cloud, config)
    print(run(cfg, host, service, int(lines)), end="")


@task(help={"service": "a deployed service (`gpuprov apps` lists them)"})
def restart(c, service, stack="dev", cloud=None, config=None):
    """Restart one service."""
    from gpuprov.provisioning.day2 import restart as run

    cfg, host = _stack(stack, cloud, config)
    run(cfg, host, service)
    print(f"{service} restarted")


@task
def tunnel(c, stack="dev", cloud=None, config=None):
    """Forward every deployed service to 127.0.0.1 until Ctrl-C."""
    from gpuprov.provisioning.tunnel import Tunnel

    cfg, host = _stack(stack, cloud, config)
    with Tunnel(cfg, host, same_ports=True, progress=print) as t:
        for service, url in t.urls.items():
            print(f"{service}  {url}", flush=True)
        try:
            t.run_forever()
        except KeyboardInterrupt:
            pass


@task
def smoke(c, stack="dev", cloud=None, config=None):
    """Each deployed app's smoke requests (a chat completion to vLLM, a segmentation to MONAI Label), answers checked."""
    from gpuprov.provisioning.smoke import smoke as run
    from gpuprov.provisioning.tunnel import Tunnel

    cfg, host = _stack(stack, cloud, config)
    with Tunnel(cfg, host) as t:
        print(json.dumps(run(cfg, t.urls)))


@task(help={"dest": "local folder for the archive", "s3": "optional s3://bucket/prefix to upload it to",
            "app": "which app's folders (needed only when several deployed apps declare backups)"})
def backup(c, stack="dev", dest="backups", s3=None, app=None, cloud=None, config=None):
    """Tar the folders an app declares (MONAI Label's predictions and studies), download them (and upload to S3)."""
    from gpuprov.provisioning.day2 import backup as run

    cfg, host = _stack(stack, cloud, config)
    print(run(cfg, host, Path(dest), s3, app))
