"""The stack's generated secrets: made once per app, kept 0600, and the ones made before apps existed are kept."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from gpuprov.apps import registry
from gpuprov.infra.config import StackConfig
from gpuprov.provisioning.secrets import app_secrets, secrets_path

LOCAL = StackConfig(stack="s", cloud="local")  # a stack with no Pulumi backend: this machine's file is the store


def test_secrets_are_generated_once_per_app_and_kept_root_only(gpuprov_home: Path) -> None:
    apps = registry().selected(["vllm_cxr", "monai_label"])
    first, generated = app_secrets(LOCAL, apps)
    assert generated == {"vllm_cxr": ["vllm_api_key", "webui_secret_key", "webui_admin_email", "webui_admin_password"]}
    again, generated = app_secrets(LOCAL, apps)
    assert generated == {} and dict(again["vllm_cxr"]) == dict(first["vllm_cxr"])
    assert stat.S_IMODE(secrets_path("s").stat().st_mode) == 0o600
    assert first["vllm_cxr"]["vllm_api_key"] not in repr(first)


def test_a_secret_file_from_before_apps_keeps_its_values(gpuprov_home: Path) -> None:
    # The flat format of earlier versions: the Open WebUI admin must not change on upgrade.
    old = {"vllm_api_key": "sk-old", "webui_secret_key": "old-secret", "webui_admin_email": "admin@s.gpuprov.local",
           "webui_admin_password": "old-password"}
    path = secrets_path("s")
    path.write_text(json.dumps(old))
    path.chmod(0o600)
    secrets, generated = app_secrets(LOCAL, registry().selected(["vllm_cxr"]))
    assert dict(secrets["vllm_cxr"]) == old and generated == {}  # nothing regenerated, no login shown again


def test_secrets_show_prints_the_generated_login_again_and_says_when_there_is_none(gpuprov_home: Path) -> None:
    from tests.conftest import run_cli

    env = {"GPUPROV_HOME": str(gpuprov_home)}
    none = run_cli("secrets", "show", "--stack", "s", env=env)
    assert none.returncode == 1 and none.stderr.startswith("error: stack 's' has no generated login"), none.stderr
    made, _ = app_secrets(LOCAL, registry().selected(["vllm_cxr", "monai_label"]))
    shown = run_cli("secrets", "show", "--stack", "s", env=env)
    assert shown.returncode == 0, shown.stderr
    login = made["vllm_cxr"]
    assert shown.stdout == (f"Open WebUI admin (open_webui): {login['webui_admin_email']}  "
                            f"{login['webui_admin_password']}\n")
