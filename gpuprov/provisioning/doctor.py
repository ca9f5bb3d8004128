"""``gpuprov doctor``: the seed guide's troubleshooting list, automated.

Two halves, as in :mod:`gpuprov.provisioning.facts`:

- :func:`doctor_script` gathers every fact in ONE shell script (one SSH round trip), each in its
  own delimited section: container states and their recent log lines, the GPU on the host and in
  each GPU container (torch's CUDA where the container has torch), the listening sockets and who
  holds them (``ss -ltnp`` plus each holder's parent chain), disk and Docker space, the idle agent's
  state and last decision.
- :func:`findings` turns those facts (plus the stack record: expiry, spend) into findings, each with
  the fix to run; pure Python, tested as data.

A finding is something to act on (exit 1); a note is an observation (no GPU on a sandbox, the 4xx
count) that leaves a healthy host healthy (exit 0).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import yaml

from gpuprov.apps import registry
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.facts import MARK, _sections
from gpuprov.provisioning.hostpaths import HOST_ROOT, ROOT, on_host
from gpuprov.provisioning.idle_agent import REMOTE_CONFIG

LOG_WINDOW = timedelta(minutes=30)  # how far back the services' logs are scanned
LOG_TAIL = 400  # at most this many lines per service
MIN_FREE_GB = 5.0  # less free space than this on the disk holding the apps or Docker: a finding
CRASH_LOOP_RESTARTS = 2  # restarts within CRASH_LOOP_WINDOW of a running container: it is crash-looping
CRASH_LOOP_WINDOW = timedelta(minutes=5)
EXPIRY_WARNING = timedelta(hours=1)
BUDGET_WARN_SHARE = 0.8
AGENT_LOG = "/var/log/gpuprov-idle.jsonl"
AGENT_PID = "/run/gpuprov-idle.pid"

_REQUEST = re.compile(r'"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (\S+) HTTP/[0-9.]+" (\d{3})')
_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|No available memory for the cache blocks|"
                  r"larger than the available KV cache memory|insufficient GPU memory", re.IGNORECASE)


@dataclass
class Finding:
    """Something wrong, and the command (or change) that fixes it."""

    check: str  # gpu | containers | ports | disk | logs | oom | idle_agent | expiry | budget | path
    subject: str  # the service, port, folder or agent it is about
    problem: str
    fix: str


@dataclass
class Report:
    stack: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "healthy": self.healthy, "findings": [asdict(f) for f in self.findings],
                "notes": self.notes, "facts": self.facts}


# --- gathering: one script ------------------------------------------------------------------------


def gpu_services(config: StackConfig) -> set[str]:
    """The services that get a GPU: those an app's ``compose.gpu.yaml`` names."""
    out: set[str] = set()
    for app in registry().selected(config.apps):
        path = app.folder / "compose.gpu.yaml"
        if path.is_file():
            out |= set((yaml.safe_load(path.read_text()) or {}).get("services") or {})
    return out


def doctor_script(config: StackConfig, since_epoch: int) -> str:
    """ONE script printing every section :func:`parse` reads. ``since_epoch``: logs from then on."""
    q = shlex.quote
    services = registry().services(config.apps)
    gpu = gpu_services(config)
    torch_probe = q("import torch; print('torch', torch.__version__, torch.cuda.is_available(), "
                    "torch.cuda.device_count())")
    inspect = q("{{.State.Status}}|{{.State.Restarting}}|{{.RestartCount}}|{{.State.ExitCode}}|{{.State.OOMKilled}}|"
                "{{.State.StartedAt}}|{{.State.Pid}}|{{.State.Error}}")
    per_service = []
    for s in services:
        c = q(s.container)
        part = [f"s inspect:{s.name}; $SUDO docker inspect --format {inspect} {c} 2>/dev/null || echo missing",
                f"s logs:{s.name}; $SUDO docker logs --since {int(since_epoch)} --tail {LOG_TAIL} {c} 2>&1 | tail -n {LOG_TAIL}",
                f"s last:{s.name}; $SUDO docker logs --tail 5 {c} 2>&1 | tail -n 5"]
        if s.name in gpu:
            part.append(
                f"s gpu:{s.name}; if [ \"$sandbox\" = 0 ]; then $SUDO docker exec {c} nvidia-smi -L 2>&1 | head -n 4; fi")
            part.append(
                f"s torch:{s.name}; if [ \"$sandbox\" = 0 ]; then $SUDO docker exec {c} sh -c "
                f"{q('for p in python3 python; do command -v $p >/dev/null 2>&1 && exec $p -c ' + torch_probe + '; done; echo no-python')}"
                " 2>&1 | tail -n 1; fi")
        per_service.append("\n".join(part))
    root = on_host(ROOT)
    return f"""set +e
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi
s() {{ printf '\\n{MARK}%s\\n' "$1"; }}
sandbox="${{GPUPROV_SANDBOX:-0}}"
s now; date +%s
s sandbox; echo "$sandbox"
s gpu_host; if [ "$sandbox" != 0 ]; then echo sandbox; elif command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>&1 | head -n 8; else echo absent; fi
s gpu_report; if [ "$sandbox" = 0 ] && command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1; fi
{chr(10).join(per_service)}
s listen; $SUDO ss -ltnpH 2>/dev/null
s holders; for pid in $($SUDO ss -ltnpH 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
  chain=; p=$pid; n=0
  while [ -n "$p" ] && [ "$p" -gt 1 ] && [ $n -lt 40 ]; do chain="$chain $p"; p=$(sed -n 's/^PPid:[[:space:]]*//p' /proc/$p/status 2>/dev/null); n=$((n+1)); done
  echo "$pid|$(cat /proc/$pid/comm 2>/dev/null)|$chain"
done
s disk; $SUDO df -Pk {root} "$($SUDO docker info --format '{{{{.DockerRootDir}}}}' 2>/dev/null || echo /)" 2>/dev/null | tail -n +2
s du; $SUDO du -sk {root} 2>/dev/null | cut -f1
s big; $SUDO find {root} -xdev -type f -size +50M -printf '%s %P\\n' 2>/dev/null | sort -rn | head -n 5
s docker_df; $SUDO docker system df --format '{{{{.Type}}}}|{{{{.Size}}}}|{{{{.Reclaimable}}}}' 2>/dev/null
s agent_config; $SUDO cat {on_host(REMOTE_CONFIG)} 2>/dev/null | tr -d '\\n'; echo
s agent_run; if [ -d {HOST_ROOT}/run/systemd/system ]; then echo "systemd $($SUDO systemctl is-active gpuprov-idle.timer 2>/dev/null)"; elif [ -f {on_host(AGENT_PID)} ] && $SUDO kill -0 "$($SUDO cat {on_host(AGENT_PID)})" 2>/dev/null; then echo "process running"; elif [ -f {on_host(AGENT_PID)} ]; then echo "process stopped"; else echo "process absent"; fi
s agent_log; $SUDO tail -n 20 {on_host(AGENT_LOG)} 2>/dev/null
s end
exit 0
"""


def parse(text: str) -> dict[str, list[str]]:
    """The script's sections (name -> non-empty lines); ValueError when it stopped early."""
    return _sections(text)


# --- judging: pure Python ---------------------------------------------------------------------------


_SIZE = re.compile(r"([0-9.]+)\s*([kKMGT]?B)")
_UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def docker_size(text: str) -> float:
    """Bytes in Docker's human size (``1.2GB``, ``0B``, ``512MB (40%)``); 0 when unreadable."""
    m = _SIZE.search(text)
    return float(m.group(1)) * _UNITS.get(m.group(2), 1) if m else 0.0


def _parse_time(text: str) -> datetime | None:
    text = text.strip()
    if not text or text.startswith("0001-"):
        return None
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?", text)
    if not m:
        return None
    zone = m.group(2) or "Z"
    return datetime.fromisoformat(m.group(1) + ("+00:00" if zone == "Z" else zone))


@dataclass
class Listener:
    address: str
    port: int
    pid: int | None
    name: str


def listeners(lines: list[str]) -> list[Listener]:
    """``ss -ltnpH`` lines as (address, port, pid, process name)."""
    out = []
    for line in lines:
        bits = line.split()
        local = next((b for b in bits if re.fullmatch(r"\S+:(\d+|\*)", b) and not b.startswith("users:")), None)
        if local is None:
            continue
        address, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        m = re.search(r'\(\("([^"]*)",pid=(\d+)', line)
        out.append(Listener(address.strip("[]"), int(port), int(m.group(2)) if m else None, m.group(1) if m else "?"))
    return out


def holder_chains(lines: list[str]) -> dict[int, tuple[str, list[int]]]:
    """pid -> (its command name, its chain of parent pids, itself first)."""
    out: dict[int, tuple[str, list[int]]] = {}
    for line in lines:
        pid, _, rest = line.partition("|")
        name, _, chain = rest.partition("|")
        if pid.isdigit():
            out[int(pid)] = (name, [int(p) for p in chain.split() if p.isdigit()])
    return out


def _tail(lines: list[str], n: int = 3) -> str:
    shown = [ln[:200] for ln in lines[-n:]]
    return " / ".join(shown) if shown else "(no output)"


def findings(config: StackConfig, host: GpuHost, sec: dict[str, list[str]], *,
             min_free_gb: float = MIN_FREE_GB, disk_budget_gb: float | None = None,
             now: datetime | None = None) -> Report:
    """Every finding (with its fix) and note the gathered sections ``sec`` and the stack's record show."""
    stack = config.stack
    first = lambda name, default="": (sec.get(name) or [default])[0]  # noqa: E731
    report = Report(stack)
    say = report.findings.append
    deploy = f"gpuprov deploy --stack {stack}"
    now = now or datetime.now(timezone.utc)
    host_now = datetime.fromtimestamp(int(first("now")), timezone.utc) if first("now").isdigit() else now
    sandbox = first("sandbox", "0") not in ("", "0")
    services = registry().services(config.apps)
    gpu = gpu_services(config)

    # The GPU on the host and in each GPU container; torch's CUDA where a container has torch.
    gpu_host = sec.get("gpu_host", [])
    if sandbox:
        report.notes.append("no GPU: this is a sandbox host (stand-in images; no GPU is used, so none is checked)")
    elif any(ln.startswith("GPU ") for ln in gpu_host):
        report.notes.append(f"GPU on the host: {gpu_host[0]}")
        for s in services:
            if s.name not in gpu:
                continue
            inside = sec.get(f"gpu:{s.name}", [])
            if inside and not any(ln.startswith("GPU ") for ln in inside) and first(f"inspect:{s.name}").startswith("running"):
                say(Finding("gpu", s.name, f"the GPU is not visible inside {s.container} ({_tail(inside, 1)})",
                            f"check the NVIDIA container toolkit (`nvidia-ctk runtime configure --runtime=docker`, "
                            f"restart Docker), then `{deploy}`"))
            torch = first(f"torch:{s.name}")
            if torch.startswith("torch ") and torch.split()[2:3] != ["True"]:
                say(Finding("gpu", s.name, f"torch in {s.container} cannot use CUDA ({torch})",
                            f"the image's torch does not match the host's driver or GPU; use an image built for it, "
                            f"then `{deploy}`"))
    elif gpu and host.has_gpu:
        say(Finding("gpu", "host", f"no GPU visible on the host ({_tail(gpu_host, 1)}), though a {host.gpu} was asked for",
                    "check the NVIDIA driver (`nvidia-smi` on the host: `gpuprov ssh -- nvidia-smi`); reboot the host "
                    "after a driver install"))
    else:
        report.notes.append("no GPU on this host")

    # Containers restarting or exited, with their last error lines.
    states: dict[str, str] = {}
    for s in services:
        raw = first(f"inspect:{s.name}", "missing")
        last = sec.get(f"last:{s.name}", [])
        if raw == "missing":
            states[s.name] = "missing"
            say(Finding("containers", s.name, f"no container {s.container}", f"`{deploy}` creates it"))
            continue
        status, restarting, count, exit_code, oom, started, _pid, *error = (raw.split("|") + [""] * 8)[:8]
        states[s.name] = status
        started_at = _parse_time(started)
        restarts = int(count) if count.isdigit() else 0
        recent = started_at is not None and host_now - started_at <= CRASH_LOOP_WINDOW
        if restarting == "true" or status == "restarting" or (status == "running" and restarts >= CRASH_LOOP_RESTARTS
                                                               and recent):
            say(Finding("containers", s.name, f"{s.container} is crash-looping ({restarts} restarts, exit code "
                        f"{exit_code}); last lines: {_tail(last)}",
                        f"read why with `gpuprov logs --stack {stack} --service {s.name}`, fix the cause, then `{deploy}`"))
        elif status != "running":
            say(Finding("containers", s.name, f"{s.container} is {status} (exit code {exit_code}"
                        f"{'; ' + '|'.join(error) if any(error) else ''}); last lines: {_tail(last)}",
                        f"`{deploy}` starts it again"))
        if oom == "true":
            say(Finding("oom", s.name, f"{s.container} was killed for using too much memory (OOMKilled)",
                        "give it less work (smaller max_model_len or batch) or pick a type with more memory"))

    # Recent 4xx/5xx and tracebacks; out-of-memory signs.
    budget = _gpu_budget(config, first("gpu_report"))
    four = 0
    for s in services:
        lines = sec.get(f"logs:{s.name}", [])
        codes = [(m.group(1), m.group(2)) for ln in lines if (m := _REQUEST.search(ln))]
        fives = [f"{code} {path}" for path, code in codes if code.startswith("5")]
        four += sum(1 for _p, code in codes if code.startswith("4"))
        if fives:
            say(Finding("logs", s.name, f"{len(fives)} HTTP 5xx answers in the last {_minutes(LOG_WINDOW)} "
                        f"(latest: {fives[-1]})",
                        f"`gpuprov logs --stack {stack} --service {s.name} --since 30m` shows the errors around them"))
        tracebacks = _tracebacks(lines)
        if tracebacks:
            say(Finding("logs", s.name, f"{len(tracebacks)} traceback(s) in the last {_minutes(LOG_WINDOW)} "
                        f"(latest: {tracebacks[-1][:200]})",
                        f"`gpuprov logs --stack {stack} --service {s.name} --since 30m` shows them whole"))
        ooms = [ln for ln in lines if _OOM.search(ln)]
        if ooms:
            share = budget.get(s.name)
            say(Finding("oom", s.name, f"out of GPU memory: {ooms[-1][:200]}"
                        + (f" (its budget: {share})" if share else ""),
                        "lower gpu_memory_utilization or max_model_len in the stack's config (or deploy one app only), "
                        f"then `{deploy}`"))
    if four:
        report.notes.append(f"{four} HTTP 4xx answers in the services' logs in the last {_minutes(LOG_WINDOW)} "
                            "(a wrong key or path on the client's side)")

    # The ports the stacks need, and who holds them; the path from here to each service.
    socks = listeners(sec.get("listen", []))
    chains = holder_chains(sec.get("holders", []))
    container_pids = {s.name: int(p) for s in services
                      if (p := (first(f"inspect:{s.name}").split("|") + [""] * 8)[6]).isdigit() and int(p) > 0}
    for s in services:
        held = [sk for sk in socks if sk.port == s.port]
        pid = container_pids.get(s.name)
        foreign = [sk for sk in held if sk.pid is not None and sk.name != "docker-proxy"
                   and not (pid and pid in chains.get(sk.pid, ("", []))[1])]
        for sk in foreign:
            say(Finding("ports", str(s.port), f"port {s.port} ({s.name}) is held by {sk.name} (pid {sk.pid}) on "
                        f"{sk.address}, not by {s.container}",
                        f"stop that process (`gpuprov ssh --stack {stack} -- sudo kill {sk.pid}`) or move it to another "
                        f"port, then `{deploy}`"))
        if not held and states.get(s.name) == "running":
            say(Finding("path", s.name, f"{s.container} runs but nothing listens on port {s.port}: the tunnel gets "
                        "'connection refused'", f"read why with `gpuprov logs --stack {stack} --service {s.name}`"))
    opened = set(config.open_ports)
    report.facts["ports"] = [{"service": s.name, "port": s.port,
                              "held_by": [f"{sk.name}/{sk.pid}@{sk.address}" for sk in socks if sk.port == s.port],
                              "path": f"SSH tunnel to 127.0.0.1:{s.port}"
                              + (f"; open through the firewall to {', '.join(config.allowed_cidrs)}"
                                 if s.port in opened else "")}
                             for s in services]

    # Disk and Docker space.
    for line in sec.get("disk", []):
        bits = line.split()
        if len(bits) >= 6 and bits[3].isdigit():
            free_gb = int(bits[3]) / 1e6
            if free_gb < min_free_gb:
                say(Finding("disk", bits[5], f"{free_gb:.1f} GB free on {bits[5]} (less than {min_free_gb:g} GB)",
                            _prune_hint(sec) + f"; remove old files under {ROOT} (largest: {_big(sec)})"))
    docker_rows = [r.split("|") for r in sec.get("docker_df", []) if r.count("|") == 2]
    docker_used = sum(docker_size(size) for _t, size, _r in docker_rows)
    app_kb = int(first("du", "0")) if first("du", "0").isdigit() else 0
    used_gb = (docker_used + app_kb * 1024) / 1e9
    report.facts["disk"] = {"apps_gb": round(app_kb * 1024 / 1e9, 3), "docker_gb": round(docker_used / 1e9, 3),
                            "prune_frees_gb": round(_reclaimable(sec) / 1e9, 3), "largest_files": sec.get("big", [])}
    if disk_budget_gb is not None and used_gb > disk_budget_gb:
        say(Finding("disk", ROOT, f"gpuprov's files and Docker hold {used_gb:.2f} GB, over the {disk_budget_gb:g} GB "
                    f"disk budget (largest files: {_big(sec)})",
                    _prune_hint(sec) + f"; remove what you no longer need under {ROOT}"))

    # The idle agent: running, its last decision and what it does next.
    _agent(report, sec, stack, host_now)

    # Expiry and spend so far.
    if host.expires_at is not None:
        left = host.expires_at - now
        report.facts["expires_at"] = host.expires_at.isoformat()
        if left <= timedelta(0):
            say(Finding("expiry", stack, f"the host is past its expiry ({host.expires_at:%Y-%m-%d %H:%M} UTC): the "
                        "reaper or the idle agent removes or stops it", f"`gpuprov extend --stack {stack} --hours N` "
                        f"keeps it, or `gpuprov down --stack {stack}`"))
        elif left <= EXPIRY_WARNING:
            say(Finding("expiry", stack, f"the host expires in {_minutes(left)}",
                        f"`gpuprov extend --stack {stack} --hours N` keeps it"))
    if host.launched_at is not None:
        spend = host.usd_hour * max(0.0, (now - host.launched_at).total_seconds()) / 3600
        report.facts["spend_usd"] = round(spend, 2)
        report.notes.append(f"spend so far: ${spend:.2f} at ${host.usd_hour:.2f}/h")
        if config.budget_usd and spend >= BUDGET_WARN_SHARE * config.budget_usd:
            say(Finding("budget", stack, f"spend ${spend:.2f} is {spend / config.budget_usd:.0%} of budget_usd="
                        f"${config.budget_usd:g}: at the budget the idle agent stops the bill",
                        f"raise budget_usd and `{deploy}`, or `gpuprov down --stack {stack}` when done"))
    return report


def _minutes(delta: timedelta) -> str:
    return f"{int(delta.total_seconds() // 60)} min"


def _tracebacks(lines: list[str]) -> list[str]:
    """The exception line that ends each Python traceback in ``lines``."""
    out, inside = [], False
    for line in lines:
        if "Traceback (most recent call last)" in line:
            inside = True
        elif inside and re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", line.split("|")[-1].strip()):
            out.append(line.strip())
            inside = False
    return out


def _reclaimable(sec: dict[str, list[str]]) -> float:
    return sum(docker_size(r.split("|")[2]) for r in sec.get("docker_df", []) if r.count("|") == 2)


def _prune_hint(sec: dict[str, list[str]]) -> str:
    return (f"`gpuprov ssh -- sudo docker system prune` frees about {_reclaimable(sec) / 1e9:.1f} GB "
            "(stopped containers, unused images and build cache)")


def _big(sec: dict[str, list[str]]) -> str:
    rows = []
    for line in sec.get("big", [])[:3]:
        size, _, path = line.partition(" ")
        if size.isdigit():
            rows.append(f"{ROOT}/{path} {int(size) / 1e6:.0f} MB")
    return ", ".join(rows) or "none over 50 MB"


def _gpu_budget(config: StackConfig, report_line: str) -> dict[str, str]:
    """service -> its GPU memory budget as the GPU settings size it ("{gib} GiB of {card} GiB ({basis})")."""
    if not report_line:
        return {}
    from gpuprov.apps.base import GpuTarget
    from gpuprov.apps.fit import fit
    from gpuprov.infra.gpus import from_host

    fields = [f.strip() for f in report_line.split(",")]
    spec = from_host(fields[0], fields[1] if len(fields) >= 3 else "", fields[-1])
    if spec is None:
        return {}
    sized = fit(config, GpuTarget(spec, None))
    return {n.service: f"{n.gib:g} GiB of the {spec.name}'s {spec.memory_gib:g} GiB ({n.basis})"
            for _a, n in sized.needs}


def _agent(report: Report, sec: dict[str, list[str]], stack: str, now: datetime) -> None:
    first = lambda name, default="": (sec.get(name) or [default])[0]  # noqa: E731
    try:
        cfg = json.loads(first("agent_config", "{}") or "{}")
    except json.JSONDecodeError:
        cfg = {}
    run = first("agent_run", "process absent")
    start = f"`gpuprov deploy --stack {stack}` starts it again"
    if not cfg:
        report.findings.append(Finding("idle_agent", "gpuprov-idle", "the idle agent is not installed: nothing stops "
                                       "an idle host's bill", f"`gpuprov deploy --stack {stack}` installs it"))
        return
    if run not in ("process running", "systemd active"):
        report.findings.append(Finding("idle_agent", "gpuprov-idle", f"the idle agent is not running ({run}): "
                                       "nothing stops this host's bill when it is idle", start))
    decisions = []
    for line in sec.get("agent_log", []):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("decision") in ("none", "warn", "act", "act-failed"):
            decisions.append(rec)
    if not decisions:
        report.notes.append("the idle agent has made no decision yet")
        return
    last = decisions[-1]
    report.facts["idle_agent"] = {k: last.get(k) for k in ("time", "decision", "reason", "message", "idle_minutes",
                                                           "spend_usd")}
    action = (cfg.get("action") or {}).get("kind", "?")
    nxt = ""
    if last.get("reason") == "idle" and last.get("decision") == "none" and isinstance(last.get("idle_minutes"), (int, float)):
        left = float(cfg.get("idle_minutes", 0)) - float(last["idle_minutes"])
        nxt = f"; next: {action} in about {max(0.0, left):.0f} min unless there is activity"
    report.notes.append(f"idle agent: last decision {last.get('decision')} ({last.get('reason')}: "
                        f"{last.get('message')}) at {last.get('time')}{nxt}")
    if last.get("decision") == "act-failed":
        report.findings.append(Finding("idle_agent", "gpuprov-idle", f"the idle agent's {action} action failed: "
                                       f"{last.get('error', '?')}", f"`gpuprov logs --stack {stack} --service idle-agent` "
                                       "shows its decisions; fix the action's credential and `gpuprov deploy`"))
    when = _parse_time(str(last.get("time", "")))
    interval = float(cfg.get("check_interval_s", 60))
    if when is not None and run in ("process running", "systemd active") and (now - when).total_seconds() > 3 * interval + 60:
        report.findings.append(Finding("idle_agent", "gpuprov-idle", f"the idle agent's last decision is from "
                                       f"{last.get('time')}, though it checks every {interval:g}s: it is stuck", start))


def diagnose(config: StackConfig, host: GpuHost, *, min_free_gb: float = MIN_FREE_GB,
             disk_budget_gb: float | None = None) -> Report:
    """Gather (one SSH round trip) and judge."""
    from gpuprov.provisioning.errors import ProvisioningError
    from gpuprov.provisioning.ssh import Remote, target_for

    now = datetime.now(timezone.utc)
    with Remote(target_for(config, host)) as remote:
        code, out, err = remote.script(doctor_script(config, int((now - LOG_WINDOW).timestamp())), timeout_s=300)
        rounds = remote.round_trips
    try:
        sec = parse(out)
    except ValueError as e:
        raise ProvisioningError(f"could not read the host's state (exit {code}): {e} {err[-300:]}") from None
    report = findings(config, host, sec, min_free_gb=min_free_gb, disk_budget_gb=disk_budget_gb, now=now)
    report.facts["ssh_round_trips"] = rounds
    return report
