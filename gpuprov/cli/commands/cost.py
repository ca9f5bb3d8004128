"""``cost``: what a GPU host costs here and elsewhere, and what the running stacks have spent."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer

from gpuprov.cli.app import (
    CloudOpt,
    ConfigOpt,
    JsonOpt,
    StackOpt,
    app,
    cache_hosts_from_backend,
    err,
    load,
    out,
    print_table,
    settings,
    table,
)
from gpuprov.cost.estimate import estimate
from gpuprov.cost.live import PricedOffer
from gpuprov.cost.spend import spend_so_far
from gpuprov.infra import records
from gpuprov.infra.clouds import driver_for
from gpuprov.infra.prices import all_offers

OfflineOpt = Annotated[bool, typer.Option("--offline", help="Use the dated catalog only; ask no cloud for prices.")]


def _row(o: PricedOffer, configured: bool) -> dict[str, Any]:
    e = estimate(o.usd_hour, o.source)
    return {**asdict(o), "usd_day": e.daily_usd, "usd_month": e.monthly_usd, "configured": configured}


@app.command("cost")
def cost_command(json_: JsonOpt = False, offline: OfflineOpt = False, cloud: CloudOpt = None,
                 config: ConfigOpt = None, stack: StackOpt = None) -> None:
    """Prices per hour, day and month (configured offer and alternatives, cheapest first), and spend so far."""
    from gpuprov.infra.clouds import driver_class
    from gpuprov.infra.clouds.base import catalog_name

    cfg = load(cloud, config, stack)
    itype = cfg.resolved_instance_type
    sells = catalog_name(driver_class(cfg.cloud))  # a cluster on AWS rents AWS's types
    offers = all_offers(settings(), offline=offline,
                        region_of=lambda name: cfg.resolved_region if name == sells else None)
    rows = [_row(o, o.cloud == sells and o.type == itype) for o in offers]
    pools = driver_for(cfg.cloud, settings()).node_pools(cfg)
    configured = next((r for r in rows if r["configured"]), None)
    spends: list[dict[str, Any]] = []
    cache_hosts_from_backend()  # a colleague's stack spends too
    for rec in records.all_records():
        host = rec.host
        s = spend_so_far(rec.stack, rec.cloud, host.instance_type, host.usd_hour, host.launched_at or rec.created_at,
                         budget_usd=cfg.budget_usd if rec.stack == cfg.stack else None)
        spends.append({**asdict(s), "launched_at": s.launched_at.isoformat() if s.launched_at else None,
                       "budget_state": s.budget_state})
    from gpuprov.infra.cache import all_caches, cache_json, monthly_cost_line

    caches, cache_problems = all_caches(settings())
    if json_:
        print(json.dumps({"stack": cfg.stack, "cloud": cfg.cloud, "instance_type": itype, "configured": configured,
                          "offers": rows, "spend": spends, "caches": [cache_json(c) for c in caches],
                          **({"node_pools": pools} if pools else {})}, indent=2))
        return
    if configured is None:
        why = "not in the price list" if driver_for(cfg.cloud, settings()).creates_cloud_resources else "no cloud bill"
        out.print(f"[bold]{cfg.stack}[/bold]: {cfg.cloud} {itype or ''} ({why}); alternatives below")
    grid = table("", "provider", "type", "GPU", "$/hour", "$/day", "$/month", "price from", whole=("type",))
    for r in rows:
        source = f"{'live' if r['live'] else 'catalog'}, {r['as_of']}"
        grid.add_row("*" if r["configured"] else "", r["cloud"], r["type"], f"{r['gpus']}x {r['gpu']}",
                      f"{r['usd_hour']:.3f}", f"{r['usd_day']:.2f}", f"{r['usd_month']:.2f}", source)
    print_table(grid)
    notes = sorted({f"{r['cloud']}: {r['note']}" for r in rows if r["note"] and r["note"] != "offline"})
    for note in notes:
        out.print(f"[dim]catalog prices for {note}[/dim]")
    out.print("[dim]* the configured offer; $/month is 730 hours[/dim]")
    if pools:  # a cluster: what each pool costs at its minimum and its maximum
        low, high = sum(p["usd_hour_at_min"] for p in pools), sum(p["usd_hour_at_max"] for p in pools)
        out.print(f"{cfg.cloud} node pools: ${low:.3f}/hour at their minimum, ${high:.3f}/hour at their maximum")
        for p in pools:
            out.print(f"  {p['pool']:<14} {p['instance_type'] or '-':<14} {p['min_nodes']}-{p['max_nodes']} x "
                      f"${p['usd_hour_per_node']:.3f}/h  ({p['source']})", markup=False)
    for c in caches:  # storage kept across `down`: it bills while no host runs
        out.print(f"stack {c.stack}: {monthly_cost_line(c)}", markup=False)
    for problem in cache_problems:
        err.print(problem, markup=False)
    if spends:
        spend_table = table("stack", "provider", "type", "up for", "$/hour", "spent so far", "budget", whole=("stack", "type"))
        for row in spends:
            budget = "-" if row["budget_usd"] is None else f"${row['budget_usd']:.2f} ({row['budget_state']})"
            spend_table.add_row(row["stack"], row["cloud"], row["instance_type"] or "-", f"{row['hours']:.1f} h",
                                f"{row['usd_hour']:.3f}", f"${row['usd']:.2f}", budget)
        print_table(spend_table)
    else:
        out.print("no running stacks: nothing spent")
