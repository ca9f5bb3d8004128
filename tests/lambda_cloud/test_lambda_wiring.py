"""The Lambda program's wiring under Pulumi's mocks (no provider called): what is declared, with which inputs."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest

import gpuprov.infra
from gpuprov.infra.clouds.lambda_cloud.program import firewall_rules
from gpuprov.infra.config import ConfigError, build_config
from gpuprov.infra.mock_runtime import EngineMocks, run_program


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """The program installs Ctrl-C/SIGTERM handlers that cancel launches; leave pytest's own as they were."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+Eslvmtt60T test"


def _declared(monkeypatch: pytest.MonkeyPatch, **values: object) -> dict[str, dict]:
    monkeypatch.setenv("LAMBDA_API_KEY", "wiring-secret-key-value")
    config = build_config({"cloud": "lambda", "stack": "w", "ssh_public_key": PUB, **values})
    mocks = EngineMocks(output_defaults=lambda args: {"ids": {"us-west-1": "rs-1"}} if args.name == "firewall" else {})
    run_program(lambda: gpuprov.infra.build(config), mocks, stack="w")
    recorded = {r.name: r.inputs for r in mocks.resources}
    assert "wiring-secret-key-value" not in json.dumps(recorded)  # credentials are never inputs
    return recorded


def test_key_ruleset_and_instance_are_declared_with_tags_and_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    res = _declared(monkeypatch, allowed_cidrs=["203.0.113.7/32"], open_ports=[8002], region="us-west-1",
                    max_lifetime_hours=2)
    assert set(res) == {"ssh-key", "firewall", "instance"}
    assert res["ssh-key"]["name"] == "gpuprov-w" and res["ssh-key"]["public_key"] == PUB
    assert res["firewall"]["regions"] == ["us-west-1"]
    assert [(r["source_network"], r["port_range"]) for r in res["firewall"]["rules"]] == [
        ("203.0.113.7/32", [22, 22]), ("203.0.113.7/32", [8002, 8002])]
    inst = res["instance"]
    assert (inst["ssh_key_name"], inst["region"], inst["firewall_required"]) == ("gpuprov-w", "us-west-1", True)
    tags = inst["tags"]
    assert tags["gpuprov-stack"] == "w" and int(tags["gpuprov-expires-at"]) - int(tags["gpuprov-created-at"]) == 7200
    assert all(r["provider_version"] for r in res.values())


def test_no_allowed_cidrs_means_a_ruleset_with_ssh_from_the_egress_address_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lambda's default (SSH from anywhere) never applies: the stack's own ruleset lets SSH in from the
    operator's egress address (as `gpuprov up` detects it) and nothing else; the instance must carry it."""
    res = _declared(monkeypatch, egress_cidr="203.0.113.7/32")
    assert set(res) == {"ssh-key", "firewall", "instance"}
    assert [(r["source_network"], r["port_range"]) for r in res["firewall"]["rules"]] == [
        ("203.0.113.7/32", [22, 22])]
    assert res["instance"]["firewall_required"] is True
    assert res["instance"]["min_gpu_memory_gb"] == 24  # no type pinned: any 1-GPU type with an A10's memory or more
    # no address known to the program (none given, none detected): the ruleset lets nothing in, never the world
    assert _declared(monkeypatch)["firewall"]["rules"] == []


def test_us_south_1_is_refused_unless_allow_public() -> None:
    """Lambda applies no firewall rules in us-south-1, so SSH would be open to everyone there."""
    with pytest.raises(ConfigError, match="SSH would be open to everyone") as caught:
        build_config({"cloud": "lambda", "region": "us-south-1"})
    assert caught.value.key == "region"
    assert build_config({"cloud": "lambda", "region": "us-south-1", "allow_public": True}).region == "us-south-1"


def test_firewall_rules_refuse_ipv6_and_more_than_twenty() -> None:
    with pytest.raises(ConfigError, match="IPv4 ranges only"):
        firewall_rules(build_config({"cloud": "lambda", "allowed_cidrs": ["2001:db8::/48"]}))
    many = [f"203.0.113.{n}/32" for n in range(7)]
    with pytest.raises(ConfigError, match="Lambda allows 20 rules"):
        firewall_rules(build_config({"cloud": "lambda", "allowed_cidrs": many, "open_ports": [8000, 3000]}))
