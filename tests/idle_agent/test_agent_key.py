"""No master key on a GPU host: what the Lambda idle agent is given, and what plan and deploy say without one."""

from __future__ import annotations

import json
import warnings

import pytest

from gpuprov.infra.config import load_config
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.idle_agent import REMOTE_CONFIG, REMOTE_SECRET, AgentCannotAct, install, warn_if_powerless
from tests.conftest import run_cli

HOST = GpuHost(cloud="lambda", address="198.51.100.7", ssh_user="ubuntu", instance_id="i-1")


def files(**config: object) -> dict[str, bytes]:
    found, _start = install(load_config(None, {"cloud": "lambda", **config}), HOST)
    return {f.path: f.content for f in found}


@pytest.fixture(autouse=True)
def operator_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", "operator-master-key")
    monkeypatch.delenv("GPUPROV_LAMBDA_AGENT_API_KEY", raising=False)


def test_the_operator_key_never_reaches_the_host_by_default():
    sent = files()
    assert REMOTE_SECRET not in sent
    assert not any(b"operator-master-key" in content for content in sent.values())
    action = json.loads(sent[REMOTE_CONFIG])["action"]
    assert action["kind"] == "stop-apps" and "GPUPROV_LAMBDA_AGENT_API_KEY" in action["why"]


def test_the_agent_key_is_what_the_host_gets(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GPUPROV_LAMBDA_AGENT_API_KEY", "agent-only-key")
    sent = files()
    assert json.loads(sent[REMOTE_SECRET]) == {"lambda_api_key": "agent-only-key"}
    assert json.loads(sent[REMOTE_CONFIG])["action"]["kind"] == "http"
    assert not any(b"operator-master-key" in content for content in sent.values())


def test_the_operator_key_only_with_the_explicit_opt_in():
    sent = files(lambda_agent_uses_operator_key=True)
    assert json.loads(sent[REMOTE_SECRET]) == {"lambda_api_key": "operator-master-key"}


def test_deploy_without_an_agent_key_warns_loudly_and_says_what_protects_the_host():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        protection = warn_if_powerless(load_config(None, {"cloud": "lambda", "max_lifetime_hours": 6}))
    assert [type(w.message) for w in caught] == [AgentCannotAct]
    assert protection and "6 h after launch" in protection and "gpuprov reap" in protection


def test_plan_says_it_once_and_not_when_the_agent_can_act():
    result = run_cli("plan", "--cloud", "lambda")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "idle agent cannot terminate it" in lines[0] and "gpuprov reap" in lines[0]
    with_key = run_cli("plan", "--cloud", "lambda", env={"GPUPROV_LAMBDA_AGENT_API_KEY": "agent-only-key"})
    assert with_key.returncode == 0 and "warning:" not in with_key.stderr
