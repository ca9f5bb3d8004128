"""`gpuprov update` / `gpuprov rollback` on the real local sandbox host (real sshd, Docker engine, Compose):
a "new version" that fails its health check rolls back by itself; a good one is rolled back on demand;
the data volumes stay as they were both ways."""

from __future__ import annotations

import shlex

import pytest

from gpuprov.apps import registry
from gpuprov.infra.config import load_config
from gpuprov.provisioning import hostpaths
from gpuprov.provisioning.deploy import deploy
from gpuprov.provisioning.desired import standin_label
from gpuprov.provisioning.health import check_all
from gpuprov.provisioning.hostpaths import ROOT
from gpuprov.provisioning.tunnel import Tunnel
from tests.conftest import run_cli
from tests.provisioning.conftest import on_host

pytestmark = pytest.mark.sandbox
HOST_ROOT = hostpaths.on_host(ROOT)
# The "new version" of Open WebUI: an image that starts and answers, but not as Open WebUI does
# (it serves vLLM's stand-in routes: /health answers 200 with an empty body, not {"status": true}).
BROKEN = "ghcr.io/open-webui/open-webui:v0.6.99-broken"
GOOD = "ghcr.io/open-webui/open-webui:v0.6.35"
CHAT = "/app/backend/data/gpuprov-test-chat.json"



def running_image(cfg, host, container: str) -> str:
    return on_host(cfg, host, f"docker inspect -f '{{{{.Config.Image}}}}' {container}").strip()


@pytest.fixture
def deployed(on_sandbox):
    cfg, host = on_sandbox
    deploy(cfg, host)
    on_host(cfg, host, f"docker exec open-webui sh -c {shlex.quote(f'echo chat-1 > {CHAT}')}")
    yield cfg, host
    deploy(cfg, host)  # whatever a test left, the shared sandbox serves the plain config again


def on_sandbox_as(ref: str) -> str:
    """The reference a sandbox runs for ``ref``: its stand-in is tagged as the real tag (a tag holds no digest)."""
    return ref.split("@", 1)[0]


def plant_broken_open_webui(cfg, host) -> None:
    """Build the unhealthy variant in the sandbox's engine under the new tag, made of the app's stand-in
    files (so deploy takes it as that tag's stand-in instead of building a healthy one)."""
    label = standin_label(registry().app("vllm_cxr"))
    on_host(cfg, host, f"cd {HOST_ROOT}/vllm_cxr/standin && DOCKER_BUILDKIT=0 docker build -q --build-arg SERVICE=vllm "
                       f"--label gpuprov.label={shlex.quote(label)} -t {BROKEN} . >/dev/null")


def test_an_update_that_fails_its_health_check_rolls_back_by_itself(deployed):
    cfg, host = deployed
    plant_broken_open_webui(cfg, host)
    vllm_before = on_host(cfg, host, "docker inspect -f '{{.Id}}' vllm")
    done = run_cli("update", "--stack", cfg.stack, "--set", f"open_webui_image={BROKEN}", "--timeout", "15")
    assert done.returncode == 7, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Traceback" not in done.stderr
    assert "service 'open_webui' was not healthy within 15s" in line and "JSONDecodeError" in line, line
    assert "Rolled back by itself" in line and "--service open_webui" in line
    # The old one serves again, with no manual step: its image, its answer, its data.
    assert running_image(cfg, host, "open-webui") == on_sandbox_as(cfg.open_webui_image)
    with Tunnel(cfg, host) as tunnel:
        assert check_all(cfg, tunnel.urls) == {"vllm": None, "open_webui": None, "monai_label": None}
    assert on_host(cfg, host, f"docker exec open-webui cat {CHAT}").strip() == "chat-1"
    assert on_host(cfg, host, "docker inspect -f '{{.Id}}' vllm") == vllm_before  # only what changed was touched
    assert deploy(cfg, host).changed == []  # the host holds exactly the old release again


def test_a_good_update_then_rollback_returns_to_the_old_version_and_forward_again(deployed):
    cfg, host = deployed
    monai_before = on_host(cfg, host, "docker inspect -f '{{.Id}}' monai_sam2")
    done = run_cli("update", "--stack", cfg.stack, "--set", f"open_webui_image={GOOD}", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert "updated vllm_cxr (" in done.stdout and "open_webui)" in done.stdout and "gpuprov rollback" in done.stdout
    assert running_image(cfg, host, "open-webui") == GOOD
    new = load_config(None, {"stack": cfg.stack, "cloud": "local", "open_webui_image": GOOD})
    assert deploy(new, host).changed == []  # the update applied exactly the new config

    back = run_cli("rollback", "--stack", cfg.stack, "--json")
    assert back.returncode == 0, back.stderr
    assert running_image(cfg, host, "open-webui") == on_sandbox_as(cfg.open_webui_image)
    assert on_sandbox_as(cfg.open_webui_image) in back.stdout
    assert on_host(cfg, host, f"docker exec open-webui cat {CHAT}").strip() == "chat-1"  # the data survived
    assert on_host(cfg, host, "docker inspect -f '{{.Id}}' monai_sam2") == monai_before
    assert deploy(cfg, host).changed == []

    again = run_cli("rollback", "--stack", cfg.stack, "--app", "vllm_cxr")  # a second rollback goes forward
    assert again.returncode == 0, again.stderr
    assert running_image(cfg, host, "open-webui") == GOOD


def test_update_refuses_values_outside_their_grammar_and_keys_it_does_not_change(on_sandbox):
    cfg, _host = on_sandbox
    bad_ref = run_cli("update", "--stack", cfg.stack, "--set", "monai_label_ref=main")
    assert bad_ref.returncode == 2 and "monai_label_ref" in bad_ref.stderr and "40-hex" in bad_ref.stderr
    other = run_cli("update", "--stack", cfg.stack, "--set", "instance_type=g5.xlarge")
    assert other.returncode == 2 and "update changes only" in other.stderr
    bad_image = run_cli("update", "--stack", cfg.stack, "--set", "vllm_image=vllm/vllm-openai:$(reboot)")
    assert bad_image.returncode == 2 and "vllm_image" in bad_image.stderr
