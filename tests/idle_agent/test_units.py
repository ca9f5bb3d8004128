"""The systemd units run the file provisioning installs, as often as the agent thinks it runs."""

from __future__ import annotations

import configparser

from gpuprov.provisioning.idle_agent import CHECK_INTERVAL_S, REMOTE_CONFIG, agent_files


def _unit(name: str) -> configparser.ConfigParser:
    files = {p.name: p for p in agent_files().values()}
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(files[name].read_text())
    return parser


def test_service_runs_the_installed_script_with_the_installed_config() -> None:
    service = _unit("gpuprov-idle.service")
    exec_start = service["Service"]["ExecStart"].split()
    assert exec_start[1] in agent_files() and exec_start[-1] == "check"
    assert exec_start[exec_start.index("--config") + 1] == REMOTE_CONFIG
    assert service["Service"]["Type"] == "oneshot"


def test_timer_fires_once_per_check_interval() -> None:
    timer = _unit("gpuprov-idle.timer")
    assert timer["Timer"]["OnUnitActiveSec"] == f"{CHECK_INTERVAL_S}s"
    assert timer["Install"]["WantedBy"] == "timers.target"
