"""The stack cache on Lambda (``cache: true``): a persistent filesystem made once, attached at every launch in
its region, kept by ``down`` (which says what it costs), deleted by ``down --purge``; the reaper reports caches
and never removes one. Real providers on Pulumi's mock runtime, the stand-in API, driven through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprov.infra.cache import cache_name_for
from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud
from gpuprov.testing.lambda_api import LambdaStandIn
from tests.conftest import run_cli

ME = "cache-test@lab"
ENV = {"GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "30",
       "GPUPROV_OWNER": ME}
NAME = cache_name_for("ct", ME)


def _config(tmp_path: Path, **values: object) -> str:
    path = tmp_path / "lambda.yaml"
    path.write_text(json.dumps({"cloud": "lambda", "stack": "ct", "cache": True, **values}))
    return str(path)


def _live(standin: LambdaStandIn) -> list[dict]:
    return standin.instances(include_terminated=False)


def test_down_keeps_the_cache_and_the_next_up_attaches_it_in_its_region(standin: LambdaStandIn, tmp_path: Path,
                                                                       gpuprov_home: Path) -> None:
    cfg = _config(tmp_path)
    up = run_cli("up", "--no-deploy", "-c", cfg, env=ENV)
    assert up.returncode == 0, up.stderr
    [fs] = standin.filesystems()
    [inst] = _live(standin)
    assert fs["name"] == NAME and len(NAME) <= 60
    assert fs["region"]["name"] == inst["region"]["name"] == "us-east-1"  # the cheapest offer's region
    assert inst["file_system_names"] == [NAME]
    assert inst["file_system_mounts"] == [{"mount_point": f"/lambda/nfs/{NAME}", "file_system_id": fs["id"]}]

    down = run_cli("down", "-c", cfg, env=ENV)
    assert down.returncode == 0, down.stderr
    assert "lambda stack removed" in down.stdout
    assert f"kept cache {NAME} in us-east-1 (persistent filesystem)" in down.stdout
    assert "$0.20/GB-month (Lambda public price list (filesystems), 2025-10)" in down.stdout
    assert "`gpuprov down --purge -s ct` deletes it" in down.stdout
    assert _live(standin) == [] and standin.ssh_keys() == []
    assert [f["id"] for f in standin.filesystems()] == [fs["id"]]  # the cache outlives the host

    status = run_cli("status", "--json", env=ENV)
    assert status.returncode == 0, status.stderr
    [listed] = json.loads(status.stdout)["caches"]
    assert (listed["name"], listed["stack"], listed["usd_gb_month"]) == (NAME, "ct", 0.2)
    cost = run_cli("cost", "--offline", "-c", cfg, env=ENV)
    assert cost.returncode == 0, cost.stderr
    assert f"stack ct: cache {NAME} in us-east-1" in cost.stdout

    # The A10 is gone from the cache's region and cheaper elsewhere: the launch stays in the cache's region.
    standin.set_capacity("gpu_1x_a10", ["us-west-1", "us-south-1"])
    standin.set_capacity("gpu_1x_a6000", ["us-west-1"])
    again = run_cli("up", "--no-deploy", "-c", cfg, env=ENV)
    assert again.returncode == 0, again.stderr
    [inst2] = _live(standin)
    assert (inst2["region"]["name"], inst2["instance_type"]["name"]) == ("us-east-1", "gpu_1x_a100_sxm4")
    assert inst2["file_system_names"] == [NAME]
    assert [f["id"] for f in standin.filesystems()] == [fs["id"]]  # the same filesystem, not a second one

    purge = run_cli("down", "--purge", "-c", cfg, env=ENV)
    assert purge.returncode == 0, purge.stderr
    assert "cache deleted" in purge.stdout and "kept cache" not in purge.stdout
    assert "verified: the lambda API lists no cache of stack 'ct'" in purge.stderr
    assert standin.filesystems() == [] and _live(standin) == []


def test_no_capacity_in_the_caches_region_fails_and_says_what_to_do(standin: LambdaStandIn, tmp_path: Path,
                                                                   gpuprov_home: Path) -> None:
    LambdaCloud().create_filesystem(NAME, "us-west-1")  # an earlier up made it there
    for t in ("gpu_1x_a10", "gpu_1x_a6000", "gpu_1x_a100_sxm4", "gpu_1x_h100_pcie"):
        standin.set_capacity(t, ["us-east-1"])
    up = run_cli("up", "--no-deploy", "-c", _config(tmp_path), env=ENV)
    assert up.returncode != 0
    assert "Traceback" not in up.stderr
    assert f"cache filesystem {NAME} is in us-west-1" in up.stderr
    assert "gpuprov down --purge" in up.stderr
    assert _live(standin) == []  # nothing launched outside the cache's region


def test_the_reaper_keeps_an_owned_cache_and_reports_an_ownerless_one(standin: LambdaStandIn, tmp_path: Path,
                                                                      gpuprov_home: Path) -> None:
    cfg = _config(tmp_path)
    assert run_cli("up", "--no-deploy", "-c", cfg, env=ENV).returncode == 0
    api = LambdaCloud()
    orphan = cache_name_for("gone", "bob@elsewhere")  # a colleague's stack that no longer runs
    api.create_filesystem(orphan, "us-west-1")

    reap = run_cli("reap", "--json", "--cloud", "lambda", env=ENV)
    assert reap.returncode == 0, reap.stderr
    report = json.loads(reap.stdout)
    verdicts = {c["name"]: c["verdict"] for c in report["caches"]}
    assert verdicts == {NAME: "kept", orphan: "ownerless"}
    assert report["found"] == []  # neither is the reaper's to remove
    assert sorted(f["name"] for f in standin.filesystems()) == sorted([NAME, orphan])

    shown = run_cli("reap", "--cloud", "lambda", env=ENV)
    assert f"cache {orphan} in us-west-1 (lambda): ownerless: another owner's" in shown.stdout
    assert "the reaper never deletes someone else's" in shown.stdout
    assert run_cli("down", "-c", cfg, env=ENV).returncode == 0  # the cache stays; the stack is gone
    purge = run_cli("down", "--purge", "-c", cfg, env=ENV)  # later: the kept cache alone goes
    assert purge.returncode == 0, purge.stderr
    assert "lambda cache deleted (the stack itself was already down)" in purge.stdout
    assert [f["name"] for f in standin.filesystems()] == [orphan]  # --purge took only the stack's own
    nothing = run_cli("down", "--purge", "-c", cfg, env=ENV)  # no stack, no cache: the usual unknown-stack error
    assert nothing.returncode == 2 and "Traceback" not in nothing.stderr


@pytest.mark.parametrize(("values", "message"), [
    ({"cloud": "local", "cache": True}, "config key 'cache': True is not allowed; a cache kept across `down` is "
                                        "made on lambda, aws or gcp only so far, not on local; remove cache: true"),
    ({"cloud": "lambda", "cache": True, "cache_size_gb": 5}, "config key 'cache_size_gb': 5 is not allowed; "
                                                              "expected a size from 10 to 16384 GB"),
])
def test_cache_settings_are_checked(tmp_path: Path, gpuprov_home: Path, values: dict, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"stack": "ct", **values}))
    plan = run_cli("plan", "-c", str(path), env=ENV)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert plan.stderr.strip().splitlines()[-1] == f"error: {message}"


def test_ci_says_in_its_summary_and_on_stderr_that_it_kept_the_cache(standin: LambdaStandIn, tmp_path: Path,
                                                                     gpuprov_home: Path) -> None:
    summary_file = tmp_path / "summary.json"
    name = cache_name_for("ci-cache", ME)
    ci = run_cli("ci", "--on", "local", "--no-deploy", "--summary", str(summary_file), "-s", "ci-cache",
                 "-c", _config(tmp_path), "--", "true", env=ENV)
    # The stand-in's host has no sshd, so the run itself may fail (exit 90) once the tunnel is tried: a failed run
    # keeps the cache too, and must say so as much as a passed one.
    assert ci.returncode in (0, 90) and "Traceback" not in ci.stderr, ci.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["teardown"] == "verified"
    [kept] = summary["caches_kept"]
    assert (kept["cloud"], kept["name"], kept["region"]) == ("lambda", name, "us-east-1")
    assert kept["usd_gb_month"] == 0.20  # Lambda bills what it holds, which the API did not say yet
    assert (f"gpuprov ci: cache kept: {name} in us-east-1 (lambda, $0.20/GB-month); "
            "`gpuprov down --purge -s ci-cache` deletes it") in ci.stderr
    assert [f["name"] for f in standin.filesystems()] == [name]  # still there, as said
