"""``pip install gpuprov`` works anywhere: the wheel, in a fresh virtualenv, from a folder outside the checkout.

Slow (it builds the wheel and installs every dependency into a new virtualenv, from pip's cache when
it can), and it runs the local sandbox host, so it is marked like the sandbox tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need_sandbox

CHECKOUT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.sandbox


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(1800)
def test_the_wheel_in_a_fresh_virtualenv_plans_ups_and_downs_from_elsewhere(tmp_path: Path):
    need_sandbox()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "GPUPROV_", "PULUMI_"))}
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                  "-w", str(tmp_path / "dist"), str(CHECKOUT)], tmp_path, clean)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("gpuprov-*.whl")

    # The dependencies at the versions this suite runs with (pip's resolver alone may backtrack for long).
    frozen = _run([sys.executable, "-m", "pip", "freeze", "--exclude", "gpuprov"], tmp_path, clean)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(line for line in frozen.stdout.splitlines() if not line.startswith("-e")))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = _run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(constraints), str(wheel)], tmp_path, clean)
    assert installed.returncode == 0, installed.stderr

    work = tmp_path / "elsewhere"  # no checkout here, no PYTHONPATH: only the installed package
    work.mkdir()
    env = {**clean, "PATH": f"{venv / 'bin'}:{clean.get('PATH', '/usr/bin:/bin')}", "GPUPROV_HOME": str(tmp_path / "home"),
           "HOME": str(tmp_path / "user"), "CI": "true"}
    where = _run([str(venv / "bin" / "python"), "-c", "import gpuprov, sys; print(gpuprov.__file__); "
                  "print(any(p and p.startswith(sys.argv[1]) for p in sys.path))", str(CHECKOUT)], work, env)
    location, checkout_on_path = where.stdout.split()
    assert location.startswith(str(venv)) and checkout_on_path == "False", where.stdout

    gpuprov = str(venv / "bin" / "gpuprov")
    plan = _run([gpuprov, "plan", "--cloud", "local", "--stack", "wheel"], work, env, timeout=300)
    assert plan.returncode == 0, plan.stderr
    assert "wheel" in plan.stdout + plan.stderr

    up = _run([gpuprov, "up", "--cloud", "local", "--stack", "wheel"], work, env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "all healthy" in up.stdout + up.stderr and "Traceback" not in up.stderr
        status = _run([gpuprov, "status", "--json"], work, env, timeout=120)
        assert status.returncode == 0, status.stderr
        (stack,) = json.loads(status.stdout)["stacks"]
        assert (stack["stack"], stack["cloud"], stack["state"]) == ("wheel", "local", "running")
    finally:
        down = _run([gpuprov, "down", "--cloud", "local", "--stack", "wheel"], work, env)
    assert down.returncode == 0, down.stderr
    assert "local stack removed" in down.stdout
    assert json.loads(_run([gpuprov, "status", "--json"], work, env, timeout=120).stdout) == {"stacks": []}
