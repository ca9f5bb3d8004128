"""`gpuprov build` pushes to a real registry on this machine (the CNCF distribution registry, Debian's
docker-registry) from a Docker engine of its own, and deploy pulls from it instead of building; without a
matching image, deploy says so and builds on the host. Phases and the refusal of a public registry too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gpuprov.infra.image_registry import anonymous_pull, login_for, registry_ref
from tests.conftest import need, need_sandbox, run_cli


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(address: str, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``docker-registry serve`` on ``address``:<free port>, storage under ``root``; returns (process, host:port)."""
    binary = shutil.which("docker-registry")
    need(binary is not None, "docker-registry is not installed (apt-get install docker-registry; make setup)")
    assert binary is not None
    port = _free_port()
    (root / "data").mkdir(parents=True, exist_ok=True)
    conf = root / "reg.yml"
    conf.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                    f"  delete:\n    enabled: true\nhttp:\n  addr: {address}:{port}\n")
    proc = subprocess.Popen([binary, "serve", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            if requests.get(f"http://{address}:{port}/v2/", timeout=1).json() == {}:
                return proc, f"{address}:{port}"
        except (requests.RequestException, ValueError):
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the registry did not answer GET /v2/ within 10 s")


@pytest.fixture
def builder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Docker engine of the test's own (the operator's machine in the story): DOCKER_HOST to reach it."""
    need_sandbox()
    base = Path(f"/tmp/ready-b-{uuid.uuid4().hex[:6]}")
    base.mkdir()
    sock = base / "docker.sock"
    log = (base / "dockerd.log").open("w")
    proc = subprocess.Popen(["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
                             f"--data-root={base / 'data'}", f"--exec-root={base / 'exec'}", f"--host=unix://{sock}",
                             f"--pidfile={base / 'docker.pid'}", "--insecure-registry=10.213.0.0/16"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"DOCKER_HOST": f"unix://{sock}"}
    try:
        for _ in range(240):
            if subprocess.run(["docker", "info"], capture_output=True, env={**os.environ, **env}).returncode == 0:
                break
            time.sleep(0.25)
        else:
            raise AssertionError(f"the builder's dockerd did not start: {(base / 'dockerd.log').read_text()[-500:]}")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _sandbox_socket(stack: str) -> Path:
    from gpuprov.infra.clouds.local.sandbox import LocalSandbox

    return LocalSandbox(stack).docker_socket  # the state root is the test's (GPUPROV_HOME)


def _sandbox_images(stack: str, home: Path) -> list[str]:
    sock = _sandbox_socket(stack)
    proc = subprocess.run(["docker", f"--host=unix://{sock}", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
                          capture_output=True, text=True, check=True)
    return proc.stdout.split()


def test_build_pushes_and_deploy_pulls_instead_of_building(builder: dict[str, str], gpuprov_home: Path,
                                                           tmp_path: Path):
    stack = f"ready-{uuid.uuid4().hex[:4]}"
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"stack: {stack}\ncloud: local\napps: [vllm_cxr]\n")
    up = run_cli("up", "--config", str(plain), "--no-deploy")
    assert up.returncode == 0, up.stderr
    registry_proc = None
    try:
        status = json.loads(run_cli("status", "--json", "--stack", stack).stdout)["stacks"][0]
        assert "launch" in status["last_up_phases_s"]  # status keeps the last up's phases
        assert "last up took launch" in run_cli("status", "--stack", stack).stdout
        inner = status["address"]
        outer = inner.rsplit(".", 1)[0] + "." + str(int(inner.rsplit(".", 1)[1]) - 1)  # the veth's other end
        registry_proc, registry = start_registry(outer, tmp_path / "registry")
        cfg = tmp_path / "registry.yaml"
        cfg.write_text(plain.read_text() + f"image_registry: {registry}\n")

        # Nothing pushed yet: deploy says so, and what it costs, and builds on the host.
        first = run_cli("deploy", "--config", str(cfg), "--json", "--timeout", "120")
        assert first.returncode == 0, first.stderr
        assert "no image" in first.stderr and "building vllm/vllm-openai" in first.stderr
        assert "gpuprov build" in first.stderr
        phases = json.loads(first.stdout)["phases_s"]
        assert {"boot", "ssh_ready", "bootstrap", "image_pull", "image_build", "services_started", "model_download",
                "service_healthy"} <= set(phases)

        built = run_cli("build", "--config", str(cfg), "--json", env=builder)
        assert built.returncode == 0, built.stderr
        pushed = {i["pushed"] for i in json.loads(built.stdout)["images"]}
        assert pushed and all(p.startswith(f"{registry}/gpuprov-standin/") for p in pushed)
        tags = requests.get(f"http://{registry}/v2/gpuprov-standin/vllm-openai/tags/list", timeout=5).json()
        assert tags["tags"], tags  # really in the registry

        # The host loses its images (a new host): deploy pulls them from the registry instead of building.
        sock = _sandbox_socket(stack)
        refs = [r for r in _sandbox_images(stack, gpuprov_home) if not r.startswith(registry)]
        containers = subprocess.run(["docker", f"--host=unix://{sock}", "ps", "-aq"], capture_output=True,
                                    text=True, check=True).stdout.split()
        subprocess.run(["docker", f"--host=unix://{sock}", "rm", "-f", *containers], capture_output=True, check=True)
        subprocess.run(["docker", f"--host=unix://{sock}", "rmi", "-f", *refs], capture_output=True, check=True)
        second = run_cli("deploy", "--config", str(cfg), "--json", "--timeout", "120")
        assert second.returncode == 0, second.stderr
        assert "pulled vllm/vllm-openai" in second.stderr and "building" not in second.stderr
        assert "image_build" not in json.loads(second.stdout)["phases_s"]
        assert pushed <= set(_sandbox_images(stack, gpuprov_home))  # the host's docker image list holds the pulls
    finally:
        down = run_cli("down", "--config", str(plain))
        if registry_proc is not None:
            registry_proc.terminate()
            registry_proc.wait(timeout=30)
    assert down.returncode == 0, down.stderr


def test_an_image_holding_sam3_is_refused_by_a_registry_anyone_can_pull(gpuprov_home: Path, tmp_path: Path):
    registry_proc, registry = start_registry("127.0.0.1", tmp_path / "registry")
    try:
        assert anonymous_pull(registry, "ohif-ai-monai-label")  # distribution without auth: anyone pulls
        sam3 = tmp_path / "sam3.pt"
        sam3.write_bytes(b"gated weights")
        cfg = tmp_path / "c.yaml"
        cfg.write_text("stack: ready-sam3\ncloud: lambda\napps: [monai_label]\ninstance_type: gpu_1x_a10\n")
        result = run_cli("build", "--config", str(cfg), "--registry", registry, "--build-input", f"sam3.pt={sam3}")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "lets anyone pull" in lines[0] and "sam3.pt" in lines[0], result.stderr
        assert "Traceback" not in result.stderr
        assert requests.get(f"http://{registry}/v2/_catalog", timeout=5).json()["repositories"] == []  # nothing pushed
    finally:
        registry_proc.terminate()
        registry_proc.wait(timeout=30)


def test_registry_refs_follow_the_commit_and_the_added_files():
    commit = "179fe0ddc4e632d872c3d18bf05845cad302b0ee"
    plain = registry_ref("r.example:5000/team", "gpuprov/ohif-ai-monai-label:" + commit, commit)
    assert plain == "r.example:5000/team/ohif-ai-monai-label:179fe0ddc4e6"
    with_a = registry_ref("r.example", "gpuprov/ohif-ai-monai-label:x", commit, {"sam3.pt": "a" * 64})
    with_b = registry_ref("r.example", "gpuprov/ohif-ai-monai-label:x", commit, {"sam3.pt": "b" * 64})
    assert with_a.startswith("r.example/ohif-ai-monai-label:179fe0ddc4e6-in-") and with_a != with_b


def test_ecr_login_comes_from_get_authorization_token(monkeypatch: pytest.MonkeyPatch):
    """The ECR seam against moto: the login is what the token decodes to, and never in a repr."""
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        login = login_for("123456789012.dkr.ecr.us-east-1.amazonaws.com", env={})
    assert login is not None and login.username == "AWS" and login.password
    assert login.password not in repr(login)
    auth = login.docker_config()["auths"]
    assert list(auth) == ["123456789012.dkr.ecr.us-east-1.amazonaws.com"]  # type: ignore[call-overload]
    env_login = login_for("ghcr.io/me", env={"GPUPROV_REGISTRY_USER": "me", "GPUPROV_REGISTRY_PASSWORD": "pw"})
    assert env_login is not None and (env_login.host, env_login.username) == ("ghcr.io", "me")
    assert login_for("ghcr.io/me", env={}) is None  # Docker's own config and credential helpers


def test_build_without_docker_here_says_so(gpuprov_home: Path, tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stack: ready-nodocker\ncloud: local\napps: [vllm_cxr]\n")
    result = run_cli("build", "--config", str(cfg), "--registry", "127.0.0.1:1", env={"PATH": str(tmp_path)})
    assert result.returncode == 3, result.stderr
    assert "docker CLI is not installed" in result.stderr and "Traceback" not in result.stderr
