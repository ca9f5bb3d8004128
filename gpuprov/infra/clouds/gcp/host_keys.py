"""GCP host keys known before the first connect: read from the instance's guest attributes.

Deep Learning VM images run no cloud-init, so gpuprov cannot install a host key of its own there (as it does on
Lambda and AWS, :mod:`gpuprov.infra.host_keys`). Google's documented way instead: the instance's metadata sets
``enable-guest-attributes: TRUE``, and the guest agent publishes sshd's host keys under the guest attributes
namespace ``hostkeys`` (one key per type: ``ssh-ed25519``, ``ecdsa-sha2-nistp256``, ``ssh-rsa``). gpuprov reads them
through the Compute API (``instances.getGuestAttributes``, ``queryPath=hostkeys/``) after the launch, with the
project's credentials, over TLS, before anything connects: a channel the host's network path cannot forge.

The :class:`GcpHostKeys` dynamic resource does that read while ``up`` runs (after the instance, before the
``host`` output exists), waiting with progress until the keys appear; the ed25519 key becomes the host's
declared ``host_key``, which :mod:`gpuprov.provisioning.ssh` checks at the key exchange of the first connect.
Keys that never appear stop ``up`` with one line (exit code 4); nothing connects to the host unverified.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from gpuprov.infra.clouds.gcp.sdk import ComputeApi, GcpError

PROVIDER_VERSION = "1"
PREFERRED = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")  # the key the host is pinned to: the first found
WAIT_S = 600.0  # the guest agent publishes within a minute of boot; a DLVM's first boot can be slow
POLL_S = 5.0


class HostKeysNotPublished(GcpError):
    """The instance's guest agent published no SSH host key in time: gpuprov will not connect unverified."""

    exit_code = 4


def pick(keys: dict[str, str]) -> str | None:
    """The key to pin from the published ones (type -> "TYPE BASE64"): ed25519 first."""
    for kind in PREFERRED:
        if kind in keys:
            return keys[kind]
    return next(iter(sorted(keys.values())), None)


def wait_for_host_key(api: ComputeApi, project: str, zone: str, instance: str, *, timeout_s: float = WAIT_S,
                      poll_s: float = POLL_S, progress: Callable[[str], None] | None = None) -> str:
    """The instance's published host key ("TYPE BASE64"), polled until it appears; :class:`HostKeysNotPublished`
    after ``timeout_s``."""
    say = progress or (lambda _m: None)
    started = time.monotonic()
    said = -1.0
    while True:
        key = pick(api.guest_host_keys(project, zone, instance))
        waited = time.monotonic() - started
        if key:
            say(f"gcp: instance {instance} published its SSH host key {key.split()[0]} (guest attributes); "
                "the first connect is checked against it")
            return key
        if waited >= timeout_s:
            raise HostKeysNotPublished(
                f"GCP instance {instance} in {zone} published no SSH host key in its guest attributes within "
                f"{timeout_s:.0f}s, so gpuprov cannot verify it and did not connect; check that the image runs "
                "Google's guest agent and that metadata enable-guest-attributes is TRUE, then run gpuprov up again "
                "(gpuprov down removes the instance)")
        if waited - said >= 30.0 or said < 0:
            say(f"gcp: waiting for instance {instance} to publish its SSH host key (guest attributes hostkeys/; "
                f"{waited:.0f}s of at most {timeout_s:.0f}s)")
            said = waited
        time.sleep(poll_s)


def _log(message: str) -> None:
    print(f"· {message}", file=sys.stderr, flush=True)
    pulumi.log.info(message)


class GcpHostKeysProvider(ResourceProvider):
    """Reads an instance's published host key at create; a new instance (name or zone) reads it again."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        from gpuprov.infra.settings import Settings

        settings = Settings.from_env()
        api = ComputeApi(settings.gcp_api_endpoint)
        # The instance's project; where the engine does not know it yet (a preview), the one gpuprov works in.
        props = {**props, "project": props.get("project") or settings.gcp_project}
        key = wait_for_host_key(api, str(props["project"]), str(props["zone"]), str(props["instance"]),
                                timeout_s=float(props.get("timeout_s") or WAIT_S), progress=_log)
        return CreateResult(id_=f"{props['zone']}/{props['instance']}", outs={**props, "host_key": key})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("project", "zone", "instance", "instance_id") if olds.get(k) != news.get(k)]
        changed = bool(replaces) or olds.get("provider_version") != news.get("provider_version")
        return DiffResult(changes=changed, replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**news, "host_key": olds.get("host_key")})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None  # a reading, nothing in the cloud


class GcpHostKeys(Resource):
    """The SSH host key the instance published (``host_key``: "TYPE BASE64")."""

    host_key: pulumi.Output[str]

    def __init__(self, name: str, *, project: pulumi.Input[str], zone: str, instance: pulumi.Input[str],
                 instance_id: pulumi.Input[str], timeout_s: float = WAIT_S,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(GcpHostKeysProvider(), name, {
            "project": project, "zone": zone, "instance": instance, "instance_id": instance_id,
            "timeout_s": timeout_s, "provider_version": PROVIDER_VERSION, "host_key": None}, opts)
