"""``apps``: the apps gpuprov can deploy (built-in, and those in GPUPROV_APP_PATH), checked as they load."""

from __future__ import annotations

import json
from typing import Any

from gpuprov.apps import BUILTIN_DIR, registry
from gpuprov.cli.app import JsonOpt, app, print_table, table


@app.command("apps")
def list_apps(json_: JsonOpt = False) -> None:
    """List the apps (compose bundles) a stack's `apps:` may name: their services, ports and build inputs."""
    rows: list[dict[str, Any]] = []
    for a in registry().apps.values():
        rows.append({
            "app": a.name, "summary": a.summary, "folder": str(a.folder),
            "builtin": a.folder.parent == BUILTIN_DIR,
            "services": [{"service": s.name, "port": s.port, "container": s.container} for s in a.services],
            "build_inputs": [{"name": i.name, "help": i.help} for i in (a.build.inputs if a.build else ())],
        })
    if json_:
        print(json.dumps({"apps": rows}, indent=2))
        return
    grid = table("app", "services (port)", "build inputs", "from")
    for r in rows:
        grid.add_row(r["app"], ", ".join(f"{s['service']} ({s['port']})" for s in r["services"]),
                      ", ".join(i["name"] for i in r["build_inputs"]) or "-",
                      "built-in" if r["builtin"] else r["folder"])
    print_table(grid)
