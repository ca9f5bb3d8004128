"""`make bench-idle` runs, prints its table, and its last line is the contract the issue states."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "idle" / "run.py"


def test_bench_idle_prints_every_trace_and_the_last_line() -> None:
    out = subprocess.run([sys.executable, str(BENCH)], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.strip().splitlines()
    for trace in ("clinical demo", "ci job", "forgotten overnight", "long inference", "tunnel only"):
        assert sum(line.startswith(trace) for line in lines) == 4, trace  # agent, two jobs+ssh, no policy
    m = re.fullmatch(r"false shutdowns: (\d+), worst idle overrun: (\d+) min", lines[-1])
    assert m, lines[-1]
    assert int(m.group(1)) == 0  # the agent never stopped a box somebody used
    assert int(m.group(2)) <= 1  # billed idle at most idle_minutes plus one check interval
    # The comparison is real: SkyPilot's rule with the model served as a job bills the forgotten box all night.
    sky = next(line for line in lines if line.startswith("forgotten overnight") and "server a job" in line)
    assert float(sky.split()[-4]) > 10 * float(next(
        line for line in lines if line.startswith("forgotten overnight") and "gpuprov agent" in line).split()[-4])
