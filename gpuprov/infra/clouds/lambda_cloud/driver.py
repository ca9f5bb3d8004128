"""Lambda Cloud as a gpuprov cloud: its REST API through gpuprov's own client and Pulumi dynamic providers."""

from __future__ import annotations

import ipaddress
import os
import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gpuprov.infra.cache import MOUNT_ROOT
from gpuprov.infra.clouds.base import (
    CatalogCloud,
    ExposureRow,
    Finding,
    IdleAction,
    Leftover,
    Progress,
    ReapPolicy,
)

if TYPE_CHECKING:
    import pulumi

    from gpuprov.cost.live import PricedOffer
    from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud
    from gpuprov.infra.config import StackConfig
    from gpuprov.infra.host import GpuHost

# Lambda adds instance types often; any name of its scheme is accepted and the API is the judge.
INSTANCE_TYPE = re.compile(r"^gpu_[0-9]+x_[a-z0-9_]+\Z")
NAME_PREFIX = "gpuprov-"  # keys and rulesets are named gpuprov-<stack>; instances gpuprov-<stack>-<8 hex>
MAX_RULES = 20  # Lambda's limit per ruleset
GONE = frozenset({"terminated"})  # instance states that no longer bill nor exist for our purposes
AGENT_KEY_ENV = "GPUPROV_LAMBDA_AGENT_API_KEY"  # a key made for idle agents only, revocable on its own
SSH_VIA_DEFAULT = "direct, from anywhere (Lambda's default firewall; SSH key login only)"


EXPIRY_SUFFIX = re.compile(r"~([0-9a-z]{6})\Z")  # `gpuprov extend`'s expiry, in base 36 epoch seconds
B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def name_with_expiry(name: str, expires: datetime) -> str:
    """An instance name carrying ``expires``: Lambda cannot update tags (OpenAPI 1.8.3: ``POST /instances/{id}``
    takes only ``name``, at most 64 characters), so ``gpuprov extend`` appends ``~<base 36 epoch>``."""
    n, digits = int(expires.timestamp()), ""
    while n:
        n, r = divmod(n, 36)
        digits = B36[r] + digits
    return f"{EXPIRY_SUFFIX.sub('', name)[:57]}~{digits.rjust(6, '0')}"


def expiry_in_name(name: str | None) -> str | None:
    """The epoch seconds ``gpuprov extend`` put in an instance name, as the tag's text, or None."""
    m = EXPIRY_SUFFIX.search(name or "")
    return str(int(m.group(1), 36)) if m else None


def resource_name(stack: str) -> str:
    """``gpuprov-<stack>``: the name of the stack's SSH key and rulesets; instances add ``-<random>``."""
    return f"{NAME_PREFIX}{stack}"


def named_stack(name: str | None) -> str | None:
    """The stack of a key or ruleset gpuprov named (exactly ``gpuprov-<stack>``), else None."""
    m = re.match(rf"^{NAME_PREFIX}([a-z0-9][a-z0-9-]{{0,39}})\Z", name or "")
    return m.group(1) if m else None


class LambdaDriver(CatalogCloud):
    name = "lambda"
    title = "Lambda Cloud"
    ssh_from_egress = True
    credential_hint = "LAMBDA_API_KEY"
    secret_env = ("LAMBDA_API_KEY", AGENT_KEY_ENV)
    keeps_caches = True
    cache_mount_root = MOUNT_ROOT  # Filesystem.mount_point's folder (OpenAPI 1.8.3)

    # --- config ----------------------------------------------------------------------------------

    def instance_type_allowed(self, instance_type: str) -> str | None:
        if INSTANCE_TYPE.match(instance_type):
            return None
        known = super().instance_type_allowed(instance_type)
        return None if known is None else f"{known} or any gpu_<N>x_<model> name Lambda lists"

    def check_config(self, config: StackConfig) -> None:
        from gpuprov.infra.config import ConfigError

        for key in ("allowed_cidrs", "ssh_cidrs"):
            for cidr in getattr(config, key):
                if ipaddress.ip_network(cidr).version != 4:
                    raise ConfigError(key, cidr, "Lambda firewall rules take IPv4 ranges only")
        from gpuprov.infra.clouds.lambda_cloud.firewall import NO_FIREWALL_REGIONS

        if config.open_ports and config.region in NO_FIREWALL_REGIONS:
            raise ConfigError("region", config.region, "Lambda applies no firewall rules there, so open_ports would "
                                                       "be open to everyone; pick another region, or use gpuprov tunnel")
        if config.region in NO_FIREWALL_REGIONS and not config.allow_public:
            raise ConfigError("region", config.region, "Lambda applies no firewall rules there, so SSH would be open "
                                                       "to everyone; pick another region (or leave region unset), or "
                                                       "set allow_public: true")
        ssh_rules = len(config.ssh_cidrs or config.allowed_cidrs) or 1  # 1: the detected egress address
        rules = ssh_rules + len(config.allowed_cidrs) * len(config.open_ports)
        if rules > MAX_RULES:
            raise ConfigError("allowed_cidrs", list(config.allowed_cidrs),
                              f"Lambda allows {MAX_RULES} rules per ruleset and (ranges x ports) makes {rules}; "
                              "list fewer ranges or ports")

    def client(self, **kw: Any) -> LambdaCloud:
        from gpuprov.infra.clouds.lambda_cloud.client import LambdaCloud

        return LambdaCloud(settings=self.settings, **kw)

    # --- program and plan ------------------------------------------------------------------------

    def build(self, config: StackConfig) -> pulumi.Output[dict[str, Any]]:
        from gpuprov.infra.clouds.lambda_cloud.program import build_lambda_host

        return build_lambda_host(config)

    def exposure(self, config: StackConfig, resources: list[dict[str, Any]]) -> list[ExposureRow]:
        from gpuprov.infra.exposure import Opened, rows, rows_from_config

        opened = Opened()
        for r in resources:
            rules = r["inputs"].get("rules")
            if r["type"] != "pulumi-python:dynamic:Resource" or not isinstance(rules, list) or not all(
                    isinstance(x, dict) and {"port_range", "source_network"} <= set(x) for x in rules):
                continue  # not the firewall ruleset: its rules are port_range + source_network
            opened.found = True
            for rule in rules:
                low, high = rule["port_range"]
                opened.add(int(low), int(high), {str(rule["source_network"])})
        if not opened.found:
            return rows_from_config(config, ["0.0.0.0/0"], SSH_VIA_DEFAULT)
        return rows(config, opened, "see Lambda's firewall")

    # --- before up -------------------------------------------------------------------------------

    def has_credentials(self) -> bool:
        return bool(os.environ.get("LAMBDA_API_KEY"))

    def preflight(self, config: StackConfig, progress: Progress | None = None) -> None:
        from gpuprov.infra.clouds.lambda_cloud.errors import LambdaError
        from gpuprov.infra.clouds.lambda_cloud.launch import matching_offers
        from gpuprov.infra.clouds.lambda_cloud.program import min_gpu_memory_gb

        if progress:
            progress("lambda: checking the instance types and regions Lambda lists")
        types = self.client(retry_for_s=60.0).instance_types()
        names = {t.name for t in types}
        if config.instance_type and config.instance_type not in names:
            raise LambdaError(f"Lambda lists no instance type {config.instance_type!r}; it lists: "
                              f"{', '.join(sorted(names))}")
        if not matching_offers(types, instance_type=config.instance_type, region=config.region,
                               min_gpu_memory_gb=min_gpu_memory_gb(config)) and progress:
            # Capacity comes and goes by the minute: say so, and let the launch's failover try.
            progress("lambda: no region has capacity for this right now; the launch will try every offer")

    # --- what a stack left; the reaper -----------------------------------------------------------

    def inventory(self, stack: str | None = None, config: StackConfig | None = None) -> list[Leftover]:
        from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_MANAGED, TAG_STACK

        api = self.client()
        found: list[Leftover] = []
        for inst in api.list_instances():
            if inst.status in GONE or inst.tags.get(TAG_MANAGED) != "true":
                continue
            if stack is None or inst.tags.get(TAG_STACK) == stack:
                tags = dict(inst.tags)
                moved = expiry_in_name(inst.name)  # `gpuprov extend` moved it: the name wins over the launch tag
                if moved:
                    tags[TAG_EXPIRES_AT] = moved
                found.append(Leftover(self.name, "instance", inst.id, inst.tags.get(TAG_STACK), inst.name,
                                      inst.region, inst.status, tags))
        # Keys and rulesets carry no tags in Lambda's API: gpuprov names them gpuprov-<stack>, exactly. A ruleset
        # has its creation time (the reaper's grace for one with no instance); a key has none.
        for key in api.list_ssh_keys():
            owner = named_stack(key.name)
            if owner and (stack is None or owner == stack):
                found.append(Leftover(self.name, "ssh-key", key.id, owner, key.name))
        for rs in api.list_firewall_rulesets():
            owner = named_stack(rs.name)
            if owner and (stack is None or owner == stack):
                made = {TAG_CREATED_AT: str(int(rs.created.timestamp()))} if rs.created else {}
                found.append(Leftover(self.name, "firewall-ruleset", rs.id, owner, rs.name, rs.region, tags=made))
        found += self._cache_leftovers(api, stack)
        return found

    def _cache_leftovers(self, api: LambdaCloud, stack: str | None) -> list[Leftover]:
        """The stacks' cache filesystems: untagged in Lambda's API, found by their name (gpuprov.infra.cache)."""
        from gpuprov.infra.cache import OWNER_HASH_TAG, parse_cache_name

        found = []
        for fs in api.list_filesystems():
            parsed = parse_cache_name(fs.name)
            if parsed and (stack is None or parsed[0] == stack):
                tags = {OWNER_HASH_TAG: parsed[1]}
                if fs.bytes_used is not None:
                    tags["bytes-used"] = str(fs.bytes_used)
                found.append(Leftover(self.name, "cache", fs.id, parsed[0], fs.name, fs.region,
                                      "in-use" if fs.is_in_use else "kept", tags))
        return found

    def purge_cache(self, item: Leftover, progress: Progress) -> None:
        """Delete the filesystem; Lambda refuses while an instance (still terminating) mounts it: retry."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

        from gpuprov.infra.clouds.lambda_cloud.errors import FilesystemInUse, ObjectNotFound

        api = self.client()
        try:
            for attempt in Retrying(retry=retry_if_exception_type(FilesystemInUse), stop=stop_after_delay(300),
                                    wait=wait_exponential(multiplier=max(api.backoff_scale, 0.01), max=10),
                                    reraise=True):
                with attempt:
                    api.delete_filesystem(item.id)
        except ObjectNotFound:
            return
        progress(f"lambda: deleted cache filesystem {item.name} in {item.region}")

    def reap_findings(self, policy: ReapPolicy, only_stack: str | None = None,
                      config: StackConfig | None = None) -> list[Finding]:
        """As every cloud, and never a key or ruleset that an instance which stays still uses."""
        found = super().reap_findings(policy, only_stack, config)
        going = {f.item.id for f in found if f.item.bills}
        in_use_keys: set[str] = set()
        in_use_rulesets: set[str] = set()
        for inst in self.client().list_instances():
            if inst.status not in GONE and inst.id not in going:
                in_use_keys.update(inst.ssh_key_names)
                in_use_rulesets.update(inst.firewall_ruleset_ids)
        return [f for f in found if not (
            (f.item.kind == "ssh-key" and f.item.name in in_use_keys)
            or (f.item.kind == "firewall-ruleset" and f.item.id in in_use_rulesets))]

    def remove(self, items: list[Finding], progress: Progress, timeout_s: float = 600.0) -> list[str]:
        """Terminate instances, wait until Lambda says terminated, then delete their keys and rulesets."""
        from gpuprov.infra.clouds.lambda_cloud.errors import (
            FirewallRulesetInUse,
            InvalidParameters,
            LambdaError,
            ObjectNotFound,
        )

        api = self.client()
        errors: list[str] = []
        ids = [f.item.id for f in items if f.item.bills]
        if ids:
            progress(f"lambda: terminating {', '.join(ids)}")
            for iid in ids:  # one by one: a single id already gone must not stop the others
                try:
                    api.terminate([iid])
                except ObjectNotFound:
                    continue
                except LambdaError as err:
                    errors.append(f"lambda: could not terminate {iid}: {err}")
            deadline = time.monotonic() + timeout_s
            while True:
                pending = [i.id for i in api.list_instances() if i.id in ids and i.status not in GONE]
                if not pending:
                    break
                if time.monotonic() >= deadline:
                    errors.append(f"lambda: instances {', '.join(pending)} not terminated after {timeout_s:.0f}s")
                    break
                time.sleep(max(api.backoff_scale, 0.01))
        for f in items:
            try:
                if f.item.kind == "ssh-key":
                    try:
                        api.delete_ssh_key(f.item.id)
                    except InvalidParameters:
                        # Lambda answers "invalid parameters" for a key id it no longer has: gone is fine.
                        if any(k.id == f.item.id for k in api.list_ssh_keys()):
                            raise
                elif f.item.kind == "firewall-ruleset":
                    self._delete_ruleset(api, f.item.id, FirewallRulesetInUse, timeout_s)
                else:
                    continue
                progress(f"lambda: deleted {f.item.kind} {f.item.name or f.item.id}")
            except ObjectNotFound:
                continue
            except LambdaError as err:
                errors.append(f"lambda: could not delete {f.item.kind} {f.item.name or f.item.id}: {err}")
        return errors

    def set_expiry(self, items: list[Leftover], expires: datetime) -> None:
        """Rename the instances (see :func:`name_with_expiry`); keys and rulesets carry no expiry here."""
        api = self.client()
        for item in (i for i in items if i.bills):
            api.rename_instance(item.id, name_with_expiry(item.name or resource_name(str(item.stack)), expires))

    @staticmethod
    def _delete_ruleset(api: LambdaCloud, ruleset_id: str, in_use: type[BaseException], timeout_s: float) -> None:
        """A ruleset stays "in use" until its instance is fully terminated: retry until it is not."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

        for attempt in Retrying(retry=retry_if_exception_type(in_use), stop=stop_after_delay(timeout_s),
                                wait=wait_exponential(multiplier=max(api.backoff_scale, 0.01), max=10), reraise=True):
            with attempt:
                api.delete_firewall_ruleset(ruleset_id)

    # --- on the host; prices ---------------------------------------------------------------------

    def idle_action(self, config: StackConfig, host: GpuHost) -> IdleAction:
        if not self.idle_credentials(config):
            return IdleAction("stop-apps", "no agent key (GPUPROV_LAMBDA_AGENT_API_KEY): the agent cannot terminate "
                              "the instance, so it stops the apps; the host bills until its expiry is reaped or "
                              "`gpuprov down`")
        return IdleAction(
            "http", "Lambda has no stop, and an OS shutdown keeps billing: the instance is terminated through the API",
            method="POST", url=f"{self.settings.lambda_api_url}/api/v1/instance-operations/terminate",
            body={"instance_ids": [host.instance_id]}, secret="lambda_api_key")

    def idle_credentials(self, config: StackConfig) -> dict[str, str]:
        """The agent's own key (GPUPROV_LAMBDA_AGENT_API_KEY, one the user made for agents and can revoke alone);
        the operator's LAMBDA_API_KEY only when the config says ``lambda_agent_uses_operator_key: true``."""
        key = os.environ.get(AGENT_KEY_ENV)
        if not key and config.lambda_agent_uses_operator_key:
            key = os.environ.get("LAMBDA_API_KEY")
        return {"lambda_api_key": key} if key else {}

    def idle_protection(self, config: StackConfig) -> str | None:
        if self.idle_credentials(config):
            return None
        return (f"no {AGENT_KEY_ENV} (a Lambda key made for idle agents): the host's idle agent cannot terminate "
                f"it and only stops the apps when idle; the host bills until its expiry "
                f"({config.max_lifetime_hours:g} h after launch) is reaped by a scheduled `gpuprov reap`, or "
                "`gpuprov down`. Set the agent key, or lambda_agent_uses_operator_key: true to use your own key")

    def live_offers(self, region: str | None = None) -> list[PricedOffer]:
        from gpuprov.cost.live import PricedOffer, fallback, today
        from gpuprov.infra.errors import GpuprovError

        if not self.has_credentials():
            return fallback(self.name, "LAMBDA_API_KEY not set")
        client = self.client(retry_for_s=10.0, max_attempts=2)  # a price list is not worth minutes of retries
        try:
            types = client.instance_types()
        except GpuprovError as err:
            return fallback(self.name, f"Lambda API: {err}")
        return [PricedOffer(cloud=self.name, type=t.name, gpu=t.gpu_model, gpus=t.gpus, usd_hour=t.usd_hour,
                            source=f"Lambda API {client.base_url}/api/v1/instance-types", as_of=today(), live=True)
                for t in types]
