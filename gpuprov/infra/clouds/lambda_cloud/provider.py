"""Pulumi dynamic providers for Lambda Cloud: ``LambdaSshKey``, ``LambdaFirewallRuleset``, ``LambdaInstance``.

Lambda has no Pulumi provider, so these are dynamic providers. They live in this
importable module so Pulumi pickles them by reference
(https://www.pulumi.com/docs/iac/concepts/resources/dynamic-providers/), make
their API client inside each method, and read credentials in ``configure()``
(Pulumi config ``lambda:apiKey``, a secret, and ``lambda:apiUrl``) or
from ``LAMBDA_API_KEY`` / ``LAMBDA_API_URL``: the key is never an input or an output.
Each resource carries ``provider_version``: Pulumi does not notice code changes.
"""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import ConfigureRequest, CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from gpuprov.infra.clouds.lambda_cloud.client import Filesystem, FirewallRule, Instance, LambdaCloud
from gpuprov.infra.clouds.lambda_cloud.errors import (
    FirewallRulesetInUse,
    InvalidParameters,
    LambdaError,
    LaunchFailed,
    ObjectNotFound,
)
from gpuprov.infra.clouds.lambda_cloud.firewall import (
    NO_FIREWALL_REGIONS,
    ExposedBeyondAllowList,
    check_exposure,
    check_global_rules,
)
from gpuprov.infra.clouds.lambda_cloud.launch import (
    LaunchSpec,
    Progress,
    launch_with_failover,
    matching_offers,
    terminate_and_confirm,
    wait_until_active,
)
from gpuprov.infra.host import GpuHost
from gpuprov.infra.settings import Settings
from gpuprov.infra.tags import TAG_CREATED_AT, TAG_EXPIRES_AT, TAG_OWNER, TAG_STACK

PROVIDER_VERSION = "1"
# Inputs an instance takes only at launch: a change to them neither replaces nor updates a running instance.
LAUNCH_ONLY = ("tags", "host_key", "host_key_file")


def _log(message: str) -> None:
    """Progress from inside a provider: to stderr (the mock-runtime backend's user sees it there) and,
    under the engine, to Pulumi's log."""
    print(f"· {message}", file=sys.stderr, flush=True)
    pulumi.log.info(message)


class _LambdaProvider(ResourceProvider):
    """Shared credential handling: config secrets from ``configure()``, else the environment."""

    def __init__(self) -> None:
        super().__init__()
        self._api_key: str | None = None
        self._api_url: str | None = None

    def configure(self, req: ConfigureRequest) -> None:
        self._api_key = req.config.get("lambda:apiKey")
        self._api_url = req.config.get("lambda:apiUrl")

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into the state by the engine: never with the key in it.
        return {}

    def __setstate__(self, _state: dict[str, Any]) -> None:
        self._api_key = self._api_url = None

    def client(self) -> LambdaCloud:
        # A provider runs in the engine's process: this is an edge, so the settings are read here.
        return LambdaCloud(api_key=getattr(self, "_api_key", None) or os.environ.get("LAMBDA_API_KEY"),
                           base_url=getattr(self, "_api_url", None), settings=Settings.from_env())


# --- SSH key ----------------------------------------------------------------------


class LambdaSshKeyProvider(_LambdaProvider):
    """An account SSH key (``POST/DELETE /ssh-keys``). Re-running a create adopts the same key, never duplicates."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = self.client()
        existing = next((k for k in api.list_ssh_keys() if k.name == props["name"]), None)
        if existing is not None:
            if existing.public_key.split()[:2] != str(props["public_key"]).split()[:2]:
                raise LambdaError(f"the Lambda account already has an SSH key named '{props['name']}' with another "
                                  "public key; delete it in the dashboard or use another stack name")
            key = existing
        else:
            key = api.add_ssh_key(props["name"], props["public_key"])
        return CreateResult(id_=key.id, outs={**props, "key_id": key.id})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("name", "public_key") if olds.get(k) != news.get(k)]
        changed = bool(replaces) or olds.get("provider_version") != news.get("provider_version")
        # Key names are unique per account: the old key must go before the new one is added.
        return DiffResult(changes=changed, replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**olds, **news})

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        api = self.client()
        try:
            api.delete_ssh_key(id_)
        except (ObjectNotFound, InvalidParameters):
            if any(k.id == id_ for k in api.list_ssh_keys()):
                raise


class LambdaSshKey(Resource):
    """The stack's public key in the Lambda account."""

    name: pulumi.Output[str]
    key_id: pulumi.Output[str]

    def __init__(self, resource_name: str, *, name: str, public_key: str,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(LambdaSshKeyProvider(), resource_name,
                         {"name": name, "public_key": public_key, "key_id": None,
                          "provider_version": PROVIDER_VERSION}, opts)


# --- firewall rulesets ----------------------------------------------------------------


def _rules(raw: list[dict[str, Any]]) -> list[FirewallRule]:
    return [FirewallRule(protocol=r["protocol"], source_network=r["source_network"],
                         description=r.get("description", ""),
                         port_range=(int(r["port_range"][0]), int(r["port_range"][1])) if r.get("port_range") else None)
            for r in raw]


class LambdaFirewallRulesetProvider(_LambdaProvider):
    """One Lambda firewall ruleset per region the instance may land in (rulesets are per region).

    ``regions`` empty means: every region where an instance type that meets the config has
    capacity at create time (the failover set), recorded in the ``ids`` output.
    """

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = self.client()
        regions = list(props.get("regions") or ())
        if not regions:
            offers = matching_offers(api.instance_types(), instance_type=props.get("instance_type"),
                                     min_gpu_memory_gb=props.get("min_gpu_memory_gb"))
            # Rulesets only where Lambda applies them: the instance may land only where one exists.
            regions = sorted({o.region for o in offers} - NO_FIREWALL_REGIONS)
        ids: dict[str, str] = {}
        existing = {(r.name, r.region): r for r in api.list_firewall_rulesets()}
        rules = _rules(props["rules"])
        try:
            for region in regions:
                found = existing.get((props["name"], region))  # a retried create adopts, never duplicates
                if found is not None:
                    ids[region] = api.update_firewall_ruleset(found.id, rules=rules).id
                else:
                    ids[region] = api.create_firewall_ruleset(props["name"], region, rules).id
        except BaseException:
            for rid in ids.values():  # a half-made set is removed, not left open
                _delete_ruleset(api, rid)
            raise
        return CreateResult(id_=props["name"], outs={**props, "ids": ids})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("name", "regions", "instance_type", "min_gpu_memory_gb")
                    if (olds.get(k) or None) != (news.get(k) or None)]
        changed = bool(replaces) or any(olds.get(k) != news.get(k) for k in ("rules", "provider_version"))
        return DiffResult(changes=changed, replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Rules change in place (PATCH), so the instance keeps running."""
        api = self.client()
        if olds.get("rules") != news.get("rules"):
            for rid in (olds.get("ids") or {}).values():
                api.update_firewall_ruleset(rid, rules=_rules(news["rules"]))
        return UpdateResult(outs={**news, "ids": olds.get("ids") or {}})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        api = self.client()
        for rid in (props.get("ids") or {}).values():
            _delete_ruleset(api, rid)


def _delete_ruleset(api: LambdaCloud, ruleset_id: str, timeout_s: float = 300.0) -> None:
    """Delete a ruleset; while an instance still holds it (terminating), wait and try again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            api.delete_firewall_ruleset(ruleset_id)
            return
        except ObjectNotFound:
            return
        except FirewallRulesetInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(5.0 * api.backoff_scale)


class LambdaFirewallRuleset(Resource):
    """Inbound rules for the stack's instance; outputs ``ids`` (region -> ruleset id)."""

    ids: pulumi.Output[dict[str, str]]

    def __init__(self, resource_name: str, *, name: str, rules: list[dict[str, Any]], regions: list[str],
                 instance_type: str | None, min_gpu_memory_gb: int | None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(LambdaFirewallRulesetProvider(), resource_name,
                         {"name": name, "rules": rules, "regions": regions, "instance_type": instance_type,
                          "min_gpu_memory_gb": min_gpu_memory_gb, "ids": None,
                          "provider_version": PROVIDER_VERSION}, opts)


# --- instance ------------------------------------------------------------------------


class LambdaInstanceProvider(_LambdaProvider):
    """A Lambda instance: create launches with failover and waits for ``active``; delete waits for ``terminated``."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = self.client()
        ruleset_ids: dict[str, str] = dict(props.get("firewall_ruleset_ids") or {})
        opened = [int(p) for p in props.get("open_ports") or ()]
        offers = matching_offers(api.instance_types(), instance_type=props.get("instance_type"),
                                 region=props.get("region"), min_gpu_memory_gb=props.get("min_gpu_memory_gb"),
                                 regions=list(ruleset_ids) if props.get("firewall_required") else None)
        if opened:  # a port is opened: never where Lambda applies no firewall rules
            guarded = [o for o in offers if o.region not in NO_FIREWALL_REGIONS]
            if offers and not guarded:
                raise LaunchFailed(f"Lambda has capacity only in {', '.join(sorted({o.region for o in offers}))}, "
                                   "where it applies no firewall rules, and open_ports needs them; try again later, "
                                   "or leave open_ports empty and reach the services through gpuprov tunnel", [])
            offers = guarded
        ssh = props.get("ssh_sources")
        ssh_sources = None if ssh is None else list(ssh)
        cache_name = props.get("cache_name")
        cache: Filesystem | None = None
        if cache_name:
            cache, offers = _cache_filesystem(api, str(cache_name), offers, props.get("region"), _log)
        spec = LaunchSpec(name_prefix=props["name"], ssh_key_name=props["ssh_key_name"],
                          tags=dict(props.get("tags") or {}), firewall_ruleset_ids=ruleset_ids,
                          image_family=props.get("image_family"), user_data=_host_key_user_data(props),
                          file_system_names=[str(cache_name)] if cache_name else [],
                          boot_timeout_s=float(props.get("boot_timeout_s") or LaunchSpec.boot_timeout_s))
        progress: Progress = _log
        inst = _adopt_earlier_launch(api, props, offers, spec, progress)
        if inst is None:  # the account's global rules first: a rule there stops it before anything bills
            check_global_rules(api, opened, list(props.get("allowed_cidrs") or ()), ssh_sources,
                               bool(props.get("allow_public")))
            inst = launch_with_failover(api, offers, spec, progress)
        try:
            check_exposure(api, inst, opened, list(props.get("allowed_cidrs") or ()),
                           ssh_sources=ssh_sources, allow_public=bool(props.get("allow_public")))
        except ExposedBeyondAllowList as err:
            terminate_and_confirm(api, inst.id, spec.terminate_timeout_s, spec.poll_s, progress)
            raise ExposedBeyondAllowList(f"{err}. It has been terminated, nothing is billing") from None
        outs = {**props, **_instance_outputs(inst, props)}
        if cache is not None:
            outs["cache"] = {"name": cache.name, "id": cache.id, "region": cache.region,
                             "mount_point": cache.mount_point}
        return CreateResult(id_=inst.id, outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("instance_type", "region", "image_family", "ssh_key_name", "min_gpu_memory_gb")
                    if olds.get(k) != news.get(k)]
        if (olds.get("cache_name") or None) != (news.get("cache_name") or None):
            replaces.append("cache_name")  # Lambda mounts filesystems only at launch
        launched = olds.get("launched_region")
        if (olds.get("firewall_ruleset_ids") or {}).get(launched) != (news.get("firewall_ruleset_ids") or {}).get(
                launched):
            replaces.append("firewall_ruleset_ids")  # Lambda attaches rulesets only at launch
        # Tags are written once at launch (created-at/expires-at of that launch); they do not drift.
        changed = bool(replaces) or any(olds.get(k) != news.get(k) for k in ("name", "provider_version"))
        return DiffResult(changes=changed, replaces=replaces, delete_before_replace=False)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Only the name changes in place: the random suffix of the launch is kept."""
        outs = {**olds, **{k: v for k, v in news.items() if k not in LAUNCH_ONLY}}
        if olds.get("name") != news.get("name"):
            suffix = str(olds["instance_name"]).rsplit("-", 1)[-1]
            renamed = self.client().rename_instance(id_, f"{news['name'][:55]}-{suffix}")
            outs["instance_name"] = renamed.name
        return UpdateResult(outs=outs)

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        terminate_and_confirm(self.client(), id_, progress=_log)


def _adopt_earlier_launch(api: LambdaCloud, props: dict[str, Any], offers: list[Any], spec: LaunchSpec,
                          progress: Progress) -> Instance | None:
    """An instance an earlier, killed run of this same stack launched (same name scheme, stack and owner tags).

    A run killed outright (``kill -9``) cannot clean up and its state never recorded the
    instance; the next run adopts it when it fits the config instead of paying for two,
    and terminates any that do not fit.
    """
    own = re.compile(rf"^{re.escape(props['name'][:55])}-[0-9a-f]{{8}}$")
    tags = dict(props.get("tags") or {})
    earlier = [i for i in api.list_instances()
               if i.name and own.match(i.name) and i.status in ("booting", "active")
               and all(i.tags.get(k) == tags.get(k) for k in (TAG_STACK, TAG_OWNER))]
    fits = {(o.instance_type.name, o.region) for o in offers}
    keep = next((i for i in earlier if (i.instance_type, i.region) in fits), None)
    for other in earlier:
        if other is not keep:
            progress(f"terminating {other.id} ({other.name}): left by an earlier run, does not fit the config")
            terminate_and_confirm(api, other.id, progress=progress)
    if keep is None:
        return None
    progress(f"adopting instance {keep.id} ({keep.name}) launched by an earlier run of this stack")
    try:
        return wait_until_active(api, keep.id, spec, progress)
    except BaseException:
        terminate_and_confirm(api, keep.id, progress=progress)
        raise


def _cache_filesystem(api: LambdaCloud, name: str, offers: list[Any], region: str | None,
                      progress: Progress) -> tuple[Filesystem, list[Any]]:
    """The stack's cache filesystem (made once, in the region of the first launch) and the offers in its region:
    a filesystem mounts only in its own region, so with a cache the failover stays there."""
    found = next((f for f in api.list_filesystems() if f.name == name), None)
    if found is None:
        where = region or (offers[0].region if offers else None)
        if where is None:
            raise LaunchFailed("no Lambda region has capacity for an instance type that meets the config right "
                               "now, so gpuprov made no cache filesystem; try again later", [])
        progress(f"creating the stack's cache filesystem {name} in {where} (kept across `gpuprov down`)")
        found = api.create_filesystem(name, where)
    else:
        progress(f"using the stack's cache filesystem {name} in {found.region}")
    kept = [o for o in offers if o.region == found.region]
    if not kept:
        raise LaunchFailed(f"the stack's cache filesystem {name} is in {found.region}, and Lambda has no capacity "
                           f"there for this config right now (a filesystem mounts only in its region); try again "
                           "later, or `gpuprov down --purge` to drop the cache and launch anywhere", [])
    return found, kept


def _host_key_user_data(props: dict[str, Any]) -> str | None:
    """The cloud-init user data that installs the stack's host key (read from its 0600 file now: the private
    key is never an input, an output or part of the state), or None when the program declared none."""
    from gpuprov.infra.host_keys import user_data_for

    if not props.get("host_key_file") or not props.get("host_key"):
        return None
    try:
        return user_data_for(Path(str(props["host_key_file"])), str(props["host_key"]))
    except OSError as err:
        raise LambdaError(f"cannot read the stack's host key {props['host_key_file']} ({err.strerror}); "
                          "run gpuprov up again to make a new one") from None


def _epoch(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(value), timezone.utc) if value and value.isdigit() else None


def _instance_outputs(inst: Any, props: dict[str, Any]) -> dict[str, Any]:
    gpu = (inst.gpu_description or "").split("(")[0].strip() or None
    host = GpuHost(cloud="lambda", address=inst.ip, ssh_user=props.get("ssh_user") or "ubuntu", ssh_port=22,
                   host_key=props.get("host_key") or None,  # installed by the launch's user data
                   instance_id=inst.id, region=inst.region, instance_type=inst.instance_type, gpu=gpu,
                   gpu_count=inst.gpus, usd_hour=(inst.price_cents_per_hour or 0) / 100,
                   launched_at=_epoch(inst.tags.get(TAG_CREATED_AT)) or datetime.now(timezone.utc),
                   expires_at=_epoch(inst.tags.get(TAG_EXPIRES_AT)))
    return {"instance_name": inst.name, "launched_region": inst.region, "launched_type": inst.instance_type,
            "ip": inst.ip, "host": host.to_outputs()}


class LambdaInstance(Resource):
    """The stack's GPU instance; ``host`` is its :class:`~gpuprov.infra.host.GpuHost` as a dict."""

    host: pulumi.Output[dict[str, Any]]
    ip: pulumi.Output[str]

    def __init__(self, resource_name: str, *, name: str, ssh_key_name: pulumi.Input[str], tags: dict[str, str],
                 instance_type: str | None, region: str | None, min_gpu_memory_gb: int | None,
                 firewall_ruleset_ids: pulumi.Input[dict[str, str]] | None, image_family: str | None = None,
                 ssh_user: str = "ubuntu", boot_timeout_s: float = LaunchSpec.boot_timeout_s,
                 open_ports: list[int] | None = None, allowed_cidrs: list[str] | None = None,
                 cache_name: str | None = None, host_key: str | None = None, host_key_file: str | None = None,
                 ssh_sources: list[str] | None = None, allow_public: bool = False,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(LambdaInstanceProvider(), resource_name, {
            "name": name, "ssh_key_name": ssh_key_name, "tags": tags, "instance_type": instance_type,
            "region": region, "min_gpu_memory_gb": min_gpu_memory_gb,
            "firewall_ruleset_ids": firewall_ruleset_ids or {}, "firewall_required": firewall_ruleset_ids is not None,
            "image_family": image_family, "ssh_user": ssh_user, "boot_timeout_s": boot_timeout_s,
            "open_ports": list(open_ports or ()), "allowed_cidrs": list(allowed_cidrs or ()),
            "host_key": host_key, "host_key_file": host_key_file,
            "ssh_sources": None if ssh_sources is None else list(ssh_sources), "allow_public": allow_public,
            "provider_version": PROVIDER_VERSION, "cache_name": cache_name, "cache": None,
            "host": None, "ip": None, "instance_name": None, "launched_region": None, "launched_type": None,
        }, opts)
