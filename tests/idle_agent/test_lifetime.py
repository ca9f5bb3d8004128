"""``gpuprov extend`` on the host: the agent's lifetime file moves its hard limit, and a running agent reads it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gpuprov.provisioning.idle_agent import AGENT_DIR

AGENT = AGENT_DIR / "gpuprov_idle.py"


def test_the_lifetime_file_moves_the_hard_limit(tmp_path: Path):
    launched = datetime.now(timezone.utc) - timedelta(hours=2)
    config = tmp_path / "etc" / "gpuprov" / "idle-agent.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"max_lifetime_hours": 1, "launched_at": launched.isoformat(), "dry_run": True,
                                  "wall": False, "idle_minutes": 100000}))
    env = {"GPUPROV_HOST_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def agent(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(AGENT), "--config", "/etc/gpuprov/idle-agent.json", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    first = agent("check")
    assert '"reason": "lifetime"' in first.stdout and '"decision": "act"' in first.stdout  # 2 h up, 1 h limit
    assert agent("lifetime", "5").returncode == 0
    lifetime = tmp_path / "etc" / "gpuprov" / "idle-agent.lifetime.json"
    assert json.loads(lifetime.read_text()) == {"max_lifetime_hours": 5.0} and lifetime.stat().st_mode & 0o777 == 0o600
    (tmp_path / "var" / "lib" / "gpuprov-idle" / "state.json").unlink()  # a fresh agent: the limit alone decides
    time.sleep(0.01)
    second = agent("check")
    assert '"reason": "lifetime"' not in second.stdout, second.stdout
    assert agent("lifetime", "0").returncode == 2
