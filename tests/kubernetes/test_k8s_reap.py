"""``gpuprov reap`` on a cluster: gpuprov's expired namespaces go (with their PVCs and LoadBalancers), nobody's
live one does; as a user runs it, the ``kubernetes`` client asking the stand-in Kubernetes API
(gpuprov/testing/kube_api.py), not a cluster. The stand-in deletes a namespace as the API server does, with
the namespace Terminating for a while first, so the reaper's wait and its re-listing are what is tested."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpuprov.infra.owner import owner_label
from gpuprov.testing.kube_api import ready_cluster, serve, write_kubeconfig

ME, COLLEAGUE = "kubeops@reaper-test", "colleague@elsewhere"
PAST, FUTURE = str(int(time.time()) - 3600), str(int(time.time()) + 3600)


def ns(stack: str, owner: str, expires: str, **extra) -> dict:
    labels = {"gpuprov-managed": "true", "gpuprov-stack": stack, "gpuprov-owner": owner_label(owner),
              "gpuprov-origin": "ci", "gpuprov-expires-at": expires, "gpuprov-created-at": str(int(time.time()) - 7200)}
    return {"metadata": {"name": f"gpuprov-{stack}", "labels": labels}, "status": {"phase": "Active"}, **extra}


def in_ns(stack: str, name: str, **spec) -> dict:
    return {"metadata": {"name": name, "namespace": f"gpuprov-{stack}",
                         "labels": {"gpuprov-managed": "true", "gpuprov-stack": stack}}, "spec": spec}


@pytest.fixture
def cluster(tmp_path: Path):
    state = tmp_path / "cluster.json"
    state.write_text(json.dumps(ready_cluster() | {
        # a colleague's run that outlived its expiry (Terminating for two list requests once deleted),
        # a colleague's live run, and one of mine that has not expired
        "namespaces": [ns("theirs-old", COLLEAGUE, PAST, finalize_after=2), ns("theirs-live", COLLEAGUE, FUTURE),
                       ns("mine-live", ME, FUTURE)],
        "pvcs": [in_ns("theirs-old", "model-cache", accessModes=["ReadWriteOnce"],
                       resources={"requests": {"storage": "50Gi"}})],
        "services": [in_ns("theirs-old", "open-webui", type="LoadBalancer", ports=[{"port": 3000}]),
                     in_ns("theirs-live", "open-webui", type="LoadBalancer", ports=[{"port": 3000}])],
    }))
    with serve(state) as url:
        yield state, write_kubeconfig(tmp_path / "kubeconfig", url)


def env(kubeconfig: Path) -> dict[str, str]:
    return {"KUBECONFIG": str(kubeconfig), "GPUPROV_OWNER": ME}


def test_reap_dry_run_lists_the_expired_namespace_and_deletes_nothing(cluster, gpuprov_cli):
    state, kubeconfig = cluster
    result = gpuprov_cli("reap", "--cloud", "kubernetes", "--dry-run", "--json", env=env(kubeconfig))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [(f["id"], f["reason"]) for f in report["found"]] == [("gpuprov-theirs-old", "expired")]
    assert "deleted" not in json.loads(state.read_text())


def test_reap_removes_the_expired_namespace_with_what_bills_in_it_and_keeps_live_ones(cluster, gpuprov_cli):
    state, kubeconfig = cluster
    result = gpuprov_cli("reap", "--cloud", "kubernetes", env=env(kubeconfig))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "removed kubernetes namespace gpuprov-theirs-old" in result.stdout and "[expired]" in result.stdout
    after = json.loads(state.read_text())
    assert after["deleted"] == ["gpuprov-theirs-old"]  # the only DELETE the API got
    assert sorted(n["metadata"]["name"] for n in after["namespaces"]) == ["gpuprov-mine-live", "gpuprov-theirs-live"]
    assert after["pvcs"] == []  # the expired run's volume claim went with its namespace
    assert [s["metadata"]["namespace"] for s in after["services"]] == ["gpuprov-theirs-live"]


def test_reap_leaves_a_cluster_alone_unless_asked_even_with_a_kubeconfig_here(cluster, gpuprov_cli):
    """A kubeconfig may name clusters that are not gpuprov's, or that no longer answer: the default reap
    does not ask them; `--cloud kubernetes` does."""
    state, kubeconfig = cluster
    result = gpuprov_cli("reap", "--dry-run", "--json", env=env(kubeconfig))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kubernetes" not in json.loads(result.stdout)["clouds"]
    asked = gpuprov_cli("reap", "--dry-run", "--json", "--cloud", "kubernetes", env=env(kubeconfig))
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert [f["id"] for f in json.loads(asked.stdout)["found"]] == ["gpuprov-theirs-old"]
    assert json.loads(state.read_text()).get("deleted", []) == []  # a dry run deletes nothing


def test_reap_reports_a_namespace_stuck_terminating_as_remaining(cluster, monkeypatch):
    from gpuprov.infra.reaper import reap

    state, kubeconfig = cluster
    s = json.loads(state.read_text())
    s["namespaces"][0]["finalize_after"] = 10_000  # stuck Terminating (a finalizer that never clears)
    state.write_text(json.dumps(s))
    for key, value in env(kubeconfig).items():
        monkeypatch.setenv(key, value)
    report = reap(["kubernetes"], timeout_s=3)
    assert not report.ok and report.removed == []  # nothing is marked gone on the strength of a call
    assert [(r.id, r.state) for r in report.remaining] == [("gpuprov-theirs-old", "terminating")]
