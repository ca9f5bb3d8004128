"""GCP as a gpuprov cloud: Compute Engine GPU VMs (g2 + L4 by default, n1-standard-4 + T4) from the Pulumi GCP provider."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, ClassVar

from gpuprov.infra.clouds.base import (
    CatalogCloud,
    ExposureRow,
    Finding,
    IdleAction,
    Leftover,
    Progress,
    catalog_defaults,
)

if TYPE_CHECKING:
    from datetime import datetime

    import pulumi
    from pulumi.runtime import MockCallArgs, MockResourceArgs

    from gpuprov.cost.live import PricedOffer
    from gpuprov.infra.clouds.gcp.sdk import ComputeApi
    from gpuprov.infra.config import StackConfig
    from gpuprov.infra.host import GpuHost
    from gpuprov.infra.mock_runtime import CallHandler

FIREWALL = "gcp:compute/firewall:Firewall"
NETWORK = "gcp:compute/network:Network"
INSTANCE = "gcp:compute/instance:Instance"
IAP_RANGE = "35.235.240.0/20"  # Google's documented source range for IAP TCP forwarding
IAP_VIA = "IAP TCP forwarding only (Google's IAP range; IAM-authenticated)"
SSH_CLOSED = "closed: no rule lets SSH in (list ssh_cidrs, or let gpuprov detect your egress address at up)"
SSH_VIA_IAP = "IAP TCP forwarding only (gcloud compute ssh --tunnel-through-iap)"


class GcpDriver(CatalogCloud):
    name = "gcp"
    title = "Google Cloud"
    ssh_from_egress = True
    supports_spot = True
    keeps_caches = True  # a persistent disk (gpuprov.infra.clouds.gcp.cache)
    image_grammar = (re.compile(r"^(family/[a-z][a-z0-9-]{0,62}|(https://[a-z.]+/compute/v1/)?"
                                r"projects/[a-z0-9-]+/global/images/[a-z0-9-]+)\Z"),
                     "an image link (projects/P/global/images/NAME) or family/NAME")
    credential_hint = "GOOGLE_CLOUD_PROJECT (and Application Default Credentials)"
    # Application Default Credentials and gcloud's token overrides
    secret_env = ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_OAUTH_ACCESS_TOKEN", "CLOUDSDK_AUTH_ACCESS_TOKEN",
                  "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE", "GOOGLE_GHA_CREDS_PATH")
    KEY_SETTINGS: ClassVar[dict[str, tuple[str, ...]]] = {
        INSTANCE: ("machineType", "zone", "guestAccelerators", "bootDisk.initializeParams.image",
                   "bootDisk.initializeParams.size", "scheduling.onHostMaintenance", "scheduling.provisioningModel"),
        FIREWALL: ("allows", "sourceRanges", "targetTags"),
    }

    # --- config ----------------------------------------------------------------------------------

    def default_zone(self, region: str | None) -> str | None:
        _type, default_region, default_zone = catalog_defaults(self.name)
        return default_zone if region in (None, default_region) else f"{region}-a"

    def project(self) -> str:
        """The project gpuprov works in (settings: ``GOOGLE_CLOUD_PROJECT``), or a one-line error."""
        from gpuprov.infra.clouds.gcp.sdk import GcpError

        if not self.settings.gcp_project:
            raise GcpError("no GCP project: set GOOGLE_CLOUD_PROJECT to the project gpuprov creates hosts in")
        return self.settings.gcp_project

    def api(self) -> ComputeApi:
        from gpuprov.infra.clouds.gcp.sdk import ComputeApi

        return ComputeApi(self.settings.gcp_api_endpoint)

    # --- program and plan ------------------------------------------------------------------------

    def build(self, config: StackConfig) -> pulumi.Output[dict[str, Any]]:
        from gpuprov.infra.clouds.gcp.program import build_gcp_host

        return build_gcp_host(config)

    def plan_calls(self) -> dict[str, CallHandler]:
        from gpuprov.infra.plan import RESOLVED_AT_UP

        def image(args: MockCallArgs) -> dict[str, Any]:
            family, project = args.args.get("family"), args.args.get("project")
            text = f"{RESOLVED_AT_UP} newest image of family {family} in project {project}"
            return {"id": text, "selfLink": text, "name": text, "family": family, "project": project}

        return {"gcp:compute/getImage:getImage": image}

    def plan_outputs(self, args: MockResourceArgs) -> dict[str, Any]:
        from gpuprov.infra.plan import ASSIGNED_AT_UP

        if args.typ == "pulumi-python:dynamic:Resource" and "cache_name" in args.inputs:  # the cache disk
            return {"self_link": f"{ASSIGNED_AT_UP} projects/-/zones/{args.inputs.get('zone')}/disks/"
                                 f"{args.inputs.get('cache_name')}"}
        if args.typ != INSTANCE:
            return {}
        nics = [dict(n) for n in args.inputs.get("networkInterfaces", [])]
        for nic in nics:
            nic["accessConfigs"] = [{**dict(ac), "natIp": f"{ASSIGNED_AT_UP} external IPv4"}
                                    for ac in nic.get("accessConfigs", [])]
        return {"networkInterfaces": nics}

    def exposure(self, config: StackConfig, resources: list[dict[str, Any]]) -> list[ExposureRow]:
        from gpuprov.infra.exposure import Opened, rows, rows_from_config

        opened = Opened()
        for r in resources:
            inputs = r["inputs"]
            if r["type"] == NETWORK:
                opened.found = True  # a network of the stack's own denies all ingress but its rules allow
            if r["type"] != FIREWALL or inputs.get("direction", "INGRESS") != "INGRESS":
                continue
            opened.found = True
            sources = set(inputs.get("sourceRanges") or [])
            for allow in inputs.get("allows") or []:
                ports = allow.get("ports") or []
                if allow.get("protocol") == "all" or not ports:
                    opened.add_all(sources)
                for spec in ports:
                    low, _, high = str(spec).partition("-")
                    opened.add(int(low), int(high or low), sources)
        if not opened.found:
            return rows_from_config(config, list(config.allowed_cidrs), "direct" if config.allowed_cidrs else SSH_VIA_IAP)
        return rows(config, opened, SSH_CLOSED, labelled={(IAP_RANGE,): IAP_VIA})

    # --- before up -------------------------------------------------------------------------------

    def has_credentials(self) -> bool:
        return bool(self.settings.gcp_project)

    def preflight(self, config: StackConfig, progress: Progress | None = None) -> None:
        from gpuprov.cost import catalog

        zone, machine = str(config.resolved_zone), str(config.resolved_instance_type)
        offer = catalog.find_offer(self.name, machine)
        accelerator = offer.accelerator if offer and machine.startswith("n1-") else None
        if progress:
            progress(f"gcp: checking that {machine} is offered in {zone} and the GPU image resolves")
        self.api().preflight(self.project(), zone, machine, accelerator, config.image)

    # --- what a stack left; the reaper -----------------------------------------------------------

    def inventory(self, stack: str | None = None, config: StackConfig | None = None) -> list[Leftover]:
        """gpuprov's VMs, firewall rules and caches. A GKE node VM carries gpuprov's labels too (GKE copies the
        cluster's to it) but is its node pool's, which recreates a VM deleted alone: the GKE driver's to list
        and remove, with its pool (:meth:`gpuprov.infra.clouds.kubernetes.driver.GkeDriver.inventory`)."""
        from gpuprov.infra.clouds.gcp.sdk import GKE_NODE_LABEL

        api, project = self.api(), self.project()
        found = [Leftover(self.name, "instance", i.name, i.stack, i.name, i.zone, i.status, i.labels)
                 for i in api.find_labelled_instances(project, stack)  # TERMINATED still holds billed disks
                 if GKE_NODE_LABEL not in i.labels]
        found += [Leftover(self.name, "firewall", f.name, f.stack, f.name) for f in api.find_gpuprov_firewalls(project, stack)]
        found += [self._cache_leftover(d) for d in api.find_cache_disks(project, stack)]
        return found

    def _cache_leftover(self, disk: Any) -> Leftover:
        """A cache disk as a Leftover: its owner from its name, its size (what the disk bills), its zone."""
        from gpuprov.infra.cache import OWNER_HASH_TAG, SIZE_TAG, parse_cache_name

        parsed = parse_cache_name(disk.name)
        tags = {**disk.labels, SIZE_TAG: str(disk.size_gb or 0)}
        if parsed:
            tags[OWNER_HASH_TAG] = parsed[1]
        return Leftover(self.name, "cache", disk.name, disk.stack or (parsed[0] if parsed else None), disk.name,
                        disk.zone, "in-use" if disk.users else "kept", tags)

    def purge_cache(self, item: Leftover, progress: Progress) -> None:
        """Delete the cache disk; refused while a VM being deleted still has it attached: retried."""
        self.api().delete_disk(self.project(), str(item.region), item.id)
        progress(f"gcp: deleted cache disk {item.name} in {item.region}")

    def set_expiry(self, items: list[Leftover], expires: datetime) -> None:
        """The instances' expiry label; firewall rules carry no labels (they go with their instances)."""
        api, project = self.api(), self.project()
        for item in (i for i in items if i.bills):
            api.set_expiry_label(project, str(item.region), item.id, str(int(expires.timestamp())))

    def remove(self, items: list[Finding], progress: Progress, timeout_s: float = 600.0) -> list[str]:
        from gpuprov.infra.clouds.gcp.sdk import GcpError

        api, project = self.api(), self.project()
        errors: list[str] = []
        for f in sorted(items, key=lambda f: not f.item.bills):  # instances before their firewall rules
            try:
                if f.item.bills:
                    api.delete_instance(project, str(f.item.region), f.item.id)
                else:
                    api.delete_firewall(project, f.item.id)
            except GcpError as err:
                errors.append(str(err))
                continue
            progress(f"gcp: deleted {f.item.kind} {f.item.id}")
        return errors

    # --- on the host; prices ---------------------------------------------------------------------

    def idle_action(self, config: StackConfig, host: GpuHost) -> IdleAction:
        return IdleAction("poweroff", "an OS shutdown leaves a Compute Engine VM TERMINATED (stopped): no vCPU or "
                                      "GPU billing; its disk still bills")

    def live_offers(self, region: str | None = None) -> list[PricedOffer]:
        from gpuprov.infra.clouds.gcp.prices import GCP_KEY_ENV, gcp_offers

        return gcp_offers(region or self.default_region(), api_key=os.environ.get(GCP_KEY_ENV),
                          base_url=self.settings.gcp_billing_url)
