"""The dynamic providers called directly against the stand-in, as Pulumi's engine would call them."""

from __future__ import annotations

import base64
from typing import Any

import dill
import pytest
from pulumi.dynamic import Config, ConfigureRequest, CreateResult, UpdateResult

from gpuprov.infra.clouds.lambda_cloud.errors import LambdaError
from gpuprov.infra.clouds.lambda_cloud.provider import (
    LambdaFirewallRulesetProvider,
    LambdaInstanceProvider,
    LambdaSshKeyProvider,
)
from gpuprov.testing.lambda_api import LambdaStandIn
from tests.lambda_cloud.conftest import STANDIN_KEY

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+Eslvmtt60T test"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDfXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX other"
RULES = [{"protocol": "tcp", "port_range": [22, 22], "source_network": "203.0.113.7/32", "description": "ssh"}]


def outs(result: CreateResult | UpdateResult) -> dict[str, Any]:
    """A provider call's outputs (always set by these providers)."""
    assert result.outs is not None
    return dict(result.outs)


def _instance_props(**kw: object) -> dict:
    props = {"name": "gpuprov-p", "ssh_key_name": "gpuprov-p", "tags": {"gpuprov-stack": "p"},
             "instance_type": "gpu_1x_a10", "region": None, "min_gpu_memory_gb": None, "firewall_ruleset_ids": {},
             "firewall_required": False, "image_family": None, "ssh_user": "ubuntu", "boot_timeout_s": 60.0,
             "provider_version": "1"}
    return {**props, **kw}


def test_ssh_key_create_is_adopted_on_retry_and_refuses_a_different_key(standin: LambdaStandIn) -> None:
    keys = LambdaSshKeyProvider()
    first = keys.create({"name": "gpuprov-p", "public_key": PUB})
    again = keys.create({"name": "gpuprov-p", "public_key": PUB})  # the engine retried after a lost answer
    assert first.id == again.id and len(standin.ssh_keys()) == 1
    with pytest.raises(LambdaError, match="already has an SSH key named 'gpuprov-p'"):
        keys.create({"name": "gpuprov-p", "public_key": OTHER})
    assert keys.diff(first.id, {"name": "gpuprov-p", "public_key": PUB},
                     {"name": "gpuprov-p", "public_key": OTHER}).replaces == ["public_key"]
    keys.delete(first.id, {})
    keys.delete(first.id, {})  # deleting what is gone is fine
    assert standin.ssh_keys() == []


def test_rulesets_cover_the_failover_regions_update_in_place_and_go(standin: LambdaStandIn) -> None:
    rulesets = LambdaFirewallRulesetProvider()
    props = {"name": "gpuprov-p", "rules": RULES, "regions": [], "instance_type": "gpu_1x_a10",
             "min_gpu_memory_gb": None}
    made = rulesets.create(props)
    # us-south-1 has capacity too, but Lambda applies no firewall rules there: no ruleset, no launch there.
    assert sorted(outs(made)["ids"]) == ["us-east-1", "us-west-1"]
    wider = [{**RULES[0], "source_network": "203.0.113.0/24"}]
    diff = rulesets.diff(made.id, outs(made), {**props, "rules": wider})
    assert diff.changes and not diff.replaces  # rules change in place: the instance keeps running
    rulesets.update(made.id, outs(made), {**props, "rules": wider})
    assert {r["rules"][0]["source_network"] for r in standin.rulesets()} == {"203.0.113.0/24"}
    assert rulesets.diff(made.id, outs(made), {**props, "regions": ["us-west-1"]}).replaces == ["regions"]
    rulesets.delete(made.id, outs(made))
    assert standin.rulesets() == []


def test_instance_create_diff_rename_and_delete(standin: LambdaStandIn) -> None:
    LambdaSshKeyProvider().create({"name": "gpuprov-p", "public_key": PUB})
    provider = LambdaInstanceProvider()
    made = provider.create(_instance_props())
    made_outs = outs(made)
    assert made_outs["host"]["address"] == standin.instance_ip and made_outs["host"]["usd_hour"] == 0.75
    assert made_outs["host"]["expires_at"] is None  # no expiry tag was given here
    # A new created-at tag on every program run must not look like a change.
    assert not provider.diff(made.id, made_outs, {**_instance_props(), "tags": {"gpuprov-stack": "p", "x": "y"}}).changes
    renamed = provider.diff(made.id, made_outs, _instance_props(name="gpuprov-q"))
    assert renamed.changes and not renamed.replaces
    for key, value in (("instance_type", "gpu_1x_a100_sxm4"), ("region", "us-west-2"),
                       ("image_family", "ubuntu-22-04")):
        assert provider.diff(made.id, made_outs, _instance_props(**{key: value})).replaces == [key]
    updated = provider.update(made.id, made_outs, _instance_props(name="gpuprov-q"))
    suffix = made_outs["instance_name"].rsplit("-", 1)[1]
    assert outs(updated)["instance_name"] == f"gpuprov-q-{suffix}"
    assert standin.instances()[0]["name"] == f"gpuprov-q-{suffix}"
    provider.delete(made.id, outs(updated))
    assert [i["status"] for i in standin.instances()] == ["terminated"]  # confirmed, not just requested


def test_instance_with_rulesets_only_launches_where_one_exists(standin: LambdaStandIn) -> None:
    LambdaSshKeyProvider().create({"name": "gpuprov-p", "public_key": PUB})
    rs = LambdaFirewallRulesetProvider().create({"name": "gpuprov-p", "rules": RULES, "regions": ["us-west-1"]})
    made = LambdaInstanceProvider().create(_instance_props(firewall_ruleset_ids=outs(rs)["ids"],
                                                           firewall_required=True))
    assert outs(made)["launched_region"] == "us-west-1"
    assert standin.instances()[0]["firewall_rulesets"] == [{"id": outs(rs)["ids"]["us-west-1"]}]
    LambdaInstanceProvider().delete(made.id, outs(made))
    LambdaFirewallRulesetProvider().delete(rs.id, outs(rs))  # allowed once the instance is terminated
    assert standin.rulesets() == []


SERVICE_RULES = [*RULES, {**RULES[0], "port_range": [8002, 8002], "description": "monai label"}]


def _opened_instance(standin: LambdaStandIn, **kw: object) -> tuple[dict, dict]:
    LambdaSshKeyProvider().create({"name": "gpuprov-p", "public_key": PUB})
    rs = LambdaFirewallRulesetProvider().create({"name": "gpuprov-p", "rules": SERVICE_RULES, "regions": []})
    props = _instance_props(firewall_ruleset_ids=outs(rs)["ids"], firewall_required=True, instance_type=None,
                            min_gpu_memory_gb=24, open_ports=[8002], allowed_cidrs=["203.0.113.7/32"], **kw)
    return props, outs(rs)


def test_an_opened_port_reachable_only_from_the_allow_list_launches(standin: LambdaStandIn) -> None:
    props, rs = _opened_instance(standin)
    made = LambdaInstanceProvider().create(props)
    assert outs(made)["launched_region"] != "us-south-1"
    LambdaInstanceProvider().delete(made.id, outs(made))
    LambdaFirewallRulesetProvider().delete("gpuprov-p", rs)


@pytest.mark.parametrize("wide", [["0.0.0.0/0"], ["0.0.0.0/1", "128.0.0.0/1"], ["203.0.113.0/24"]])
def test_a_global_rule_opening_the_port_wider_stops_the_launch_before_anything_bills(standin: LambdaStandIn,
                                                                                      wide) -> None:
    """The account's global rules apply to every instance: one that admits 8002 from beyond the allow-list
    (the whole internet, two halves of it, or just a wider range) stops it before anything launches."""
    standin.set_global_rules([{"protocol": "tcp", "port_range": [8000, 8100], "source_network": s,
                               "description": "someone's rule"} for s in wide])
    props, rs = _opened_instance(standin)
    with pytest.raises(LambdaError, match=r"nothing was launched\) would be reachable beyond allowed_cidrs "
                                          r"\(port 8002 from ") as caught:
        LambdaInstanceProvider().create(props)
    assert caught.value.exit_code == 4
    assert standin.instances() == []
    LambdaFirewallRulesetProvider().delete("gpuprov-p", rs)


def test_failover_skips_the_region_without_firewall_when_ports_are_opened(standin: LambdaStandIn) -> None:
    """us-south-1 is the only region with capacity: with a port opened, nothing launches there."""
    standin.set_capacity("gpu_1x_a10", ["us-south-1"])
    LambdaSshKeyProvider().create({"name": "gpuprov-p", "public_key": PUB})
    props = _instance_props(open_ports=[8002], allowed_cidrs=["203.0.113.7/32"])
    with pytest.raises(LambdaError, match="capacity only in us-south-1, where it applies no firewall rules"):
        LambdaInstanceProvider().create(props)
    assert standin.instances() == []


def test_credentials_come_from_configure_and_never_reach_the_pickled_provider(
        standin: LambdaStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDA_API_KEY")
    provider = LambdaSshKeyProvider()
    provider.configure(ConfigureRequest(Config({"lambda:apiKey": STANDIN_KEY}, "gpuprov")))
    provider.create({"name": "gpuprov-c", "public_key": PUB})
    blob = base64.b64encode(dill.dumps(provider, recurse=True)).decode()
    assert STANDIN_KEY not in base64.b64decode(blob).decode("latin-1")
    with pytest.raises(LambdaError, match="LAMBDA_API_KEY"):
        dill.loads(base64.b64decode(blob)).client()  # unpickled: no key until configure() runs again
