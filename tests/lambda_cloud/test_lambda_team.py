"""Two operators on one team: one shared ``file://`` Pulumi backend, two gpuprov homes, one stack.

Alice brings the stack up; Bob, on a home that never saw it, finds its host from the stack's outputs,
deploys to it (nothing changes: same service secrets), checks it end to end through his own tunnel,
and tears it down by name; Alice's cached record then finds no host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.infra.config import build_config
from gpuprov.infra.settings import Settings
from gpuprov.infra.stacks import MockRuntimeBackend
from gpuprov.testing.lambda_api import LambdaStandIn
from tests.conftest import need_sandbox, run_cli

pytestmark = pytest.mark.sandbox


@pytest.mark.timeout(900)
def test_a_colleague_deploys_tunnels_and_downs_my_stack_by_name(standin: LambdaStandIn, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    need_sandbox()
    box = LocalSandbox("teambox", root=tmp_path / "boxes", login_user="ubuntu")
    box.create()
    shared = tmp_path / "team-state"
    passphrase = tmp_path / "team-passphrase"
    passphrase.write_text("correct horse battery staple\n")
    team = {"GPUPROV_PULUMI": "mock", "PULUMI_BACKEND_URL": f"file://{shared}",
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase), "PULUMI_HOME": str(tmp_path / "no-login"),
            "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "30"}
    alice = {**team, "GPUPROV_HOME": str(tmp_path / "alice")}
    bob = {**team, "GPUPROV_HOME": str(tmp_path / "bob")}
    try:
        standin.attach(box)
        up = run_cli("up", "--cloud", "lambda", "--stack", "team", env=alice, timeout=600)
        assert up.returncode == 0, up.stderr
        assert "all healthy" in up.stdout + up.stderr

        # Bob's machine never saw the stack: status and cost list it from the backend, as Alice's would.
        listed = run_cli("status", "--json", env=bob, timeout=120)
        assert listed.returncode == 0, listed.stderr
        rows = {r["stack"]: r for r in json.loads(listed.stdout)["stacks"]}
        assert rows["team"]["cloud"] == "lambda" and rows["team"]["address"] == box.host().address  # type: ignore[union-attr]
        spent = run_cli("cost", "--json", "--offline", "--stack", "team", "--cloud", "lambda", env=bob, timeout=120)
        assert spent.returncode == 0, spent.stderr
        assert [s["stack"] for s in json.loads(spent.stdout)["spend"]] == ["team"]

        deploy = run_cli("deploy", "--stack", "team", "--json", env=bob, timeout=600)  # no --cloud: the stack says
        assert deploy.returncode == 0, deploy.stderr
        assert json.loads(deploy.stdout[deploy.stdout.index("{"):])["changed"] == []  # same secrets: nothing restarts
        smoke = run_cli("smoke", "--stack", "team", env=bob, timeout=600)  # Bob's tunnel, the stack's vLLM key
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr

        keys = [json.loads((tmp_path / who / "secrets" / "team.json").read_text())["apps"]["vllm_cxr"]["vllm_api_key"]
                for who in ("alice", "bob")]
        assert keys[0] == keys[1]
        pinned = (tmp_path / "alice" / "known_hosts" / "team").read_text().split()
        for name, value in bob.items():
            monkeypatch.setenv(name, value)
        carried = MockRuntimeBackend(Settings.from_env()).load_service_secrets(
            build_config({"stack": "team", "cloud": "lambda"}))["_host_keys"]
        assert [line.split() for line in "\n".join(carried.values()).splitlines()] == [pinned]  # Alice's pin, Bob's check
        assert (tmp_path / "bob" / "known_hosts" / "team").read_text().split() == pinned
        login_key = (tmp_path / "alice" / "keys" / "team" / "id_ed25519").read_text()
        for path in (p for p in shared.rglob("*") if p.is_file()):  # the shared state: secrets only sealed
            text = path.read_text(errors="ignore")
            assert keys[0] not in text and login_key.split("\n")[1] not in text, path

        down = run_cli("down", "--stack", "team", env=bob, timeout=300)
        assert down.returncode == 0, down.stderr
        assert "lambda stack removed" in down.stdout
        assert standin.leftovers() == {"instances": [], "ssh_keys": [], "firewall_rulesets": []}
        again = run_cli("deploy", "--stack", "team", env=alice, timeout=120)  # Alice's record is only a cache
        assert again.returncode == 1
        assert again.stderr.strip().splitlines()[-1] == (
            "error: stack 'team' has no host; bring one up first: gpuprov up --stack team")
    finally:
        box.destroy()
