"""Day-2 tasks for a deployed stack (``fab --list``). Thin: each calls the library in ``provisioning``.

Every task takes ``--stack``/``-s`` (default ``dev``) and optionally ``--cloud`` / ``--config`` like
``gpuprov``; the stack must exist (``gpuprov status`` lists them), and its host comes from its record.
Errors are one ``error:`` line with gpuprov's exit codes; a usage error exits 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fabric import task

from gpuprov.apps import APP_PATH_ENV, use_app_path
from gpuprov.cli.fab import day2_task, required, stack_host, usage_errors_exit_2

use_app_path(os.environ.get(APP_PATH_ENV))  # app folders of your own, besides the built-ins
usage_errors_exit_2()

STACK = {"stack": "stack name (default: dev)", "cloud": "target cloud", "config": "YAML stack config"}
SERVICE = "a deployed service (`gpuprov apps` lists them)"

# `stack` comes first in every task's signature: invoke gives the first option starting with s the short flag -s.


@task(help=STACK)
@day2_task
def deploy(c, stack=None, cloud=None, config=None):
    """Deploy (only what differs changes) and print the JSON report."""
    from gpuprov.provisioning.deploy import deploy as run

    cfg, host = stack_host(stack, cloud, config)
    print(json.dumps(run(cfg, host, print).to_json()))


@task(help={**STACK, "only": "the app to recreate (`gpuprov apps` lists them)"})
@day2_task
def redeploy(c, stack=None, only=None, cloud=None, config=None):
    """Recreate every container of one app (after syncing files and images)."""
    from gpuprov.provisioning.day2 import redeploy as run

    app = required(only, "--only", "the app to recreate (`gpuprov apps` lists them)")
    cfg, host = stack_host(stack, cloud, config)
    print(json.dumps(run(cfg, host, app).to_json()))


@task(help={**STACK, "service": SERVICE, "lines": "how many lines (default: 200)"})
@day2_task
def logs(c, stack=None, service=None, lines=200, cloud=None, config=None):
    """Print the last lines of one service's log."""
    from gpuprov.provisioning.day2 import logs as run

    name = required(service, "--service", SERVICE)
    cfg, host = stack_host(stack, cloud, config)
    print(run(cfg, host, name, int(lines)), end="")


@task(help={**STACK, "service": SERVICE})
@day2_task
def restart(c, stack=None, service=None, cloud=None, config=None):
    """Restart one service."""
    from gpuprov.provisioning.day2 import restart as run

    name = required(service, "--service", SERVICE)
    cfg, host = stack_host(stack, cloud, config)
    run(cfg, host, name)
    print(f"{name} restarted")


@task(help=STACK)
@day2_task
def tunnel(c, stack=None, cloud=None, config=None):
    """Forward every deployed service to 127.0.0.1 until Ctrl-C."""
    from gpuprov.provisioning.tunnel import Tunnel

    cfg, host = stack_host(stack, cloud, config)
    with Tunnel(cfg, host, same_ports=True, progress=print) as t:
        for service, url in t.urls.items():
            print(f"{service}  {url}", flush=True)
        try:
            t.run_forever()
        except KeyboardInterrupt:
            pass


@task(help=STACK)
@day2_task
def smoke(c, stack=None, cloud=None, config=None):
    """Each deployed app's smoke requests (a chat completion to vLLM, a segmentation to MONAI Label), answers checked."""
    from gpuprov.provisioning.smoke import smoke as run
    from gpuprov.provisioning.tunnel import Tunnel

    cfg, host = stack_host(stack, cloud, config)
    with Tunnel(cfg, host) as t:
        print(json.dumps(run(cfg, t.urls)))


@task(help={**STACK, "dest": "local folder for the archive", "s3": "optional s3://bucket/prefix to upload it to",
            "app": "only this app's data (default: every deployed app that declares some)"})
@day2_task
def backup(c, stack=None, dest="backups", s3=None, app=None, cloud=None, config=None):
    """Archive the apps' declared data (MONAI Label's predictions and studies, Open WebUI's data), 0600; upload to S3."""
    from gpuprov.provisioning.backup import backup as run
    from gpuprov.provisioning.backup import check_destination, upload

    if s3:
        check_destination(s3)
    cfg, host = stack_host(stack, cloud, config)
    archive = run(cfg, host, Path(dest), app)
    print(archive)
    if s3:
        print(upload(archive, s3))
