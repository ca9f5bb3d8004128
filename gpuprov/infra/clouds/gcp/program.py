"""The GCP GPU host as a Pulumi ComponentResource: secure by default, labelled for the reaper, priced.

What it creates (children of one ``gpuprov:gcp:GpuHost``), in the project of the
``gcp:project`` Pulumi config (or ``GOOGLE_CLOUD_PROJECT``):
- a VPC network and one subnet of the stack's own, so no project-wide rule of the ``default``
  network (default-allow-ssh from anywhere, default-allow-internal) reaches the VM;
- firewall rules that target the instance's network tag ``gpuprov-<stack>`` only:
  SSH (22) from ``ssh_cidrs``, else ``allowed_cidrs``, else the operator's own egress
  address (a /32 detected at ``up``, :mod:`gpuprov.infra.egress`); service ports only
  when listed in ``open_ports`` and only from ``allowed_cidrs``;
- the instance: g2-standard-4 (its L4 built in) by default, or n1-standard-4 with 1x T4 attached;
  the Deep Learning VM image of a family resolved at run time,
  ``on_host_maintenance = TERMINATE`` (GPUs cannot live-migrate), optional spot
  with the fields spot needs, the SSH key in metadata (project-wide keys blocked),
  no service account (the host needs no Google API), labels from :mod:`gpuprov.infra.tags`,
  guest attributes enabled, so the guest agent publishes sshd's host keys;
- the host key reading (:class:`~gpuprov.infra.clouds.gcp.host_keys.GcpHostKeys`): the key the instance
  published, read through the Compute API after the launch, is the host's declared ``host_key``, so the
  first connect is verified against it;
- with ``cache: true``: the stack's cache, a pd-balanced disk kept across ``down``
  (:mod:`gpuprov.infra.clouds.gcp.cache`), attached as a secondary disk and mounted by the
  VM's startup script (the Deep Learning VM images have no cloud-init) at the cache mount point.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone
from typing import Any, cast

import pulumi

from gpuprov.cost import catalog
from gpuprov.infra.cache import cache_name, mount_point, mount_script
from gpuprov.infra.clouds.gcp.cache import GcpCacheDisk
from gpuprov.infra.clouds.gcp.driver import GcpDriver
from gpuprov.infra.clouds.gcp.host_keys import GcpHostKeys
from gpuprov.infra.clouds.gcp.sdk import (
    CACHE_DEVICE_NAME,
    DLVM_FAMILY,
    DLVM_PROJECT,
    cache_device_path,
    network_tag,
    split_image,
)
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost, utcnow
from gpuprov.infra.keys import public_key
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_OWNER, expires_at, stack_tags

COMPONENT_TYPE = "gpuprov:gcp:GpuHost"
SSH_USER = "gpuprov"  # the user the metadata ssh-keys entry creates on the host
IAP_RANGE = "35.235.240.0/20"  # Google's documented source range for IAP TCP forwarding
SUBNET_RANGE = "10.128.0.0/24"  # the stack's own VPC holds one subnet, for its one VM
# The DLVM image is about 50 GB; the images, the MONAI Label build and the model cache come on top.
BOOT_DISK_GB = 150
# Firewall rules carry no labels: this marker in the description is how the policy pack
# (gpuprov/policy/rules.py ALLOW_PUBLIC_MARKER) knows that public ingress was asked for (allow_public).
ALLOW_PUBLIC_MARKER = "[gpuprov-allow-public]"
_ONCE_LABELS = [f'labels["{TAG_CREATED_AT}"]', f'labels["{TAG_EXPIRES_AT}"]']


def _by_version(cidrs: tuple[str, ...] | list[str]) -> list[list[str]]:
    """Compute Engine refuses IPv4 and IPv6 source ranges in one rule: split them."""
    v4 = [c for c in cidrs if ipaddress.ip_network(c).version == 4]
    v6 = [c for c in cidrs if ipaddress.ip_network(c).version == 6]
    return [group for group in (v4, v6) if group]


def firewall_specs(config: StackConfig) -> list[dict[str, Any]]:
    """The firewall rules for ``config``: ``{suffix, ports, source_ranges, description}`` each."""
    ssh_sources: list[str] = list(config.ssh_sources)
    how = ("from ssh_cidrs" if config.ssh_cidrs else "from allowed_cidrs" if config.allowed_cidrs
           else "from the operator's egress address (detected)")
    public = ALLOW_PUBLIC_MARKER + " " if config.allow_public else ""
    specs = []
    for i, group in enumerate(_by_version(ssh_sources)):
        specs.append({"suffix": f"ssh{'-v6' if i else ''}", "ports": ["22"], "source_ranges": group,
                      "description": f"{public}gpuprov {config.stack}: SSH {how}"})
    if config.open_ports and config.allowed_cidrs:
        for i, group in enumerate(_by_version(config.allowed_cidrs)):
            specs.append({"suffix": f"services{'-v6' if i else ''}", "ports": [str(p) for p in config.open_ports],
                          "source_ranges": group,
                          "description": f"{public}gpuprov {config.stack}: listed service ports from allowed_cidrs"})
    return specs


def scheduling(config: StackConfig) -> dict[str, Any]:
    """Scheduling for a GPU VM: no live migration; spot with the fields spot requires."""
    if config.spot:
        # DELETE, not STOP: a reclaimed spot VM leaves no stopped box and disk behind to bill
        return {"on_host_maintenance": "TERMINATE", "provisioning_model": "SPOT", "preemptible": True,
                "automatic_restart": False, "instance_termination_action": "DELETE"}
    return {"on_host_maintenance": "TERMINATE", "provisioning_model": "STANDARD", "preemptible": False,
            "automatic_restart": True}


class GcpGpuHost(pulumi.ComponentResource):
    """One GPU VM on Compute Engine and its firewall rules; ``host`` is its :class:`~gpuprov.infra.host.GpuHost` dict."""

    host: pulumi.Output[dict[str, Any]]

    def __init__(
        self,
        name: str,
        config: StackConfig,
        image: pulumi.Input[str] | None = None,
        image_family: str = DLVM_FAMILY,
        now: datetime | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__(COMPONENT_TYPE, name, None, opts)
        import pulumi_gcp as gcp

        zone, machine_type = config.resolved_zone, config.resolved_instance_type
        assert zone is not None and machine_type is not None  # gcp always resolves both
        offer = catalog.find_offer("gcp", machine_type)
        assert offer is not None  # the config only accepts catalogued gcp types
        labels = stack_tags(config, now or utcnow())
        tag = network_tag(config.stack)
        child = pulumi.ResourceOptions(parent=self)

        # A VPC of the stack's own: the project's `default` network carries rules such as default-allow-ssh
        # (22 from 0.0.0.0/0) and default-allow-internal (every port from the project's VMs). A new VPC
        # denies all ingress but what the rules below allow; it goes with the stack.
        network = gcp.compute.Network(
            f"{name}-net", auto_create_subnetworks=False, routing_mode="REGIONAL",
            description=f"gpuprov {config.stack}: the stack's own network", opts=child)
        subnet = gcp.compute.Subnetwork(
            f"{name}-subnet", network=network.id, region=config.resolved_region, ip_cidr_range=SUBNET_RANGE,
            description=f"gpuprov {config.stack}: the stack's VM", opts=child)
        rules = [
            gcp.compute.Firewall(
                f"{name}-{spec['suffix']}", network=network.id, direction="INGRESS", priority=1000,
                allows=[{"protocol": "tcp", "ports": spec["ports"]}], source_ranges=spec["source_ranges"],
                target_tags=[tag], description=spec["description"], opts=child,
            )
            for spec in firewall_specs(config)
        ]

        if image is None:
            image = gcp.compute.get_image_output(
                family=image_family, project=DLVM_PROJECT, opts=pulumi.InvokeOutputOptions(parent=self)).self_link

        # n1 machines take the GPU as an attached accelerator; g2 machines have their L4 built in.
        accelerators: Any = ([{"type": offer.accelerator, "count": offer.gpus}]
                        if offer.accelerator and machine_type.startswith("n1-") else [])
        attached: Any = []
        mount_data: dict[str, str] = {}
        if config.cache:  # the stack's cache disk (found or made once; `down` keeps it), mounted at boot
            name_ = cache_name(config.stack, labels[TAG_OWNER])
            disk = GcpCacheDisk(f"{name}-cache", cache_name=name_, zone=zone, size_gb=config.cache_size_gb,
                                labels={k: v for k, v in labels.items() if k != TAG_EXPIRES_AT}, opts=child)
            attached = [{"source": disk.self_link, "device_name": CACHE_DEVICE_NAME, "mode": "READ_WRITE"}]
            # Compute Engine's guest environment runs the startup script as root at every boot (the Deep
            # Learning VM images have no cloud-init): https://cloud.google.com/compute/docs/instances/startup-scripts
            mount_data = {"startup-script": "#!/bin/sh\n" + mount_script(cache_device_path(),
                                                                         mount_point(name_, GcpDriver.cache_mount_root))}
        instance = gcp.compute.Instance(
            f"{name}-vm",
            zone=zone,
            machine_type=machine_type,
            boot_disk=cast(Any, {"auto_delete": True, "initialize_params": {
                "image": image, "size": BOOT_DISK_GB, "type": "pd-balanced", "labels": labels}}),
            guest_accelerators=accelerators,
            attached_disks=attached,
            scheduling=cast(Any, scheduling(config)),
            network_interfaces=cast(Any, [{"network": network.id, "subnetwork": subnet.id,
                                           "access_configs": [{}]}]),  # ephemeral external IPv4
            tags=[tag],
            labels=labels,
            metadata={
                "ssh-keys": f"{SSH_USER}:{public_key(config)}",
                "block-project-ssh-keys": "true",  # only the stack's key logs in
                "install-nvidia-driver": "True",  # the DLVM installs its driver on first boot when missing
                "enable-guest-attributes": "TRUE",  # the guest agent publishes sshd's host keys (hostkeys/)
                **mount_data,
            },
            allow_stopping_for_update=True,
            # A disk attached read-write belongs to one VM at a time: a replacement (a newer image at a later `up`)
            # must let go of the cache before its successor takes it, not after.
            opts=pulumi.ResourceOptions(parent=self, depends_on=rules, ignore_changes=_ONCE_LABELS,
                                        delete_before_replace=bool(config.cache)),
        )

        # The host key the guest agent published, read through the Compute API before anything connects.
        host_keys = GcpHostKeys(f"{name}-hostkeys", project=instance.project, zone=zone, instance=instance.name,
                                instance_id=instance.instance_id, opts=child)

        def to_host(args: list[Any]) -> dict[str, Any]:
            nics, instance_id, live_labels, host_key = args
            live = dict(live_labels or labels)
            address = nics[0]["access_configs"][0]["nat_ip"]
            created = live.get(TAG_CREATED_AT)
            return GpuHost(
                cloud="gcp", address=address, ssh_user=SSH_USER, instance_id=instance_id,
                host_key=host_key or None,  # published by the guest agent, read through the API
                region=config.resolved_region, instance_type=machine_type, gpu=offer.gpu, gpu_count=offer.gpus,
                usd_hour=offer.usd_hour,  # on-demand: the ceiling; spot is billed at the lower spot price
                launched_at=datetime.fromtimestamp(int(created), timezone.utc) if created else None,
                expires_at=expires_at(live),
            ).to_outputs()

        self.host = pulumi.Output.all(instance.network_interfaces, instance.instance_id, instance.labels,
                                      host_keys.host_key).apply(to_host)
        self.register_outputs({"host": self.host, "firewalls": [r.name for r in rules], "network": network.name})


def build_gcp_host(config: StackConfig) -> pulumi.Output[dict[str, Any]]:
    """Declare the stack's GCP GPU host; its ``host`` output is a GpuHost dict.

    ``image`` in the stack config (an image link, or ``family/NAME`` for another Deep
    Learning VM family) replaces the default family.
    """
    link, family = split_image(config.image)
    return GcpGpuHost(f"gpuprov-{config.stack}", config, image=link, image_family=family).host
