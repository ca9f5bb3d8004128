#!/usr/bin/env python3
"""gpuprov idle agent: runs ON the GPU host and makes sure nobody pays for an idle GPU.

Standard library only (a fresh Ubuntu host has python3, not our packages).

Each check gathers activity signals, hands them to the pure function
``decide()`` (signals in, decision out; the benchmark replays traces through it)
and carries the decision out:

  activity  Prometheus metrics the apps declare (requests running, waiting, or
            counters that moved), established connections to the service ports,
            SSH tunnels (sshd holding a connection to a service port),
            interactive SSH sessions (a tty under sshd), GPU utilisation
            (nvidia-smi), request lines in the logs of the containers the apps name.
  idle      no activity for ``idle_minutes``: a warning (log + wall) ``grace_minutes``
            before, then the action. ``gpuprov-idle postpone MINUTES`` (or
            ``touch /run/gpuprov/postpone``, 60 minutes) holds the idle action off.
  lifetime  ``max_lifetime_hours`` after launch: the action, whatever the activity (``gpuprov extend``
            moves it: ``gpuprov-idle lifetime HOURS`` writes the lifetime file, read at every check).
  budget    spend so far (usd_hour x hours since launch) plus the spend until the
            next check passing ``budget_usd``: the action; a warning at 80%.
  action    what stops the bill, as data from the deploy (``action.kind``):
            ``poweroff`` (``shutdown -h now``), ``http`` (a request to the cloud's
            API with the bearer token from the root-only secret file, e.g. a
            terminate), ``stop-apps`` (stop the compose projects only).

Every check writes one JSON line (decision + the signals behind it) to the log.

Usage:  gpuprov_idle.py check | run [--interval S] | postpone MINUTES | status | lifetime HOURS
Files:  /etc/gpuprov/idle-agent.json (config), /etc/gpuprov/idle-agent.secret.json
        (0600: the action's credential), /var/lib/gpuprov-idle/state.json, /var/log/gpuprov-idle.jsonl,
        each under ``$GPUPROV_HOST_ROOT`` when the host sets it (the local sandbox host does).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

CONFIG_FILE = "/etc/gpuprov/idle-agent.json"
OWN_FILES = ("secret_file", "state_file", "log_file", "postpone_file", "lifetime_file")  # logical paths, under GPUPROV_HOST_ROOT
DEFAULTS: dict[str, Any] = {
    "cloud": "local",
    "stack": "dev",
    "idle_minutes": 30,
    "grace_minutes": 5,
    "check_interval_s": 60,
    "max_lifetime_hours": 12.0,
    "budget_usd": None,
    "budget_warn_share": 0.8,
    "usd_hour": 0.0,
    "launched_at": None,  # ISO 8601; the agent's own first start when unknown
    "gpu_util_threshold": 10.0,
    "service_ports": {},  # service -> port: connections to it are activity
    "metrics": [],  # [{service, url, running: [names], waiting: [names], counters: [names]}]
    "log_containers": [],  # containers whose request lines count as activity
    "log_ignore": ["/health", "/metrics"],
    "compose_projects": [],  # what stop-apps stops; empty: every compose project on the host
    "sshd_pid_file": None,  # count only sessions under this sshd (the sandbox shares its PID space)
    "action": {"kind": "stop-apps", "why": "no action configured: stop the apps only"},
    "instance_id": None,
    "secret_file": "/etc/gpuprov/idle-agent.secret.json",
    "state_file": "/var/lib/gpuprov-idle/state.json",
    "log_file": "/var/log/gpuprov-idle.jsonl",
    "postpone_file": "/run/gpuprov/postpone",
    "lifetime_file": "/etc/gpuprov/idle-agent.lifetime.json",  # `gpuprov extend`: a later max_lifetime_hours
    "dry_run": False,  # log the action instead of taking it (benchmarks, trial runs)
    "wall": True,  # warn every terminal on the host; tests on the shared sandbox machine turn it off
}
POSTPONE_DEFAULT_MINUTES = 60


# --- the decision: pure, importable, replayable ------------------------------------------


@dataclass
class Signals:
    """What one check saw. None: the signal could not be read (absent tool, service down)."""

    metrics_running: dict[str, float] = field(default_factory=dict)  # service -> requests running
    metrics_waiting: dict[str, float] = field(default_factory=dict)  # service -> requests waiting
    metrics_total: dict[str, float] = field(default_factory=dict)  # service -> its activity counters, summed
    service_connections: dict[str, int] = field(default_factory=dict)  # service -> direct connections
    tunnel_connections: int = 0  # sshd -> service port: someone's `ssh -L` is in use
    ssh_sessions: int = 0  # interactive (tty) SSH sessions
    gpu_util: float | None = None  # highest utilisation over the GPUs, percent
    log_requests: dict[str, int] = field(default_factory=dict)  # container -> request lines since last check
    postponed_until: float | None = None  # epoch seconds


@dataclass
class Policy:
    idle_minutes: float = 30
    grace_minutes: float = 5
    check_interval_s: float = 60
    max_lifetime_hours: float = 12.0
    budget_usd: float | None = None
    budget_warn_share: float = 0.8
    usd_hour: float = 0.0
    gpu_util_threshold: float = 10.0

    @classmethod
    def from_config(cls, cfg: dict) -> Policy:
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if cfg.get(k) is not None})


@dataclass
class State:
    """What the agent remembers between checks (a JSON file on the host)."""

    launched_at: float
    last_active: float
    last_metrics_total: dict[str, float] = field(default_factory=dict)
    idle_warned_at: float | None = None
    budget_warned: bool = False
    lifetime_warned: bool = False
    acted: str | None = None  # reason of the last action taken
    acted_at: float | None = None


@dataclass
class Decision:
    action: str  # "none" | "warn" | "act"
    reason: str  # "active" | "idle" | "postponed" | "lifetime" | "budget"
    message: str
    activity: list[str]
    idle_minutes: float
    spend_usd: float
    state: State


def activity_of(signals: Signals, policy: Policy, last_totals: dict[str, float]) -> list[str]:
    """Every reason the box counts as in use right now (empty: idle)."""
    why = []
    for service, n in sorted(signals.metrics_running.items()):
        if n:
            why.append(f"{service}: {n:g} requests running")
    for service, n in sorted(signals.metrics_waiting.items()):
        if n:
            why.append(f"{service}: {n:g} requests waiting")
    for service, total in sorted(signals.metrics_total.items()):
        last = last_totals.get(service)
        if last is not None and total != last:
            why.append(f"{service}: request counters moved by {total - last:g}")
    for service, count in sorted(signals.service_connections.items()):
        if count:
            why.append(f"{service}: {count} connections")
    if signals.tunnel_connections:
        why.append(f"ssh tunnel: {signals.tunnel_connections} forwarded connections")
    if signals.ssh_sessions:
        why.append(f"ssh: {signals.ssh_sessions} interactive sessions")
    if signals.gpu_util is not None and signals.gpu_util >= policy.gpu_util_threshold:
        why.append(f"gpu: {signals.gpu_util:g}% utilised")
    for container, count in sorted(signals.log_requests.items()):
        if count:
            why.append(f"{container}: {count} requests logged")
    return why


def decide(signals: Signals, state: State, policy: Policy, now: float) -> Decision:
    """Signals in, decision out. Pure: no clock, no I/O; the new state rides in the decision.

    Order matters: the hard lifetime and the budget act whatever the activity; the
    idle action warns ``grace_minutes`` before ``idle_minutes`` so that it fires at
    ``idle_minutes`` (plus at most one check interval), not later.
    """
    st = State(**asdict(state))
    activity = activity_of(signals, policy, st.last_metrics_total)
    st.last_metrics_total.update(signals.metrics_total)
    if activity:
        st.last_active = now
        st.idle_warned_at = None
        if st.acted == "idle":  # somebody is back (a stopped stack restarted): watch afresh
            st.acted = None
    idle_min = (now - st.last_active) / 60
    hours_up = max(0.0, now - st.launched_at) / 3600
    spend = policy.usd_hour * hours_up
    grace_s = policy.grace_minutes * 60

    def out(action: str, reason: str, message: str) -> Decision:
        if action == "act":
            st.acted, st.acted_at = reason, now
        return Decision(action, reason, message, activity, round(idle_min, 2), round(spend, 4), st)

    # 1. Hard lifetime: same action as idle, regardless of activity; postponing does not apply.
    life_s = policy.max_lifetime_hours * 3600
    if now - st.launched_at >= life_s:
        if st.acted == "lifetime":
            return out("none", "lifetime", "lifetime limit reached; action already taken")
        return out("act", "lifetime", f"max_lifetime_hours={policy.max_lifetime_hours:g} reached")
    if now - st.launched_at >= life_s - grace_s and not st.lifetime_warned:
        st.lifetime_warned = True
        left = (life_s - (now - st.launched_at)) / 60
        return out("warn", "lifetime", f"max_lifetime_hours={policy.max_lifetime_hours:g} is reached in {left:.0f} min")

    # 2. Budget: act when spend so far plus the spend until the next check would pass it.
    if policy.budget_usd is not None:
        next_spend = spend + policy.usd_hour * policy.check_interval_s / 3600
        if next_spend > policy.budget_usd:
            if st.acted == "budget":
                return out("none", "budget", "budget reached; action already taken")
            return out("act", "budget", f"spend ${spend:.2f} reaches budget_usd=${policy.budget_usd:g} "
                                        f"before the next check")
        if spend >= policy.budget_warn_share * policy.budget_usd and not st.budget_warned:
            st.budget_warned = True
            return out("warn", "budget", f"spend ${spend:.2f} is {spend / policy.budget_usd:.0%} "
                                         f"of budget_usd=${policy.budget_usd:g}")

    # 3. Idle.
    if activity:
        return out("none", "active", "; ".join(activity))
    if signals.postponed_until is not None and signals.postponed_until > now:
        st.idle_warned_at = None
        left = (signals.postponed_until - now) / 60
        return out("none", "postponed", f"idle {idle_min:.0f} min; idle action postponed for {left:.0f} more min")
    if st.acted == "idle":
        return out("none", "idle", "idle; action already taken")
    idle_s = now - st.last_active
    if idle_s >= policy.idle_minutes * 60 and st.idle_warned_at is not None and now - st.idle_warned_at >= grace_s:
        return out("act", "idle", f"no activity for {idle_min:.0f} min (idle_minutes={policy.idle_minutes:g})")
    if idle_s >= policy.idle_minutes * 60 - grace_s and st.idle_warned_at is None:
        st.idle_warned_at = now
        return out("warn", "idle", f"no activity for {idle_min:.0f} min: this host's idle action runs in "
                                   f"{policy.grace_minutes:g} min. Postpone with `gpuprov-idle postpone 60`")
    return out("none", "idle", f"no activity for {idle_min:.0f} min")


# --- reading the signals (each a command or file plus a pure parser) -----------------------


def parse_metrics(text: str, names: dict) -> tuple[float, float, float]:
    """(running, waiting, counters total) from Prometheus text, for the metric names in ``names``
    (its ``running``, ``waiting`` and ``counters`` lists); each summed over its labels."""
    running_names, waiting_names = set(names.get("running") or ()), set(names.get("waiting") or ())
    counter_names = set(names.get("counters") or ())
    running = waiting = total = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        name, value = m.group(1), float(m.group(3))
        if name in running_names:
            running += value
        elif name in waiting_names:
            waiting += value
        elif name in counter_names:
            total += value
    return running, waiting, total


def _port(endpoint: str) -> int | None:
    m = re.search(r":(\d+)$", endpoint)
    return int(m.group(1)) if m else None


def parse_ss(text: str, service_ports: dict[str, int]) -> tuple[dict[str, int], int]:
    """From ``ss -Htnp state established``: direct connections per service, and tunnel connections.

    A connection whose local port is a service port is a client of that service.
    A connection owned by sshd whose peer port is a service port is sshd forwarding
    somebody's ``ssh -L`` into it: a tunnel in use. (With ``state`` given, ss
    prints no state column: Recv-Q Send-Q Local Peer [Process].)
    """
    by_port = {port: name for name, port in service_ports.items()}
    rows = [(c[2], c[3], " ".join(c[4:])) for c in (line.split() for line in text.splitlines()) if len(c) >= 4]
    # sshd's own ends of forwarded connections; the service's end of the same link is not a second client.
    sshd_ends = {local for local, peer, proc in rows if '"sshd' in proc and _port(peer) in by_port}
    direct: dict[str, int] = {name: 0 for name in service_ports}
    for local, peer, proc in rows:
        port = _port(local)
        if port in by_port and '"sshd' not in proc and peer not in sshd_ends:
            direct[by_port[port]] += 1
    return direct, len(sshd_ends)


def parse_nvidia_smi(text: str) -> float | None:
    """Highest utilisation.gpu over the lines of ``nvidia-smi --query-gpu=utilization.gpu ...``."""
    values = [float(v) for v in text.split() if re.fullmatch(r"\d+(\.\d+)?", v)]
    return max(values) if values else None


def _proc_stat(pid: str, proc: str) -> tuple[str, int, int] | None:
    """(command, parent pid, tty_nr) of a process from /proc/PID/stat."""
    try:
        raw = open(f"{proc}/{pid}/stat").read()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1: raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2:].split()
    return comm, int(rest[1]), int(rest[4])


def count_ssh_sessions(proc: str = "/proc", sshd_root: int | None = None) -> int:
    """Interactive SSH sessions: distinct ttys held by processes that descend from sshd.

    Non-interactive commands (a CI job's ``ssh host cmd``, Fabric) have no tty and do
    not count. ``sshd_root``: count only under that sshd (the sandbox shares PIDs).
    """
    table: dict[int, tuple[str, int, int]] = {}
    for entry in os.listdir(proc):
        if entry.isdigit():
            st = _proc_stat(entry, proc)
            if st:
                table[int(entry)] = st
    ttys = set()
    for _comm, ppid, tty in table.values():
        if tty == 0:
            continue
        seen, cur, under_sshd = 0, ppid, False
        while cur in table and seen < 64:
            if cur == sshd_root or (sshd_root is None and table[cur][0].startswith("sshd")):
                under_sshd = True
                break
            cur, seen = table[cur][1], seen + 1
        if under_sshd:
            ttys.add(tty)
    return len(ttys)


def count_log_requests(text: str, ignore: list[str]) -> int:
    """Request lines (an HTTP method and a path) in a container's log, health checks left out."""
    n = 0
    for line in text.splitlines():
        if re.search(r'"?(GET|POST|PUT|PATCH|DELETE) /', line) and not any(i in line for i in ignore):
            n += 1
    return n


def _cmd(*args: str, timeout: float = 20) -> str | None:
    if not shutil.which(args[0]):
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def read_postpone(path: str) -> float | None:
    """Epoch until which the idle action waits: the file's number, or its mtime plus 60 min."""
    try:
        text = open(path).read().strip()
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    try:
        return float(text)
    except ValueError:
        return mtime + POSTPONE_DEFAULT_MINUTES * 60


def collect(cfg: dict, last_check: float | None) -> tuple[Signals, list[str]]:
    """Read every signal on this host. Returns the signals and what could not be read."""
    missing: list[str] = []
    sig = Signals()
    ports = cfg["service_ports"]
    # Connections first: the agent's own /metrics request must not count as a client.
    ss = _cmd("ss", "-Htnp", "state", "established")
    if ss is None:
        missing.append("ss")
    else:
        sig.service_connections, sig.tunnel_connections = parse_ss(ss, ports)
    for source in cfg.get("metrics") or []:
        service = source["service"]
        try:
            with urllib.request.urlopen(source["url"], timeout=5) as resp:
                running, waiting, total = parse_metrics(resp.read().decode(), source)
        except (OSError, ValueError):
            missing.append(f"metrics of {service}")
            continue
        sig.metrics_running[service], sig.metrics_waiting[service], sig.metrics_total[service] = running, waiting, total
    root = None
    if cfg.get("sshd_pid_file"):
        try:
            root = int(open(cfg["sshd_pid_file"]).read().strip())
        except (OSError, ValueError):
            missing.append("sshd pid file")
    sig.ssh_sessions = count_ssh_sessions(sshd_root=root)
    smi = _cmd("nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits")
    if smi is None:
        missing.append("nvidia-smi")
    else:
        sig.gpu_util = parse_nvidia_smi(smi)
    since = str(int(last_check or time.time() - cfg["check_interval_s"]))
    for name in cfg.get("log_containers") or []:
        logs = _docker_logs(name, since)
        if logs is None:
            missing.append(f"logs of {name}")
        else:
            sig.log_requests[name] = count_log_requests(logs, cfg["log_ignore"])
    sig.postponed_until = read_postpone(cfg["postpone_file"])
    return sig, missing


def _docker_logs(name: str, since: str) -> str | None:
    if not shutil.which("docker"):
        return None
    try:
        done = subprocess.run(["docker", "logs", "--since", since, name], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout + done.stderr if done.returncode == 0 else None


# --- the actions --------------------------------------------------------------------------


class ActionFailed(Exception):
    """The idle action did not happen; the next check tries again."""


def read_secret(cfg: dict, key: str) -> str:
    path = cfg["secret_file"]
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise ActionFailed(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    value = json.load(open(path)).get(key)
    if not value:
        raise ActionFailed(f"{path} has no {key}")
    return str(value)


def http_action(cfg: dict, action: dict) -> str:
    """The cloud's API call that stops the bill (e.g. a terminate), with the bearer token from the secret file."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if action.get("secret"):
        headers["Authorization"] = f"Bearer {read_secret(cfg, action['secret'])}"
    body = json.dumps(action.get("body") or {}, sort_keys=True)
    method, url = action.get("method", "POST"), action["url"]
    req = urllib.request.Request(url, data=body.encode(), method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status = resp.status
    except urllib.error.HTTPError as err:
        raise ActionFailed(f"{method} {url} answered {err.code}: {err.read().decode(errors='replace')[:200]}") from None
    except OSError as err:
        raise ActionFailed(f"{method} {url} unreachable: {err}") from None
    return f"{method} {url} {body} accepted ({status})"


def stop_apps(cfg: dict) -> str:
    """Stop the compose projects (the machine is not ours to power off)."""
    projects = list(cfg.get("compose_projects") or [])
    if not projects:
        listed = _cmd("docker", "compose", "ls", "-q")
        projects = (listed or "").split()
    stopped = []
    for name in projects:
        done = subprocess.run(["docker", "compose", "-p", name, "stop"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise ActionFailed(f"docker compose -p {name} stop failed: {done.stderr.strip()[-300:]}")
        stopped.append(name)
    return f"stopped compose projects: {', '.join(stopped) or 'none running'}"


def take_action(cfg: dict) -> str:
    """The action that stops the bill on this host, as the deploy described it."""
    action = cfg.get("action") or DEFAULTS["action"]
    kind = action.get("kind")
    if cfg.get("dry_run"):
        return f"dry run: would take the {kind} action ({action.get('why', '')})"
    if kind == "http":
        return http_action(cfg, action)
    if kind == "poweroff":
        done = subprocess.run(["shutdown", "-h", "now"], capture_output=True, text=True)
        if done.returncode != 0:
            raise ActionFailed(f"shutdown -h now failed: {done.stderr.strip()}")
        return f"shutdown -h now ({action.get('why', '')})"
    if kind == "stop-apps":
        return stop_apps(cfg)
    raise ActionFailed(f"unknown action kind {kind!r} in the agent config; deploy again to rewrite it")


def warn_users(message: str) -> None:
    if shutil.which("wall"):
        subprocess.run(["wall", f"gpuprov idle agent: {message}"], capture_output=True, timeout=10)


# --- the loop -----------------------------------------------------------------------------


def load_config(path: str) -> dict:
    """The agent config at logical ``path``; its own files, the config included, live under
    ``$GPUPROV_HOST_ROOT`` when the host sets it (the local sandbox shares another machine's disk)."""
    root = os.environ.get("GPUPROV_HOST_ROOT", "")
    cfg = dict(DEFAULTS, sshd_pid_file=os.environ.get("GPUPROV_SSHD_PID_FILE") or None)
    with open(root + path) as fh:
        cfg.update(json.load(fh))
    for key in OWN_FILES:
        cfg[key] = root + cfg[key]
    return cfg


def _iso_epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def boot_id() -> str | None:
    try:
        return open("/proc/sys/kernel/random/boot_id").read().strip()
    except OSError:
        return None


def load_state(cfg: dict, now: float) -> tuple[State, float | None]:
    """The remembered state; a fresh one on first run or after a reboot.

    After a reboot (an AWS/GCP VM started again after its idle stop) the idle clock
    starts afresh and the earlier action is forgotten, so an unused restarted VM is
    stopped again; the launch time, and with it the lifetime and budget, stays.
    """
    launched = _iso_epoch(cfg.get("launched_at"))
    try:
        raw = json.load(open(cfg["state_file"]))
        last_check = raw.pop("last_check", None)
        booted = raw.pop("boot_id", None)
        state = State(**raw)
    except (OSError, ValueError, TypeError):
        return State(launched_at=launched or now, last_active=now), None
    if booted != boot_id():
        return State(launched_at=launched or state.launched_at, last_active=now), None
    return state, last_check


def save_state(cfg: dict, state: State, now: float) -> None:
    path = cfg["state_file"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({**asdict(state), "last_check": now, "boot_id": boot_id()}, fh)
    os.replace(tmp, path)


def log(cfg: dict, record: dict) -> None:
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record}
    line = json.dumps(record, sort_keys=True)
    os.makedirs(os.path.dirname(cfg["log_file"]) or ".", exist_ok=True)
    with open(cfg["log_file"], "a") as fh:
        fh.write(line + "\n")
    print(line, flush=True)


def check_once(cfg: dict, now: float | None = None) -> Decision:
    """One check: collect, decide, act, log, remember."""
    now = time.time() if now is None else now
    state, last_check = load_state(cfg, now)
    signals, missing = collect(cfg, last_check)
    decision = decide(signals, state, Policy.from_config({**cfg, **read_lifetime(cfg)}), now)
    record = {"decision": decision.action, "reason": decision.reason, "message": decision.message,
              "idle_minutes": decision.idle_minutes, "spend_usd": decision.spend_usd,
              "signals": asdict(signals), "unreadable": missing, "cloud": cfg["cloud"], "stack": cfg["stack"]}
    if decision.action == "warn" and cfg.get("wall", True):
        warn_users(decision.message)
    if decision.action == "act":
        try:
            record["result"] = take_action(cfg)
        except (ActionFailed, OSError, subprocess.SubprocessError) as err:
            # Not taken: forget the attempt so the next check tries again, and say so loudly.
            decision.state.acted = state.acted
            decision.state.acted_at = state.acted_at
            record["decision"], record["error"] = "act-failed", str(err)
    save_state(cfg, decision.state, now)
    log(cfg, record)
    return decision


def run_forever(cfg: dict, interval: float) -> None:
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # A fixed cadence (not "sleep after each check"): the budget guard counts on the next
    # check coming one interval after this one began.
    tick = time.monotonic()
    while not stop["now"]:
        check_once(cfg)
        tick += interval
        if tick < time.monotonic():  # a check overran: start again from now rather than bunch up
            tick = time.monotonic()
        while not stop["now"] and time.monotonic() < tick:
            time.sleep(min(0.1, interval))


def read_lifetime(cfg: dict) -> dict:
    """``{"max_lifetime_hours": H}`` from the lifetime file ``gpuprov extend`` writes, or {} (re-read every check,
    so a running agent honours it at once)."""
    try:
        hours = json.load(open(cfg["lifetime_file"])).get("max_lifetime_hours")
    except (OSError, ValueError, AttributeError):
        return {}
    return {"max_lifetime_hours": float(hours)} if isinstance(hours, (int, float)) and hours > 0 else {}


def set_lifetime(cfg: dict, hours: float) -> None:
    """Write the lifetime file (root-only, atomically): the hard limit becomes ``hours`` after launch."""
    path = cfg["lifetime_file"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"max_lifetime_hours": hours}, fh)
    os.replace(tmp, path)


def postpone(cfg: dict, minutes: float) -> float:
    until = time.time() + minutes * 60
    os.makedirs(os.path.dirname(cfg["postpone_file"]), exist_ok=True)
    with open(cfg["postpone_file"], "w") as fh:
        fh.write(f"{until:.0f}\n")
    return until


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpuprov-idle", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=os.environ.get("GPUPROV_IDLE_CONFIG", CONFIG_FILE))
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="one check (what the systemd timer runs)")
    run = sub.add_parser("run", help="check every --interval seconds until stopped (hosts without systemd)")
    run.add_argument("--interval", type=float, default=None)
    pp = sub.add_parser("postpone", help="hold the idle action off for MINUTES (not the lifetime or budget caps)")
    pp.add_argument("minutes", type=float, nargs="?", default=POSTPONE_DEFAULT_MINUTES)
    sub.add_parser("status", help="the last decision and the current state")
    lt = sub.add_parser("lifetime", help="move the hard limit to HOURS after launch (what `gpuprov extend` runs)")
    lt.add_argument("hours", type=float)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.cmd == "check":
        d = check_once(cfg)
        return 0 if d.action != "act" or d.state.acted else 1
    if args.cmd == "run":
        run_forever(cfg, args.interval or cfg["check_interval_s"])
        return 0
    if args.cmd == "lifetime":
        if not 0 < args.hours <= 24 * 62:
            print("error: hours must be greater than 0 and at most 1488", file=sys.stderr)
            return 2
        set_lifetime(cfg, args.hours)
        log(cfg, {"decision": "lifetime", "max_lifetime_hours": args.hours})
        return 0
    if args.cmd == "postpone":
        until = postpone(cfg, args.minutes)
        log(cfg, {"decision": "postpone", "until": until, "minutes": args.minutes})
        if cfg.get("wall", True):
            warn_users(f"idle action postponed for {args.minutes:g} min")
        return 0
    state, last = load_state(cfg, time.time())
    print(json.dumps({**asdict(state), "last_check": last}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
