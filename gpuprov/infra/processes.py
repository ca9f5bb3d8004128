"""Processes on this machine: whether one still runs (the sandbox's daemons, CI leases, the viewer's tunnel),
and a process's identity that a reused pid cannot fake (CI leases)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

# Where the kernel says which boot and which machine this is (proc(5), machine-id(5)).
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MACHINE_IDS = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def alive(pid: int | None) -> bool:
    """Whether ``pid`` runs; a zombie counts as gone (it only waits for its parent to read its status)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def machine_id() -> str:
    """This machine's id (``/etc/machine-id``), or "" where it has none."""
    return next((v for v in (_read(p) for p in MACHINE_IDS) if v), "")


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None when it is gone."""
    stat = _read(Path(f"/proc/{pid}/stat"))
    if not stat:
        return None
    fields = stat.rsplit(") ", 1)[-1].split()  # the name (field 2) may hold spaces and ")"; field 3 comes after it
    try:
        return int(fields[22 - 3])
    except (IndexError, ValueError):
        return None


def pid_namespace() -> str:
    """This process's PID namespace (``pid:[4026531836]``): a pid means something only inside it."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as nothing else can be: its machine, boot, PID namespace, pid and start time."""

    machine_id: str
    boot_id: str
    pid_ns: str
    pid: int
    start_ticks: int

    @classmethod
    def current(cls) -> ProcessIdentity:
        pid = os.getpid()
        return cls(machine_id(), _read(BOOT_ID), pid_namespace(), pid, start_ticks(pid) or 0)

    def same_kernel_view(self) -> bool:
        """Whether this process can judge the recorded one: same machine, same boot, same PID namespace
        (all known). Elsewhere its pid says nothing: another machine, a reboot, a container."""
        here = ProcessIdentity.current()
        return bool(self.machine_id and self.boot_id and self.pid_ns) and (
            self.machine_id, self.boot_id, self.pid_ns) == (here.machine_id, here.boot_id, here.pid_ns)

    def provably_gone(self) -> bool:
        """True only when this process can see that the recorded one no longer runs: the same kernel
        view, and its pid is free, a zombie, or now a different process (another start time)."""
        if not self.same_kernel_view():
            return False
        if not alive(self.pid):
            return True
        return start_ticks(self.pid) != self.start_ticks

    def is_current(self) -> bool:
        return self == ProcessIdentity.current()
