"""``gpuprov logs``: every deployed service's log and the idle agent's JSON decisions, over ONE SSH
connection (one exec channel).

Without ``--follow`` one script prints each source's lines tagged with its name (``docker logs
--timestamps``; the agent's JSON lines carry their own ``time``), and they are shown merged in time
order. With ``--follow`` the same sources run side by side on the host (``docker logs -f``, ``tail
-F``) and lines are shown as they come; the script ends when this side closes the channel (Ctrl-C):
its last command reads the channel's stdin until it ends, then stops every follower with it.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from gpuprov.apps import registry
from gpuprov.apps.base import AppError
from gpuprov.infra.config import ConfigError, StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.doctor import AGENT_LOG
from gpuprov.provisioning.hostpaths import on_host
from gpuprov.provisioning.ssh import Remote, target_for

AGENT = "idle-agent"  # the name the idle agent's lines carry (and --service takes)
SUDO = 'if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi\n'
_RELATIVE = re.compile(r"([1-9][0-9]{0,5})([smhd])", re.ASCII)
_ABSOLUTE = re.compile(r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d)?)?(?:Z|[+-]\d\d:\d\d)?", re.ASCII)
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?) ?(.*)")
Output = Callable[[str], None]


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``30s``, ``10m``, ``2h``, ``1d``) or a UTC date/time
    (``2026-05-01``, ``2026-05-01T12:00``, with an optional zone)."""
    now = now or datetime.now(timezone.utc)
    if m := _RELATIVE.fullmatch(text):
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    if _ABSOLUTE.fullmatch(text):
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    raise ConfigError("--since", text, "expected a duration such as 30s, 10m, 2h, 1d, or a UTC time such as "
                      "2026-05-01T12:00")


def sources(config: StackConfig, only: str | None = None) -> list[tuple[str, str | None]]:
    """(name, container) of each log to show: the deployed services, then the idle agent (container None)."""
    services = [(s.name, s.container) for s in registry().services(config.apps)]
    every = [*services, (AGENT, None)]
    if only is None:
        return every
    for name, container in every:
        if name == only:
            return [(name, container)]
    raise AppError(f"no service {only!r} on stack {config.stack}; its logs: {', '.join(n for n, _c in every)}")


def _source_command(name: str, container: str | None, since: datetime | None, tail: int, follow: bool) -> str:
    tag = shlex.quote(f"{name}|")
    if container is None:
        reader = f"$SUDO tail -n {int(tail)} {'-F ' if follow else ''}{on_host(AGENT_LOG)} 2>/dev/null"
    else:
        since_flag = f"--since {int(since.timestamp())} " if since else ""
        reader = (f"$SUDO docker logs --timestamps {since_flag}--tail {int(tail)} {'-f ' if follow else ''}"
                  f"{shlex.quote(container)} 2>&1")
    return f"{reader} | while IFS= read -r line; do printf '%s%s\\n' {tag} \"$line\"; done"


def logs_script(picked: list[tuple[str, str | None]], since: datetime | None, tail: int, follow: bool) -> str:
    """The one script that prints every picked source's lines, each tagged ``NAME|``."""
    commands = [_source_command(n, c, since, tail, follow) for n, c in picked]
    if not follow:
        return SUDO + "\n".join(commands) + "\nexit 0\n"
    # Followers in the background; the foreground reads stdin until the channel closes, then ends them all.
    return SUDO + "".join(f"( {c} ) &\n" for c in commands) + "cat >/dev/null\nkill 0\n"


def _agent_time(line: str) -> str:
    m = re.search(r'"time": "([^"]+)"', line)
    return m.group(1) if m else ""


def _key(stamp: str) -> float:
    try:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def format_line(tagged: str) -> tuple[float, str] | None:
    """(time, shown line) of one ``NAME|line`` output line; None for anything else."""
    name, sep, rest = tagged.partition("|")
    if not sep:
        return None
    rest = rest.rstrip("\r")
    if name == AGENT:
        stamp, text = _agent_time(rest), rest
    else:
        m = _STAMP.match(rest)
        stamp, text = (m.group(1), m.group(2)) if m else ("", rest)
    shown = stamp[:19] + "Z" if stamp else " " * 20
    return _key(stamp), f"{shown} {name:<12} {text}"


def show_logs(config: StackConfig, host: GpuHost, out: Output, *, service: str | None = None,
              since: datetime | None = None, tail: int = 200) -> int:
    """Print the picked logs merged in time order; returns how many lines were shown."""
    picked = sources(config, service)
    with Remote(target_for(config, host)) as remote:
        _code, text, _err = remote.script(logs_script(picked, since, tail, follow=False), timeout_s=300)
    cutoff = since.timestamp() if since else None
    rows = [r for ln in text.splitlines() if (r := format_line(ln))]
    rows = [r for r in rows if cutoff is None or not r[0] or r[0] >= cutoff]  # the agent's lines: --since here
    rows.sort(key=lambda r: r[0])
    for _t, line in rows:
        out(line)
    return len(rows)


def follow_logs(config: StackConfig, host: GpuHost, out: Output, *, service: str | None = None,
                since: datetime | None = None, tail: int = 20, stop_after_s: float | None = None) -> None:
    """Print the picked logs as they come, until Ctrl-C (or ``stop_after_s``); closing the channel stops
    the followers on the host."""
    picked = sources(config, service)
    with Remote(target_for(config, host)) as remote:
        chan = remote.transport.open_session()
        remote.round_trips += 1
        try:
            chan.exec_command("/bin/sh -s")
            chan.sendall(logs_script(picked, since, tail, follow=True).encode())  # stdin stays open: see above
            deadline = None if stop_after_s is None else time.monotonic() + stop_after_s
            pending = b""
            while not chan.exit_status_ready() or chan.recv_ready():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if not chan.recv_ready():
                    time.sleep(0.05)
                    continue
                pending += chan.recv(65536)
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    row = format_line(raw.decode(errors="replace"))
                    if row:
                        out(row[1])
        finally:
            chan.shutdown_write()
            chan.close()
