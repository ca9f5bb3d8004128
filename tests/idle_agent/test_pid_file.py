"""A stale idle-agent pid file may name a reused pid: any process of the machine. Nothing gpuprov runs
(the agent's start, the uninstall, the sandbox's wipe) may kill that process or take it for the agent."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.provisioning.idle_agent import agent_in_pid_file


def _spawn(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _is_agent(pid_file: Path) -> bool:
    return subprocess.run(["sh", "-c", agent_in_pid_file(shlex.quote(str(pid_file)))]).returncode == 0


def test_a_pid_file_counts_only_when_it_names_the_agent(tmp_path: Path):
    stranger = _spawn("sleep", "30")
    agent = _spawn("sh", "-c", "sleep 30", "gpuprov_idle.py")  # what `python3 .../gpuprov_idle.py` shows
    pid_file = tmp_path / "gpuprov-idle.pid"
    try:
        pid_file.write_text(f"{stranger.pid}\n")
        assert not _is_agent(pid_file)  # a reused pid: the agent must be started again, the stranger left alone
        pid_file.write_text(f"{agent.pid}\n")
        assert _is_agent(pid_file)
        pid_file.write_text("")
        assert not _is_agent(pid_file)
        pid_file.unlink()
        assert not _is_agent(pid_file)
    finally:
        stranger.kill()
        agent.kill()


def test_the_sandbox_wipe_stops_its_agent_and_no_process_a_stale_pid_file_names(tmp_path: Path):
    box = LocalSandbox("pidfile", root=tmp_path)
    host = box.dir / "host"
    (host / "run").mkdir(parents=True)
    script = host / "opt" / "gpuprov" / "agent" / "gpuprov_idle.py"
    stranger = _spawn("sleep", "30")
    agent = _spawn("sh", "-c", "sleep 30", str(script))
    other_box = _spawn("sh", "-c", "sleep 30", str(tmp_path / "sandbox" / "elsewhere" / "host" / "gpuprov_idle.py"))
    try:
        (host / "run" / "gpuprov-idle.pid").write_text(f"{stranger.pid}\n")
        box.wipe()
        assert agent.wait(timeout=15) is not None  # this box's agent is gone
        assert stranger.poll() is None, "the wipe killed the process a stale pid file named"
        assert other_box.poll() is None, "the wipe killed another box's agent"
        assert not (host / "run").exists()
    finally:
        for proc in (stranger, agent, other_box):
            proc.kill()
            proc.wait()
