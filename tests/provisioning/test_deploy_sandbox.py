"""Deploy both built-in apps on the real local sandbox host (real sshd, Docker engine and Compose,
stand-in images) and check what a user would notice, through the tunnel only."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import threading
import time

import pytest
import requests

from gpuprov.apps import registry
from gpuprov.infra.config import load_config
from gpuprov.provisioning import hostpaths
from gpuprov.provisioning.deploy import deploy
from gpuprov.provisioning.errors import HostKeyChanged
from gpuprov.provisioning.health import check_all, wait_healthy, wait_until_healthy
from gpuprov.provisioning.hostpaths import ROOT
from gpuprov.provisioning.secrets import secrets_of
from gpuprov.provisioning.smoke import smoke
from gpuprov.provisioning.ssh import known_hosts_path
from gpuprov.provisioning.tunnel import Tunnel
from tests.conftest import run_cli
from tests.provisioning.conftest import on_host

pytestmark = pytest.mark.sandbox
HOST_ROOT = hostpaths.on_host(ROOT)  # /opt/gpuprov as the host resolves it (the sandbox: under its own folder)



@pytest.fixture
def deployed(on_sandbox):
    cfg, host = on_sandbox
    first = deploy(cfg, host)
    return cfg, host, first


def test_deploy_serves_both_stacks_healthy_through_the_tunnel_and_a_redeploy_is_a_no_op(deployed):
    cfg, host, first = deployed
    with Tunnel(cfg, host) as tunnel:
        assert set(tunnel.urls) == {"vllm", "open_webui", "monai_label"}
        wait_until_healthy(cfg, tunnel.urls, 60)
        assert check_all(cfg, tunnel.urls) == {"vllm": None, "open_webui": None, "monai_label": None}
        answer = smoke(cfg, tunnel.urls)
        assert answer["vllm"]["model"] == cfg.served_model_name
        assert answer["monai_label"]["label_name"] == "segmentation"
        assert sorted(answer["monai_label"]["mask_shape"]) == [8, 16, 16]  # the generated series' shape
        assert answer["vllm"]["total_tokens"] > 1000  # the chest X-ray went with the question
        # vLLM's key is enforced, as --api-key would
        assert requests.get(f"{tunnel.urls['vllm']}/v1/models", timeout=10).status_code == 401
    again = deploy(cfg, host)
    assert again.changed == []
    assert again.ssh_round_trips <= 3
    assert first.ssh_round_trips <= 3


def test_services_are_not_reachable_from_outside_the_host(deployed):
    cfg, host, _ = deployed
    for port in registry().ports(cfg.apps).values():
        with pytest.raises(OSError):
            socket.create_connection((host.address, port), timeout=2).close()


def test_secrets_are_root_only_files_and_never_on_a_command_line(deployed):
    cfg, host, _ = deployed
    root = HOST_ROOT
    modes = on_host(cfg, host, f"stat -c '%a %n' {root}/vllm_cxr/secrets.env {root}/vllm_cxr/webui.env")
    assert [line.split()[0] for line in modes.splitlines()] == ["600", "600"]
    key = secrets_of(cfg, registry().app("vllm_cxr"))["vllm_api_key"]
    processes = on_host(cfg, host, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
    assert "/standin/http.sh" in processes  # we do see the containers' command lines ...
    assert key not in processes  # ... and the key is not on any of them


def test_changing_one_image_tag_redeploys_only_that_service(deployed):
    cfg, host, _ = deployed
    ids = lambda: dict(line.split() for line in on_host(  # noqa: E731
        cfg, host, "docker ps --format '{{.Names}} {{.ID}}'").splitlines())
    before = ids()
    new_tag = load_config(None, {"stack": cfg.stack, "cloud": "local", "open_webui_image": "ghcr.io/open-webui/open-webui:v0.6.35"})
    try:
        result = deploy(new_tag, host)
        assert [c for c in result.changed if not c.startswith(("files:", "image:"))] == ["open_webui"]
        after = ids()
        assert after["vllm"] == before["vllm"] and after["monai_sam2"] == before["monai_sam2"]
        assert after["open-webui"] != before["open-webui"]
        assert "ghcr.io/open-webui/open-webui:v0.6.35" in on_host(cfg, host, "docker ps --format '{{.Image}}'")
    finally:
        deploy(cfg, host)


def test_vllm_runs_with_the_settings_sized_for_the_host(deployed):
    cfg, host, _ = deployed
    # .env values as Compose reads them: a value with JSON in it is single-quoted
    env = {k: shlex.split(v)[0] if v.startswith("'") else v for k, v in (
        line.split("=", 1) for line in on_host(cfg, host, f"cat {HOST_ROOT}/vllm_cxr/.env").splitlines())}
    assert (env["VLLM_DTYPE"], env["MAX_MODEL_LEN"]) == ("bfloat16", "8192")
    assert json.loads(env["LIMIT_MM_PER_PROMPT"]) == {"image": 1, "video": 0}
    args = json.loads(on_host(cfg, host, "docker inspect vllm --format '{{json .Args}}'"))
    assert args[args.index("--limit-mm-per-prompt") + 1] == '{"image":1,"video":0}'  # vLLM gets the JSON itself
    assert args[args.index("--max-model-len") + 1] == "8192"
    # ... and vLLM holds prompts to them: a second image in one prompt is refused, as vLLM refuses it
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with Tunnel(cfg, host) as tunnel:
        key = secrets_of(cfg, registry().app("vllm_cxr"))["vllm_api_key"]
        r = requests.post(f"{tunnel.urls['vllm']}/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": cfg.served_model_name,
                                "messages": [{"role": "user", "content": [image, image]}]})
    assert r.status_code == 400 and "At most 1 image(s)" in r.json()["message"]


def test_a_recreated_monai_label_container_reuses_its_downloaded_weights(deployed):
    cfg, host, _ = deployed
    weights = "/code/checkpoints/nnInteractive_v1.0/fold_0/checkpoint_final.pth"
    first = on_host(cfg, host, f"docker exec monai_sam2 cat {weights}")
    on_host(cfg, host, "docker rm -f monai_sam2 >/dev/null")  # the container goes; its volumes stay
    assert "monai_label" in deploy(cfg, host).changed  # deploy creates a new one
    assert on_host(cfg, host, f"docker exec monai_sam2 cat {weights}") == first  # not downloaded again
    logs = on_host(cfg, host, "docker logs monai_sam2 2>&1")
    assert "nnInteractive weights found in /code/checkpoints/nnInteractive_v1.0" in logs
    assert "downloading" not in logs


def refused_before_anything_changes(on_sandbox, monkeypatch, fact: str, value: str, match: str) -> None:
    """Deploy to a host whose ``fact`` says ``value`` (faked: the sandbox is an x86_64 box without a GPU)
    stops with ``match`` and leaves every container as it was."""
    from gpuprov.apps.fit import DoesNotFit
    from gpuprov.provisioning import deploy as deploying

    cfg, host = on_sandbox
    deploy(cfg, host)
    state = lambda: on_host(cfg, host, "docker ps -a --format '{{.Names}} {{.ID}} {{.Image}}' | sort")  # noqa: E731
    before = state()
    real = deploying.parse_facts

    def faked(text: str):
        facts = real(text)
        setattr(facts, fact, value)
        return facts

    monkeypatch.setattr(deploying, "parse_facts", faked)
    with pytest.raises(DoesNotFit, match=match):
        deploy(cfg, host)
    assert state() == before


def test_an_arm64_host_is_refused_before_anything_changes(on_sandbox, monkeypatch):
    """The decision on the host's own architecture fact."""
    refused_before_anything_changes(on_sandbox, monkeypatch, "arch", "aarch64",
                                    r"vllm/vllm-openai:v0\.30\.0@sha256:[0-9a-f]{64} has no arm64 build .* "
                                    r"nvcr\.io/nvidia/vllm")


def test_a_host_whose_driver_is_too_old_for_the_vllm_image_is_refused_before_anything_changes(on_sandbox, monkeypatch):
    """The driver fact as nvidia-smi reports it."""
    refused_before_anything_changes(on_sandbox, monkeypatch, "nvidia_driver", "570.133.20",
                                    r"built for CUDA 13, .*driver is 570\.133\.20: set vllm_image to "
                                    r"vllm/vllm-openai:v0\.30\.0-cu129")


def test_a_changed_host_key_is_refused(on_sandbox, tmp_path):
    cfg, host = on_sandbox
    deploy(cfg, host)  # pins the key
    path = known_hosts_path(cfg.stack)
    pinned = path.read_text()
    assert host.host_key and host.host_key.split()[1] in pinned
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    entry = host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"
    try:
        path.write_text(f"{entry} {other}\n")
        with pytest.raises(HostKeyChanged, match="changed"):
            deploy(cfg, host)
        # a host that presents another key than the one its target declared is refused on first connect too
        path.write_text("")
        with pytest.raises(HostKeyChanged):
            deploy(cfg, host.model_copy(update={"host_key": other}))
        assert path.read_text() == ""  # nothing was pinned from the impostor
    finally:
        path.write_text(pinned)


def test_the_tunnel_survives_a_dropped_connection(deployed):
    cfg, host, _ = deployed
    with Tunnel(cfg, host) as tunnel:
        url = tunnel.urls["open_webui"]
        assert requests.get(f"{url}/health", timeout=10).json() == {"status": True}
        tunnel.drop_connection()
        assert requests.get(f"{url}/health", timeout=20).json() == {"status": True}
        assert tunnel.reconnects >= 1


def test_closing_the_tunnel_with_connections_in_flight_says_nothing_and_opens_no_new_connection(deployed):
    cfg, host, _ = deployed
    said: list[str] = []
    errors: list[BaseException | None] = []
    before = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        for _ in range(10):  # connections caught at every stage: accepted, opening their channel, forwarding
            tunnel = Tunnel(cfg, host, progress=said.append).__enter__()
            clients = []
            for url in tunnel.urls.values():
                c = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10)
                c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                clients.append(c)
            tunnel.close()
            assert not tunnel.alive() and tunnel.reconnects == 0
            for c in clients:
                c.close()
        time.sleep(2)  # what was still in flight has noticed the close
    finally:
        threading.excepthook = before
    assert said == [] and errors == []


def test_the_deploy_command_reports_json_and_the_record_knows_what_is_deployed(deployed):
    cfg, host, _ = deployed
    result = run_cli("deploy", "--json", "--stack", cfg.stack, "--cloud", "local")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["changed"] == [] and report["ssh_round_trips"] <= 3 and report["seconds"] > 0
    status = json.loads(run_cli("status", "--json", "--stack", cfg.stack).stdout)["stacks"]
    assert status[0]["deployed"] == ["vllm", "open_webui", "monai_label"]
    assert status[0]["serving"]["gpu"] is None and status[0]["serving"]["note"]  # sized at deploy: no GPU here
    smoke_cli = run_cli("smoke", "--json", "--stack", cfg.stack, "--cloud", "local")
    assert smoke_cli.returncode == 0, smoke_cli.stderr
    assert set(json.loads(smoke_cli.stdout)) == {"vllm", "monai_label"}


def fab(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a Fabric day-2 task from the repository root, as a user would."""
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return subprocess.run([str(Path(sys.executable).with_name("fab")), *args], cwd=root, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ))


def test_day_two_tasks_logs_restart_redeploy_and_backup(deployed, tmp_path):
    cfg, host, _ = deployed
    listed = fab("--list").stdout
    for name in ("deploy", "redeploy", "logs", "restart", "tunnel", "smoke", "backup"):
        assert f"  {name} " in listed or f"  {name}\n" in listed, listed
    log = fab("logs", "--service", "vllm", "--stack", cfg.stack)
    assert log.returncode == 0 and "vllm stand-in listening on 127.0.0.1:8000" in log.stdout, log.stderr
    root = HOST_ROOT
    on_host(cfg, host, f"echo mask > {root}/monai_label/data/predictions/case1.txt")
    backup = fab("backup", "--stack", cfg.stack, "--dest", str(tmp_path))
    assert backup.returncode == 0, backup.stderr
    archive = tmp_path / backup.stdout.strip().rsplit("/", 1)[-1]
    listing = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True).stdout
    assert "predictions/case1.txt" in listing and "studies/" in listing
    assert archive.stat().st_mode & 0o777 == 0o600  # studies: likely patient data, the owner's only
    before = on_host(cfg, host, "docker inspect -f '{{.Id}}' monai_sam2 vllm").split()
    redo = fab("redeploy", "--only", "monai_label", "--stack", cfg.stack)
    assert redo.returncode == 0, redo.stderr
    after = on_host(cfg, host, "docker inspect -f '{{.Id}}' monai_sam2 vllm").split()
    assert after[0] != before[0] and after[1] == before[1]  # only that stack was recreated
    assert fab("restart", "--service", "open_webui", "--stack", cfg.stack).returncode == 0
    with Tunnel(cfg, host) as tunnel:
        wait_until_healthy(cfg, tunnel.urls, 60)


def test_a_new_sandbox_after_down_and_up_gets_its_new_key_pinned_not_refused(on_sandbox):
    cfg, host = on_sandbox
    deploy(cfg, host)
    path = known_hosts_path(cfg.stack)
    pinned = path.read_text()
    try:
        # the same stack's host replaced by a new instance with another key: pins start afresh ...
        relaunched = host.model_copy(update={"launched_at": host.launched_at.replace(year=2020)})
        path.write_text(f"{host.address} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
        changed = deploy(cfg, relaunched).changed  # connected: the new key was pinned, not refused
        assert not {"vllm", "open_webui", "monai_label"} & set(changed)
        assert host.host_key.split()[1] in path.read_text()
    finally:
        path.write_text(pinned)
        deploy(cfg, host)


def test_a_supplied_sam3_checkpoint_is_uploaded_once_root_only(deployed, tmp_path):
    cfg, host, _ = deployed
    checkpoint = tmp_path / "sam3.pt"
    checkpoint.write_bytes(b"not really sam3 weights\n" * 1000)
    first = deploy(cfg, host, build_inputs={"sam3.pt": checkpoint})
    assert "upload:sam3.pt" in first.changed
    root = HOST_ROOT
    mode, digest = on_host(cfg, host, f"stat -c %a {root}/uploads/sam3.pt; sha256sum < {root}/uploads/sam3.pt").split()[:2]
    import hashlib

    assert mode == "600" and digest == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert deploy(cfg, host, build_inputs={"sam3.pt": checkpoint}).changed == []


def test_an_opened_port_is_reachable_from_outside_and_closes_again(deployed):
    cfg, host, _ = deployed
    opened = load_config(None, {"stack": cfg.stack, "cloud": "local", "open_ports": [8002],
                                "allowed_cidrs": ["10.213.0.0/16"]})
    try:
        result = deploy(opened, host)
        assert [c for c in result.changed if not c.startswith(("files:", "image:"))] == ["monai_label"]
        # deploy() returns once the container is started (the CLI then waits for health): give it a moment.
        deadline = time.monotonic() + 30
        while True:
            try:
                info = requests.get(f"http://{host.address}:8002/info/", timeout=10).json()
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert "segmentation" in info["models"]
        with pytest.raises(OSError):  # the others stay behind SSH
            socket.create_connection((host.address, 8000), timeout=2).close()
    finally:
        deploy(cfg, host)
    with pytest.raises(OSError):
        socket.create_connection((host.address, 8002), timeout=2).close()


def test_the_tunnel_command_prints_one_line_per_service_and_stops_on_ctrl_c(deployed):
    import os
    import signal
    import sys

    cfg, host, _ = deployed
    # As from a terminal: Ctrl-C not ignored. A shell's background job (a CI step run with `&`) starts its
    # children with SIGINT ignored, and Python then leaves it ignored: the tunnel would never see it.
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov", "tunnel", "--stack", cfg.stack, "--cloud", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().split() for _ in range(3)]
        urls = dict(lines)
        assert set(urls) == {"vllm", "open_webui", "monai_label"}
        assert all(u.startswith("http://127.0.0.1:") for u in urls.values())
        assert requests.get(f"{urls['monai_label']}/info/", timeout=10).json()["models"]
        assert requests.get(f"{urls['open_webui']}/health", timeout=10).json() == {"status": True}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:  # it ignored Ctrl-C: fail, and leave no tunnel behind
                proc.kill()
                proc.wait()
    assert proc.returncode in (0, 130)


def test_open_webui_login_is_on_with_the_generated_admin_only(deployed):
    cfg, host, _ = deployed
    wait_healthy(cfg, host, 60)  # creates the admin through the tunnel when there is none
    wait_healthy(cfg, host, 60)  # and afterwards only checks it signs in
    secrets = secrets_of(cfg, registry().app("vllm_cxr"))
    with Tunnel(cfg, host) as tunnel:
        url = tunnel.urls["open_webui"]
        ok = requests.post(f"{url}/api/v1/auths/signin", timeout=10,
                           json={"email": secrets["webui_admin_email"], "password": secrets["webui_admin_password"]})
        assert ok.status_code == 200 and ok.json()["role"] == "admin"
        wrong = requests.post(f"{url}/api/v1/auths/signin", timeout=10,
                              json={"email": secrets["webui_admin_email"], "password": "guess"})
        assert wrong.status_code == 400
        intruder = requests.post(f"{url}/api/v1/auths/signup", timeout=10,
                                 json={"email": "x@example.com", "password": "x", "name": "x"})
        assert intruder.status_code == 403


def test_open_webui_shows_the_models_reasoning_and_the_setting_survives_a_redeploy(deployed):
    """Issue #15: the model writes its reasoning before its answer; Open WebUI's reasoning-tag detection
    is turned off for it (the DGX Spark playbook's advice), as Admin > Models shows, on every deploy."""
    cfg, host, _ = deployed
    secrets = secrets_of(cfg, registry().app("vllm_cxr"))

    def model_settings(turn_detection_on: bool = False) -> dict:
        with Tunnel(cfg, host) as tunnel:
            url = tunnel.urls["open_webui"]
            token = requests.post(f"{url}/api/v1/auths/signin", timeout=10, json={
                "email": secrets["webui_admin_email"], "password": secrets["webui_admin_password"]}).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            r = requests.get(f"{url}/api/v1/models/model", params={"id": cfg.served_model_name}, timeout=10,
                             headers=auth)
            assert r.status_code == 200, r.text
            if turn_detection_on:  # as a colleague would in Admin > Models > Advanced Params
                changed = {**r.json(), "params": {"reasoning_tags": True}}
                assert requests.post(f"{url}/api/v1/models/model/update", json=changed, timeout=10,
                                     headers=auth).status_code == 200
            return r.json()

    first = model_settings(turn_detection_on=True)
    assert first["params"]["reasoning_tags"] is False
    assert first["access_grants"] == [{"principal_type": "user", "principal_id": "*", "permission": "read"}]
    assert model_settings()["params"]["reasoning_tags"] is True
    wait_healthy(cfg, host, 60)  # what every deploy ends with: the setting is put back
    assert model_settings()["params"]["reasoning_tags"] is False


def test_the_tunnel_says_when_a_port_is_taken_takes_port_overrides_and_says_where_the_key_is(deployed):
    """Issue #11: MONAI Label moved to a random port without a word, and nothing said where vLLM's key is."""
    import contextlib
    import os
    import sys

    from gpuprov.provisioning.secrets import secrets_path

    cfg, host, _ = deployed
    holder = socket.socket()
    # SO_REUSEADDR: earlier tests' connections to 8002 leave TIME_WAIT entries that would fail a plain bind
    # (while the tunnel, which sets it, could still take the port); only a listener makes this bind fail.
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(OSError):  # taken already (by a listener): the point is that it is taken
        holder.bind(("127.0.0.1", 8002))
        holder.listen(1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        chosen = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov", "tunnel", "--stack", cfg.stack,
                             "--port", f"open_webui={chosen}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None and proc.stderr is not None
        urls = dict(proc.stdout.readline().split() for _ in range(3))
        assert urls["open_webui"] == f"http://127.0.0.1:{chosen}"
        assert urls["monai_label"] != "http://127.0.0.1:8002"
        said: list[str] = []
        while not said or "forwarding over SSH" not in said[-1]:  # everything it says before it forwards
            line = proc.stderr.readline()
            assert line, "".join(said)
            said.append(line)
        stderr = "".join(said)
    finally:
        proc.kill()  # how it stops is the Ctrl-C test's; here only what it said counts
        proc.wait(timeout=20)
        holder.close()
    port = urls["monai_label"].rsplit(":", 1)[1]
    assert (f"WARNING: local port 8002 is taken; monai_label is on 127.0.0.1:{port} instead (a client set for 8002 "
            "would reach whatever holds it). `--port monai_label=PORT` picks the port") in stderr
    where = secrets_path(cfg.stack)
    assert (f"vllm's /v1 API wants `Authorization: Bearer <key>`; the key (vllm_api_key) is kept 0600 in {where}: "
            f"KEY=$(jq -r '.apps.vllm_cxr.vllm_api_key' {where})") in stderr
    assert secrets_of(cfg, registry().apps["vllm_cxr"])["vllm_api_key"] not in stderr
