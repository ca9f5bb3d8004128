"""Image registries: where the images a stack builds are kept, named, logged in to, and judged private.

- :func:`registry_ref` names an image a stack builds inside a registry: the repository is the image's
  last path component (``ohif-ai-monai-label``; stand-ins under ``gpuprov-standin/``), the tag the
  commit (``179fe0ddc4e6``) and, when files were built in, ``-in-`` and the hash of those files.
  ``gpuprov build`` pushes under it; deploy pulls it. Both derive it from the same label, so a pull
  can only find an image made of the same commit and the same files.
- :func:`login_for` is the credentials seam, as data: ECR through boto3 ``get_authorization_token``,
  Artifact Registry / GCR through google-auth, any other registry from ``GPUPROV_REGISTRY_USER`` /
  ``GPUPROV_REGISTRY_PASSWORD``; None means Docker's own config (``docker login``, credential helpers).
- :func:`anonymous_pull` asks the registry, with no credentials, whether anyone may pull from it.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field

import requests

from gpuprov.infra.errors import GpuprovError

ECR_HOST = re.compile(r"(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")
GOOGLE_HOST = re.compile(r"(?:[a-z0-9-]+-docker\.pkg\.dev|(?:[a-z]+\.)?gcr\.io)")
ENV_USER, ENV_PASSWORD = "GPUPROV_REGISTRY_USER", "GPUPROV_REGISTRY_PASSWORD"


class RegistryError(GpuprovError):
    """A registry gpuprov cannot log in to, push to or judge; the message says what to do."""

    exit_code = 6


class PublicRegistry(GpuprovError):
    """An image holding files the user supplied (the gated sam3.pt) would go where anyone can pull it."""

    exit_code = 2


@dataclass(frozen=True)
class Login:
    """Credentials for one registry host. The password never reaches argv, a log or a repr."""

    host: str
    username: str
    password: str = field(repr=False)
    source: str  # where they came from, for messages

    def docker_config(self) -> dict[str, object]:
        """A Docker client config holding only this login (written 0600 to a throwaway DOCKER_CONFIG)."""
        auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"auths": {self.host: {"auth": auth}}}


def host_of(registry: str) -> str:
    return registry.split("/", 1)[0]


def insecure(host: str) -> bool:
    """Plain HTTP as Docker allows it without TLS: loopback (Docker's default) or an IP literal we were given."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _repo_name(image: str, standin: bool) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    last = last.split(":", 1)[0]
    return f"gpuprov-standin/{last}" if standin else last


def content_tag(ref: str, inputs: dict[str, str]) -> str:
    """The tag of an image built from ``ref`` (a commit, or a stand-in label hash) with ``inputs`` (name -> SHA-256)."""
    tag = ref[:12]
    if inputs:
        digest = hashlib.sha256(json.dumps(sorted(inputs.items())).encode()).hexdigest()[:12]
        tag += f"-in-{digest}"
    return tag


def registry_ref(registry: str, image: str, ref: str, inputs: dict[str, str] | None = None,
                 standin: bool = False) -> str:
    """``<registry>/<repo>:<tag>`` of an image a stack builds (see the module's doc)."""
    return f"{registry.rstrip('/')}/{_repo_name(image, standin)}:{content_tag(ref, inputs or {})}"


# --- credentials -----------------------------------------------------------------------------------


def _ecr_login(host: str, region: str, account: str) -> Login:
    import boto3
    import botocore.exceptions

    try:
        answer = boto3.client("ecr", region_name=region).get_authorization_token(registryIds=[account])
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise RegistryError(f"ECR refused an authorization token for {host} ({e}); check your AWS credentials "
                            "(AWS_PROFILE / aws configure) and ecr:GetAuthorizationToken") from None
    data = answer["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return Login(host, user, password, "ECR (boto3 get_authorization_token)")


def _google_login(host: str) -> Login:
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    try:
        creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        creds.refresh(google.auth.transport.requests.Request())
    except google.auth.exceptions.GoogleAuthError as e:
        raise RegistryError(f"no Google credentials for {host} ({e}); run `gcloud auth application-default login` "
                            "or set GOOGLE_APPLICATION_CREDENTIALS") from None
    return Login(host, "oauth2accesstoken", str(creds.token), "google-auth (application default credentials)")


def login_for(registry: str, env: dict[str, str] | None = None) -> Login | None:
    """Credentials for ``registry``; None: leave it to Docker's own config and credential helpers."""
    env = dict(os.environ) if env is None else env
    host = host_of(registry)
    if env.get(ENV_USER) and env.get(ENV_PASSWORD):
        return Login(host, env[ENV_USER], env[ENV_PASSWORD], f"{ENV_USER} / {ENV_PASSWORD}")
    if m := ECR_HOST.fullmatch(host):
        return _ecr_login(host, m["region"], m["account"])
    if GOOGLE_HOST.fullmatch(host):
        return _google_login(host)
    return None


# --- who may pull ----------------------------------------------------------------------------------


def anonymous_pull(registry: str, repository: str, timeout_s: float = 10.0) -> bool:
    """True when the registry lets anyone pull ``repository`` (``/v2/`` answers 200 without credentials,
    or its token service hands an anonymous pull token that its API accepts)."""
    host = host_of(registry)
    path = registry[len(host):].strip("/")
    repo = f"{path}/{repository}" if path else repository
    base = f"{'http' if insecure(host) else 'https'}://{host}/v2"
    try:
        r = requests.get(f"{base}/", timeout=timeout_s)
        if r.status_code == 200:
            return True
        challenge = r.headers.get("WWW-Authenticate", "")
        if r.status_code != 401 or not challenge.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in params:
            return False
        token = requests.get(params["realm"], timeout=timeout_s,
                             params={"service": params.get("service", ""), "scope": f"repository:{repo}:pull"})
        value = token.json().get("token") or token.json().get("access_token") if token.ok else None
        if not value:
            return False
        tags = requests.get(f"{base}/{repo}/tags/list", headers={"Authorization": f"Bearer {value}"},
                            timeout=timeout_s)
        return tags.status_code == 200
    except (requests.RequestException, ValueError) as e:
        raise RegistryError(f"could not ask {host} whether it allows anonymous pulls ({e}); check the registry "
                            "address and that this machine reaches it") from None
