"""``gpuprov tunnel`` and ``gpuprov wake`` on a cluster stack: the wake rule and the pod choice as data, then the
CLI as a subprocess through the stand-in Kubernetes API's port-forward websocket (gpuprov/testing/kube_api.py,
v4.channel.k8s.io as the API server speaks it) to real local TCP servers standing in for the pods' ports.
Stand-in, not a cluster: no kubelet, no KEDA, no GPU node; what crosses is the real client and real bytes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import (
    V1Container,
    V1ContainerPort,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodSpec,
    V1PodStatus,
    V1Service,
    V1ServicePort,
    V1ServiceSpec,
)

from gpuprov.infra.clouds.kubernetes.portforward import is_ready, pick_pod, target_port
from gpuprov.infra.clouds.kubernetes.wake import (
    AWAKE,
    PAUSE_AT_1,
    PAUSED_AT_0,
    PAUSED_REPLICAS,
    SCALE_TO_1,
    WAIT,
    WOKEN_BY,
    WakeState,
    decide,
)
from gpuprov.testing.kube_api import serve, wake_cluster, write_kubeconfig
from tests.kubernetes.pods import free_port, pod_ports

CLOUD_ENV_PREFIXES = ("AWS_", "GOOGLE_", "CLOUDSDK_", "LAMBDA_", "GPUPROV_AWS", "GPUPROV_GCP", "KUBECONFIG")  # as conftest

STACK = "kubetunnel-t"
NS = f"gpuprov-{STACK}"


@pytest.mark.parametrize(("state", "action"), [
    (WakeState(replicas=1, ready_pods=1, scaled_object=True), AWAKE),
    (WakeState(replicas=0, ready_pods=1, scaled_object=True), AWAKE),  # a pod still serving while scaling down
    (WakeState(replicas=1, ready_pods=0, scaled_object=True), WAIT),  # coming: a node joining, the model loading
    (WakeState(replicas=0, ready_pods=0, scaled_object=True), PAUSE_AT_1),  # KEDA took it to zero
    (WakeState(replicas=0, ready_pods=0, scaled_object=False), SCALE_TO_1),  # no KEDA: a plain scale holds
    (WakeState(replicas=0, ready_pods=0, scaled_object=True, paused="0"), PAUSED_AT_0),  # someone's own pause
    (WakeState(replicas=0, ready_pods=0, scaled_object=True, paused="1", ours=True), PAUSE_AT_1),  # ours, left
])
def test_what_waking_vllm_does(state, action):
    assert decide(state) == action


def pod(name, phase="Running", ready="True", deleting=False):
    return V1Pod(metadata=V1ObjectMeta(name=name, deletion_timestamp="2026-01-01T00:00:00Z" if deleting else None),
                 status=V1PodStatus(phase=phase, conditions=[V1PodCondition(type="Ready", status=ready)]))


def test_the_tunnel_picks_a_ready_pod_only():
    assert not is_ready(pod("a", phase="Pending", ready="False"))
    assert not is_ready(pod("a", ready="False"))
    assert not is_ready(pod("a", deleting=True))
    assert pick_pod([pod("b"), pod("a", ready="False"), pod("c")]).metadata.name == "b"
    assert pick_pod([pod("a", deleting=True)]) is None


def test_the_pod_port_is_the_services_target_port():
    def svc(target):
        return V1Service(spec=V1ServiceSpec(ports=[V1ServicePort(port=3000, target_port=target)]))
    p = V1Pod(spec=V1PodSpec(containers=[V1Container(name="c", ports=[V1ContainerPort(container_port=8080,
                                                                                       name="http")])]))
    assert target_port(svc(8080), p) == 8080  # Open WebUI: 3000 on the Service, 8080 in the pod
    assert target_port(svc("http"), p) == 8080  # a named port, looked up in the pod
    assert target_port(svc(None), p) == 3000  # no targetPort: the Service's port
    with pytest.raises(ValueError, match="no container port named grpc"):
        target_port(svc("grpc"), p)


# --- through the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def stack(tmp_path: Path, gpuprov_cli) -> Iterator[tuple[Path, dict[str, str], int, int]]:
    """A kubernetes stack made by `up` under Pulumi's mocks, its cluster the stand-in with vLLM's and Open WebUI's
    pods forwarded to local servers."""
    state = tmp_path / "cluster.json"
    with pod_ports() as (echo, page):
        state.write_text(json.dumps(wake_cluster(NS, echo, page, replicas=1)))
        with serve(state) as url:
            env = {"GPUPROV_PULUMI": "mock", "KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", url)),
                   "GPUPROV_VERIFY_TIMEOUT_S": "1"}
            up = gpuprov_cli("up", "--stack", STACK,
                             config="cloud: kubernetes\napps: [vllm_cxr]\nkubernetes: {gpu: L4}\n", env=env)
            assert up.returncode == 0, up.stderr
            assert f"Reach them with `gpuprov tunnel --stack {STACK}`" in up.stdout
            yield state, env, echo, page


def popen(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(CLOUD_ENV_PREFIXES)}
    base |= {"HOME": str(tmp_path), "GPUPROV_HOME": str(tmp_path / "gpuprov-home"), **env}
    # As from a terminal: Ctrl-C not ignored (a shell's background job starts its children with SIGINT ignored).
    return subprocess.Popen([sys.executable, "-m", "gpuprov", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=base, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509


def urls_of(proc: subprocess.Popen[str], count: int) -> dict[str, str]:
    urls: dict[str, str] = {}
    assert proc.stdout is not None
    while len(urls) < count:
        line = proc.stdout.readline()
        assert line, f"the tunnel ended early: {proc.wait(5)} {proc.stderr.read() if proc.stderr else ''}"
        name, url = line.split()
        urls[name] = url
    return urls


def stop(proc: subprocess.Popen[str], signum: int = signal.SIGINT) -> tuple[int, str]:
    proc.send_signal(signum)  # Ctrl-C, or a kill
    _out, err = proc.communicate(timeout=30)
    return proc.returncode, err


def round_trip(url: str, payload: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(payload)
        want, got = len(payload) + 5, b""
        while len(got) < want:
            chunk = s.recv(65536)
            assert chunk, got[:100]
            got += chunk  # the echo may answer in several chunks, each prefixed
        return got


def test_tunnel_forwards_bytes_to_the_pods_through_the_api_port_forward(stack, tmp_path):
    state, env, _echo, _page = stack
    vllm_port, webui_port = free_port(), free_port()
    proc = popen(tmp_path, env, "tunnel", "--stack", STACK, "--port", f"vllm={vllm_port}",
                 "--port", f"open_webui={webui_port}")
    try:
        urls = urls_of(proc, 2)
        assert urls == {"vllm": f"http://127.0.0.1:{vllm_port}", "open_webui": f"http://127.0.0.1:{webui_port}"}
        assert round_trip(urls["vllm"], b"hello") == b"echo:hello"
        big = os.urandom(70000)  # over 65535: the websocket's 8-byte length, in both directions
        answer = round_trip(urls["vllm"], big)
        assert answer.startswith(b"echo:") and answer.replace(b"echo:", b"") == big.replace(b"echo:", b"")
        with urllib.request.urlopen(f"{urls['open_webui']}/health", timeout=10) as r:  # noqa: S310
            assert r.read() == b"open-webui /health"  # to port 8080, the Service's targetPort
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "forwarding through the Kubernetes API's port-forward" in err and "tunnel closed" in err
    assert "Traceback" not in err and "pausing KEDA" not in err  # vLLM was up: nothing woken
    assert (json.loads(state.read_text())["scaledobjects"][0]["metadata"]["annotations"]) == {}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tunnel_wakes_vllm_from_zero_and_hands_it_back_to_keda(stack, tmp_path, signum):
    state, env, _echo, _page = stack
    cluster = json.loads(state.read_text())
    cluster["deployments"][0]["spec"]["replicas"] = 0  # KEDA scaled it to zero after idle_minutes
    cluster["deployments"][0]["standin"]["ready_after_s"] = 3  # the pod takes a while to become Ready
    state.write_text(json.dumps(cluster))
    port = free_port()
    started = time.monotonic()
    proc = popen(tmp_path, env, "tunnel", "--stack", STACK, "--port", f"vllm={port}")
    try:
        urls = urls_of(proc, 2)
        assert time.monotonic() - started >= 3  # the URLs come once a pod is ready, not before
        now = json.loads(state.read_text())
        assert now["scaledobjects"][0]["metadata"]["annotations"][PAUSED_REPLICAS] == "1"
        assert now["scaledobjects"][0]["metadata"]["annotations"][WOKEN_BY].startswith("gpuprov tunnel")
        assert now["deployments"][0]["spec"]["replicas"] == 1
        assert round_trip(urls["vllm"], b"woken") == b"echo:woken"
    finally:
        code, err = stop(proc, signum)
    assert code == 0, err
    assert "vllm: at 0 replicas (KEDA scaled it down while idle); pausing KEDA at 1 replica" in err
    assert "vllm: waiting for a ready pod" in err and "vllm: a pod is ready after" in err
    assert "KEDA's pause removed" in err
    after = json.loads(state.read_text())
    assert after["scaledobjects"][0]["metadata"]["annotations"] == {}  # KEDA owns the count again
    assert after["deployments"][0]["spec"]["replicas"] == 0  # and (no activity) took it back to zero


def test_wake_holds_then_release_hands_back_and_a_timeout_says_so(stack, gpuprov_cli):
    state, env, _echo, _page = stack
    cluster = json.loads(state.read_text())
    cluster["deployments"][0]["spec"]["replicas"] = 0
    state.write_text(json.dumps(cluster))
    woke = gpuprov_cli("wake", "--stack", STACK, env=env)
    assert woke.returncode == 0, woke.stderr
    assert f"vLLM has a ready pod; held at 1 replica until `gpuprov wake --stack {STACK} --release`" in woke.stdout
    assert json.loads(state.read_text())["deployments"][0]["spec"]["replicas"] == 1
    released = gpuprov_cli("wake", "--stack", STACK, "--release", env=env)
    assert released.returncode == 0 and "vLLM handed back to KEDA" in released.stdout, released.stderr
    assert json.loads(state.read_text())["deployments"][0]["spec"]["replicas"] == 0
    again = gpuprov_cli("wake", "--stack", STACK, "--release", env=env)  # nothing of gpuprov's left to remove
    assert again.returncode == 0 and "no pause of gpuprov's to remove" in again.stdout, again.stderr

    cluster = json.loads(state.read_text())
    cluster["deployments"][0]["standin"]["ready_after_s"] = 600  # a GPU node that never joins
    state.write_text(json.dumps(cluster))
    late = gpuprov_cli("wake", "--stack", STACK, "--timeout", "2", env=env)
    assert late.returncode == 1, late.stdout + late.stderr
    errors = [line for line in late.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "vLLM had no ready pod after 2s" in errors[0] and "Traceback" not in late.stderr
    after = json.loads(state.read_text())
    assert after["scaledobjects"][0]["metadata"]["annotations"] == {}  # nothing left holding a GPU that bills
    assert after["deployments"][0]["spec"]["replicas"] == 0


def test_a_pod_port_that_refuses_is_said_and_the_tunnel_stays(stack, tmp_path):
    state, env, _echo, _page = stack
    cluster = json.loads(state.read_text())
    cluster["deployments"][0]["standin"]["forward"] = {"8000": free_port()}  # nothing listens in the "pod"
    state.write_text(json.dumps(cluster))
    port = free_port()
    proc = popen(tmp_path, env, "tunnel", "--stack", STACK, "--port", f"vllm={port}")
    try:
        urls = urls_of(proc, 2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"hello")
            assert s.recv(100) == b""  # closed, nothing made up
        with urllib.request.urlopen(f"{urls['open_webui']}/", timeout=10) as r:  # noqa: S310 (the other still works)
            assert r.read() == b"open-webui /"
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "forward to vllm failed: error forwarding port 8000 to pod vllm-standin-0" in err


def test_no_service_in_the_namespace_is_one_line(stack, gpuprov_cli):
    state, env, _echo, _page = stack
    cluster = json.loads(state.read_text())
    cluster["services"] = []
    state.write_text(json.dumps(cluster))
    result = gpuprov_cli("tunnel", "--stack", STACK, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: kubernetes: no Service of the stack in namespace {NS}; "
                      f"`gpuprov up --stack {STACK}` applies the workloads"], result.stderr
    assert result.stdout == ""


def test_ctrl_c_while_waking_leaves_no_pause_holding_a_gpu(stack, tmp_path):
    state, env, _echo, _page = stack
    cluster = json.loads(state.read_text())
    cluster["deployments"][0]["spec"]["replicas"] = 0
    cluster["deployments"][0]["standin"]["ready_after_s"] = 600  # the GPU node is slow to join
    state.write_text(json.dumps(cluster))
    proc = popen(tmp_path, env, "tunnel", "--stack", STACK)
    assert proc.stderr is not None
    seen = ""
    while "vllm: waiting for a ready pod" not in seen:
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    assert json.loads(state.read_text())["scaledobjects"][0]["metadata"]["annotations"][PAUSED_REPLICAS] == "1"
    code, err = stop(proc)
    assert code == 130, seen + err  # interrupted, as every command says it
    assert "KEDA's pause removed" in err and "Traceback" not in err
    after = json.loads(state.read_text())
    assert after["scaledobjects"][0]["metadata"]["annotations"] == {}
    assert after["deployments"][0]["spec"]["replicas"] == 0


def test_an_eks_stack_without_a_kubeconfig_says_how_to_get_one(gpuprov_cli, tmp_path):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {"GPUPROV_PULUMI": "mock", "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "GPUPROV_VERIFY_TIMEOUT_S": "1",
               "KUBECONFIG": str(tmp_path / "none")}
        up = gpuprov_cli("up", "--stack", "kubetunnel-eks", config="cloud: eks\napps: [vllm_cxr]\n"
                         "allowed_cidrs: [203.0.113.7/32]\n", env=env)
        assert up.returncode == 0, up.stderr
        result = gpuprov_cli("tunnel", "--stack", "kubetunnel-eks", env=env)
    finally:
        server.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"no kubeconfig at {tmp_path / 'none'} for the eks cluster of stack 'kubetunnel-eks'" in errors[0]
    assert "aws eks update-kubeconfig --name gpuprov-kubetunnel-eks --region us-east-1" in errors[0]
