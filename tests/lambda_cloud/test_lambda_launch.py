"""Launches against the stand-in with faults injected: failover, storms, dropped answers, failures, signals."""

from __future__ import annotations

import os
import signal
import threading
import time
from itertools import pairwise

import pytest

from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud
from gpuprov.infra.clouds.lambda_cloud.errors import InstanceFailed, LaunchFailed
from gpuprov.infra.clouds.lambda_cloud.launch import LaunchSpec, launch_with_failover, matching_offers
from gpuprov.testing.lambda_api import LambdaStandIn
from tests.lambda_cloud.conftest import busiest_window

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+Eslvmtt60T test"
A10_REGIONS = ["us-east-1", "us-south-1", "us-west-1"]  # the stand-in's A10 capacity, in failover order


def _api() -> LambdaCloud:
    api = LambdaCloud()
    api.add_ssh_key("gpuprov-t", PUB)
    return api


def _spec(**kw: object) -> LaunchSpec:
    return LaunchSpec(name_prefix="gpuprov-t", ssh_key_name="gpuprov-t", tags={"gpuprov-stack": "t"}, **kw)  # type: ignore[arg-type]


def _a10_offers(api: LambdaCloud) -> list:
    return matching_offers(api.instance_types(), instance_type="gpu_1x_a10")


def _live(standin: LambdaStandIn) -> list[dict]:
    return standin.instances(include_terminated=False)


def test_offers_are_cheapest_first_and_meet_the_gpu_memory_floor(standin: LambdaStandIn) -> None:
    offers = matching_offers(LambdaCloud().instance_types(), min_gpu_memory_gb=40)
    assert [str(o).split(" (")[0] for o in offers] == [
        "gpu_1x_a6000 in us-west-1", "gpu_1x_a100_sxm4 in us-east-1", "gpu_1x_a100_sxm4 in us-west-2",
        "gpu_1x_h100_pcie in us-west-2"]
    assert [o.region for o in _a10_offers(LambdaCloud())] == A10_REGIONS


def test_no_capacity_in_the_first_two_regions_lands_in_the_third(standin: LambdaStandIn) -> None:
    api = _api()
    # The listing still claims capacity (it is minutes old on the real API); the launches say otherwise.
    standin.add_fault("capacity", region="us-east-1", instance_type="gpu_1x_a10")
    standin.add_fault("capacity", region="us-south-1", instance_type="gpu_1x_a10")
    inst = launch_with_failover(api, _a10_offers(api), _spec())
    assert (inst.region, inst.status, inst.ip) == ("us-west-1", "active", standin.instance_ip)
    assert inst.tags == {"gpuprov-stack": "t"} and (inst.name or "").startswith("gpuprov-t-")
    assert [i["id"] for i in _live(standin)] == [inst.id]
    launches = [r for r in standin.requests() if r.path.endswith("/launch")]
    assert [r.status for r in launches] == [400, 400, 200]


def test_when_every_offer_fails_the_error_lists_each_and_nothing_is_left(standin: LambdaStandIn) -> None:
    api = _api()
    standin.add_fault("capacity", instance_type="gpu_1x_a10")
    with pytest.raises(LaunchFailed) as caught:
        launch_with_failover(api, _a10_offers(api), _spec())
    message = str(caught.value)
    for region in A10_REGIONS:
        assert f"gpu_1x_a10 in {region} ($0.75/h): instance-operations/launch/insufficient-capacity" in message
    assert _live(standin) == []


def test_a_storm_of_429s_during_launch_still_launches_once_within_the_limits(standin: LambdaStandIn) -> None:
    api = _api()
    standin.add_fault("status", status=429, count=2, path="/launch$")
    standin.add_fault("status", status=429, count=6, method="GET")
    inst = launch_with_failover(api, _a10_offers(api), _spec(tries_per_offer=3))
    assert inst.status == "active" and len(_live(standin)) == 1
    launches = [r.at for r in standin.requests() if r.path.endswith("/launch")]
    assert len(launches) == 3  # two 429s, each followed by a lookup by name, then the launch that worked
    assert min(b - a for a, b in pairwise(launches)) >= api.launch_interval_s * 0.8
    # ... and no more than about one request per interval overall, 429s and lookups included.
    assert busiest_window([r.at for r in standin.requests()], 10 * api.min_interval_s) <= 10 + 2


def test_a_dropped_answer_after_an_accepted_launch_leaves_exactly_one_instance(standin: LambdaStandIn) -> None:
    api = _api()
    standin.add_fault("drop_after_launch", count=1)
    inst = launch_with_failover(api, _a10_offers(api), _spec())
    assert [i["id"] for i in _live(standin)] == [inst.id]
    assert sum(r.path.endswith("/launch") for r in standin.requests()) == 1  # adopted, not relaunched


def test_provider_outage_on_launch_then_a_dropped_answer_still_one_instance(standin: LambdaStandIn) -> None:
    api = _api()
    standin.add_fault("status", status=503, code="provider/internal-unavailable", count=1, path="/launch$")
    standin.add_fault("drop_after_launch", count=1)
    inst = launch_with_failover(api, _a10_offers(api), _spec())
    assert [i["id"] for i in _live(standin)] == [inst.id]


def test_a_failure_while_waiting_terminates_that_instance_and_says_why(standin: LambdaStandIn) -> None:
    api = _api()
    standin.add_fault("unhealthy", count=1)
    with pytest.raises(InstanceFailed) as caught:
        launch_with_failover(api, _a10_offers(api), _spec(unhealthy_grace_s=10))
    assert "unhealthy" in str(caught.value) and "terminated" in str(caught.value)
    assert _live(standin) == []
    assert [i["status"] for i in standin.instances()] == ["terminated"]


def test_a_boot_timeout_terminates_the_instance(standin: LambdaStandIn) -> None:
    standin.boot_seconds = 60
    api = _api()
    with pytest.raises(InstanceFailed, match="still booting"):
        launch_with_failover(api, _a10_offers(api), _spec(boot_timeout_s=30))  # 0.6 s at the test scale
    assert _live(standin) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_while_waiting_terminates_what_was_launched(standin: LambdaStandIn, signum: int) -> None:
    # Ctrl-C as a terminal delivers it, to Python's own handler: a suite started as a shell's background
    # job inherits SIGINT ignored, and the Lambda program chains its cancel handlers onto what it finds.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    standin.boot_seconds = 60
    api = _api()

    def interrupt_once_launched() -> None:
        while not any(i["status"] == "booting" for i in standin.instances()):
            time.sleep(0.02)
        os.kill(os.getpid(), signum)

    threading.Thread(target=interrupt_once_launched, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            launch_with_failover(api, _a10_offers(api), _spec())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert _live(standin) == []
    assert [i["status"] for i in standin.instances()] == ["terminated"]


def test_no_offers_is_a_clear_error(standin: LambdaStandIn) -> None:
    with pytest.raises(LaunchFailed, match="no Lambda region has capacity"):
        launch_with_failover(_api(), [], _spec())


def test_a_launch_answered_too_slowly_and_carried_out_late_leaves_one_instance(standin: LambdaStandIn) -> None:
    api = LambdaCloud(timeout_s=(2.0, 0.3))
    api.add_ssh_key("gpuprov-t", PUB)
    standin.add_fault("delay", seconds=1.0, count=1, path="/launch$")  # the client gives up at 0.3 s
    inst = launch_with_failover(api, _a10_offers(api), _spec())
    time.sleep(1.0)  # had a second launch been sent, its twin would be visible by now
    assert sum(r.path.endswith("/launch") for r in standin.requests()) == 1  # looked long enough: adopted
    assert [i["id"] for i in standin.instances()] == [inst.id]


def test_quota_moves_on_and_a_bad_request_stops_at_once(standin: LambdaStandIn) -> None:
    from gpuprov.infra.clouds.lambda_cloud.errors import ObjectNotFound

    api = _api()
    standin.add_fault("quota", count=1)
    inst = launch_with_failover(api, _a10_offers(api), _spec())
    assert inst.region == "us-south-1"  # us-east-1 answered quota-exceeded: the next offer was tried
    bad = LaunchSpec(name_prefix="gpuprov-t", ssh_key_name="no-such-key")
    with pytest.raises(ObjectNotFound, match="no-such-key"):
        launch_with_failover(api, _a10_offers(api), bad)
    assert sum(r.path.endswith("/launch") and r.status == 404 for r in standin.requests()) == 1  # not per offer


def test_a_launch_in_a_worker_thread_stops_and_cleans_up_when_cancelled(standin: LambdaStandIn) -> None:
    from gpuprov.infra.clouds.lambda_cloud.launch import LaunchCancelled, cancel_launches

    standin.boot_seconds = 60
    api = _api()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            launch_with_failover(api, _a10_offers(api), _spec())
        except BaseException as err:  # noqa: BLE001  (handed to the test thread)
            outcome.append(err)

    worker = threading.Thread(target=run)  # where the engine runs providers: no signals reach it
    worker.start()
    while not standin.instances():
        time.sleep(0.02)
    cancel_launches()
    worker.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], LaunchCancelled)
    assert "terminated what it had launched" in str(outcome[0])
    assert _live(standin) == []
