"""``gpuprov extend``: a stack lives longer, in the cloud's expiry tags and on the host, together."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gpuprov.cli.app import CloudOpt, ConfigOpt, JsonOpt, StackOpt, app, load, out, progress


@app.command()
def extend(
    hours: Annotated[float, typer.Option("--hours", help="Hours to add to the current expiry.")] = 4.0,
    json_: JsonOpt = False,
    cloud: CloudOpt = None,
    config: ConfigOpt = None,
    stack: StackOpt = None,
) -> None:
    """Move the stack's expiry later: the reaper's expiry tags and the idle agent's hard limit.

    A long job then survives the hourly `gpuprov reap` without turning it off.
    """
    from gpuprov.infra.extend import extend as extend_stack

    if not 0 < hours <= 24 * 31:
        raise typer.BadParameter("expected hours greater than 0 and at most 744", param_hint="--hours")
    if cloud is None and config is None:  # the stack's own cloud, as this machine recorded it
        from gpuprov.infra import records

        record = records.load(stack or "dev")
        cloud = record.cloud if record is not None else None
    cfg = load(cloud, config, stack)
    done = extend_stack(cfg, hours, progress)
    if json_:
        print(json.dumps({"stack": done.stack, "expires_at": done.expires_at.isoformat(), "agent": done.agent,
                          "retagged": [f"{i.kind} {i.id}" for i in done.retagged]}, indent=2))
        return
    out.print(f"stack {done.stack}: expires at {done.expires_at.isoformat(timespec='seconds')} "
              f"({len(done.retagged)} cloud resource(s) retagged; idle agent: {done.agent})")
