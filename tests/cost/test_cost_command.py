"""`gpuprov cost` as a user runs it: the price table (configured offer and alternatives, cheapest first)
with live prices from the stand-ins when reachable, and spend so far of the running stacks."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from gpuprov.cost.spend import budget_state, spend_so_far
from gpuprov.infra import records
from gpuprov.infra.host import GpuHost, utcnow
from gpuprov.testing.billing_api import BillingCatalogStandIn
from tests.conftest import run_cli

CLEAN_ENV = {"LAMBDA_API_KEY": "", "AWS_ACCESS_KEY_ID": "", "AWS_PROFILE": "", "GPUPROV_GCP_BILLING_API_KEY": ""}


def _record(stack: str, cloud: str, usd_hour: float, hours_ago: float) -> None:
    launched = utcnow() - timedelta(hours=hours_ago)
    records.save(stack, cloud, GpuHost(cloud=cloud, address="198.51.100.7", ssh_user="ubuntu", instance_id="i-1",
                                       instance_type="gpu_1x_a10", gpu="A10", gpu_count=1, usd_hour=usd_hour,
                                       launched_at=launched))


def test_spend_so_far_counts_from_launch() -> None:
    _record("demo", "lambda", 0.75, 2.0)
    rec = records.load("demo")
    assert rec is not None
    s = spend_so_far(rec.stack, rec.cloud, rec.host.instance_type, rec.host.usd_hour, rec.host.launched_at or rec.created_at,
                     budget_usd=1.6)
    assert s.usd == pytest.approx(1.50, abs=0.01) and s.budget_state == "warn"
    assert budget_state(2.0, 1.6) == "over" and budget_state(0.1, 1.6) == "ok" and budget_state(5, None) == "none"


def test_cost_json_catalog_when_nothing_is_reachable() -> None:
    _record("demo", "lambda", 0.75, 4.0)
    done = run_cli("cost", "--json", "--cloud", "aws", "-s", "demo", env=CLEAN_ENV)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["configured"]["type"] == "g5.xlarge" and body["configured"]["usd_day"] == pytest.approx(24.14)
    prices = [o["usd_hour"] for o in body["offers"]]
    assert prices == sorted(prices) and len({o["cloud"] for o in body["offers"]}) == 3
    assert all(not o["live"] and o["as_of"] for o in body["offers"])
    assert body["spend"][0]["stack"] == "demo" and body["spend"][0]["usd"] == pytest.approx(3.0, abs=0.01)


def test_cost_table_uses_live_prices_from_the_standins(billing: BillingCatalogStandIn) -> None:
    from gpuprov.testing.lambda_api import LambdaStandIn

    _record("demo", "lambda", 0.75, 1.0)
    with LambdaStandIn(api_key="k") as api:
        api.set_type("gpu_1x_a10", "1x A10 (24 GB PCIe)", "A10 (24 GB PCIe)", 86, 30, 200, 1400, 1, ["us-east-1"])
        env = {**CLEAN_ENV, "LAMBDA_API_URL": api.url, "LAMBDA_API_KEY": "k", "GPUPROV_GCP_BILLING_URL": billing.url,
               "GPUPROV_GCP_BILLING_API_KEY": billing.api_key, "COLUMNS": "200"}
        done = run_cli("cost", "--cloud", "lambda", "-s", "demo", env=env)
    assert done.returncode == 0, done.stderr
    a10 = next(line for line in done.stdout.splitlines() if "gpu_1x_a10" in line)
    assert "*" in a10 and "0.860" in a10 and "20.64" in a10 and "live" in a10  # $/hour, $/day, source
    n1 = next(line for line in done.stdout.splitlines() if "n1-standard-4" in line)
    assert "live" in n1
    g5 = next(line for line in done.stdout.splitlines() if "g5.xlarge" in line)
    assert "catalog, 2026-06" in g5  # no AWS credentials: the catalog, with its date
    assert "catalog prices for aws: no AWS credentials" in done.stdout
    assert "demo" in done.stdout and "$0.75" in done.stdout  # spent so far: 1 h at $0.75
