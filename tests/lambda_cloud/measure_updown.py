"""Figures, not a test: ``gpuprov up`` / ``down`` on the Lambda stand-in at Lambda's real rate limits.

Run: ``.venv/bin/python tests/lambda_cloud/measure_updown.py [storm]`` (storm: ten 429 answers injected).
Prints wall time, API requests, 429s and the busiest 10-second window (Lambda allows about 10).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpuprov.testing.lambda_api import LambdaStandIn  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp())
    cfg = work / "lm.yaml"
    cfg.write_text(json.dumps({"cloud": "lambda", "stack": "lm", "allowed_cidrs": ["203.0.113.7/32"],
                               "region": "us-west-1"}))
    standin = LambdaStandIn(boot_seconds=5, terminate_seconds=2).start()
    if "storm" in sys.argv[1:]:
        standin.add_fault("status", status=429, count=10)
    env = dict(os.environ, LAMBDA_API_URL=standin.url, LAMBDA_API_KEY="measure", GPUPROV_PULUMI="mock",
               GPUPROV_HOME=str(work / "home"), GPUPROV_VERIFY_POLL_S="1")
    env.pop("GPUPROV_LAMBDA_RATE_SCALE", None)  # Lambda's real limits
    try:
        for cmd in (["up", "--no-deploy"], ["down"]):
            first, start = len(standin.requests()), time.time()
            proc = subprocess.run([sys.executable, "-m", "gpuprov", *cmd, "-c", str(cfg)], env=env,
                                  capture_output=True, text=True)
            seen = standin.requests()[first:]
            times = [r.at for r in seen]
            busiest = max(sum(1 for t in times if 0 <= t - a < 10) for a in times)
            print(f"{cmd[0]}: exit {proc.returncode}, {time.time() - start:.1f}s, {len(seen)} requests "
                  f"({sum(r.status == 429 for r in seen)} answered 429), busiest 10 s window: {busiest}")
        print(f"left in the account: {standin.leftovers()}")
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
