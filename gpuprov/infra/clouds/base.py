"""What a cloud must provide to gpuprov: one interface, implemented once per folder under ``clouds/``.

Everything gpuprov does that depends on *where* a host lives goes through a
:class:`CloudDriver`: checking the config, building the Pulumi program, what
``plan`` shows, the checks before ``up``, which backend keeps the stack's state,
listing what a stack left behind (``verify``), finding and removing gpuprov
resources (the reaper), what the idle agent on the host does to stop the bill,
where prices come from, and whether this machine has credentials for it.

A driver is a small class with lazy imports (a cloud's SDK is imported only
inside the methods that use it), so importing every driver is cheap: the
registry (:mod:`gpuprov.infra.clouds`) does exactly that at registration, and a
driver that leaves an abstract method unimplemented fails there, loudly.
"""

from __future__ import annotations

import abc
import functools
import inspect
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from gpuprov.infra.cache import DISK_MOUNT_ROOT
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.settings import Settings

if TYPE_CHECKING:
    import pulumi
    from pulumi.runtime import MockResourceArgs

    from gpuprov.cost.live import PricedOffer
    from gpuprov.infra.config import StackConfig
    from gpuprov.infra.host import GpuHost
    from gpuprov.infra.mock_runtime import CallHandler
    from gpuprov.infra.stacks import StackBackend

Progress = Callable[[str], None]
F = TypeVar("F", bound=Callable[..., Any])

# States in which a resource is on its way out: verification waits for it rather than failing at once.
SETTLING = frozenset({"terminating", "shutting-down", "stopping", "STOPPING", "SUSPENDING"})


class CloudError(GpuprovError):
    """A cloud call gpuprov needs failed. Every driver turns its SDK's errors into this (or a subclass)
    at its boundary, with what failed and what to do."""


@dataclass(frozen=True)
class Leftover:
    """One gpuprov resource a cloud lists: an instance that bills, or something that belongs to one
    (an SSH key, a firewall ruleset, a security group, a key pair, a firewall rule)."""

    cloud: str
    kind: str  # instance, ssh-key, firewall-ruleset, security-group, key-pair, firewall, sandbox, cache
    id: str
    stack: str | None = None
    name: str | None = None
    region: str | None = None
    state: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def bills(self) -> bool:
        """Instances cost money by the minute; what hangs off them does not (or barely)."""
        return self.kind == "instance"

    @property
    def settling(self) -> bool:
        """On its way out (terminating): verification waits for it instead of failing."""
        return self.state in SETTLING

    def __str__(self) -> str:
        where = f" in {self.region}" if self.region else ""
        name = f" '{self.name}'" if self.name and self.name != self.id else ""
        state = f" ({self.state})" if self.state else ""
        return f"{self.cloud} {self.kind} {self.id}{name}{where}{state}"


@dataclass(frozen=True)
class IdleAction:
    """What the on-host idle agent does when the host must stop billing, as data the agent carries out.

    ``kind``: ``poweroff`` (``shutdown -h now``), ``stop-apps`` (``docker compose stop`` of gpuprov's
    projects: the machine is not gpuprov's to power off) or ``http`` (one API request, e.g. a terminate,
    with a bearer token read from the root-only secret file under ``secret``). ``why`` is shown to users.
    """

    kind: str
    why: str
    method: str | None = None
    url: str | None = None
    body: dict[str, Any] | None = None
    secret: str | None = None  # key in the agent's secret file holding the bearer token

    def to_agent(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ExposureRow:
    """Who can reach one port of the host, from where, and how (``plan`` and ``status`` show these)."""

    port: int | str
    service: str
    sources: tuple[str, ...]
    via: str

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "service": self.service, "from": list(self.sources), "via": self.via}


class ReapPolicy(abc.ABC):
    """Why a gpuprov resource should go, decided by the reaper (cloud-agnostic); drivers only ask it."""

    @abc.abstractmethod
    def instance_reason(self, stack: str | None, tags: dict[str, str]) -> str | None:
        """``expired``, ``abandoned``, ``orphaned``, ``stack-teardown``, or None to keep the instance."""

    @abc.abstractmethod
    def dependent_reason(self, stack: str | None, tags: dict[str, str], doomed: set[str], live: set[str]) -> str | None:
        """Why a key, ruleset, group or rule of ``stack`` (with its own ``tags``, where the cloud has them)
        should go, given the stacks whose instances go now (``doomed``) and those whose instances stay
        (``live``); None to keep it."""


@dataclass
class Finding:
    """One resource the reaper found to remove, and why."""

    item: Leftover
    reason: str  # expired | abandoned | orphaned | stack-teardown | with-instance | dangling

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**{k: v for k, v in asdict(self.item).items() if k != "tags"}, "reason": self.reason}


class CloudDriver(abc.ABC):
    """One cloud (or host source). Subclasses live in ``clouds/<name>/driver.py``; the registry makes them."""

    name: ClassVar[str]  # the config's ``cloud:`` value
    title: ClassVar[str]  # how users call it ("Lambda Cloud")
    #: Whether gpuprov creates paid resources there (False: an existing machine, the local sandbox).
    creates_cloud_resources: ClassVar[bool] = True
    #: Whether its hosts are sandboxes that run the apps' stand-in images (what ``gpuprov build`` builds
    #: for them); a real host's deploy learns it from the host's own facts.
    sandbox_hosts: ClassVar[bool] = False
    #: Whether stacks here may keep a cache across ``down`` (``cache: true``): its driver lists caches
    #: (kind ``cache`` in :meth:`inventory`) and implements :meth:`purge_cache`.
    keeps_caches: ClassVar[bool] = False
    #: Where a cache is mounted on the host (``<root>/<name>``): DISK_MOUNT_ROOT, where the
    #: user data mounts a block device (EBS, persistent disk); Lambda mounts its filesystems elsewhere.
    cache_mount_root: ClassVar[str] = DISK_MOUNT_ROOT
    #: Whether spot / preemptible capacity can be asked for.
    supports_spot: ClassVar[bool] = False
    #: Whether the program opens SSH to the operator's detected egress address when the config lists no
    #: ranges (:mod:`gpuprov.infra.egress`); False: the target's own network decides (sandbox, existing).
    ssh_from_egress: ClassVar[bool] = False
    #: ``image:`` grammar on this cloud, as (pattern, what to write); None: the key does not apply.
    image_grammar: ClassVar[tuple[re.Pattern[str], str] | None] = None
    #: A Kubernetes target: the apps are workloads in the Pulumi program itself (``up`` deploys nothing over
    #: SSH) and the config's ``kubernetes:`` block applies.
    cluster: ClassVar[bool] = False
    #: The section of ``gpuprov/cost/catalog.yaml`` whose instance types and prices this cloud uses (its own
    #: name when None): a cluster on AWS rents AWS's types.
    price_catalog: ClassVar[str | None] = None
    #: Environment variables that carry this cloud's credentials, for messages ("set LAMBDA_API_KEY").
    credential_hint: ClassVar[str] = ""
    #: Environment variables holding this cloud's secrets: never handed to ``gpuprov ci``'s CMD
    #: (:mod:`gpuprov.ci.env`) unless passed by name.
    secret_env: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()

    # --- config -------------------------------------------------------------------------------------

    def default_instance_type(self) -> str | None:
        """The instance type used when the config names none (the catalog's default)."""
        return None

    def default_region(self) -> str | None:
        return None

    def default_zone(self, region: str | None) -> str | None:
        return None

    def check_config(self, config: StackConfig) -> None:
        """Raise :class:`~gpuprov.infra.config.ConfigError` for settings this cloud cannot take.

        The generic rules (image grammar, spot, a catalogued instance type) run first in the config
        model; this adds the cloud's own.
        """
        return None

    def instance_type_allowed(self, instance_type: str) -> str | None:
        """None when ``instance_type`` may be asked for here, else what is allowed (for the message)."""
        return None

    # --- the Pulumi program and the stack's state ----------------------------------------------------

    @abc.abstractmethod
    def build(self, config: StackConfig) -> pulumi.Output[dict[str, Any]] | dict[str, Any]:
        """Declare the stack's resources; return its ``host`` output (a :class:`GpuHost` dict)."""

    def backend(self, progress: Progress | None = None) -> StackBackend:
        """Where the stack's state lives and how it comes and goes (a Pulumi backend by default)."""
        from gpuprov.infra.stacks import pulumi_backend

        return pulumi_backend(self.settings, progress)

    # --- plan ------------------------------------------------------------------------------------------

    def plan_calls(self) -> dict[str, CallHandler]:
        """Mock answers for the program's invokes that only the cloud can answer (labelled placeholders)."""
        return {}

    def plan_outputs(self, args: MockResourceArgs) -> dict[str, Any]:
        """Mock outputs the cloud assigns (addresses, ids), as labelled placeholders."""
        return {}

    @abc.abstractmethod
    def exposure(self, config: StackConfig, resources: list[dict[str, Any]]) -> list[ExposureRow]:
        """Who could reach which port of the host, read from the resources the program declares."""

    #: resource type -> the input paths (``a.b``) a reader of the plan checks first.
    KEY_SETTINGS: ClassVar[dict[str, tuple[str, ...]]] = {}

    def key_settings(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The few inputs of a planned resource a reader checks first (type, image, encryption, ranges)."""
        from gpuprov.infra.plan import dig

        found = {path: dig(resource["inputs"], path) for path in self.KEY_SETTINGS.get(resource["type"], ())}
        return {k: v for k, v in found.items() if v is not None}

    def node_pools(self, config: StackConfig) -> list[dict[str, Any]]:
        """A cluster target's node pools with their node counts and hourly price at min and max
        (``usd_hour_at_min``, ``usd_hour_at_max`` each); [] where the stack is one host."""
        return []

    # --- before up -------------------------------------------------------------------------------------

    def has_credentials(self) -> bool:
        """Whether this machine can ask the cloud anything (the reaper and live prices ask only those)."""
        return False

    def preflight(self, config: StackConfig, progress: Progress | None = None) -> None:
        """Fail before anything is created, with a message to act on: the type not sold in the region,
        the image gone, no quota. Called by ``up`` when credentials are present."""
        return None

    # --- what a stack left, and the reaper -----------------------------------------------------------

    def inventory(self, stack: str | None = None, config: StackConfig | None = None) -> list[Leftover]:
        """Every gpuprov resource this cloud lists (of ``stack`` when named), not yet gone.

        ``config``: the stack's own config when known (where to look: its region, its project).
        """
        return []

    def leftovers(self, config: StackConfig) -> list[Leftover]:
        """What the cloud still lists of ``config``'s stack (destroy verification); its cache is kept on
        purpose (``cache: true``) and is not a leftover: :meth:`caches` lists it."""
        return [i for i in self.inventory(config.stack, config) if i.kind != "cache"]

    def caches(self, stack: str | None = None, config: StackConfig | None = None) -> list[Leftover]:
        """The stack caches this cloud lists (of ``stack`` when named): storage kept across ``down``."""
        return [i for i in self.inventory(stack, config) if i.kind == "cache"]

    def purge_cache(self, item: Leftover, progress: Progress) -> None:
        """Delete one cache (``down --purge``). Raises :class:`CloudError` when it cannot."""
        raise CloudError(f"{self.title}: gpuprov keeps no cache here")

    def sweeps(self) -> bool:
        """Whether ``gpuprov reap`` asks this cloud by default: it creates paid resources and has credentials here."""
        return self.creates_cloud_resources and self.has_credentials()

    def reap_findings(self, policy: ReapPolicy, only_stack: str | None = None,
                      config: StackConfig | None = None) -> list[Finding]:
        """The resources the reaper should remove here, each with the policy's reason."""
        # Caches are never the reaper's to remove: it reports them (gpuprov.infra.reaper.cache_verdicts).
        items = [i for i in self.inventory(only_stack, config) if i.kind != "cache"]
        found: list[Finding] = []
        doomed: set[str] = set()
        live: set[str] = set()
        for item in (i for i in items if i.bills):
            why = policy.instance_reason(item.stack, item.tags)
            if why is None:
                live.add(str(item.stack))
                continue
            doomed.add(str(item.stack))
            found.append(Finding(item, why))
        for item in (i for i in items if not i.bills):
            why = policy.dependent_reason(item.stack, item.tags, doomed, live)
            if why is not None:
                found.append(Finding(item, why))
        return found

    def remove(self, items: list[Finding], progress: Progress, timeout_s: float = 600.0) -> list[str]:
        """Remove ``items`` (instances first, then what belonged to them); returns errors, one line each.

        An error on one resource does not stop the others: each is tried, and what failed is said.
        """
        return [f"{self.name}: gpuprov does not remove resources here ({', '.join(str(i.item) for i in items)})"] \
            if items else []

    def set_expiry(self, items: list[Leftover], expires: datetime) -> None:
        """Move the expiry of ``items`` (a stack's own resources, from :meth:`inventory`) to ``expires`` in the
        cloud, where the reaper reads it (``gpuprov extend``). Raises :class:`CloudError` when it cannot."""
        if items:
            raise CloudError(f"{self.title}: gpuprov cannot move an expiry here")

    # --- on the host -------------------------------------------------------------------------------------

    def recorded_config(self, stack: str) -> dict[str, Any]:
        """Config keys a stack named by ``--stack`` alone takes from this machine's record of it (an existing
        machine's ``host`` and key); {} when the stack's config needs nothing of the record."""
        return {}

    def host_state(self, stack: str, host: GpuHost) -> str:
        """One word for ``status``: is the host there (``reachable``: its sshd answers)?"""
        from gpuprov.infra.host import ssh_banner_error

        return "unreachable" if ssh_banner_error(host.address, host.ssh_port) else "reachable"

    @abc.abstractmethod
    def idle_action(self, config: StackConfig, host: GpuHost) -> IdleAction:
        """What the host's idle agent does to stop the bill here, and why that and not something else."""

    def idle_credentials(self, config: StackConfig) -> dict[str, str]:
        """The credential the idle action needs on the host (its secret file's entries); {} when none."""
        return {}

    def idle_protection(self, config: StackConfig) -> str | None:
        """When the host's idle agent cannot stop the bill here (no credential it may use), what protects the
        host instead, in one line for ``plan`` and ``deploy``; None when the agent can act."""
        return None

    # --- prices -------------------------------------------------------------------------------------------

    def live_offers(self, region: str | None = None) -> list[PricedOffer]:
        """This cloud's instance types at today's price where the cloud publishes it (the dated catalog
        otherwise, saying why)."""
        return []


class CatalogCloud(CloudDriver):
    """A cloud whose instance types, defaults and offline prices are in ``gpuprov/cost/catalog.yaml``."""

    def default_instance_type(self) -> str | None:
        return catalog_defaults(catalog_name(type(self)))[0]

    def default_region(self) -> str | None:
        return catalog_defaults(catalog_name(type(self)))[1]

    def instance_type_allowed(self, instance_type: str) -> str | None:
        from gpuprov.cost import catalog

        section = catalog_name(type(self))
        if catalog.find_offer(section, instance_type):
            return None
        return f"{self.name} offers: {', '.join(o.type for o in catalog.offers(section))}"


def catalog_name(driver: type[CloudDriver]) -> str:
    """The price catalog section a driver's instance types come from."""
    return driver.price_catalog or driver.name


def catalog_defaults(cloud: str) -> tuple[str | None, str | None, str | None]:
    """(instance type, region, zone) a catalogued cloud picks by default."""
    from gpuprov.cost import catalog

    d = catalog.defaults(cloud)
    return d.instance_type, d.region, d.zone


def sdk_call(boundary: Callable[[str], AbstractContextManager[None]], what: str) -> Callable[[F], F]:
    """Decorate an SDK helper so its errors pass through ``boundary`` (a cloud's error translator), which is
    told ``what`` was being done; ``what`` may name the helper's arguments (``"listing {region}"``)."""
    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with boundary(what.format(**bound.arguments)):
                return fn(*args, **kwargs)
        return inner  # type: ignore[return-value]
    return wrap
