"""``gpuprov reap``: remove what gpuprov left running (expired, or the caller's abandoned CI stacks; a named
owner's orphans only when asked, previewed first), then check again."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer

from gpuprov.cli.app import JsonOpt, app, err, out, progress, settings
from gpuprov.infra.clouds import all_drivers
from gpuprov.infra.owner import REFERENCE
from gpuprov.infra.reaper import ReapFailed, reap, reapable_clouds


@app.command("reap")
def reap_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    cloud: Annotated[list[str] | None, typer.Option("--cloud", help="Cloud to sweep (repeatable); default: "
                                                                   "every cloud with credentials here.")] = None,
    grace: Annotated[float, typer.Option("--grace-minutes", help="Orphans (with --sweep-orphans) younger than this, "
                                                                 "and keys or rulesets with no instance younger than "
                                                                 "this or 30 minutes, are left alone.")] = 30.0,
    sweep_owner: Annotated[str | None, typer.Option(
        "--sweep-orphans", metavar="OWNER", help="Also remove OWNER's gpuprov ci hosts that outlived their run "
        "(e.g. gha:org/repo); lists them only, unless --yes.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="With --sweep-orphans: remove what the preview lists.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Terminate gpuprov instances whose expiry passed, and this caller's CI stacks whose run is provably
    gone; remove their keys, firewall rulesets and security groups; list the clouds again and report.
    Nobody's live, unexpired host is touched: others' stacks go by their expiry tag alone."""
    sweepable = [d for d in all_drivers(settings()) if d.creates_cloud_resources or d.cluster]
    names = [d.name for d in sweepable]
    clouds = list(cloud or reapable_clouds(settings()))
    for c in clouds:
        if c not in names:
            raise typer.BadParameter(f"{c!r}: expected one of {', '.join(names)}", param_hint="--cloud")
    if not clouds:
        hints = ", ".join(d.credential_hint for d in sweepable)
        err.print(f"no cloud credentials found ({hints}): only local CI leases are checked")
    if sweep_owner is not None and not REFERENCE.fullmatch(sweep_owner):
        raise typer.BadParameter(f"{sweep_owner!r} is not an owner reference (e.g. gha:org/repo or alice@<machine-id>)",
                                 param_hint="--sweep-orphans")
    if grace < 0:
        raise typer.BadParameter("expected minutes, 0 or more", param_hint="--grace-minutes")
    preview = dry_run or (sweep_owner is not None and not yes)
    report = reap(clouds, dry_run=preview, grace=timedelta(minutes=grace), progress=progress, settings=settings(),
                  sweep_owner=sweep_owner)
    if json_:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        verb = "would remove" if preview else "removed"
        listed = report.found if preview else report.removed
        for stack in report.stacks_torn_down:
            out.print(f"stack {stack}: {'would be torn down' if preview else 'torn down'} (its gpuprov ci process is gone)")
        for f in listed:
            out.print(f"{verb} {f.item} [{f.reason}]", markup=False)  # as markup, "[expired]" would vanish
        for kept in report.caches:  # never removed by the reaper: said, with what it costs
            price = f", ${kept['usd_month']:.2f}/month" if kept.get("usd_month") is not None else ""
            out.print(f"cache {kept['name']} in {kept['region']} ({kept['cloud']}{price}): {kept['verdict']}: "
                      f"{kept['why']}",
                      markup=False)
        if not listed and not report.stacks_torn_down and report.ok:  # a cloud it could not list is not "nothing"
            out.print(f"nothing to reap in {', '.join(report.clouds) or 'no cloud'}")
        elif preview and not dry_run:
            out.print(f"preview only: rerun with --sweep-orphans {sweep_owner} --yes to remove these")
    if not report.ok:
        problems = [*report.errors, *(f"still listed: {r}" for r in report.remaining)]
        raise ReapFailed("the reaper could not remove everything; it may still bill:\n  - " + "\n  - ".join(problems))
