"""vllm_cxr: vLLM serving MONAI-Reasoning-CXR-3B (the configured model), with Open WebUI in front.

vLLM: ``GET /health`` answers 200 once the model is loaded, ``GET /v1/models`` lists the served
model name, ``/v1`` is guarded by ``VLLM_API_KEY`` (vLLM's ``--api-key``), and ``GET /metrics`` is
Prometheus text (vllm/v1/metrics/loggers.py). Open WebUI: ``GET /health`` is ``{"status": true}``;
the first account that signs up (``POST /api/v1/auths/signup``) becomes its admin
(open-webui backend/open_webui/routers/auths.py); a model's settings are read and written through
``/api/v1/models/model``, ``/create`` and ``/model/update`` (routers/models.py).
"""

from __future__ import annotations

import base64
import json
import secrets as random
from typing import Any

import requests

from gpuprov.apps.base import (
    App,
    AppCheck,
    HostContext,
    Login,
    Metrics,
    ProvisioningError,
    Secret,
    Service,
    ServiceCheck,
    SmokeFailed,
)
from gpuprov.apps.vllm_cxr.sizing import SETTINGS, sizing
from gpuprov.apps.vllm_cxr.xray import chest_xray_png
from gpuprov.infra.cache import HF_DIR

ADMIN_NAME = "gpuprov admin"


def _env(ctx: HostContext) -> dict[str, str]:
    c = ctx.config
    return {
        "MODEL_ID": c.model_id,
        "SERVED_MODEL_NAME": c.served_model_name,
        **ctx.sizing,  # dtype, context, multimodal limits and GPU share for the host's GPU (sizing.py)
        "OPENAI_API_BASE_URL": f"http://{ctx.peer('vllm')}:8000/v1",
        # The Hugging Face cache: the stack's cache (kept across `down`) when mounted, else a Docker volume.
        "MODEL_CACHE": ctx.cache_source(HF_DIR, "model-cache"),
    }


def _secret_files(ctx: HostContext) -> dict[str, dict[str, str]]:
    hf = ctx.config.hf_token_value
    return {
        # vLLM reads VLLM_API_KEY as --api-key; HF_TOKEN for gated models. Never a flag, never in `ps`.
        "secrets.env": {"VLLM_API_KEY": ctx.secrets["vllm_api_key"],
                        **({"HF_TOKEN": hf, "HUGGING_FACE_HUB_TOKEN": hf} if hf else {})},
        "webui.env": {
            "OPENAI_API_KEY": ctx.secrets["vllm_api_key"],
            "WEBUI_SECRET_KEY": ctx.secrets["webui_secret_key"],
            "WEBUI_ADMIN_EMAIL": ctx.secrets["webui_admin_email"],
            "WEBUI_ADMIN_PASSWORD": ctx.secrets["webui_admin_password"],
            "WEBUI_ADMIN_NAME": ADMIN_NAME,
        },
    }


def _vllm_health(check: ServiceCheck) -> str | None:
    r = requests.get(f"{check.url}/health", timeout=check.timeout_s)
    if r.status_code != 200:
        return f"/health answered {r.status_code}"
    r = requests.get(f"{check.url}/v1/models", timeout=check.timeout_s,
                     headers={"Authorization": f"Bearer {check.secrets['vllm_api_key']}"})
    if r.status_code != 200:
        return f"/v1/models answered {r.status_code}"
    ids = [m.get("id") for m in r.json().get("data", [])]
    if check.config.served_model_name not in ids:
        return f"/v1/models lists {ids}, not {check.config.served_model_name!r}"
    return None


def _webui_health(check: ServiceCheck) -> str | None:
    r = requests.get(f"{check.url}/health", timeout=check.timeout_s)
    if r.status_code != 200 or r.json().get("status") is not True:
        return f"/health answered {r.status_code} {r.text[:80]!r}"
    return None


def _smoke(check: AppCheck) -> dict[str, Any]:
    """What the model is for: a chest X-ray (generated, no patient data) and a question, as an OpenAI
    multimodal message; the answer is checked for the OpenAI shape and for tokens produced."""
    model = check.config.served_model_name
    image = "data:image/png;base64," + base64.b64encode(chest_xray_png()).decode()
    content = [{"type": "text", "text": "Describe any abnormality in this chest X-ray."},
               {"type": "image_url", "image_url": {"url": image}}]
    r = requests.post(f"{check.urls['vllm']}/v1/chat/completions", timeout=300,
                      headers={"Authorization": f"Bearer {check.secrets['vllm_api_key']}"},
                      json={"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": content}]})
    if r.status_code != 200:
        raise SmokeFailed("vllm", f"chat completion answered {r.status_code}: {r.text[:200]}")
    body = r.json()
    try:
        message = body["choices"][0]["message"]
        assert message["role"] == "assistant" and isinstance(message["content"], str) and message["content"]
        assert body["object"] == "chat.completion" and body["model"] == model
        usage = body["usage"]["total_tokens"]
        assert body["usage"]["completion_tokens"] > 0
    except (KeyError, IndexError, TypeError, AssertionError):
        raise SmokeFailed("vllm", f"the chat completion has the wrong shape: {json.dumps(body)[:300]}") from None
    return {"vllm": {"model": body["model"], "answer_chars": len(message["content"]), "total_tokens": usage}}


class AdminClaimed(ProvisioningError):
    """Open WebUI already has an admin whose credentials are not the stack's."""


def _admin_token(check: AppCheck) -> tuple[str, str | None]:
    """The stack's admin's session token, and a line to show when the account had to be made. Open WebUI
    seeds the admin from WEBUI_ADMIN_EMAIL/PASSWORD at start-up; an older image signs it up right after
    the first healthy start instead (reachable only through SSH, so nobody can race us to it)."""
    url = check.urls["open_webui"]
    creds = {"email": check.secrets["webui_admin_email"], "password": check.secrets["webui_admin_password"]}
    r = requests.post(f"{url}/api/v1/auths/signin", json=creds, timeout=30)
    if r.status_code == 200:
        return r.json()["token"], None
    r = requests.post(f"{url}/api/v1/auths/signup", json={**creds, "name": ADMIN_NAME}, timeout=30)
    if r.status_code == 200 and r.json().get("role") == "admin":
        return r.json()["token"], "Open WebUI admin account created"
    raise AdminClaimed(
        f"Open WebUI at {url} refused to create the stack's admin account ({r.status_code}: {r.text[:120]}); "
        "an account already exists. Sign in with it, or remove the webui-data volume to start afresh"
    )


# Everyone signed in may use the model (Open WebUI's "Public" switch: a read grant to every user).
PUBLIC_READ = [{"principal_type": "user", "principal_id": "*", "permission": "read"}]


def _show_reasoning(check: AppCheck, token: str) -> str | None:
    """The model's settings in Open WebUI with reasoning tags off, so the chat shows the reasoning the
    model writes before its answer, as NVIDIA's DGX Spark playbook advises for this model. Open WebUI
    reads a model's ``params.reasoning_tags`` (false: no detection, the text stays as written) from its
    model record (backend utils/middleware.py); made once, kept right on every deploy."""
    url, model = check.urls["open_webui"], check.config.served_model_name
    auth = {"Authorization": f"Bearer {token}"}
    r = requests.get(f"{url}/api/v1/models/model", params={"id": model}, headers=auth, timeout=30)
    if r.status_code == 200:
        have = r.json()
        params = have.get("params") or {}
        if params.get("reasoning_tags") is False:
            return None
        form = {"id": model, "base_model_id": have.get("base_model_id"), "name": have.get("name") or model,
                "meta": have.get("meta") or {}, "params": {**params, "reasoning_tags": False},
                "access_grants": have.get("access_grants", PUBLIC_READ), "is_active": have.get("is_active", True)}
        r = requests.post(f"{url}/api/v1/models/model/update", json=form, headers=auth, timeout=30)
    elif r.status_code == 404:
        form = {"id": model, "base_model_id": None, "name": model,
                "meta": {"description": f"{check.config.model_id}, served by vLLM on this stack's GPU host"},
                "params": {"reasoning_tags": False}, "access_grants": PUBLIC_READ, "is_active": True}
        r = requests.post(f"{url}/api/v1/models/create", json=form, headers=auth, timeout=30)
    if r.status_code != 200:
        raise ProvisioningError(f"Open WebUI refused the settings of model {model} ({r.status_code}: {r.text[:120]}); "
                                "`gpuprov logs --stack NAME open_webui` shows why, and the next deploy tries again")
    return f"Open WebUI shows {model}'s reasoning in the chat (reasoning tags off)"


def _after_healthy(check: AppCheck) -> str | None:
    token, made = _admin_token(check)
    shown = _show_reasoning(check, token)
    return "; ".join(line for line in (made, shown) if line) or None


APP = App(
    name="vllm_cxr",
    summary="vLLM serving the configured model (MONAI-Reasoning-CXR-3B), with Open WebUI in front",
    services=(
        Service(
            name="vllm", container="vllm", port=8000, image=lambda c: c.vllm_image, health=_vllm_health,
            hash_env=("MODEL_ID", "SERVED_MODEL_NAME", "MODEL_CACHE", *SETTINGS), hash_files=("secrets.env",),
            metrics=Metrics("/metrics", running=("vllm:num_requests_running",), waiting=("vllm:num_requests_waiting",),
                            counters=("vllm:request_success_total", "vllm:prompt_tokens_total")),
        ),
        Service(
            name="open_webui", container="open-webui", port=3000, image=lambda c: c.open_webui_image,
            health=_webui_health, hash_env=("OPENAI_API_BASE_URL",), hash_files=("webui.env",),
            log_activity=True, log_ignore=("/api/health", "/_app/"),
        ),
    ),
    env=_env,
    secret_files=_secret_files,
    secrets=(
        Secret("vllm_api_key", lambda _stack: "sk-" + random.token_urlsafe(32)),
        Secret("webui_secret_key", lambda _stack: random.token_urlsafe(48)),
        Secret("webui_admin_email", lambda stack: f"admin@{stack}.gpuprov.local",
               fixed="Open WebUI keeps its admin account in its own database: change it there"),
        Secret("webui_admin_password", lambda _stack: random.token_urlsafe(18),
               fixed="Open WebUI keeps its admin's password in its own database: change it in Settings > Account"),
    ),
    login=Login("Open WebUI admin", "open_webui", ("webui_admin_email", "webui_admin_password")),
    smoke=_smoke,
    after_healthy=_after_healthy,
    model_services=("vllm",),  # downloads the model into its Hugging Face cache at first start
    model_dir="/root/.cache/huggingface",
    backup_volumes=("webui-data",),  # Open WebUI's accounts, chats and uploads (not the model cache: re-downloadable)
    sizing=sizing,
)
