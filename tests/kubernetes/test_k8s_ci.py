"""``gpuprov ci`` on an existing cluster, end to end as a user runs it: Pulumi's mock runtime for the program,
the ``kubernetes`` client asking the stand-in Kubernetes API (gpuprov/testing/kube_api.py), not a cluster.

What the stand-in stands for: the cluster's answers (which Deployments are available in the run's
namespace, which gpuprov-labelled namespaces, PVCs and LoadBalancers it still lists). What is real: the CLI,
the run (lease, signals, exit codes, the one teardown and its verification), CMD as a process here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from gpuprov.infra.config import build_config
from gpuprov.testing.kube_api import deployment, ready_cluster, serve, wake_cluster, write_kubeconfig
from tests.kubernetes.pods import pod_ports

CONFIG = "cloud: kubernetes\napps: [vllm_cxr]\nkubernetes: {gpu: L4, namespace: shared-team}\n"
STACK = "k8s-ci-run"
NS = f"gpuprov-{STACK}"


@pytest.fixture
def cluster(tmp_path: Path):
    state = tmp_path / "cluster.json"
    with pod_ports() as pods, serve(state) as url:
        state.with_suffix(".pods").write_text(json.dumps(pods))
        yield state, write_kubeconfig(tmp_path / "kubeconfig", url)


def ready(state: Path, ready_after_s: float = 0.0, **extra) -> None:
    """A cluster that applied the run's workloads: Open WebUI available, vLLM scaled to zero by KEDA; their
    Services, and the pods' ports forwarded to the fixture's local servers."""
    vllm, webui = json.loads(state.with_suffix(".pods").read_text())
    applied = wake_cluster(NS, vllm, webui, replicas=0, ready_after_s=ready_after_s)
    for d in applied["deployments"]:
        d["status"] = {"replicas": 1, "availableReplicas": 1} if d["spec"]["replicas"] else {}
    state.write_text(json.dumps(applied | extra))


def ci(gpuprov_cli, tmp_path: Path, *args: str, env: dict[str, str]):
    """``gpuprov ci --config FILE ARGS`` (the config before ``--``: after it, it would be CMD's)."""
    (tmp_path / "ci.yaml").write_text(CONFIG)
    return gpuprov_cli("ci", "--config", str(tmp_path / "ci.yaml"), "--stack", STACK, *args, env=env)


def env(kubeconfig: Path) -> dict[str, str]:
    return {"GPUPROV_PULUMI": "mock", "KUBECONFIG": str(kubeconfig), "GPUPROV_VERIFY_TIMEOUT_S": "1"}


def test_ci_runs_cmd_in_a_namespace_of_its_own_and_removes_it(cluster, gpuprov_cli, tmp_path):
    state, kubeconfig = cluster
    ready(state)
    seen = tmp_path / "seen"
    cmd = f'echo "$GPUPROV_NAMESPACE $GPUPROV_STACK ${{KUBECONFIG:-none}}" > {seen}; exit 3'
    result = ci(gpuprov_cli, tmp_path, "--on", "local", "--json", "--", "sh", "-c", cmd, env=env(kubeconfig))
    assert result.returncode == 3, result.stdout + result.stderr  # CMD's own exit code, after a verified teardown
    # the run's own namespace, not the config's shared one; no kubeconfig unless passed by name
    assert seen.read_text().split() == [NS, STACK, "none"], result.stderr
    assert "not kubernetes.namespace shared-team" in result.stderr
    assert "healthy in namespace" in result.stderr and "vllm at 0 replicas (scaled to zero)" in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["outcome"], summary["teardown"], summary["command_exit_code"]) == ("command-failed", "verified", 3)
    assert f"verified: the kubernetes API lists nothing left of stack '{STACK}'" in result.stderr
    assert json.loads(gpuprov_cli("status", "--json", env=env(kubeconfig)).stdout)["stacks"] == []


def test_cmd_reaches_the_stacks_services_by_url_with_vllm_woken_for_it_and_handed_back(cluster, gpuprov_cli,
                                                                                   tmp_path):
    state, kubeconfig = cluster
    ready(state, ready_after_s=2)  # the GPU pod takes a while to become Ready
    seen = tmp_path / "seen.json"
    cmd = ("import json, os, socket, sys, urllib.request as u\n"
           "host, port = os.environ['GPUPROV_URL_VLLM'].removeprefix('http://').split(':')\n"
           "with socket.create_connection((host, int(port)), timeout=10) as s:\n"
           "    s.sendall(b'ping'); vllm = s.recv(100).decode()\n"
           "page = u.urlopen(os.environ['GPUPROV_URL_OPEN_WEBUI'] + '/health', timeout=10).read().decode()\n"
           "scaled = json.load(open(sys.argv[2]))['scaledobjects'][0]['metadata']['annotations']\n"
           "json.dump({'vllm': vllm, 'open_webui': page, 'paused': sorted(scaled)}, open(sys.argv[1], 'w'))\n")
    result = ci(gpuprov_cli, tmp_path, "--on", "local", "--", sys.executable, "-c", cmd, str(seen), str(state),
                env=env(kubeconfig))
    assert result.returncode == 0, result.stdout + result.stderr
    got = json.loads(seen.read_text())
    assert (got["vllm"], got["open_webui"]) == ("echo:ping", "open-webui /health")  # each Service's pod, by its URL
    assert got["paused"]  # while CMD ran, KEDA was paused at 1 replica: vLLM could not scale away under it
    assert "vllm: at 0 replicas (KEDA scaled it down while idle)" in result.stderr
    assert "KEDA's pause removed" in result.stderr and "teardown verified" in result.stderr
    assert json.loads(state.read_text())["scaledobjects"][0]["metadata"]["annotations"] == {}


def test_ci_on_a_cluster_refuses_on_host_before_anything_is_made(cluster, gpuprov_cli, tmp_path):
    state, kubeconfig = cluster
    ready(state)
    result = ci(gpuprov_cli, tmp_path, "--", "true", env=env(kubeconfig))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no host to run CMD on: use --on local" in result.stderr and "Traceback" not in result.stderr
    assert "phase launch" not in result.stderr  # nothing was brought up


def test_ci_fails_health_when_a_workload_never_becomes_available(cluster, gpuprov_cli, tmp_path):
    state, kubeconfig = cluster
    state.write_text(json.dumps(ready_cluster() | {"deployments": [deployment(NS, "open-webui", 1, 0)]}))
    result = ci(gpuprov_cli, tmp_path, "--on", "local", "--health-timeout", "2", "--", "true", env=env(kubeconfig))
    assert result.returncode == 90, result.stdout + result.stderr
    assert "vllm (not created yet), open-webui 0/1 available" in result.stderr
    assert "teardown verified" in result.stderr


def test_ci_exits_92_while_the_cluster_still_lists_the_runs_namespace(cluster, gpuprov_cli, tmp_path):
    state, kubeconfig = cluster
    left = {"metadata": {"name": NS, "labels": {"gpuprov-managed": "true", "gpuprov-stack": STACK}},
            "status": {"phase": "Active"}}
    ready(state, namespaces=[left])
    result = ci(gpuprov_cli, tmp_path, "--on", "local", "--", "true", env=env(kubeconfig))
    assert result.returncode == 92, result.stdout + result.stderr
    assert f"kubernetes namespace {NS}" in result.stderr and "may still bill" in result.stderr


def test_sigterm_during_cmd_stops_it_and_still_tears_down(cluster, tmp_path):
    state, kubeconfig = cluster
    ready(state)
    started, pidfile = tmp_path / "started", tmp_path / "cmd.pid"
    (tmp_path / "stack.yaml").write_text(CONFIG)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "KUBECONFIG"))}
    base |= {"HOME": str(tmp_path), "GPUPROV_HOME": str(tmp_path / "gpuprov-home"), **env(kubeconfig)}
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov", "ci", "--config", str(tmp_path / "stack.yaml"),
                             "--stack", STACK, "--on", "local", "--", "sh", "-c",
                             f"echo $$ > {pidfile}; touch {started}; exec sleep 120"],
                            env=base, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert started.exists(), proc.communicate()[1] if proc.poll() is not None else "CMD never started"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "SIGTERM during command" in err and "teardown verified" in err
    cmd_pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(cmd_pid, 0)  # CMD was stopped before the teardown


def test_the_runs_namespace_carries_owner_origin_ci_and_the_runs_expiry(monkeypatch):
    from gpuprov.infra.clouds.kubernetes.workloads import namespace_manifest
    from gpuprov.infra.host import utcnow
    from gpuprov.infra.owner import owner_label, owner_reference
    from gpuprov.infra.tags import origin_as, stack_tags

    monkeypatch.setenv("GPUPROV_OWNER", "kubeops@test")
    cfg = build_config({"cloud": "kubernetes", "stack": STACK, "apps": ["vllm_cxr"], "max_lifetime_hours": 1.5})
    now = utcnow()
    with origin_as("ci"):
        labels = namespace_manifest(cfg, stack_tags(cfg, now))["metadata"]["labels"]
    assert labels["gpuprov-owner"] == owner_label(owner_reference()) and labels["gpuprov-origin"] == "ci"
    assert int(labels["gpuprov-expires-at"]) == int((now + timedelta(hours=1.5)).timestamp())
    assert labels["gpuprov-stack"] == STACK
