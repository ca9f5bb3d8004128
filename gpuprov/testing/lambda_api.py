"""A stateful STAND-IN of the Lambda Cloud API, for tests and for trying the Lambda flow with no account.

It is not Lambda: it answers the paths, fields and error codes of Lambda's
OpenAPI document 1.8.3 (https://docs.lambda.ai/api/cloud) from memory, so gpuprov's client,
providers, reaper and fault suite can run for real against it. Instances go
``booting`` -> ``active`` (with ``instance_ip``, which can be the local sandbox
host's address so launch -> SSH -> terminate really happens) -> ``terminating``
-> ``terminated`` after configurable delays.

Faults are injected from Python (:meth:`LambdaStandIn.add_fault`) or over HTTP,
outside ``/api/v1`` (``POST /_standin/faults``), because the fault suite drives
a stand-in in another process. Every request is recorded (method, path, body,
time, status, answer) for rate-limit and OpenAPI checks (``GET /_standin/requests``).

Run it: ``gpuprov sandbox lambda-api --port 8765`` then
``LAMBDA_API_URL=http://127.0.0.1:8765 LAMBDA_API_KEY=anything gpuprov up --cloud lambda``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REGIONS = {
    "us-east-1": "Virginia, USA", "us-west-1": "California, USA", "us-south-1": "Texas, USA",
    "us-west-2": "Arizona, USA", "europe-central-1": "Germany", "asia-northeast-1": "Tokyo, Japan",
}

# (name, description, gpu_description, cents/hour, vcpus, memory_gib, storage_gib, gpus, regions with capacity)
DEFAULT_TYPES: tuple[tuple[str, str, str, int, int, int, int, int, tuple[str, ...]], ...] = (
    ("gpu_1x_a10", "1x A10 (24 GB PCIe)", "A10 (24 GB PCIe)", 75, 30, 200, 1400, 1,
     ("us-east-1", "us-west-1", "us-south-1")),
    ("gpu_1x_a6000", "1x RTX A6000 (48 GB)", "RTX A6000 (48 GB)", 80, 14, 100, 512, 1, ("us-west-1",)),
    ("gpu_1x_a100_sxm4", "1x A100 (40 GB SXM4)", "A100 (40 GB SXM4)", 129, 30, 200, 512, 1,
     ("us-east-1", "us-west-2")),
    ("gpu_1x_h100_pcie", "1x H100 (80 GB PCIe)", "H100 (80 GB PCIe)", 249, 26, 200, 1024, 1, ("us-west-2",)),
)

IMAGES = (("lambda-stack-22-04", "Lambda Stack 22.04", "lambda-stack-22-04", "22.04"),
          ("ubuntu-22-04", "Ubuntu 22.04 LTS", "ubuntu-22-04", "22.04.5"))

FAULT_KINDS = ("capacity", "status", "delay", "drop_after_launch", "unhealthy", "quota", "impostor")
USER_DATA_MAX = 1024 * 1024  # OpenAPI 1.8.3, InstanceLaunchRequest.user_data: "cannot exceed 1MB"
TAG_KEY = re.compile(r"^[a-z][a-z0-9-:]+$")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _region(name: str) -> dict[str, str]:
    return {"name": name, "description": REGIONS.get(name, name)}


@dataclass
class Fault:
    """One injected fault. ``count`` None: until cleared.

    kinds: ``capacity`` (launch of ``instance_type`` in ``region`` answers insufficient
    capacity; either may be None for any), ``quota`` (launch answers quota exceeded),
    ``status`` (``method``/``path`` regex answer HTTP ``status`` with error ``code``),
    ``delay`` (wait ``seconds`` before answering), ``drop_after_launch`` (the launch is
    accepted, then the connection is closed with no answer), ``unhealthy`` (the next
    launched instance goes ``unhealthy`` instead of ``active``), ``impostor`` (someone else
    answers at the next launched instance's address: the box presents a host key of its own,
    not the one the launch's user data installs).
    """

    kind: str
    count: int | None = None
    region: str | None = None
    instance_type: str | None = None
    method: str | None = None
    path: str | None = None
    status: int = 503
    code: str | None = None
    seconds: float = 0.0
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return not self.path or re.search(self.path, path) is not None


@dataclass
class RecordedRequest:
    """One request the stand-in received and what it answered (``status`` None: connection dropped)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int | None = None
    answer: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "query": self.query, "at": self.at, "status": self.status,
                "headers": {k: v for k, v in self.headers.items() if k.lower() != "authorization"},
                "authorization_scheme": self.headers.get("Authorization", "").split(" ")[0],
                "body": base64.b64encode(self.body).decode(), "answer": base64.b64encode(self.answer).decode()}


@dataclass
class _Instance:
    id: str
    name: str
    region: str
    type_name: str
    ssh_key_names: list[str]
    tags: list[dict[str, str]]
    firewall_ruleset_ids: list[str]
    hostname: str | None
    launched_at: float
    goes_unhealthy: bool = False
    user_data: str | None = None
    terminate_at: float | None = None
    renamed: str | None = None
    file_system_names: list[str] = field(default_factory=list)


FILESYSTEM_NAME = re.compile(r"^[a-zA-Z]+[0-9a-zA-Z-]*$")  # FilesystemCreateRequest.name, 1 to 60 characters


class _Drop(Exception):
    """Close the connection without an answer."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, suggestion: str | None = None):
        self.status, self.code, self.message, self.suggestion = status, code, message, suggestion
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        err = {"code": self.code, "message": self.message}
        if self.suggestion is not None:
            err["suggestion"] = self.suggestion
        return {"error": err}


# The global ruleset of a new Lambda account: SSH and ICMP from anywhere. gpuprov refuses a host whose SSH is open
# wider than its allow-list, so an account used with gpuprov has the SSH rule removed (README): CLOSED_GLOBAL_RULES.
NEW_ACCOUNT_GLOBAL_RULES: tuple[dict[str, Any], ...] = (
    {"protocol": "tcp", "port_range": [22, 22], "source_network": "0.0.0.0/0", "description": "SSH"},
    {"protocol": "icmp", "source_network": "0.0.0.0/0", "description": "ICMP"})
CLOSED_GLOBAL_RULES: tuple[dict[str, Any], ...] = NEW_ACCOUNT_GLOBAL_RULES[1:]


def _cloud_config_host_key(user_data: str | None) -> tuple[str, str] | None:
    """(private, public) ed25519 host key of a ``#cloud-config`` user data's ``ssh_keys``, as cloud-init's cc_ssh
    module reads them; None when it carries none."""
    import yaml

    if not user_data or not user_data.startswith("#cloud-config"):
        return None
    try:
        config = yaml.safe_load(user_data)
    except yaml.YAMLError:
        return None  # cloud-init ignores a cloud-config it cannot parse
    keys = config.get("ssh_keys") if isinstance(config, dict) else None
    if not isinstance(keys, dict) or not keys.get("ed25519_private") or not keys.get("ed25519_public"):
        return None
    return str(keys["ed25519_private"]), str(keys["ed25519_public"])


def _not_found(what: str) -> ApiError:
    return ApiError(404, "global/object-does-not-exist", f"Specified {what} does not exist.",
                    f"Check the {what} ID and try again.")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "global/invalid-parameters", message, "Fix the request and try again.")


@dataclass
class _State:
    types: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, _Instance] = field(default_factory=dict)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    rulesets: dict[str, dict[str, Any]] = field(default_factory=dict)
    filesystems: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The account's global ruleset as a new Lambda account has it: SSH and ICMP from anywhere.
    global_rules: list[dict[str, Any]] = field(default_factory=lambda: [dict(r) for r in NEW_ACCOUNT_GLOBAL_RULES])
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)


class LambdaStandIn:
    """The stand-in Lambda API server (stdlib ``ThreadingHTTPServer``: concurrent requests).

    ``api_key``: the key it accepts (None: any non-empty key). ``boot_seconds`` /
    ``terminate_seconds``: how long instances stay ``booting`` / ``terminating``.
    ``terminated_linger_seconds``: how long a terminated instance is still listed.
    ``box``: a local sandbox host (:class:`~gpuprov.infra.clouds.local.sandbox.LocalSandbox`, made with
    ``login_user="ubuntu"`` as on Lambda's image) that *is* every instance: instances report its address,
    and the public key a launch names may log in to it while the instance lives, as on a real Lambda host.
    Without a box, instances report ``instance_ip`` and nobody can log in.
    """

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", instance_ip: str = "127.0.0.1",
                 boot_seconds: float = 1.0, terminate_seconds: float = 0.5, terminated_linger_seconds: float = 60.0,
                 api_key: str | None = None, box: Any = None):
        self.box: Any = None
        self._box_keys: set[str] = set()
        self._elsewhere: tuple[str, ...] = ()  # instance name prefixes that are other machines, not the box
        self.port, self.host, self.instance_ip = port, host, instance_ip
        self.boot_seconds, self.terminate_seconds = boot_seconds, terminate_seconds
        self.terminated_linger_seconds = terminated_linger_seconds
        self.api_key = api_key
        self._lock = threading.RLock()
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()
        if box is not None:
            self.attach(box)

    def place_elsewhere(self, name_prefix: str) -> None:
        """Instances named ``name_prefix...`` are other machines in the same account (a colleague's hosts):
        the box neither lets their keys in nor counts them when it decides whether its last instance is gone."""
        with self._lock:
            self._elsewhere += (name_prefix,)

    def attach(self, box: Any) -> None:
        """Make every instance the running sandbox ``box`` (see the class docstring)."""
        running = box.host()
        if running is None:
            raise ValueError(f"the sandbox {box.name!r} is not running; create() it first")
        with self._lock:
            self.box, self.instance_ip = box, running.address
            self._sync_box()

    # --- life -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def _bind(self) -> ThreadingHTTPServer:
        self._server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        self._server.daemon_threads = True
        return self._server

    def start(self) -> LambdaStandIn:
        """Listen and serve in a background thread; returns self."""
        self._bind()
        assert self._server is not None
        self._thread = threading.Thread(target=self._server.serve_forever, name="lambda-standin", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the CLI uses this)."""
        server = self._bind()
        try:
            server.serve_forever()
        finally:
            server.server_close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LambdaStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control (Python; the same operations exist over HTTP under /_standin) ---------

    def reset(self) -> None:
        """Forget everything: instances, keys, rulesets, faults, recorded requests; default types."""
        with self._lock:
            self._state = _State()
            for name, desc, gpu, cents, vcpus, mem, disk, gpus, regions in DEFAULT_TYPES:
                self.set_type(name, desc, gpu, cents, vcpus, mem, disk, gpus, list(regions))
            self._sync_box()

    def set_type(self, name: str, description: str, gpu_description: str, price_cents_per_hour: int,
                 vcpus: int, memory_gib: int, storage_gib: int, gpus: int, regions: list[str]) -> None:
        """Add or replace an instance type and the regions listed with capacity for it."""
        with self._lock:
            self._state.types[name] = {
                "instance_type": {"name": name, "description": description, "gpu_description": gpu_description,
                                  "price_cents_per_hour": price_cents_per_hour,
                                  "specs": {"vcpus": vcpus, "memory_gib": memory_gib, "storage_gib": storage_gib,
                                            "gpus": gpus}},
                "regions": list(regions),
            }

    def set_capacity(self, instance_type: str, regions: list[str]) -> None:
        """Change the regions ``GET /instance-types`` lists as having capacity for ``instance_type``."""
        with self._lock:
            self._state.types[instance_type]["regions"] = list(regions)

    def set_global_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the account's global firewall rules (the dashboard's Global rules)."""
        with self._lock:
            self._state.global_rules = [dict(r) for r in rules]

    def add_fault(self, kind: str, **kw: Any) -> Fault:
        """Inject a fault (see :class:`Fault`)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        fault = Fault(kind=kind, **kw)
        with self._lock:
            self._state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._state.faults.clear()

    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (admin requests under /_standin excluded)."""
        with self._lock:
            return list(self._state.requests)

    def instances(self, include_terminated: bool = True) -> list[dict[str, Any]]:
        """Every instance as the API would show it."""
        with self._lock:
            shown = [self._instance_json(i) for i in self._state.instances.values()]
        return [i for i in shown if include_terminated or i["status"] != "terminated"]

    def ssh_keys(self) -> list[dict[str, str]]:
        with self._lock:
            return [dict(k) for k in self._state.keys.values()]

    def rulesets(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._ruleset_json(r) for r in self._state.rulesets.values()]

    def leftovers(self) -> dict[str, list[str]]:
        """What still exists (and would bill or stay open): live instances, keys, rulesets."""
        return {"instances": [i["id"] for i in self.instances(include_terminated=False)],
                "ssh_keys": [k["name"] for k in self.ssh_keys()],
                "firewall_rulesets": [r["name"] for r in self.rulesets()]}

    # --- the model ------------------------------------------------------------------

    def _status(self, inst: _Instance, now: float) -> str:
        if inst.terminate_at is not None:
            return "terminated" if now >= inst.terminate_at + self.terminate_seconds else "terminating"
        if now < inst.launched_at + self.boot_seconds:
            return "booting"
        return "unhealthy" if inst.goes_unhealthy else "active"

    def _instance_json(self, inst: _Instance) -> dict[str, Any]:
        status = self._status(inst, time.time())
        t = self._state.types[inst.type_name]["instance_type"]
        terminating = status in ("terminating", "terminated")
        booting = status == "booting"

        def action(ok: bool, reason: str) -> dict[str, Any]:
            return {"available": True} if ok else {"available": False, "reason_code": reason,
                                                   "reason_description": f"The instance is {status}."}

        reason = "vm-is-terminating" if terminating else "vm-has-not-launched"
        body: dict[str, Any] = {
            "id": inst.id, "name": inst.renamed if inst.renamed is not None else inst.name, "status": status,
            "ssh_key_names": list(inst.ssh_key_names), "file_system_names": list(inst.file_system_names),
            "region": _region(inst.region),
            "instance_type": t, "tags": list(inst.tags),
            "firewall_rulesets": [{"id": r} for r in inst.firewall_ruleset_ids],
            "actions": {k: action(not (terminating or booting), reason)
                        for k in ("migrate", "rebuild", "restart", "cold_reboot")}
            | {"terminate": action(not terminating, "vm-is-terminating")},
        }
        if inst.file_system_names:
            body["file_system_mounts"] = [{"mount_point": f"/lambda/nfs/{n}", "file_system_id": self._fs_id(n)}
                                          for n in inst.file_system_names]
        if status != "booting":
            body["ip"] = self.instance_ip
            body["private_ip"] = "10.0.2.100"
            body["hostname"] = inst.hostname or "ip-" + self.instance_ip.replace(".", "-")
        return body

    def _ruleset_json(self, rs: dict[str, Any]) -> dict[str, Any]:
        live = [i.id for i in self._state.instances.values()
                if rs["id"] in i.firewall_ruleset_ids and self._status(i, time.time()) != "terminated"]
        return {"id": rs["id"], "name": rs["name"], "region": _region(rs["region"]), "rules": rs["rules"],
                "created": rs["created"], "instance_ids": live}

    def _fs_id(self, name: str) -> str:
        return next((f["id"] for f in self._state.filesystems.values() if f["name"] == name), "")

    def _filesystem_json(self, fs: dict[str, Any]) -> dict[str, Any]:
        in_use = any(fs["name"] in i.file_system_names and self._status(i, time.time()) != "terminated"
                     for i in self._state.instances.values())
        body = {"id": fs["id"], "name": fs["name"], "mount_point": f"/lambda/nfs/{fs['name']}",
                "created": fs["created"], "created_by": {"id": "standin-user", "email": "standin@example.com",
                                                         "status": "active"},
                "is_in_use": in_use, "region": _region(fs["region"])}
        store = self._fs_store(fs["id"])
        if store is not None and store.exists():
            body["bytes_used"] = sum(p.stat().st_size for p in store.rglob("*") if p.is_file() and not p.is_symlink())
        return body

    def _fs_store(self, fs_id: str) -> Any:
        """Where a filesystem's files live when a box is attached: beside the box's host root, so a wipe (a new
        machine) keeps them, as Lambda's network storage outlives its instances."""
        if self.box is None:
            return None
        return self.box.dir / "filesystems" / fs_id

    def _mount_filesystems(self, inst: _Instance) -> None:
        """The box *is* the instance: its host root gets ``/lambda/nfs/<name>`` pointing at the filesystem."""
        if self.box is None:
            return
        for name in inst.file_system_names:
            store = self._fs_store(self._fs_id(name))
            store.mkdir(parents=True, exist_ok=True)
            mount = self.box.dir / "host" / "lambda" / "nfs" / name
            mount.parent.mkdir(parents=True, exist_ok=True)
            if not mount.is_symlink():
                mount.symlink_to(store, target_is_directory=True)

    def filesystems(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._filesystem_json(f) for f in self._state.filesystems.values()]

    def _take_fault(self, kind: str, pred: Callable[[Fault], bool] = lambda f: True) -> Fault | None:
        for fault in self._state.faults:
            if fault.kind == kind and pred(fault) and (fault.count is None or fault.fired < fault.count):
                fault.fired += 1
                return fault
        return None

    # --- the API --------------------------------------------------------------------

    def handle(self, method: str, path: str, body: Any) -> Any:
        """Answer one /api/v1 request: the ``data`` value, or raise ApiError/_Drop."""
        route = path.removeprefix("/api/v1/").rstrip("/")
        parts = route.split("/")
        with self._lock:
            self._expire_terminated()
            self._sync_box()
            if route == "instance-types" and method == "GET":
                return {n: {"instance_type": t["instance_type"],
                            "regions_with_capacity_available": [_region(r) for r in t["regions"]]}
                        for n, t in self._state.types.items()}
            if route == "instances" and method == "GET":
                return [self._instance_json(i) for i in self._state.instances.values()]
            if parts[0] == "instances" and len(parts) == 2:
                inst = self._state.instances.get(parts[1])
                if inst is None:
                    raise _not_found("instance")
                if method == "POST":
                    if not isinstance(body, dict) or not isinstance(body.get("name", ""), str):
                        raise _invalid("Expected a JSON object with a string name.")
                    if "name" in body:
                        inst.renamed = body["name"]
                return self._instance_json(inst)
            if route == "instance-operations/launch" and method == "POST":
                return self._launch(body)
            if route in ("instance-operations/terminate", "instance-operations/restart") and method == "POST":
                ids = body.get("instance_ids") if isinstance(body, dict) else None
                if not isinstance(ids, list) or not ids:
                    raise _invalid("instance_ids must be a non-empty list.")
                found = []
                for iid in ids:
                    inst = self._state.instances.get(iid)
                    if inst is None or self._status(inst, time.time()) == "terminated":
                        raise _not_found("instance")
                    found.append(inst)
                if route.endswith("terminate"):
                    for inst in found:
                        if inst.terminate_at is None:
                            inst.terminate_at = time.time()
                    return {"terminated_instances": [self._instance_json(i) for i in found]}
                return {"restarted_instances": [self._instance_json(i) for i in found]}
            if route == "file-systems" and method == "GET":
                return [self._filesystem_json(f) for f in self._state.filesystems.values()]
            if route == "filesystems" and method == "POST":
                return self._create_filesystem(body)
            if parts[0] == "filesystems" and len(parts) == 2 and method == "DELETE":
                return self._delete_filesystem(parts[1])
            if route == "ssh-keys" and method == "GET":
                return [dict(k) for k in self._state.keys.values()]
            if route == "ssh-keys" and method == "POST":
                return self._add_key(body)
            if parts[0] == "ssh-keys" and len(parts) == 2 and method == "DELETE":
                if self._state.keys.pop(parts[1], None) is None:
                    raise _invalid("The SSH key does not exist.")
                return {}
            if route == "images" and method == "GET":
                return [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{region}")), "created_time": "2025-01-01T00:00:00Z",
                         "updated_time": "2025-06-01T00:00:00Z", "name": name, "description": desc, "family": family,
                         "version": version, "architecture": "x86_64", "region": _region(region)}
                        for name, desc, family, version in IMAGES for region in REGIONS]
            if route == "firewall-rulesets" and method == "GET":
                return [self._ruleset_json(r) for r in self._state.rulesets.values()]
            if route == "firewall-rulesets" and method == "POST":
                return self._create_ruleset(body)
            if route == "firewall-rulesets/global" and method == "GET":
                return {"id": "global", "name": "Global Firewall Rules", "rules": [dict(r) for r in self._state.global_rules]}
            if parts[0] == "firewall-rulesets" and len(parts) == 2 and parts[1] != "global":
                rs = self._state.rulesets.get(parts[1])
                if rs is None:
                    raise ApiError(404, "global/object-does-not-exist", "Firewall ruleset does not exist.",
                                   "Check your firewall ruleset ID and try again.")
                if method == "GET":
                    return self._ruleset_json(rs)
                if method == "PATCH":
                    if not isinstance(body, dict):
                        raise _invalid("Expected a JSON object.")
                    if "rules" in body:
                        rs["rules"] = self._check_rules(body["rules"])
                    if "name" in body:
                        rs["name"] = str(body["name"])
                    return self._ruleset_json(rs)
                if method == "DELETE":
                    if self._ruleset_json(rs)["instance_ids"]:
                        raise ApiError(400, "firewall-rulesets/firewall-ruleset-in-use",
                                       "Firewall ruleset is in use by one or more instances.",
                                       "Terminate all instances that are using the ruleset before deleting it.")
                    del self._state.rulesets[rs["id"]]
                    return {}
        raise ApiError(404, "global/object-does-not-exist", f"No route {method} {path} in the stand-in.",
                       "This stand-in serves the paths gpuprov uses.")

    def _expire_terminated(self) -> None:
        now = time.time()
        gone = [i.id for i in self._state.instances.values()
                if i.terminate_at is not None
                and now > i.terminate_at + self.terminate_seconds + self.terminated_linger_seconds]
        for iid in gone:
            del self._state.instances[iid]

    def _sync_box(self) -> None:
        """The box lets in exactly the keys of the instances that have not terminated (what Lambda's
        hosts would: each has its launch's key, and a terminated one is gone)."""
        if self.box is None:
            return
        now = time.time()
        by_name = {k["name"]: k["public_key"] for k in self._state.keys.values()}
        wanted = {by_name[n] for i in self._state.instances.values() if self._status(i, now) != "terminated"
                  and not (i.name or "").startswith(self._elsewhere) for n in i.ssh_key_names if n in by_name}
        for key in wanted - self._box_keys:
            self.box.authorize(key)
        for key in self._box_keys - wanted:
            self.box.revoke(key)
        if self._box_keys and not wanted:
            # Its last instance is gone: the next one is a new machine, with nothing of the last one's on it.
            self.box.wipe()
        self._box_keys = wanted

    def _boot_box(self, inst: _Instance, impostor: bool) -> None:
        """What cloud-init does on the instance's first boot, on the box that is the instance: install the host
        key pair its user data's ``ssh_keys`` carry (``ed25519_private``/``ed25519_public``; other user data,
        such as a shell script, is not acted on here). With ``impostor`` the box presents a key of its own."""
        if self.box is None or (inst.name or "").startswith(self._elsewhere):
            return
        if impostor:
            self.box.replace_host_key(None)
            return
        keys = _cloud_config_host_key(inst.user_data)
        if keys is not None:
            self.box.replace_host_key(keys)

    def _launch(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid("Expected a JSON object.")
        region, type_name = body.get("region_name"), body.get("instance_type_name")
        keys = body.get("ssh_key_names")
        if region not in REGIONS:
            raise _invalid(f"Unknown region {region!r}.")
        if type_name not in self._state.types:
            raise ApiError(404, "global/object-does-not-exist", f"Instance type {type_name!r} not found.",
                           "List instance types and pick one.")
        if not isinstance(keys, list) or len(keys) != 1:
            raise _invalid("Exactly one SSH key name must be given.")
        if keys[0] not in {k["name"] for k in self._state.keys.values()}:
            raise ApiError(404, "global/object-does-not-exist", f"SSH key {keys[0]!r} not found.",
                           "Add the SSH key first.")
        name = body.get("name", "")
        if not isinstance(name, str) or len(name) > 64:
            raise _invalid("name must be a string of at most 64 characters.")
        tags = body.get("tags") or []
        for tag in tags:
            if not TAG_KEY.match(str(tag.get("key", ""))) or len(str(tag.get("value", ""))) > 128:
                raise _invalid(f"Invalid tag {tag!r}.")
        ruleset_ids = [r.get("id") for r in body.get("firewall_rulesets") or []]
        for rid in ruleset_ids:
            rs = self._state.rulesets.get(rid)
            if rs is None or rs["region"] != region:
                raise _invalid(f"Firewall ruleset {rid!r} does not exist in {region}.")
        fs_names = body.get("file_system_names") or []
        if not isinstance(fs_names, list) or not all(isinstance(n, str) for n in fs_names):
            raise _invalid("file_system_names must be a list of names.")
        for fs_name in fs_names:
            fs = next((f for f in self._state.filesystems.values() if f["name"] == fs_name), None)
            if fs is None:
                raise ApiError(404, "global/object-does-not-exist", f"Filesystem {fs_name!r} was not found.",
                               "Check the filesystem name and try again.")
            if fs["region"] != region:
                raise ApiError(400, "instance-operations/launch/file-system-in-wrong-region",
                               f"Filesystem {fs_name!r} is in {fs['region']}, not {region}.",
                               "Launch in the filesystem's region.")
        if self._take_fault("quota"):
            raise ApiError(400, "global/quota-exceeded", "Quota exceeded.", "Contact Support to increase your quota.")
        capacity = self._take_fault("capacity", lambda f: f.region in (None, region)
                                    and f.instance_type in (None, type_name))
        if capacity or region not in self._state.types[type_name]["regions"]:
            raise ApiError(400, "instance-operations/launch/insufficient-capacity",
                           "Not enough capacity to fulfill launch request.",
                           "Try a different region or instance type.")
        user_data = body.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or len(user_data.encode()) > USER_DATA_MAX):
            raise _invalid("user_data must be plain text of at most 1MB.")
        inst = _Instance(id=uuid.uuid4().hex, name=name, region=region, type_name=type_name, ssh_key_names=list(keys),
                         tags=[{"key": t["key"], "value": t["value"]} for t in tags], firewall_ruleset_ids=ruleset_ids,
                         hostname=body.get("hostname"), launched_at=time.time(),
                         goes_unhealthy=self._take_fault("unhealthy") is not None, user_data=user_data,
                         file_system_names=list(fs_names))
        self._state.instances[inst.id] = inst
        self._sync_box()
        self._mount_filesystems(inst)
        self._boot_box(inst, impostor=self._take_fault("impostor") is not None)
        if self._take_fault("drop_after_launch"):
            raise _Drop()
        return {"instance_ids": [inst.id]}

    def _add_key(self, body: Any) -> dict[str, str]:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not 1 <= len(body["name"]) <= 64:
            raise _invalid("name must be 1 to 64 characters.")
        if any(k["name"] == body["name"] for k in self._state.keys.values()):
            raise _invalid(f"An SSH key named {body['name']!r} already exists.")
        public = body.get("public_key")
        key = {"id": uuid.uuid4().hex, "name": body["name"]}
        if public is None:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            private = Ed25519PrivateKey.generate()
            key["public_key"] = private.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
            generated = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()).decode()
            self._state.keys[key["id"]] = dict(key)
            return {**key, "private_key": generated}
        if not isinstance(public, str) or not re.match(r"^(ssh-|ecdsa-)\S+ \S+", public):
            raise _invalid("public_key is not an OpenSSH public key.")
        key["public_key"] = public
        self._state.keys[key["id"]] = key
        return dict(key)

    def _create_filesystem(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("region") not in REGIONS:
            raise _invalid("name and a region code are required.")
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 60 or not FILESYSTEM_NAME.match(name):
            raise _invalid("name must be 1 to 60 letters, digits and dashes, starting with a letter.")
        if any(f["name"] == name for f in self._state.filesystems.values()):
            raise _invalid(f"A filesystem named {name!r} already exists.")
        fs = {"id": uuid.uuid4().hex, "name": name, "region": body["region"], "created": _now_iso()}
        self._state.filesystems[fs["id"]] = fs
        return self._filesystem_json(fs)

    def _delete_filesystem(self, fs_id: str) -> dict[str, Any]:
        fs = self._state.filesystems.get(fs_id)
        if fs is None:
            raise ApiError(404, "global/object-does-not-exist", "Filesystem was not found.",
                           "Check the filesystem ID and try again.")
        if self._filesystem_json(fs)["is_in_use"]:
            raise ApiError(400, "filesystems/filesystem-in-use", "Filesystem is in use by one or more instances.",
                           "Terminate the instances that mount it first.")
        del self._state.filesystems[fs_id]
        store = self._fs_store(fs_id)
        if store is not None:
            import shutil

            shutil.rmtree(store, ignore_errors=True)
        return {"deleted_ids": [fs_id]}

    def _check_rules(self, rules: Any) -> list[dict[str, Any]]:
        if not isinstance(rules, list) or len(rules) > 20:
            raise _invalid("rules must be a list of at most 20 rules.")
        for rule in rules:
            if rule.get("protocol") not in ("tcp", "udp", "icmp", "all") or "source_network" not in rule:
                raise _invalid(f"Invalid rule {rule!r}.")
            if rule["protocol"] in ("tcp", "udp") and "port_range" not in rule:
                raise _invalid("port_range is required for tcp and udp.")
        return [dict(r) for r in rules]

    def _create_ruleset(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("region") not in REGIONS or not isinstance(body.get("name"), str):
            raise _invalid("name, region and rules are required.")
        if any(r["name"] == body["name"] and r["region"] == body["region"] for r in self._state.rulesets.values()):
            raise _invalid(f"A firewall ruleset named {body['name']!r} already exists in {body['region']}.")
        rs = {"id": uuid.uuid4().hex, "name": body["name"], "region": body["region"],
              "rules": self._check_rules(body.get("rules")), "created": _now_iso()}
        self._state.rulesets[rs["id"]] = rs
        return self._ruleset_json(rs)

    # --- faults before routing -----------------------------------------------------

    def pre_faults(self, method: str, path: str) -> ApiError | None:
        """Delay and status faults that apply to this request, taken before the API answers."""
        with self._lock:
            delay = self._take_fault("delay", lambda f: f.matches(method, path))
            status = self._take_fault("status", lambda f: f.matches(method, path))
        if delay is not None:
            time.sleep(delay.seconds)
        if status is None:
            return None
        code = status.code or ("rate-limited" if status.status == 429 else "global/internal-error")
        return ApiError(status.status, code, "Injected fault.", "Try again later.")

    def admin(self, method: str, route: str, body: Any) -> tuple[int, Any]:
        """The /_standin control paths (HTTP face of the Python control methods)."""
        if route == "faults" and method == "POST":
            fault = self.add_fault(**body)
            return 200, {"fault": fault.__dict__}
        if route == "faults" and method == "DELETE":
            self.clear_faults()
            return 200, {}
        if route == "faults" and method == "GET":
            with self._lock:
                return 200, {"faults": [f.__dict__ for f in self._state.faults]}
        if route == "capacity" and method == "POST":
            self.set_capacity(body["instance_type"], body["regions"])
            return 200, {}
        if route == "requests" and method == "GET":
            return 200, {"requests": [r.to_json() for r in self.requests()]}
        if route == "state" and method == "GET":
            return 200, {"instances": self.instances(), "ssh_keys": self.ssh_keys(), "firewall_rulesets": self.rulesets(),
                         "filesystems": self.filesystems(),
                         "leftovers": self.leftovers()}
        if route == "reset" and method == "POST":
            self.reset()
            return 200, {}
        return 404, {"error": f"no admin route {method} /_standin/{route}"}


def _handler_for(standin: LambdaStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "lambda-standin/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (stdlib signature)
            return  # requests are recorded, not printed

        def _reply(self, status: int, payload: Any, record: RecordedRequest | None = None,
                   headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            if record is not None:
                record.status, record.answer = status, data
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting (a slow-answer fault): as on the real API

        def _dispatch(self) -> None:
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = ValueError
            if path.startswith("/_standin/"):
                try:
                    status, payload = standin.admin(self.command, path.removeprefix("/_standin/").rstrip("/"), body)
                except (TypeError, ValueError, KeyError) as err:
                    status, payload = 400, {"error": str(err)}
                self._reply(status, payload)
                return
            record = RecordedRequest(method=self.command, path=path, query=query, headers=dict(self.headers.items()),
                                     body=raw, at=time.time())
            with standin._lock:
                standin._state.requests.append(record)
            if not self._authorized():
                self._reply(401, ApiError(401, "global/invalid-api-key", "API key was invalid, expired, or deleted.",
                                          "Check your API key or create a new one, then try again.").body(), record)
                return
            if body is ValueError:
                self._reply(400, _invalid("The body is not valid JSON.").body(), record)
                return
            fault = standin.pre_faults(self.command, path)
            if fault is not None:
                headers = {"Retry-After": "1"} if fault.status == 429 else None
                self._reply(fault.status, fault.body(), record, headers)
                return
            try:
                data = standin.handle(self.command, path, body)
            except ApiError as err:
                self._reply(err.status, err.body(), record)
                return
            except _Drop:
                self.close_connection = True  # accepted, then the line went dead: no answer at all
                return
            self._reply(200, {"data": data}, record)

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            scheme, _, value = auth.partition(" ")
            if scheme == "Basic":
                try:
                    value = base64.b64decode(value).decode().rstrip(":")
                except ValueError:
                    value = value.rstrip(":")
            elif scheme != "Bearer":
                return False
            return bool(value) and (standin.api_key is None or value == standin.api_key)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    return Handler
