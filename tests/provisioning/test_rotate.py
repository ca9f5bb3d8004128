"""`gpuprov secrets rotate vllm_api_key`: a new key reaches vLLM and Open WebUI on the same deploy, the old key
stops working, and Open WebUI still answers chats through vLLM (its persistent config is off, so the new key
from its environment wins over the one it saw at first boot)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from gpuprov.infra import records
from gpuprov.infra.config import load_config
from gpuprov.provisioning.tunnel import Tunnel
from tests.conftest import need_sandbox, run_cli

pytestmark = pytest.mark.sandbox


def _secrets(home: Path, stack: str) -> dict[str, str]:
    return dict(json.loads((home / "secrets" / f"{stack}.json").read_text())["apps"]["vllm_cxr"])


def _chat_through_open_webui(url: str, secrets: dict[str, str]) -> requests.Response:
    """What a user's chat does: sign in to Open WebUI, then ask it; it calls vLLM with its own key."""
    signin = requests.post(f"{url}/api/v1/auths/signin", timeout=30, json={
        "email": secrets["webui_admin_email"], "password": secrets["webui_admin_password"]})
    assert signin.status_code == 200, signin.text
    return requests.post(f"{url}/api/chat/completions", timeout=60,
                         headers={"Authorization": f"Bearer {signin.json()['token']}"},
                         json={"model": "monai-reasoning-cxr-3b", "messages": [{"role": "user", "content": "hi"}]})


def _vllm_models(url: str, key: str) -> int:
    return requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code


@pytest.mark.timeout(900)
def test_a_rotated_vllm_key_replaces_the_old_one_and_open_webui_still_answers(gpuprov_home: Path):
    need_sandbox()
    env = {"GPUPROV_HOME": str(gpuprov_home)}
    up = run_cli("up", "--cloud", "local", "--stack", "rot", env=env, timeout=600)
    assert up.returncode == 0, up.stderr
    try:
        old = _secrets(gpuprov_home, "rot")
        cfg = load_config(None, {"stack": "rot", "cloud": "local"})
        rec = records.load("rot")
        assert rec is not None
        with Tunnel(cfg, rec.host) as tunnel:
            answer = _chat_through_open_webui(tunnel.urls["open_webui"], old)
            assert answer.status_code == 200 and answer.json()["object"] == "chat.completion", answer.text

        rotated = run_cli("secrets", "rotate", "vllm_api_key", "--stack", "rot", env=env, timeout=600)
        assert rotated.returncode == 0, rotated.stderr
        assert "new value for vllm_cxr.vllm_api_key" in rotated.stderr and "all healthy" in rotated.stdout + rotated.stderr
        new = _secrets(gpuprov_home, "rot")
        assert new["vllm_api_key"] != old["vllm_api_key"]
        assert {k: v for k, v in new.items() if k != "vllm_api_key"} == {
            k: v for k, v in old.items() if k != "vllm_api_key"}  # nothing else changed: the same admin signs in
        with Tunnel(cfg, rec.host) as tunnel:
            assert _vllm_models(tunnel.urls["vllm"], old["vllm_api_key"]) == 401
            assert _vllm_models(tunnel.urls["vllm"], new["vllm_api_key"]) == 200
            answer = _chat_through_open_webui(tunnel.urls["open_webui"], new)
            assert answer.status_code == 200 and answer.json()["object"] == "chat.completion", answer.text

        fixed = run_cli("secrets", "rotate", "webui_admin_password", "--stack", "rot", env=env)
        assert fixed.returncode == 2
        assert fixed.stderr.strip() == ("error: webui_admin_password cannot be rotated by gpuprov: Open WebUI keeps its "
                                        "admin's password in its own database: change it in Settings > Account")
        unknown = run_cli("secrets", "rotate", "vllm_key", "--stack", "rot", env=env)
        assert unknown.returncode == 2 and "rotatable: vllm_api_key, webui_secret_key" in unknown.stderr
    finally:
        down = run_cli("down", "--stack", "rot", env=env)
        assert down.returncode == 0, down.stderr
