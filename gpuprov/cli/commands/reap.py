"""``gpuprov reap``: remove what gpuprov left running (expired, abandoned or orphaned), then check again."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer

from gpuprov.cli.app import JsonOpt, app, err, out, progress, settings
from gpuprov.infra.clouds import all_drivers
from gpuprov.infra.reaper import ReapFailed, reap, reapable_clouds


@app.command("reap")
def reap_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    cloud: Annotated[list[str] | None, typer.Option("--cloud", help="Cloud to sweep (repeatable); default: "
                                                                   "every cloud with credentials here.")] = None,
    grace: Annotated[float, typer.Option("--grace-minutes", help="Orphans younger than this are left alone "
                                                                 "(a launch elsewhere may be in flight).")] = 30.0,
    json_: JsonOpt = False,
) -> None:
    """Terminate gpuprov instances whose expiry passed or whose stack is gone; remove their keys,
    firewall rulesets and security groups; list the clouds again and report."""
    sweepable = [d for d in all_drivers(settings()) if d.creates_cloud_resources]
    names = [d.name for d in sweepable]
    clouds = list(cloud or reapable_clouds(settings()))
    for c in clouds:
        if c not in names:
            raise typer.BadParameter(f"{c!r}: expected one of {', '.join(names)}", param_hint="--cloud")
    if not clouds:
        hints = ", ".join(d.credential_hint for d in sweepable)
        err.print(f"no cloud credentials found ({hints}): only local CI leases are checked")
    report = reap(clouds, dry_run=dry_run, grace=timedelta(minutes=grace), progress=progress, settings=settings())
    if json_:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        verb = "would remove" if dry_run else "removed"
        listed = report.found if dry_run else report.removed
        for stack in report.stacks_torn_down:
            out.print(f"stack {stack}: {'would be torn down' if dry_run else 'torn down'} (its gpuprov ci process is gone)")
        for f in listed:
            out.print(f"{verb} {f.item} [{f.reason}]")
        if not listed and not report.stacks_torn_down:
            out.print(f"nothing to reap in {', '.join(report.clouds) or 'no cloud'}")
    if not report.ok:
        problems = [*report.errors, *(f"still listed: {r}" for r in report.remaining)]
        raise ReapFailed("the reaper could not remove everything; it may still bill:\n  - " + "\n  - ".join(problems))
