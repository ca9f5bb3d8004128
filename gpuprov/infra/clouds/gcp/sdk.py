"""Compute Engine outside Pulumi, on google-cloud-compute: resolve the GPU image, check types, find and remove leftovers.

The program uses :func:`resolve_image` and :func:`check_machine_offered` before
``up``; the reaper uses :func:`find_labelled_instances` / :func:`delete_instance`
and :func:`find_gpuprov_firewalls` / :func:`delete_firewall`. Instances are found
by the labels in :mod:`gpuprov.infra.tags`; firewall rules carry no labels in Compute
Engine, so they are found by the network tag they target (``gpuprov-<stack>``). What a GKE
stack's Kubernetes objects made (:func:`ComputeApi.find_claim_disks`, :func:`ComputeApi.find_service_balancers`)
is found by the namespace its description names.

google-cloud-compute is imported lazily and always uses its REST transport.
Credentials come from Application Default Credentials. :class:`ComputeApi` takes the
endpoint from the settings (``GPUPROV_GCP_API_ENDPOINT``: another endpoint, e.g. a
local stand-in of the API). Every error of the SDK becomes a :class:`GcpError` here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from gpuprov.infra.clouds.base import CloudError, sdk_call
from gpuprov.infra.tags import TAG_MANAGED, TAG_STACK, expires_at

# Deep Learning VM images: drivers, Docker and the NVIDIA toolkit preinstalled
# (https://cloud.google.com/deep-learning-vm/docs/images).
# Families come and go (the cu121 ones are gone), so the family is resolved at run time.
DLVM_PROJECT = "deeplearning-platform-release"
DLVM_FAMILY = "common-cu129-ubuntu-2204-nvidia-580"
NETWORK_TAG_PREFIX = "gpuprov-"
# GKE labels its node VMs so (and with the cluster's and the pool's resource labels, gpuprov's among them):
# such a VM is its node pool's (a managed instance group recreates a deleted one), swept by the GKE driver.
GKE_NODE_LABEL = "goog-gke-node"
# What Kubernetes writes in the description of what it makes in Compute Engine, as JSON. The PD CSI driver
# (pd.csi.storage.gke.io) on a disk it provisions for a claim: kubernetes.io/created-for/pvc/namespace (and
# .../pvc/name, .../pv/name, storage.gke.io/created-by), the keys of tagKeyCreatedForClaim* in
# https://github.com/kubernetes-sigs/gcp-compute-persistent-disk-csi-driver/blob/master/pkg/common/parameters.go
# (the external provisioner passes the claim with --extra-create-metadata, which GKE's managed driver sets).
# The GCE cloud provider's service controller on the forwarding rule and target pool of a Service of type
# LoadBalancer: {"kubernetes.io/service-name": "NAMESPACE/NAME"} (makeServiceDescription in
# https://github.com/kubernetes/cloud-provider-gcp/blob/master/providers/gce/gce_loadbalancer_naming.go).
CLAIM_NAMESPACE_KEY = "kubernetes.io/created-for/pvc/namespace"
CLAIM_NAME_KEY = "kubernetes.io/created-for/pvc/name"
SERVICE_NAME_KEY = "kubernetes.io/service-name"
HOSTKEYS_NAMESPACE = "hostkeys"  # the guest attributes namespace the guest agent publishes sshd's host keys in
LABEL_CACHE = "gpuprov-cache"  # on the stack's cache disk: its name (gpuprov.infra.cache.cache_name)
CACHE_DEVICE_NAME = "gpcache"  # the attached disk's device name: /dev/disk/by-id/google-gpcache on the host
CACHE_DISK_TYPE = "pd-balanced"


def cache_device_path() -> str:
    """Where the cache disk shows on the host: Compute Engine names attached disks by their device name
    (https://cloud.google.com/compute/docs/disks/set-persistent-device-name-in-linux-vm)."""
    return f"/dev/disk/by-id/google-{CACHE_DEVICE_NAME}"


class GcpError(CloudError):
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


def _not_found(err: BaseException) -> bool:
    from google.api_core.exceptions import NotFound

    return isinstance(err, NotFound)


COMPUTE_ROLES = "Compute Engine rights in the project (roles/compute.instanceAdmin.v1, roles/compute.securityAdmin)"


@contextlib.contextmanager
def boundary(what: str, roles: str = COMPUTE_ROLES) -> Iterator[None]:
    """Turn google-api-core and google-auth errors into one :class:`GcpError` line: what failed, why, what to do
    (``roles``: the rights the call needs, for the refused-permission line)."""
    from google.api_core.exceptions import Forbidden, GoogleAPIError, PermissionDenied, Unauthenticated
    from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError
    from requests.exceptions import RequestException

    try:
        yield
    except GcpError:
        raise
    except DefaultCredentialsError:
        raise GcpError(f"GCP: {what} needs credentials and none were found; run `gcloud auth application-default "
                       "login` or set GOOGLE_APPLICATION_CREDENTIALS") from None
    except (Unauthenticated, GoogleAuthError) as err:
        raise GcpError(f"GCP: {what} was refused ({err}); log in again (gcloud auth application-default login)") \
            from None
    except (PermissionDenied, Forbidden) as err:
        raise GcpError(f"GCP: {what} is not permitted ({err}); the account needs {roles}") from None
    except GoogleAPIError as err:
        raise GcpError(f"GCP: {what} failed ({type(err).__name__}: {err}); check the project, the zone and the "
                       "network") from None
    except (RequestException, OSError) as err:  # the REST transport's: the API did not answer at all
        from urllib.parse import urlsplit

        url = getattr(getattr(err, "request", None), "url", None)
        where = f" at {urlsplit(str(url)).netloc}" if url else ""
        raise GcpError(f"GCP: {what} failed (no answer from the API{where}: {type(err).__name__}); check the "
                       "network") from None


@dataclass(frozen=True)
class Labelled:
    """One gpuprov instance or firewall rule: where it is and what marks it as ours."""

    name: str
    project: str
    zone: str | None = None  # instances only
    status: str | None = None  # instances only
    labels: dict[str, str] = field(default_factory=dict)
    target_tags: tuple[str, ...] = ()  # firewall rules only
    size_gb: int | None = None  # disks only
    users: tuple[str, ...] = ()  # disks only: the instances it is attached to
    self_link: str | None = None  # disks only

    @property
    def stack(self) -> str | None:
        if TAG_STACK in self.labels:
            return self.labels[TAG_STACK]
        tags = [t for t in self.target_tags if t.startswith(NETWORK_TAG_PREFIX)]
        return tags[0].removeprefix(NETWORK_TAG_PREFIX) if tags else None

    @property
    def expires_at(self) -> datetime | None:
        return expires_at(self.labels)


def described(description: str | None) -> dict[str, str]:
    """The JSON object Kubernetes writes in a Compute resource's description; {} for any other description."""
    import json

    try:
        found = json.loads(description or "")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def split_image(image: str | None) -> tuple[str | None, str]:
    """The configured ``image`` as (image link or None, family): ``family/NAME`` picks a family."""
    if image and image.startswith("family/"):
        return None, image.removeprefix("family/")
    return image, DLVM_FAMILY


F = TypeVar("F", bound=Callable[..., Any])


def gcp_call(what: str) -> Callable[[F], F]:
    """Run an API method inside :func:`boundary`; ``what`` may name the method's arguments."""
    return sdk_call(boundary, what)


class ComputeApi:
    """Compute Engine calls gpuprov makes outside Pulumi (REST transport; ``endpoint``: another API endpoint)."""

    def __init__(self, endpoint: str | None = None):
        self.endpoint = endpoint

    def _client(self, kind: str) -> Any:
        """A google-cloud-compute client of class ``kind`` on the REST transport (imported only here)."""
        from google.cloud import compute_v1

        cls = getattr(compute_v1, kind)
        if self.endpoint:
            from google.auth.credentials import AnonymousCredentials

            return cls(transport="rest", credentials=AnonymousCredentials(),
                       client_options={"api_endpoint": self.endpoint})
        return cls(transport="rest")

    # --- before up ------------------------------------------------------------------------------

    @gcp_call("resolving the newest image of family {family} in project {project}")
    def resolve_image(self, family: str = DLVM_FAMILY, project: str = DLVM_PROJECT) -> str:
        """The self link of the newest non-deprecated image in ``family`` today."""
        try:
            image = self._client("ImagesClient").get_from_family(project=project, family=family)
        except Exception as err:
            if _not_found(err):
                raise ImageNotFound(family, project) from None
            raise
        return str(image.self_link)

    @gcp_call("checking machine type {machine_type} in zone {zone}")
    def machine_type_offered(self, project: str, zone: str, machine_type: str) -> bool:
        """Whether ``machine_type`` exists in ``zone``."""
        try:
            self._client("MachineTypesClient").get(project=project, zone=zone, machine_type=machine_type)
        except Exception as err:
            if _not_found(err):
                return False
            raise
        return True

    @gcp_call("checking accelerator {accelerator} in zone {zone}")
    def accelerator_offered(self, project: str, zone: str, accelerator: str) -> bool:
        """Whether the GPU ``accelerator`` (e.g. ``nvidia-tesla-t4``) exists in ``zone``."""
        try:
            self._client("AcceleratorTypesClient").get(project=project, zone=zone, accelerator_type=accelerator)
        except Exception as err:
            if _not_found(err):
                return False
            raise
        return True

    def check_machine_offered(self, project: str, zone: str, machine_type: str, accelerator: str | None) -> None:
        """Raise :class:`NotOfferedInZone` unless the machine type (and its GPU, when separate) exist in ``zone``."""
        if not self.machine_type_offered(project, zone, machine_type):
            raise NotOfferedInZone("machine type", machine_type, zone)
        if accelerator and not self.accelerator_offered(project, zone, accelerator):
            raise NotOfferedInZone("accelerator", accelerator, zone)

    def preflight(self, project: str, zone: str, machine_type: str, accelerator: str | None,
                  image: str | None = None) -> str:
        """Before ``pulumi up``: fail fast when the machine (or its GPU) is not in the zone or the image family
        is gone; returns the image the program will get (a configured image link or family wins)."""
        self.check_machine_offered(project, zone, machine_type, accelerator)
        link, family = split_image(image)
        return link or self.resolve_image(family)

    # --- after launch ------------------------------------------------------------------------------

    @gcp_call("reading the SSH host keys of instance {instance} in {zone} (guest attributes)")
    def guest_host_keys(self, project: str, zone: str, instance: str) -> dict[str, str]:
        """The SSH host keys the instance's guest agent published (metadata ``enable-guest-attributes``):
        key type -> ``"TYPE BASE64"``; empty while none are published yet (the API answers 404 then)."""
        from google.cloud import compute_v1

        request = compute_v1.GetGuestAttributesInstanceRequest(
            project=project, zone=zone, instance=instance, query_path=f"{HOSTKEYS_NAMESPACE}/")
        try:
            found = self._client("InstancesClient").get_guest_attributes(request=request)
        except Exception as err:
            if _not_found(err):
                return {}
            raise
        keys: dict[str, str] = {}
        for item in found.query_value.items:
            if item.namespace != HOSTKEYS_NAMESPACE or not item.key:
                continue
            words = str(item.value).split()
            if words and words[0] == item.key:  # "TYPE BASE64 [comment]": the agent wrote the whole line
                words = words[1:]
            if words:  # the value is the key's base64
                keys[str(item.key)] = f"{item.key} {words[0]}"
        return keys

    # --- finding what a stack left ----------------------------------------------------------------

    @gcp_call("listing gpuprov instances in project {project}")
    def find_labelled_instances(self, project: str, stack: str | None = None) -> list[Labelled]:
        """gpuprov instances in every zone of ``project`` (of one stack when named), in any state."""
        found: list[Labelled] = []
        for scope, scoped in self._client("InstancesClient").aggregated_list(project=project):
            for inst in scoped.instances:
                labels = dict(inst.labels)
                # filtered here, not with the API's filter syntax: one rule, and it reads plainly
                if labels.get(TAG_MANAGED) != "true" or (stack is not None and labels.get(TAG_STACK) != stack):
                    continue
                zone = str(inst.zone).rsplit("/", 1)[-1] if inst.zone else scope.removeprefix("zones/")
                found.append(Labelled(name=inst.name, project=project, zone=zone, status=inst.status, labels=labels))
        return found

    @gcp_call("listing the persistent disks of namespace {namespace}'s claims in project {project}")
    def find_claim_disks(self, project: str, namespace: str) -> list[Labelled]:
        """The disks the PD CSI driver made for claims in ``namespace`` (their description names it), in
        every zone, with the description's keys among their labels: what a cluster's PVCs leave billing when
        the cluster went before its claims were released."""
        import dataclasses

        found: list[Labelled] = []
        for _scope, scoped in self._client("DisksClient").aggregated_list(project=project):
            for disk in scoped.disks:
                meta = described(disk.description)
                if meta.get(CLAIM_NAMESPACE_KEY) == namespace:
                    item = self._disk(project, disk)
                    found.append(dataclasses.replace(item, labels={**item.labels, **meta}))
        return found

    @gcp_call("listing the load balancers of namespace {namespace}'s Services in project {project}")
    def find_service_balancers(self, project: str, namespace: str) -> list[Labelled]:
        """The forwarding rules and target pools (``kind`` in ``status``: ``forwarding-rule``, ``target-pool``)
        a Service of type LoadBalancer in ``namespace`` made (their description names ``NAMESPACE/NAME``), in
        every region; ``zone`` holds the region."""
        found: list[Labelled] = []
        for kind, client, field_name in (("forwarding-rule", "ForwardingRulesClient", "forwarding_rules"),
                                         ("target-pool", "TargetPoolsClient", "target_pools")):
            for scope, scoped in self._client(client).aggregated_list(project=project):
                for item in getattr(scoped, field_name):
                    service = described(item.description).get(SERVICE_NAME_KEY, "")
                    if service.startswith(f"{namespace}/"):
                        region = str(item.region).rsplit("/", 1)[-1] if item.region else scope.removeprefix("regions/")
                        found.append(Labelled(name=item.name, project=project, zone=region, status=kind,
                                              labels={SERVICE_NAME_KEY: service}))
        return found

    @gcp_call("listing gpuprov firewall rules in project {project}")
    def find_gpuprov_firewalls(self, project: str, stack: str | None = None) -> list[Labelled]:
        """gpuprov firewall rules of ``project``: those targeting ``gpuprov-<stack>`` (any stack when None)."""
        found: list[Labelled] = []
        for rule in self._client("FirewallsClient").list(project=project):
            tags = tuple(rule.target_tags)
            wanted = [network_tag(stack)] if stack else [t for t in tags if t.startswith(NETWORK_TAG_PREFIX)]
            if any(t in tags for t in wanted):
                found.append(Labelled(name=rule.name, project=project, target_tags=tags))
        return found

    @gcp_call("moving the expiry label of instance {name} in {zone}")
    def set_expiry_label(self, project: str, zone: str, name: str, value: str) -> None:
        """Set ``gpuprov-expires-at`` (``setLabels`` replaces every label, with the fingerprint just read)."""
        from google.cloud import compute_v1

        from gpuprov.infra.tags import TAG_EXPIRES_AT

        instances = self._client("InstancesClient")
        inst = instances.get(project=project, zone=zone, instance=name)
        request = compute_v1.InstancesSetLabelsRequest(labels={**dict(inst.labels), TAG_EXPIRES_AT: value},
                                                       label_fingerprint=inst.label_fingerprint)
        instances.set_labels(project=project, zone=zone, instance=name,
                             instances_set_labels_request_resource=request).result(timeout=300)

    # --- removing it --------------------------------------------------------------------------------

    @gcp_call("deleting instance {name} in {zone}")
    def delete_instance(self, project: str, zone: str, name: str, wait: bool = True) -> None:
        """Delete an instance (its auto-delete boot disk goes with it); gone already is fine."""
        try:
            operation = self._client("InstancesClient").delete(project=project, zone=zone, instance=name)
        except Exception as err:
            if _not_found(err):
                return
            raise
        if wait:
            operation.result(timeout=600)

    @gcp_call("deleting firewall rule {name}")
    def delete_firewall(self, project: str, name: str, wait: bool = True) -> None:
        """Delete a firewall rule; gone already is fine."""
        try:
            operation = self._client("FirewallsClient").delete(project=project, firewall=name)
        except Exception as err:
            if _not_found(err):
                return
            raise
        if wait:
            operation.result(timeout=300)

    def delete_all(self, items: Iterable[Labelled]) -> None:
        """Delete each instance, then each firewall rule, of ``items`` (as the find_* helpers return them)."""
        items = list(items)
        for item in items:
            if item.zone is not None:
                self.delete_instance(item.project, item.zone, item.name)
        for item in items:
            if item.zone is None:
                self.delete_firewall(item.project, item.name)

    # --- a stack's cache: a persistent disk kept across `down` ---------------------------------------

    @staticmethod
    def _disk(project: str, disk: Any) -> Labelled:
        return Labelled(name=disk.name, project=project, zone=str(disk.zone).rsplit("/", 1)[-1],
                        status=disk.status, labels=dict(disk.labels), size_gb=int(disk.size_gb),
                        users=tuple(disk.users), self_link=str(disk.self_link))

    @gcp_call("listing gpuprov cache disks in project {project}")
    def find_cache_disks(self, project: str, stack: str | None = None, name: str | None = None) -> list[Labelled]:
        """The stacks' cache disks in every zone of ``project`` (of one stack, or one cache name, when given)."""
        found: list[Labelled] = []
        for _scope, scoped in self._client("DisksClient").aggregated_list(project=project):
            for disk in scoped.disks:
                labels = dict(disk.labels)
                if labels.get(TAG_MANAGED) != "true" or LABEL_CACHE not in labels:
                    continue
                if (stack is not None and labels.get(TAG_STACK) != stack) or (name is not None and disk.name != name):
                    continue
                found.append(self._disk(project, disk))
        return found

    @gcp_call("creating the cache disk {name} in {zone}")
    def ensure_cache_disk(self, project: str, zone: str, name: str, size_gb: int, labels: dict[str, str],
                          progress: Callable[[str], None] | None = None) -> Labelled:
        """The cache disk ``name``: the one kept by an earlier ``down``, else a new pd-balanced disk in ``zone``.
        One in another zone is refused: a disk attaches only to a VM of its own zone."""
        from google.cloud import compute_v1

        say = progress or (lambda _m: None)
        found = self.find_cache_disks(project, name=name)
        if found:
            disk = found[0]
            if disk.zone != zone:
                raise GcpError(f"the stack's cache disk {name} is in zone {disk.zone}, not {zone}, and a disk "
                               f"attaches only in its zone; set zone: {disk.zone} in the stack config, or "
                               "`gpuprov down --purge` to drop the cache")
            say(f"using the stack's cache disk {name} ({disk.size_gb} GB) in {zone}")
            return disk
        say(f"creating the stack's cache disk {name} ({size_gb} GB {CACHE_DISK_TYPE}) in {zone} "
            "(kept across `gpuprov down`)")
        disks = self._client("DisksClient")
        resource = compute_v1.Disk(name=name, size_gb=size_gb, type_=f"zones/{zone}/diskTypes/{CACHE_DISK_TYPE}",
                                   labels={**labels, LABEL_CACHE: name})
        disks.insert(project=project, zone=zone, disk_resource=resource).result(timeout=300)
        return self._disk(project, disks.get(project=project, zone=zone, disk=name))

    @gcp_call("deleting cache disk {name} in {zone}")
    def delete_disk(self, project: str, zone: str, name: str, timeout_s: float = 300.0) -> None:
        """Delete a disk; retried while a VM being deleted still has it attached. Gone already is fine."""
        import time

        from google.api_core.exceptions import BadRequest

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                operation = self._client("DisksClient").delete(project=project, zone=zone, disk=name)
            except BadRequest as err:  # resourceInUseByAnotherResource
                text = f"{err} {getattr(err, 'errors', '')}".lower()
                if not any(w in text for w in ("being used", "in use", "resourceinusebyanotherresource")):
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(2)
                continue
            except Exception as err:
                if _not_found(err):
                    return
                raise
            operation.result(timeout=300)
            return
