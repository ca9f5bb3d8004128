"""Compute Engine outside Pulumi, on google-cloud-compute: resolve the GPU image, check types, find and remove leftovers.

The program uses :func:`resolve_image` and :func:`check_machine_offered` before
``up``; the reaper uses :func:`find_labelled_instances` / :func:`delete_instance`
and :func:`find_gpuprov_firewalls` / :func:`delete_firewall`. Instances are found
by the labels in :mod:`gpuprov.infra.tags`; firewall rules carry no labels in Compute
Engine, so they are found by the network tag they target (``gpuprov-<stack>``).

google-cloud-compute is imported lazily and always uses its REST transport.
Credentials come from Application Default Credentials; ``GPUPROV_GCP_API_ENDPOINT``
points every client at another endpoint (tests: a local stand-in of the API).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.tags import TAG_MANAGED, TAG_STACK, expires_at

# Deep Learning VM images: drivers, Docker and the NVIDIA toolkit preinstalled (FACTS §2).
# Families come and go (the cu121 ones are gone), so the family is resolved at run time.
DLVM_PROJECT = "deeplearning-platform-release"
DLVM_FAMILY = "common-cu129-ubuntu-2204-nvidia-580"
NETWORK_TAG_PREFIX = "gpuprov-"
ENDPOINT_ENV = "GPUPROV_GCP_API_ENDPOINT"


class GcpError(GpuprovError):
    """A Compute Engine call gpuprov needs failed; the message says which and what to do."""


class ImageNotFound(GcpError):
    def __init__(self, family: str, project: str):
        super().__init__(
            f"no image in family {family} of project {project}; Deep Learning VM families change, "
            f"list them with `gcloud compute images list --project {project} --no-standard-images` "
            "and set image: family/<name> in the stack config"
        )


class NotOfferedInZone(GcpError):
    def __init__(self, kind: str, name: str, zone: str):
        super().__init__(f"{kind} {name} is not offered in zone {zone}; pick another zone or instance_type")


def network_tag(stack: str) -> str:
    """The network tag a stack's instance carries and its firewall rules target."""
    return f"{NETWORK_TAG_PREFIX}{stack}"


def _client(kind: str) -> Any:
    """A google-cloud-compute client of class ``kind`` on the REST transport (imported only here)."""
    from google.cloud import compute_v1

    cls = getattr(compute_v1, kind)
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return cls(transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint})
    return cls(transport="rest")


def _not_found(err: BaseException) -> bool:
    from google.api_core.exceptions import NotFound

    return isinstance(err, NotFound)


@dataclass(frozen=True)
class Labelled:
    """One gpuprov instance or firewall rule: where it is and what marks it as ours."""

    name: str
    project: str
    zone: str | None = None  # instances only
    status: str | None = None  # instances only
    labels: dict[str, str] = field(default_factory=dict)
    target_tags: tuple[str, ...] = ()  # firewall rules only

    @property
    def stack(self) -> str | None:
        if TAG_STACK in self.labels:
            return self.labels[TAG_STACK]
        tags = [t for t in self.target_tags if t.startswith(NETWORK_TAG_PREFIX)]
        return tags[0].removeprefix(NETWORK_TAG_PREFIX) if tags else None

    @property
    def expires_at(self) -> datetime | None:
        return expires_at(self.labels)


# --- before up ------------------------------------------------------------------------------


def resolve_image(family: str = DLVM_FAMILY, project: str = DLVM_PROJECT) -> str:
    """The self link of the newest non-deprecated image in ``family`` today."""
    try:
        image = _client("ImagesClient").get_from_family(project=project, family=family)
    except Exception as err:
        if _not_found(err):
            raise ImageNotFound(family, project) from None
        raise
    return str(image.self_link)


def machine_type_offered(project: str, zone: str, machine_type: str) -> bool:
    """Whether ``machine_type`` exists in ``zone``."""
    try:
        _client("MachineTypesClient").get(project=project, zone=zone, machine_type=machine_type)
    except Exception as err:
        if _not_found(err):
            return False
        raise
    return True


def accelerator_offered(project: str, zone: str, accelerator: str) -> bool:
    """Whether the GPU ``accelerator`` (e.g. ``nvidia-tesla-t4``) exists in ``zone``."""
    try:
        _client("AcceleratorTypesClient").get(project=project, zone=zone, accelerator_type=accelerator)
    except Exception as err:
        if _not_found(err):
            return False
        raise
    return True


def check_machine_offered(project: str, zone: str, machine_type: str, accelerator: str | None) -> None:
    """Raise :class:`NotOfferedInZone` unless the machine type (and its GPU, when separate) exist in ``zone``."""
    if not machine_type_offered(project, zone, machine_type):
        raise NotOfferedInZone("machine type", machine_type, zone)
    if accelerator and not accelerator_offered(project, zone, accelerator):
        raise NotOfferedInZone("accelerator", accelerator, zone)


def split_image(image: str | None) -> tuple[str | None, str]:
    """The configured ``image`` as (image link or None, family): ``family/NAME`` picks a family."""
    if image and image.startswith("family/"):
        return None, image.removeprefix("family/")
    return image, DLVM_FAMILY


def preflight(project: str, zone: str, machine_type: str, accelerator: str | None, image: str | None = None) -> str:
    """Before ``pulumi up``: fail fast when the machine (or its GPU) is not in the zone or the image family
    is gone; returns the image the program will get (a configured image link or family wins)."""
    check_machine_offered(project, zone, machine_type, accelerator)
    link, family = split_image(image)
    return link or resolve_image(family)


# --- finding what a stack left ----------------------------------------------------------------


def find_labelled_instances(project: str, stack: str | None = None) -> list[Labelled]:
    """gpuprov instances in every zone of ``project`` (of one stack when named), in any state."""
    found: list[Labelled] = []
    for scope, scoped in _client("InstancesClient").aggregated_list(project=project):
        for inst in scoped.instances:
            labels = dict(inst.labels)
            # filtered here, not with the API's filter syntax: one rule, and it reads plainly
            if labels.get(TAG_MANAGED) != "true" or (stack is not None and labels.get(TAG_STACK) != stack):
                continue
            zone = str(inst.zone).rsplit("/", 1)[-1] if inst.zone else scope.removeprefix("zones/")
            found.append(Labelled(name=inst.name, project=project, zone=zone, status=inst.status, labels=labels))
    return found


def find_gpuprov_firewalls(project: str, stack: str | None = None) -> list[Labelled]:
    """gpuprov firewall rules of ``project``: those targeting ``gpuprov-<stack>`` (any stack when None)."""
    found: list[Labelled] = []
    for rule in _client("FirewallsClient").list(project=project):
        tags = tuple(rule.target_tags)
        wanted = [network_tag(stack)] if stack else [t for t in tags if t.startswith(NETWORK_TAG_PREFIX)]
        if any(t in tags for t in wanted):
            found.append(Labelled(name=rule.name, project=project, target_tags=tags))
    return found


# --- removing it --------------------------------------------------------------------------------


def delete_instance(project: str, zone: str, name: str, wait: bool = True) -> None:
    """Delete an instance (its auto-delete boot disk goes with it); gone already is fine."""
    try:
        operation = _client("InstancesClient").delete(project=project, zone=zone, instance=name)
    except Exception as err:
        if _not_found(err):
            return
        raise
    if wait:
        operation.result(timeout=600)


def delete_firewall(project: str, name: str, wait: bool = True) -> None:
    """Delete a firewall rule; gone already is fine."""
    try:
        operation = _client("FirewallsClient").delete(project=project, firewall=name)
    except Exception as err:
        if _not_found(err):
            return
        raise
    if wait:
        operation.result(timeout=300)


def delete_all(items: Iterable[Labelled]) -> None:
    """Delete each instance, then each firewall rule, of ``items`` (as the find_* helpers return them)."""
    items = list(items)
    for item in items:
        if item.zone is not None:
            delete_instance(item.project, item.zone, item.name)
    for item in items:
        if item.zone is None:
            delete_firewall(item.project, item.name)
