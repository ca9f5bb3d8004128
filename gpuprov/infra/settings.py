"""The operator-side settings that are not stack config: read once, at the edge, and passed down.

Stack config (:mod:`gpuprov.infra.config`) says *what* a stack is and lives with the stack.
These say how this machine reaches things: which Pulumi engine runs the program, where
an API lives when it is not the public one, how long teardown verification waits. They
come from the environment (the command line, Fabric, the Pulumi program and each dynamic
provider's ``configure()`` are the edges that read it) and travel as one frozen object.
Credentials are not settings: each cloud's SDK chain (or its documented variable) reads them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gpuprov.infra.errors import GpuprovError

LAMBDA_DEFAULT_URL = "https://cloud.lambda.ai"
GCP_BILLING_DEFAULT_URL = "https://cloudbilling.googleapis.com"
EGRESS_DEFAULT_URL = "https://checkip.amazonaws.com"  # answers the caller's public IPv4 as one line of text
PULUMI_ENGINES = ("automation", "mock")


class SettingsError(GpuprovError):
    """An environment setting gpuprov cannot use; says which variable, which value, and what is allowed."""

    exit_code = 2

    def __init__(self, variable: str, value: str, allowed: str):
        super().__init__(f"environment variable {variable}={value!r} is not understood; {allowed}")


def _float(env: Mapping[str, str], name: str, default: float, low: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, raw, "expected a number") from None
    if not value >= low or value != value or value in (float("inf"),):
        raise SettingsError(name, raw, f"expected a finite number of at least {low:g}")
    return value


_SECRETS_PROVIDER = re.compile(r"^(passphrase|default|(awskms|gcpkms|hashivault|azurekeyvault)://\S+)$")


def _secrets_provider(raw: str | None) -> str | None:
    if raw is not None and not _SECRETS_PROVIDER.match(raw):
        raise SettingsError("GPUPROV_SECRETS_PROVIDER", raw, "use passphrase, default, or an awskms://, gcpkms://, "
                            "hashivault:// or azurekeyvault:// URL (Pulumi's secrets providers)")
    return raw


_HTTP_URL = re.compile(r"https?://[A-Za-z0-9.\[\]:_-]+(/[\x21-\x7e]*)?\Z")


def _egress_url(raw: str) -> str:
    if not _HTTP_URL.match(raw):
        raise SettingsError("GPUPROV_EGRESS_URL", raw, "expected an http(s):// URL of a service that answers the "
                            "caller's address, such as https://checkip.amazonaws.com")
    return raw


@dataclass(frozen=True)
class Settings:
    """How this machine reaches clouds and engines. Every field names the variable it comes from."""

    #: ``GPUPROV_PULUMI``: ``automation`` (the Pulumi CLI through the Automation API) or ``mock``
    #: (the same program on Pulumi's mock runtime, dynamic providers called for real).
    pulumi: str = "automation"
    #: ``GPUPROV_VERIFY_TIMEOUT_S`` / ``GPUPROV_VERIFY_POLL_S``: how long teardown verification waits
    #: for resources that are still terminating, and how often it asks.
    verify_timeout_s: float = 600.0
    verify_poll_s: float = 2.0
    #: ``LAMBDA_API_URL``: the Lambda Cloud API (another URL: a stand-in, a proxy).
    lambda_api_url: str = LAMBDA_DEFAULT_URL
    #: ``GPUPROV_LAMBDA_RATE_SCALE``: multiplies the Lambda client's rate-limit pauses and back-off.
    lambda_rate_scale: float = 1.0
    #: ``GPUPROV_GCP_API_ENDPOINT``: the Compute Engine REST endpoint (another one: a stand-in).
    gcp_api_endpoint: str | None = None
    #: ``GPUPROV_GKE_API_ENDPOINT``: the GKE (Kubernetes Engine) REST endpoint (another one: a stand-in).
    gke_api_endpoint: str | None = None
    #: ``GOOGLE_CLOUD_PROJECT`` (or gcloud's ``CLOUDSDK_CORE_PROJECT``): the project hosts are made in.
    gcp_project: str | None = None
    #: ``GPUPROV_GCP_BILLING_URL``: the Cloud Billing Catalog API.
    gcp_billing_url: str = GCP_BILLING_DEFAULT_URL
    #: ``GPUPROV_AWS_REGIONS``: the EC2 regions the reaper sweeps (comma-separated); empty: the default region.
    aws_regions: tuple[str, ...] = ()
    #: ``PULUMI_BACKEND_URL``: the Pulumi backend the user's Pulumi uses (unset: the logged-in one).
    pulumi_backend_url: str | None = None
    #: ``PULUMI_HOME``: where the Pulumi CLI keeps its login (``credentials.json``); default ``~/.pulumi``.
    pulumi_home: str | None = None
    #: whether ``PULUMI_ACCESS_TOKEN`` is set (Pulumi then logs in to Pulumi Cloud by itself); never the token.
    pulumi_access_token_set: bool = False
    #: ``GPUPROV_SECRETS_PROVIDER``: the secrets provider of stacks gpuprov creates (``awskms://...``,
    #: ``gcpkms://...``, ``hashivault://...``, ``azurekeyvault://...``, ``passphrase``, ``default``);
    #: unset: the backend's default (Pulumi Cloud's own; a passphrase elsewhere).
    secrets_provider: str | None = None
    #: ``GPUPROV_EGRESS_URL``: the echo service that tells this machine's public IPv4 address (one line of
    #: text, as https://checkip.amazonaws.com answers); another URL: a service of your own, or a stand-in.
    egress_url: str = EGRESS_DEFAULT_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``env`` (default: this process's environment)."""
        env = os.environ if env is None else env
        engine = env.get("GPUPROV_PULUMI") or "automation"
        if engine not in PULUMI_ENGINES:
            raise SettingsError("GPUPROV_PULUMI", engine, "use 'automation' (the Pulumi CLI, default) or 'mock'")
        return cls(
            pulumi=engine,
            verify_timeout_s=_float(env, "GPUPROV_VERIFY_TIMEOUT_S", 600.0),
            verify_poll_s=_float(env, "GPUPROV_VERIFY_POLL_S", 2.0, low=0.001),
            lambda_api_url=(env.get("LAMBDA_API_URL") or LAMBDA_DEFAULT_URL).rstrip("/"),
            lambda_rate_scale=_float(env, "GPUPROV_LAMBDA_RATE_SCALE", 1.0),
            gcp_api_endpoint=env.get("GPUPROV_GCP_API_ENDPOINT") or None,
            gke_api_endpoint=env.get("GPUPROV_GKE_API_ENDPOINT") or None,
            gcp_project=env.get("GOOGLE_CLOUD_PROJECT") or env.get("CLOUDSDK_CORE_PROJECT") or None,
            gcp_billing_url=(env.get("GPUPROV_GCP_BILLING_URL") or GCP_BILLING_DEFAULT_URL).rstrip("/"),
            aws_regions=tuple(r.strip() for r in (env.get("GPUPROV_AWS_REGIONS") or "").split(",") if r.strip()),
            pulumi_backend_url=env.get("PULUMI_BACKEND_URL") or None,
            pulumi_home=env.get("PULUMI_HOME") or None,
            pulumi_access_token_set=bool(env.get("PULUMI_ACCESS_TOKEN")),
            secrets_provider=_secrets_provider(env.get("GPUPROV_SECRETS_PROVIDER") or None),
            egress_url=_egress_url(env.get("GPUPROV_EGRESS_URL") or EGRESS_DEFAULT_URL),
        )
