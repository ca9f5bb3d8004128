"""``up``, ``down``, ``status``, ``plan``: a stack's host comes, is looked at, and goes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape

from gpuprov.cli.app import (
    CloudOpt,
    ConfigOpt,
    JsonOpt,
    StackOpt,
    app,
    cache_hosts_from_backend,
    err,
    load,
    load_existing,
    out,
    print_table,
    progress,
    settings,
    table,
)
from gpuprov.infra import records
from gpuprov.infra.clouds import driver_for
from gpuprov.infra.host import utcnow
from gpuprov.infra.teardown import forget_host, teardown

LOCAL_HINT = (
    "No cloud configured: using the local sandbox host (no GPU, no bill). "
    "Pick a cloud with --cloud lambda|aws|gcp or `cloud:` in --config FILE."
)


@app.command()
def up(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
       deploy: Annotated[bool, typer.Option("--deploy/--no-deploy", help="Deploy the apps once the host is up.")] = True,
       ssh_config: Annotated[bool | None, typer.Option(
           "--ssh-config/--no-ssh-config", help="Include gpuprov's `Host gpuprov-<stack>` entries from ~/.ssh/config "
                                                "(default: ask on a terminal, else leave it as it is).")] = None,
       ) -> None:
    """Bring the stack's host up (the local sandbox when no cloud is configured) and deploy its apps."""
    from gpuprov.infra.stack_index import UNKNOWN_CLOUD, known_stacks

    cfg = load(cloud, config, stack)
    if known_stacks(settings()).get(cfg.stack, cfg.cloud) not in (cfg.cloud, UNKNOWN_CLOUD):
        cfg = load_existing(cloud, config, stack)  # the stack lives elsewhere: up it there, or refuse another cloud
    if "cloud" not in cfg.model_fields_set:
        err.print(LOCAL_HINT)
    if not deploy:  # --no-deploy wins over a config that has the program deploy (`deploy: true`)
        cfg = cfg.model_copy(update={"deploy": False})
    from gpuprov.apps.fit import require_fit

    require_fit(cfg)  # before anything is created: the apps must run on the type's GPU, and fit on it
    cfg = open_ssh_from_egress(cfg)  # before anything is created too: SSH opens to this machine's address only
    driver = driver_for(cfg.cloud, settings())
    from gpuprov.provisioning.phases import Phases

    phases = Phases(progress)
    try:
        if driver.has_credentials():
            driver.preflight(cfg, progress)
        phases.begin("launch")
        with phases.watching():  # a backend that sees the launch accepted begins `boot` itself
            host = driver.backend(progress).up(cfg)
        phases.end()  # `boot` goes on in the deploy, up to the SSH banner
    except BaseException:
        from gpuprov.infra.stack_index import known_stacks

        # Nothing of it was kept: no key pair or host key stays. (A Pulumi CLI backend's stacks are not
        # listed here yet, so its key pair stays for the re-run or `down`.)
        pulumi_kept = driver.creates_cloud_resources and settings().pulumi != "mock"
        if not pulumi_kept and cfg.stack not in known_stacks(settings()):
            forget_host(cfg.stack)
        raise
    if driver.cluster:  # the apps are workloads of the stack itself: nothing to deploy over SSH
        out.print(f"[bold]{cfg.stack}[/bold]: {host.cloud} workloads applied in namespace {host.instance_id} "
                  f"({escape(host.address)}; GPU pool {host.instance_type or 'of the cluster'}, up to {host.gpu_count} "
                  f"x {host.gpu or 'GPU'}, ${host.usd_hour:.2f}/h idle)", soft_wrap=True)
        out.print(f"Reach them with `gpuprov tunnel --stack {cfg.stack}` (or for Open WebUI alone: "
                  f"kubectl port-forward -n {host.instance_id} svc/open-webui 3000:3000)", markup=False)
        return
    out.print(f"[bold]{cfg.stack}[/bold]: {host.cloud} host up at {host.ssh_user}@{host.address}:{host.ssh_port}"
              f" ({host.instance_type or 'unknown type'}, {host.gpu or 'no GPU'}, ${host.usd_hour:.2f}/h)")
    from gpuprov.cli.commands.diagnose import ssh_entry

    ssh_entry(cfg, host, ssh_config)  # `ssh gpuprov-<stack>`: gpuprov's own file; ~/.ssh/config only with consent
    try:
        if deploy:  # up = host + deploy
            from gpuprov.cli.commands.deploy import deploy_and_check

            deploy_and_check(cfg, host, phases=phases)
    finally:
        phases.end()
        records.record_phases(cfg.stack, phases.to_json())  # `gpuprov status` shows where the minutes went


def open_ssh_from_egress(cfg: Any) -> Any:
    """``cfg`` with this machine's egress address detected when the stack's SSH rule is made for it (exit 1
    when it cannot be told, nothing created), saying where SSH opens from and when that moved."""
    from gpuprov.infra.egress import resolve

    resolved = resolve(cfg, settings())
    if resolved.ssh_is_egress:
        rec = records.load(cfg.stack)
        before = rec.ssh_from if rec is not None and rec.ssh_from_egress else []
        moved = f" (it was open from {', '.join(before)}: the rule moves)" if before and before != [
            resolved.egress_cidr] else ""
        err.print(f"SSH to the host opens from {resolved.egress_cidr} only, this machine's egress address "
                  f"(detected){moved}; another address: ssh_cidrs in the config", markup=False)
    return resolved


@app.command()
def down(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
         purge: Annotated[bool, typer.Option("--purge", help="Also delete the stack's cache (cache: true), "
                                                             "which `down` otherwise keeps for the next `up`.")] = False,
         ) -> None:
    """Remove everything the stack created, and check that nothing is left (its cache stays unless --purge)."""
    from gpuprov.infra.cache import monthly_cost_line
    from gpuprov.infra.stack_index import UnknownStack

    try:
        cfg = load_existing(cloud, config, stack)  # a typo or a default never "removes" a stack that is not there
    except UnknownStack:
        if not purge or not _purge_orphan_cache(load(cloud, config, stack)):
            raise
        return
    kept = teardown(cfg, progress, settings(), purge=purge)
    out.print(f"[bold]{cfg.stack}[/bold]: {cfg.cloud} stack removed" + (", cache deleted" if purge else ""))
    for item in kept:
        out.print(f"kept {monthly_cost_line(item)}; `gpuprov down --purge -s {cfg.stack}` deletes it", markup=False)


def _purge_orphan_cache(cfg: Any) -> bool:
    """``down --purge`` of a stack an earlier ``down`` removed, whose cache it kept: delete the cache alone."""
    from gpuprov.infra.verify import own_caches, verify_cache_gone

    driver = driver_for(cfg.cloud, settings())
    if not (driver.keeps_caches and driver.has_credentials()):
        return False
    caches = own_caches(driver, cfg)
    if not caches:
        return False
    for item in caches:
        driver.purge_cache(item, progress)
    verify_cache_gone(cfg, settings(), progress)
    out.print(f"[bold]{cfg.stack}[/bold]: {cfg.cloud} cache deleted (the stack itself was already down)")
    return True


def _key_path(rec: records.StackRecord) -> str | None:
    """The private key that logs in to the stack's host: the configured one, else the stack's own pair."""
    from gpuprov.infra.keys import key_dir

    if rec.ssh_key_path:
        return rec.ssh_key_path
    own = key_dir(rec.stack) / "id_ed25519"
    return str(own) if own.exists() else None


def _secrets_file(stack: str) -> str | None:
    """Where the stack's generated secrets (vLLM's API key, logins) are kept, 0600; None before a deploy."""
    from gpuprov.provisioning.secrets import secrets_path

    path = secrets_path(stack)
    return str(path) if path.exists() else None


def _fmt_uptime(delta: timedelta | None) -> str:
    if delta is None:
        return "-"
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


EXPIRY_WARNING = timedelta(hours=1)



@app.command()
def status(json_: JsonOpt = False, stack: Annotated[str | None, typer.Option(
        "--stack", "-s", help="Show only this stack (default: every stack).")] = None) -> None:
    """Show each stack: target, address, state, uptime, hourly price."""
    cache_hosts_from_backend(stack)
    rows: list[dict[str, Any]] = []
    for rec in records.all_records():
        if stack and rec.stack != stack:
            continue
        host = rec.host
        state = driver_for(rec.cloud, settings()).host_state(rec.stack, host)
        rows.append({
            "stack": rec.stack, "cloud": rec.cloud, "address": host.address, "ssh_port": host.ssh_port,
            "ssh_user": host.ssh_user, "state": state, "instance_type": host.instance_type, "gpu": host.gpu,
            "uptime": host.uptime(),
            "usd_hour": host.usd_hour, "expires_at": host.expires_at,
            "deployed": rec.deployed, "ssh_key_path": _key_path(rec), "secrets_file": _secrets_file(rec.stack),
            "last_up_phases_s": rec.last_up_phases, "serving": rec.serving or None,
            "ssh_from": rec.ssh_from, "ssh_from_egress": rec.ssh_from_egress, "egress_now": None,
        })
    _compare_egress(rows)
    from gpuprov.infra.cache import all_caches, cache_json, monthly_cost_line

    caches, cache_problems = all_caches(settings())
    caches = [c for c in caches if not stack or c.stack == stack]
    if json_:
        for r in rows:
            r["uptime_s"] = int(r.pop("uptime").total_seconds()) if r["uptime"] else None
            r["expires_at"] = r["expires_at"].isoformat() if r["expires_at"] else None
        # "caches" only when a cloud lists one: `{"stacks": []}` stays the answer of a machine with nothing up.
        print(json.dumps({"stacks": rows, **({"caches": [cache_json(c) for c in caches]} if caches else {})},
                         indent=2))
        return
    for c in caches:  # kept across `down`: they bill with no host up
        out.print(f"stack {c.stack}: {monthly_cost_line(c)} ({c.state})", markup=False)
    for problem in cache_problems:
        err.print(problem, markup=False)
    if not rows:
        out.print("no stacks; `gpuprov up` brings one up")
        return
    grid = table("stack", "target", "address", "state", "uptime", "$/hour", "expires", whole=("stack", "address"))
    now = utcnow()
    for r in rows:
        expires = "-"
        if r["expires_at"]:
            left = r["expires_at"] - now
            expires = f"in {_fmt_uptime(left)}" if left.total_seconds() > 0 else "overdue"
        grid.add_row(str(r["stack"]), str(r["cloud"]), f"{r['ssh_user']}@{r['address']}:{r['ssh_port']}",
                      str(r["state"]), _fmt_uptime(r["uptime"]), f"{r['usd_hour']:.2f}", expires)
    print_table(grid)
    from gpuprov.provisioning.phases import describe

    for r in rows:
        if r["last_up_phases_s"]:
            out.print(f"{r['stack']}: last up took {describe(r['last_up_phases_s'])}", markup=False)
    for r in rows:  # what the last deploy sized for the host's own GPU
        if r["serving"]:
            out.print(f"{r['stack']}: ", end="", markup=False)
            _print_serving(r["serving"])
    from gpuprov.cli.commands.deploy import auth_hint

    for r in rows:
        hint = auth_hint(str(r["stack"]), list(r["deployed"]))
        if hint:
            out.print(f"{r['stack']}: {hint}", markup=False)
    for r in rows:  # where SSH comes in from, and whether this machine still is that address
        if r["ssh_from"]:
            how = " (your egress address, detected at up)" if r["ssh_from_egress"] else ""
            out.print(f"{r['stack']}: SSH open from {', '.join(r['ssh_from'])}{how}", markup=False)
        if r.get("egress_changed"):
            err.print(f"[bold yellow]warning:[/bold yellow] stack {r['stack']}: this machine's egress address is now "
                      f"{r['egress_now']}, not {', '.join(r['ssh_from'])}, so SSH to its host is refused: "
                      f"`gpuprov up --stack {r['stack']}` (or `gpuprov deploy`) moves the rule")
        elif r.get("egress_error"):
            err.print(f"stack {r['stack']}: {escape(r['egress_error'])}")
    for r in rows:  # before the reaper and the idle agent act on the expiry, say how to keep the host
        if r["expires_at"] and timedelta(0) < r["expires_at"] - now <= EXPIRY_WARNING:
            err.print(f"[bold yellow]warning:[/bold yellow] stack {r['stack']} expires in "
                      f"{_fmt_uptime(r['expires_at'] - now)}: `gpuprov extend --stack {r['stack']} --hours N` keeps it")


def _compare_egress(rows: list[dict[str, Any]]) -> None:
    """For stacks whose SSH is open from the detected egress address: this machine's address now (asked once),
    and whether it differs (``egress_changed``); a failed detection is said, and changes nothing."""
    from gpuprov.infra.egress import EgressUnknown, detect

    mine = [r for r in rows if r["ssh_from_egress"]]
    if not mine:
        return
    try:
        now: str | None = detect(settings())
        error = None
    except EgressUnknown as failed:
        now, error = None, str(failed)
    for r in mine:
        r["egress_now"] = now
        r["egress_changed"] = now is not None and r["ssh_from"] != [now]
        if error:
            r["egress_error"] = error


@app.command()
def plan(json_: JsonOpt = False, cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None) -> None:
    """Show what `up` would create, who could reach which port, and the cost. No credentials needed."""
    from gpuprov.infra.plan import key_settings
    from gpuprov.infra.plan import plan as make_plan

    cfg = load(cloud, config, stack)
    result = make_plan(cfg)
    _note_undetected_egress(result)
    if json_:
        print(json.dumps(result, indent=2, default=str))
        _refuse_if_it_cannot_serve(cfg, result)
        return
    out.print(f"[bold]{cfg.stack}[/bold] on {cfg.cloud}: {len(result['resources'])} resources")
    for r in result["resources"]:
        out.print(f"  + {r['type']}  {r['name']}")
        for key, value in key_settings(cfg, r).items():
            out.print(f"      {key}: {value}", markup=False)
    out.print("exposure:")
    for e in result["exposure"]:
        src = ", ".join(e["from"]) or "nobody"
        out.print(f"  {e['port']:>5} {e['service']:<12} from {src} ({e['via']})", markup=False)

    _print_serving(result["serving"])
    c = result["cost"]
    out.print(f"cost: ${c['hourly_usd']:.3f}/hour, ${c['daily_usd']:.2f}/day, ${c['monthly_usd']:.2f}/month"
              f"  [dim]({c['source']})[/dim]")
    if c.get("at_min"):
        out.print(f"      at the pools' minimum: ${c['at_min']['hourly_usd']:.3f}/hour, ${c['at_min']['daily_usd']:.2f}/day")
        for p in result.get("node_pools", []):
            out.print(f"      {p['pool']:<14} {p['instance_type'] or '-':<14} {p['min_nodes']}-{p['max_nodes']} x "
                      f"${p['usd_hour_per_node']:.3f}/h", markup=False)
    if c.get("note"):
        out.print(f"      {c['note']}")
    if result.get("idle_protection"):
        err.print(f"[bold yellow]warning:[/bold yellow] {escape(result['idle_protection'])}")
    _refuse_if_it_cannot_serve(cfg, result)


def _note_undetected_egress(result: dict[str, Any]) -> None:
    """A plan needs no network: when this machine's egress address could not be told, say what `up` does."""
    from gpuprov.infra.exposure import EGRESS_AT_UP

    if any(e["via"] == EGRESS_AT_UP for e in result["exposure"]):
        err.print(f"[bold yellow]note:[/bold yellow] this machine's egress address could not be told now "
                  f"({escape(settings().egress_url)} did not answer), so SSH shows closed; `up` asks again, and "
                  "stops (exit 1, nothing created) if it cannot: ssh_cidrs names the ranges instead")


def _refuse_if_it_cannot_serve(cfg: Any, result: dict[str, Any]) -> None:
    """After the plan is shown: exit 2 with why, and which type fits, when the stack cannot run on its GPU."""
    if result["serving"].get("problems"):
        from gpuprov.apps.fit import require_fit

        require_fit(cfg)


def _print_serving(serving: dict[str, Any]) -> None:
    """The apps' settings for the GPU, and the GPU memory budget: per service, total, headroom."""
    gpu = serving.get("gpu")
    if gpu is None:
        out.print(f"serving: {serving['note']}")
        return
    out.print(f"serving on {gpu['name']} (compute capability {gpu['compute_capability']}, {gpu['memory_gib']:g} GiB, "
              f"{serving['arch']}):")
    for name, values in serving["settings"].items():
        out.print(f"  {name}: " + ", ".join(f"{k.lower()}={v}" for k, v in values.items()), markup=False)
    for row in serving["budget"]:
        out.print(f"  {row['gib']:>5.1f} GiB  {row['service']:<12} [dim]{row['basis']}[/dim]")
    out.print(f"  {serving['total_gib']:>5.1f} GiB  total, {serving['headroom_gib']:g} GiB headroom")
    for problem in serving["problems"]:
        out.print(f"  [red]cannot run:[/red] {problem}", soft_wrap=True)
