"""The Lambda client against the stand-in: typed results, error types by code, back-off, rate limits."""

from __future__ import annotations

import pytest
import requests

from gpuprov.infra.clouds.lambda_cloud import errors
from gpuprov.infra.clouds.lambda_cloud.client import FirewallRule, LambdaCloud
from gpuprov.testing.lambda_api import LambdaStandIn
from tests.lambda_cloud.conftest import busiest_window

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+Eslvmtt60T test"


def test_instance_types_are_typed_and_cheapest_first(standin: LambdaStandIn) -> None:
    types = LambdaCloud().instance_types()
    a10 = next(t for t in types if t.name == "gpu_1x_a10")
    assert (a10.usd_hour, a10.gpu_model, a10.gpu_memory_gb, a10.gpus) == (0.75, "A10", 24, 1)
    assert "us-east-1" in a10.regions_with_capacity
    assert [t.price_cents_per_hour for t in types] == sorted(t.price_cents_per_hour for t in types)


def test_launch_get_terminate_and_keys_rulesets_images(standin: LambdaStandIn) -> None:
    api = LambdaCloud()
    key = api.add_ssh_key("k1", PUB)
    assert [k.name for k in api.list_ssh_keys()] == ["k1"]
    rs = api.create_firewall_ruleset("fw", "us-east-1", [FirewallRule(protocol="tcp", port_range=(22, 22),
                                                                      source_network="203.0.113.7/32")])
    iid = api.launch("us-east-1", "gpu_1x_a10", "k1", name="n-1", tags={"gpuprov-stack": "dev"},
                     firewall_ruleset_ids=[rs.id], image_family="lambda-stack-22-04")
    inst = api.get_instance(iid)
    assert (inst.name, inst.region, inst.instance_type, inst.tags) == ("n-1", "us-east-1", "gpu_1x_a10",
                                                                       {"gpuprov-stack": "dev"})
    assert inst.firewall_ruleset_ids == (rs.id,)
    found = api.find_instance_by_name("n-1")
    assert found is not None and found.id == iid
    with pytest.raises(errors.FirewallRulesetInUse):
        api.delete_firewall_ruleset(rs.id)
    updated = api.update_firewall_ruleset(rs.id, rules=[])
    assert updated.rules == ()
    assert api.rename_instance(iid, "n-2").name == "n-2"
    assert [i.id for i in api.restart([iid])] == [iid]
    assert api.terminate([iid])[0].status == "terminating"
    assert api.list_images()
    api.delete_ssh_key(key.id)
    assert api.list_ssh_keys() == []


@pytest.mark.parametrize(("status", "code", "kind"), [
    (400, "instance-operations/launch/insufficient-capacity", errors.InsufficientCapacity),
    (400, "global/quota-exceeded", errors.QuotaExceeded),
    (400, "global/invalid-parameters", errors.InvalidParameters),
    (404, "global/object-does-not-exist", errors.ObjectNotFound),
    (401, "global/invalid-api-key", errors.InvalidApiKey),
    (503, "provider/internal-unavailable", errors.ProviderError),
    (500, "provider/some-new-outage", errors.ProviderError),
    (429, None, errors.RateLimited),
])
def test_errors_are_typed_by_code_not_message(status: int, code: str | None, kind: type) -> None:
    body = {"error": {"code": code, "message": "insufficient capacity (text must not matter)"}} if code else {}
    assert type(errors.error_for(status, body, "GET /x")) is kind


def test_wrong_key_is_invalid_api_key_and_the_key_never_shows(standin: LambdaStandIn) -> None:
    with pytest.raises(errors.InvalidApiKey) as caught:
        LambdaCloud(api_key="wrong-secret-value").list_instances()
    assert "wrong-secret-value" not in str(caught.value)
    assert "LAMBDA_API_KEY" in str(caught.value)


def test_no_key_tells_the_user_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    with pytest.raises(errors.LambdaError, match="LAMBDA_API_KEY"):
        LambdaCloud()


def test_a_storm_of_429_and_provider_errors_ends_in_success_within_the_rate_limit(standin: LambdaStandIn) -> None:
    standin.add_fault("status", status=429, count=4, path="instance-types")
    standin.add_fault("status", status=503, code="provider/internal-unavailable", count=3, path="instance-types")
    api = LambdaCloud(min_interval_s=0.5)  # x0.02 scale: 10 ms between requests
    assert api.instance_types()
    calls = [r for r in standin.requests() if r.path.endswith("instance-types")]
    assert [r.status for r in calls] == [429] * 4 + [503] * 3 + [200]
    # Lambda allows about one request a second: never more than that in any 5-interval window.
    assert busiest_window([r.at for r in standin.requests()], 5 * api.min_interval_s) <= 5 + 1


def test_requests_from_many_threads_keep_one_request_per_interval(standin: LambdaStandIn) -> None:
    from concurrent.futures import ThreadPoolExecutor

    api = LambdaCloud(min_interval_s=2.5)  # 50 ms scaled
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: api.list_instances(), range(16)))
    times = sorted(r.at for r in standin.requests())
    assert len(times) == 16
    # Arrival times carry scheduling noise on a busy machine: allow two extra in a 10-interval window.
    assert busiest_window(times, 10 * api.min_interval_s) <= 10 + 2


def test_launches_are_spaced_by_the_launch_interval(standin: LambdaStandIn) -> None:
    api = LambdaCloud(launch_interval_s=10.0)  # 200 ms scaled
    api.add_ssh_key("k1", PUB)
    for n in range(3):
        api.launch("us-west-1", "gpu_1x_a10", "k1", name=f"n{n}")
    launches = [r.at for r in standin.requests() if r.path.endswith("launch")]
    assert launches[-1] - launches[0] >= 2 * api.launch_interval_s * 0.9


def test_a_launch_is_never_repeated_by_the_client(standin: LambdaStandIn) -> None:
    api = LambdaCloud()
    api.add_ssh_key("k1", PUB)
    standin.add_fault("drop_after_launch", count=1)
    with pytest.raises(errors.LambdaUnreachable):
        api.launch("us-east-1", "gpu_1x_a10", "k1", name="once")
    assert [r.path for r in standin.requests()].count("/api/v1/instance-operations/launch") == 1
    assert len(standin.instances()) == 1  # it was accepted: the caller must look it up by name


def test_standin_faults_over_http(standin: LambdaStandIn) -> None:
    requests.post(f"{standin.url}/_standin/faults", json={"kind": "capacity", "region": "us-east-1"}, timeout=5)
    api = LambdaCloud()
    api.add_ssh_key("k1", PUB)
    with pytest.raises(errors.InsufficientCapacity):
        api.launch("us-east-1", "gpu_1x_a10", "k1", name="x")
    state = requests.get(f"{standin.url}/_standin/state", timeout=5).json()
    assert state["leftovers"]["instances"] == []
    recorded = requests.get(f"{standin.url}/_standin/requests", timeout=5).json()["requests"]
    assert "Authorization" not in recorded[0]["headers"]


def test_the_openapi_check_catches_a_request_that_breaks_the_document() -> None:
    from tests.lambda_cloud.conftest import STANDIN_KEY, conformance_errors

    with LambdaStandIn(api_key=STANDIN_KEY) as api:
        requests.post(f"{api.url}/api/v1/instance-operations/launch", timeout=5,
                      headers={"Authorization": f"Bearer {STANDIN_KEY}"},
                      json={"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10"})  # no ssh_key_names
        problems = conformance_errors(api.requests())
    assert len(problems) == 1 and "ssh_key_names" in problems[0]
