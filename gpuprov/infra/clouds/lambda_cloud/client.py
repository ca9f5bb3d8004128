"""A typed client for the Lambda Cloud API (``/api/v1``), built from its OpenAPI document 1.8.3.

Requests and answers follow the document exactly: Bearer auth, ``{"data": ...}``
success bodies, ``{"error": {"code", ...}}`` errors turned into the types of
:mod:`gpuprov.infra.clouds.lambda_cloud.errors`. The client keeps to Lambda's rate limits (about
one request a second, one launch every 12 seconds), shared by every client in
the process that talks to the same URL, and backs off on 429, 5xx and
``provider/*`` answers. A launch is never repeated here: the caller
(:mod:`gpuprov.infra.clouds.lambda_cloud.launch`) first looks for the instance by its unique name.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import datetime
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from gpuprov.infra.clouds.lambda_cloud.errors import (
    LambdaApiError,
    LambdaError,
    LambdaUnreachable,
    RateLimited,
    error_for,
)
from gpuprov.infra.settings import LAMBDA_DEFAULT_URL, Settings

DEFAULT_URL = LAMBDA_DEFAULT_URL
USER_AGENT = "gpuprov-lambda/1"


class InstanceType(BaseModel):
    """One instance type, its price and the regions that have capacity right now."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    gpu_description: str
    price_cents_per_hour: int
    vcpus: int
    memory_gib: int
    storage_gib: int
    gpus: int
    regions_with_capacity: tuple[str, ...] = ()

    @property
    def usd_hour(self) -> float:
        return self.price_cents_per_hour / 100

    @property
    def gpu_model(self) -> str:
        """``A10`` from ``A10 (24 GB PCIe)``."""
        return self.gpu_description.split("(")[0].strip()

    @property
    def gpu_memory_gb(self) -> int | None:
        """GPU memory per GPU in GB, read from the description (``"A10 (24 GB PCIe)"`` -> 24)."""
        m = re.search(r"(\d+)\s*GB", self.gpu_description)
        return int(m.group(1)) if m else None


class Instance(BaseModel):
    """One instance as the API reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None = None
    status: str
    ip: str | None = None
    region: str
    instance_type: str
    price_cents_per_hour: int | None = None
    gpu_description: str | None = None
    gpus: int = 0
    hostname: str | None = None
    ssh_key_names: tuple[str, ...] = ()
    firewall_ruleset_ids: tuple[str, ...] = ()
    tags: dict[str, str] = {}


class SshKey(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    public_key: str
    private_key: str | None = None  # only when Lambda generated the pair


class FirewallRule(BaseModel):
    """An inbound rule. ``port_range`` is inclusive ``(min, max)``; None for icmp."""

    model_config = ConfigDict(frozen=True)

    protocol: str
    source_network: str
    description: str = ""
    port_range: tuple[int, int] | None = None

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {"protocol": self.protocol, "source_network": self.source_network,
                                "description": self.description}
        if self.port_range is not None:
            body["port_range"] = list(self.port_range)
        return body


class FirewallRuleset(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    region: str
    rules: tuple[FirewallRule, ...]
    instance_ids: tuple[str, ...] = ()
    created: datetime | None = None  # ISO 8601 in the API


class Filesystem(BaseModel):
    """A persistent filesystem (``/api/v1/file-systems``): lives in one region, mounted at ``mount_point``."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    region: str
    mount_point: str
    is_in_use: bool = False
    bytes_used: int | None = None
    created: datetime | None = None


def _filesystem(raw: dict[str, Any]) -> Filesystem:
    return Filesystem(id=raw["id"], name=raw["name"], region=(raw.get("region") or {}).get("name", ""),
                      mount_point=raw.get("mount_point", ""), is_in_use=bool(raw.get("is_in_use")),
                      bytes_used=raw.get("bytes_used"), created=raw.get("created"))


class Image(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    family: str
    version: str
    architecture: str
    region: str


def _instance(raw: dict[str, Any]) -> Instance:
    itype = raw.get("instance_type") or {}
    specs = itype.get("specs") or {}
    return Instance(
        id=raw["id"], name=raw.get("name"), status=raw["status"], ip=raw.get("ip"),
        region=(raw.get("region") or {}).get("name", ""), instance_type=itype.get("name", ""),
        price_cents_per_hour=itype.get("price_cents_per_hour"), gpu_description=itype.get("gpu_description"),
        gpus=int(specs.get("gpus") or 0), hostname=raw.get("hostname"),
        ssh_key_names=tuple(raw.get("ssh_key_names") or ()),
        firewall_ruleset_ids=tuple(r["id"] for r in raw.get("firewall_rulesets") or ()),
        tags={t["key"]: t["value"] for t in raw.get("tags") or ()},
    )


def _ruleset(raw: dict[str, Any]) -> FirewallRuleset:
    return FirewallRuleset(
        id=raw["id"], name=raw["name"], region=raw["region"]["name"],
        rules=tuple(FirewallRule(protocol=r["protocol"], source_network=r["source_network"],
                                 description=r.get("description", ""),
                                 port_range=tuple(r["port_range"]) if r.get("port_range") else None)
                    for r in raw.get("rules") or ()),
        instance_ids=tuple(raw.get("instance_ids") or ()),
        created=raw.get("created"),
    )


class RateLimiter:
    """Spaces requests out: at least ``interval_s`` between two starts. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self, interval_s: float) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + interval_s
        if start > now:
            time.sleep(start - now)

    def push_back(self, seconds: float) -> None:
        """Nobody starts a request for ``seconds`` (after a 429)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


# One pair of limiters per API URL, shared by every client in the process, because
# Lambda counts requests per account, not per client object.
_LIMITERS: dict[str, tuple[RateLimiter, RateLimiter]] = {}
_LIMITERS_LOCK = threading.Lock()


def _limiters(base_url: str) -> tuple[RateLimiter, RateLimiter]:
    with _LIMITERS_LOCK:
        return _LIMITERS.setdefault(base_url, (RateLimiter(), RateLimiter()))


def _retryable(err: BaseException) -> bool:
    return bool(getattr(err, "retryable", False))


class LambdaCloud:
    """The Lambda Cloud API.

    ``api_key`` defaults to ``LAMBDA_API_KEY`` (a credential, from the environment only).
    ``settings`` give the API's URL (``LAMBDA_API_URL``) and the rate scale
    (``GPUPROV_LAMBDA_RATE_SCALE``), read from the environment when not given; ``base_url``
    overrides the URL. ``min_interval_s`` and ``launch_interval_s`` are Lambda's documented
    limits; the rate scale multiplies them (and the back-off) so tests against the stand-in
    run fast. ``retry_for_s`` bounds how long one call keeps retrying 429/5xx/``provider/*``.
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 settings: Settings | None = None,
                 min_interval_s: float = 1.0, launch_interval_s: float = 12.0,
                 retry_for_s: float = 300.0, max_attempts: int = 30,
                 timeout_s: tuple[float, float] = (10.0, 60.0)):
        key = api_key or os.environ.get("LAMBDA_API_KEY")
        if not key:
            raise LambdaError(
                "no Lambda API key: set LAMBDA_API_KEY (create one at https://cloud.lambda.ai/api-keys), "
                "or try the flow with the stand-in: `gpuprov sandbox lambda-api` and LAMBDA_API_URL"
            )
        settings = settings or Settings.from_env()
        self.base_url = (base_url or settings.lambda_api_url).rstrip("/")
        scale = settings.lambda_rate_scale
        self.min_interval_s = min_interval_s * scale
        self.launch_interval_s = launch_interval_s * scale
        self.backoff_scale = scale
        self.retry_for_s = retry_for_s
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self._limit, self._launch_limit = _limiters(self.base_url)
        self.session = requests.Session()
        # The key lives in the session's headers only: never in a URL, a log line or an exception.
        self.session.headers.update({"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT,
                                     "Accept": "application/json"})

    def __repr__(self) -> str:
        return f"LambdaCloud(base_url={self.base_url!r})"

    # --- transport -------------------------------------------------------------------

    def _send_once(self, method: str, path: str, body: Any = None, launch: bool = False) -> Any:
        if launch:
            self._launch_limit.wait(self.launch_interval_s)
        self._limit.wait(self.min_interval_s)
        url = f"{self.base_url}/api/v1/{path}"
        try:
            resp = self.session.request(method, url, json=body, timeout=self.timeout_s)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise LambdaUnreachable(f"Lambda API {method} /api/v1/{path}: no answer ({type(err).__name__}); "
                                    f"check the network and LAMBDA_API_URL ({self.base_url})") from None
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        if resp.status_code >= 400 or not isinstance(payload, dict) or "data" not in payload:
            status = resp.status_code if resp.status_code >= 400 else 502
            error = error_for(status, payload, f"{method} /api/v1/{path}", resp.headers.get("Retry-After"))
            if isinstance(error, RateLimited):
                pause = error.retry_after_s if error.retry_after_s is not None else 2.0
                self._limit.push_back(pause * self.backoff_scale)
            raise error
        return payload["data"]

    def _call(self, method: str, path: str, body: Any = None, *, retry: bool = True, launch: bool = False) -> Any:
        """One API call; retried with jittered exponential back-off on retryable errors when ``retry``."""
        if not retry:
            return self._send_once(method, path, body, launch)
        scale = max(self.backoff_scale, 0.001)
        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            wait=wait_exponential_jitter(multiplier=1.0 * scale, max=30.0 * scale, jitter=1.0 * scale),
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.retry_for_s),
            reraise=True,
        )
        return retrying(self._send_once, method, path, body, launch)

    # --- instance types, images --------------------------------------------------------

    def instance_types(self) -> list[InstanceType]:
        """Every instance type with its price and the regions that have capacity now, cheapest first."""
        data = self._call("GET", "instance-types")
        out = []
        for item in data.values():
            t, specs = item["instance_type"], item["instance_type"]["specs"]
            out.append(InstanceType(
                name=t["name"], description=t["description"], gpu_description=t["gpu_description"],
                price_cents_per_hour=t["price_cents_per_hour"], vcpus=specs["vcpus"], memory_gib=specs["memory_gib"],
                storage_gib=specs["storage_gib"], gpus=specs["gpus"],
                regions_with_capacity=tuple(r["name"] for r in item["regions_with_capacity_available"]),
            ))
        return sorted(out, key=lambda t: (t.price_cents_per_hour, t.name))

    def list_images(self) -> list[Image]:
        return [Image(id=i["id"], name=i["name"], family=i["family"], version=i["version"],
                      architecture=i["architecture"], region=i["region"]["name"])
                for i in self._call("GET", "images")]

    # --- instances ---------------------------------------------------------------------

    def launch(self, region: str, instance_type: str, ssh_key_name: str, *, name: str,
               tags: dict[str, str] | None = None, firewall_ruleset_ids: list[str] | None = None,
               image_family: str | None = None, image_id: str | None = None, hostname: str | None = None,
               user_data: str | None = None, file_system_names: list[str] | None = None) -> str:
        """Launch one instance and return its id. Sent once, never retried here: on any error the
        caller must look for ``name`` before launching again (see :mod:`gpuprov.infra.clouds.lambda_cloud.launch`)."""
        body: dict[str, Any] = {"region_name": region, "instance_type_name": instance_type,
                                "ssh_key_names": [ssh_key_name], "name": name}
        if tags:
            body["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        if firewall_ruleset_ids:
            body["firewall_rulesets"] = [{"id": i} for i in firewall_ruleset_ids]
        if image_id:
            body["image"] = {"id": image_id}
        elif image_family:
            body["image"] = {"family": image_family}
        if hostname:
            body["hostname"] = hostname
        if file_system_names:
            body["file_system_names"] = list(file_system_names)
        if user_data is not None:
            body["user_data"] = user_data
        data = self._call("POST", "instance-operations/launch", body, retry=False, launch=True)
        ids = data["instance_ids"]
        if len(ids) != 1:
            raise LambdaApiError(f"expected one instance id, got {ids!r}", path="POST instance-operations/launch")
        return str(ids[0])

    def get_instance(self, instance_id: str) -> Instance:
        return _instance(self._call("GET", f"instances/{instance_id}"))

    def list_instances(self) -> list[Instance]:
        return [_instance(i) for i in self._call("GET", "instances")]

    def find_instance_by_name(self, name: str) -> Instance | None:
        """The instance called ``name`` that is not terminated, if any (names gpuprov gives are unique)."""
        found = [i for i in self.list_instances() if i.name == name and i.status != "terminated"]
        return found[0] if found else None

    def rename_instance(self, instance_id: str, name: str) -> Instance:
        return _instance(self._call("POST", f"instances/{instance_id}", {"name": name}))

    def terminate(self, ids: list[str]) -> list[Instance]:
        """Ask Lambda to terminate ``ids`` (idempotent: retried on transient errors)."""
        data = self._call("POST", "instance-operations/terminate", {"instance_ids": list(ids)})
        return [_instance(i) for i in data["terminated_instances"]]

    def restart(self, ids: list[str]) -> list[Instance]:
        data = self._call("POST", "instance-operations/restart", {"instance_ids": list(ids)})
        return [_instance(i) for i in data["restarted_instances"]]

    # --- SSH keys ------------------------------------------------------------------------

    def list_ssh_keys(self) -> list[SshKey]:
        return [SshKey(id=k["id"], name=k["name"], public_key=k["public_key"]) for k in self._call("GET", "ssh-keys")]

    def add_ssh_key(self, name: str, public_key: str) -> SshKey:
        k = self._call("POST", "ssh-keys", {"name": name, "public_key": public_key})
        return SshKey(id=k["id"], name=k["name"], public_key=k["public_key"], private_key=k.get("private_key"))

    def delete_ssh_key(self, key_id: str) -> None:
        self._call("DELETE", f"ssh-keys/{key_id}")

    # --- firewall rulesets -------------------------------------------------------------------

    def list_firewall_rulesets(self) -> list[FirewallRuleset]:
        return [_ruleset(r) for r in self._call("GET", "firewall-rulesets")]

    def get_firewall_ruleset(self, ruleset_id: str) -> FirewallRuleset:
        return _ruleset(self._call("GET", f"firewall-rulesets/{ruleset_id}"))

    def global_firewall_rules(self) -> list[FirewallRule]:
        """The account's global rules (``GET /firewall-rulesets/global``), which every instance has too."""
        return list(_ruleset({**self._call("GET", "firewall-rulesets/global"), "region": {"name": ""}}).rules)

    def create_firewall_ruleset(self, name: str, region: str, rules: list[FirewallRule]) -> FirewallRuleset:
        body = {"name": name, "region": region, "rules": [r.to_api() for r in rules]}
        return _ruleset(self._call("POST", "firewall-rulesets", body))

    def update_firewall_ruleset(self, ruleset_id: str, *, name: str | None = None,
                                rules: list[FirewallRule] | None = None) -> FirewallRuleset:
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if rules is not None:
            body["rules"] = [r.to_api() for r in rules]
        return _ruleset(self._call("PATCH", f"firewall-rulesets/{ruleset_id}", body))

    def delete_firewall_ruleset(self, ruleset_id: str) -> None:
        self._call("DELETE", f"firewall-rulesets/{ruleset_id}")

    # --- filesystems -------------------------------------------------------------------------

    def list_filesystems(self) -> list[Filesystem]:
        return [_filesystem(f) for f in self._call("GET", "file-systems")]

    def create_filesystem(self, name: str, region: str) -> Filesystem:
        return _filesystem(self._call("POST", "filesystems", {"name": name, "region": region}))

    def delete_filesystem(self, filesystem_id: str) -> None:
        self._call("DELETE", f"filesystems/{filesystem_id}")
