"""Port 22 after a Lambda launch: the effective rules (the instance's rulesets and the account's global ruleset,
which gpuprov does not own) must admit SSH from the SSH allow-list only, unless ``allow_public``.

Lambda is the stand-in built from Lambda's OpenAPI document (its firewall paths, global ruleset included).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprov.infra.clouds.lambda_cloud.errors import LambdaError
from gpuprov.infra.clouds.lambda_cloud.provider import (
    LambdaFirewallRulesetProvider,
    LambdaInstanceProvider,
    LambdaSshKeyProvider,
)
from gpuprov.testing.lambda_api import NEW_ACCOUNT_GLOBAL_RULES, LambdaStandIn
from tests.conftest import run_cli
from tests.lambda_cloud.test_lambda_providers import PUB, RULES, _instance_props, outs

MOCK = {"GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "30"}
MINE = "203.0.113.7/32"  # the egress address the tests' echo stand-in answers


def _global_ssh(standin: LambdaStandIn, sources: list[str]) -> None:
    standin.set_global_rules([{"protocol": "tcp", "port_range": [22, 22], "source_network": s,
                               "description": "someone's rule"} for s in sources])


def _props(standin: LambdaStandIn, **kw: object) -> tuple[dict, dict]:
    LambdaSshKeyProvider().create({"name": "gpuprov-p", "public_key": PUB})
    rs = LambdaFirewallRulesetProvider().create({"name": "gpuprov-p", "rules": RULES, "regions": []})
    props = _instance_props(firewall_ruleset_ids=outs(rs)["ids"], firewall_required=True, instance_type=None,
                            min_gpu_memory_gb=24, open_ports=[], allowed_cidrs=[], ssh_sources=[MINE], **kw)
    return props, outs(rs)


@pytest.mark.parametrize("wide", [["0.0.0.0/0"], ["0.0.0.0/1", "128.0.0.0/1"], ["203.0.113.0/24"]])
def test_a_global_rule_opening_ssh_wider_than_the_allow_list_stops_the_launch_before_anything_bills(
        standin: LambdaStandIn, wide: list[str]) -> None:
    _global_ssh(standin, wide)
    props, rs = _props(standin)
    with pytest.raises(LambdaError, match=r"every instance of this account \(nothing was launched\) would take "
                                          r"SSH \(port 22\) from .*beyond the SSH allow-list \(203\.0\.113\.7/32\)"
                       ) as caught:
        LambdaInstanceProvider().create(props)
    assert caught.value.exit_code == 4
    assert standin.instances() == []  # nothing launched, nothing billed
    LambdaFirewallRulesetProvider().delete("gpuprov-p", rs)


def test_a_global_rule_added_while_it_launches_is_caught_after_launch_and_the_instance_terminated(
        standin: LambdaStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuprov.infra.clouds.lambda_cloud import provider

    real = provider.launch_with_failover

    def launch_then_a_colleague_opens_ssh(*args, **kwargs):
        launched = real(*args, **kwargs)
        _global_ssh(standin, ["0.0.0.0/0"])
        return launched

    monkeypatch.setattr(provider, "launch_with_failover", launch_then_a_colleague_opens_ssh)
    props, rs = _props(standin)
    with pytest.raises(LambdaError, match=r"instance .* would take SSH \(port 22\) from 0\.0\.0\.0/0.*terminated"):
        LambdaInstanceProvider().create(props)
    assert standin.instances() and all(i["status"] == "terminated" for i in standin.instances())
    LambdaFirewallRulesetProvider().delete("gpuprov-p", rs)


@pytest.mark.parametrize(("sources", "allow_public"), [([MINE], False), (["0.0.0.0/0"], True)])
def test_ssh_from_the_allow_list_or_public_by_choice_launches(standin: LambdaStandIn, sources: list[str],
                                                              allow_public: bool) -> None:
    _global_ssh(standin, sources)
    props, rs = _props(standin, allow_public=allow_public)
    made = LambdaInstanceProvider().create(props)
    assert outs(made)["host"]["address"]
    LambdaInstanceProvider().delete(made.id, outs(made))
    LambdaFirewallRulesetProvider().delete("gpuprov-p", rs)


def test_up_on_a_new_account_stops_with_one_line_while_its_global_rule_opens_ssh_to_the_world(
        standin: LambdaStandIn, gpuprov_home: Path) -> None:
    """A new Lambda account's global ruleset opens 22 to everyone; gpuprov never edits it, so `up` says so."""
    standin.set_global_rules(list(NEW_ACCOUNT_GLOBAL_RULES))
    up = run_cli("up", "--no-deploy", "--cloud", "lambda", "--stack", "hk22", env=MOCK)
    assert up.returncode == 4, up.stdout + up.stderr
    [line] = up.stderr.strip().splitlines()[-1:]
    assert "SSH (port 22) from 0.0.0.0/0" in line and MINE in line and "allow_public" in line
    assert "Traceback" not in up.stderr
    assert all(i["status"] == "terminated" for i in standin.instances())  # nothing billing
    run_cli("down", "--stack", "hk22", env=MOCK)
