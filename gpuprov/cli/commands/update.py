"""``update``, ``rollback``, ``backup``, ``restore``: change a serving stack safely, and keep its data."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from gpuprov.cli.app import CloudOpt, ConfigOpt, JsonOpt, StackOpt, app, load_existing, out, settings
from gpuprov.cli.commands.deploy import live_progress, stack_host
from gpuprov.infra.config import ConfigError
from gpuprov.infra.stacks import running_host

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="A value to change: vllm_image, open_webui_image, monai_label_image, monai_label_ref, model_id or "
         "served_model_name (e.g. open_webui_image=ghcr.io/open-webui/open-webui:v0.6.35). Repeatable.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds every service has to answer its health check.")]
AppOpt = Annotated[str | None, typer.Option("--app", help="Only this app (`gpuprov apps` lists them).")]


def changes_of(given: list[str] | None) -> dict[str, str]:
    """``--set KEY=VALUE`` values as {key: value}."""
    changes: dict[str, str] = {}
    for item in given or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError("--set", item, "expected KEY=VALUE, such as monai_label_ref=<40-hex commit>")
        changes[key.strip()] = value.strip()
    return changes


@app.command()
def update(set_: SetOpt = None, json_: JsonOpt = False, cloud: CloudOpt = None, config: ConfigOpt = None,
           stack: StackOpt = None, timeout: TimeoutOpt = 600.0) -> None:
    """Change an image tag, the MONAI Label commit or the model on the running host; rolls back by itself if unhealthy.

    Only what changed is applied; the previous release is kept on the host (`gpuprov rollback`). Exit 7: the new
    release was not healthy within --timeout and the old one serves again.
    """
    from gpuprov.provisioning.update import update as run_update
    from gpuprov.provisioning.update import updated_config

    changes = changes_of(set_)
    cfg = load_existing(cloud, config, stack)
    updated_config(cfg, changes)  # a refused value stops here, before the host is looked up
    host = running_host(cfg, settings())
    with live_progress() as show:
        result = run_update(cfg, changes, host, show, timeout_s=timeout)
    if json_:
        print(json.dumps(result.to_json()))
        return
    if not result.apps:
        out.print(f"[bold]{cfg.stack}[/bold]: the host already runs {escape(', '.join(f'{k}={v}' for k, v in changes.items()))}; "
                  "nothing changed")
        return
    values = " ".join(f"{k}: {v}" for k, v in changes.items())
    out.print(f"[bold]{cfg.stack}[/bold]: updated {', '.join(result.apps)} "
              f"({', '.join(c for c in result.changed if not c.startswith(('files:', 'keep_previous:')))}) in "
              f"{result.seconds:.1f}s; all healthy. `gpuprov rollback --stack {cfg.stack}` returns to the previous "
              f"release. Put {escape(values)} in your config, or the next `gpuprov deploy` returns to the old values")


@app.command()
def rollback(app_: AppOpt = None, json_: JsonOpt = False, cloud: CloudOpt = None, config: ConfigOpt = None,
             stack: StackOpt = None, timeout: TimeoutOpt = 600.0) -> None:
    """Return to the release the last `gpuprov update` replaced (run again to go forward), data untouched."""
    from gpuprov.provisioning.update import rollback_and_check

    cfg, host = stack_host(cloud, config, stack)
    with live_progress() as show:
        result = rollback_and_check(cfg, host, [app_] if app_ else None, timeout_s=timeout, progress=show)
    if json_:
        print(json.dumps(result.to_json()))
        return
    out.print(f"[bold]{cfg.stack}[/bold]: {', '.join(result.apps)} back on the previous release "
              f"({escape(', '.join(result.images))}); all healthy")


@app.command()
def backup(dest: Annotated[str, typer.Option("--dest", help="A local folder, or s3://bucket/prefix.")] = "backups",
           app_: AppOpt = None, cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None) -> None:
    """Archive the apps' data (MONAI Label's studies and predictions, Open WebUI's accounts and chats), 0600."""
    from gpuprov.provisioning.backup import backup as run_backup
    from gpuprov.provisioning.backup import check_destination, upload

    check_destination(dest)
    cfg, host = stack_host(cloud, config, stack)
    if dest.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="gpuprov-backup-") as tmp:
            print(upload(run_backup(cfg, host, Path(tmp), app_), dest))
        return
    print(run_backup(cfg, host, Path(dest).expanduser(), app_))


@app.command()
def restore(archive: Annotated[str, typer.Argument(help="A `gpuprov backup` archive: a file or s3://bucket/key.")],
            cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
            timeout: TimeoutOpt = 600.0) -> None:
    """Put a backup's data onto the stack's host (a new host of the same stack), then start the apps healthy."""
    from gpuprov.provisioning.backup import download, read_archive
    from gpuprov.provisioning.backup import restore as run_restore
    from gpuprov.provisioning.health import wait_healthy

    with tempfile.TemporaryDirectory(prefix="gpuprov-restore-") as tmp:
        if archive.startswith("s3://"):
            path = download(archive, Path(tmp))
        else:
            path = Path(archive).expanduser()
            if not path.is_file():
                raise ConfigError("ARCHIVE", archive, "the file does not exist; give a `gpuprov backup` archive")
        read_archive(path)  # not gpuprov's, or unsafe: refused before any connection
        cfg, host = stack_host(cloud, config, stack)
        with live_progress() as show:
            apps = run_restore(cfg, host, path, show)
            show("waiting until every service answers its health check (through an SSH tunnel)")
            wait_healthy(cfg, host, timeout, progress=show)
    out.print(f"[bold]{cfg.stack}[/bold]: restored {', '.join(apps)} from {escape(Path(archive).name)}; all healthy")
