"""``gpuprov update`` and ``gpuprov rollback``: a new image tag, MONAI Label commit or model, applied
with the previous release kept on the host, health waited for, and a rollback by itself when it fails.

1. The new config is the stack's with the changed keys, validated like any config (:mod:`gpuprov.infra.config`).
2. :func:`gpuprov.provisioning.deploy.deploy` applies only what differs; each app whose files change
   keeps its running release in ``previous/`` in the same batch (:mod:`gpuprov.provisioning.release`).
3. Every service must answer its health check within the limit. When one does not (or the batch
   fails after the snapshot), the apps that changed swap back to the kept release, the old
   config's health is waited for, and :class:`UpdateRolledBack` says why (exit 7).

Data (named volumes: model cache, Open WebUI data, MONAI Label weights; ``data/`` folders: studies,
predictions) is never part of a release: it stays as it is both ways.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpuprov.apps import registry
from gpuprov.infra.config import ConfigError, StackConfig, build_config
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning import release
from gpuprov.provisioning.deploy import deploy
from gpuprov.provisioning.errors import ProvisioningError, ServiceUnhealthy, StepFailed
from gpuprov.provisioning.health import wait_healthy
from gpuprov.provisioning.ssh import Remote, target_for

Progress = Callable[[str], None]

# What an update may change: image references, the MONAI Label commit, the model (checked by config.py).
UPDATABLE = ("vllm_image", "open_webui_image", "monai_label_image", "monai_label_ref", "model_id",
             "served_model_name")


class UpdateRolledBack(ProvisioningError):
    """The update failed (health or a step); the previous release was restored and is healthy again."""

    exit_code = 7

    def __init__(self, stack: str, why: str, apps: list[str], service: str = "NAME"):
        self.why = why
        super().__init__(
            f"the update of stack '{stack}' failed: {why}. Rolled back by itself: {', '.join(apps)} run(s) the "
            f"previous release again and answer their health checks. Fix the new value (the service's log: "
            f"`fab logs --stack {stack} --service {service}`) and run `gpuprov update` again")


class RollbackFailed(ProvisioningError):
    """Returning to the previous release did not bring the services back healthy (exit 4)."""


class NothingToRollBack(ProvisioningError):
    """No app of the stack has a previous release on the host."""

    exit_code = 1


@dataclass
class UpdateResult:
    changed: list[str]  # steps and services the update changed (empty: the host already ran it)
    apps: list[str]  # apps whose release changed (each keeps the previous one)
    seconds: float
    config: StackConfig = field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {"changed": self.changed, "apps": self.apps, "seconds": round(self.seconds, 3), "rolled_back": False}


@dataclass
class RollbackResult:
    apps: list[str]  # apps that returned to their previous release
    images: list[str]  # the image references they run now
    missing: list[str]  # apps with no previous release on the host

    def to_json(self) -> dict[str, object]:
        return {"apps": self.apps, "images": self.images, "no_previous": self.missing}


def updated_config(config: StackConfig, changes: Mapping[str, str]) -> StackConfig:
    """``config`` with ``changes`` (KEY -> VALUE), each value checked against its key's grammar."""
    for key, value in changes.items():
        if key not in UPDATABLE:
            raise ConfigError("--set", f"{key}={value}", f"update changes only {', '.join(UPDATABLE)}; "
                              "anything else is `gpuprov deploy` with your config")
    if not changes:
        raise ConfigError("--set", "(none)", f"say what to change: --set KEY=VALUE, KEY one of {', '.join(UPDATABLE)}")
    return build_config({**config.model_dump(exclude_unset=True), **changes})


def update(config: StackConfig, changes: Mapping[str, str], host: GpuHost, progress: Progress | None = None, *,
           timeout_s: float = 600.0, key_path: Path | None = None) -> UpdateResult:
    """Apply ``changes`` to the stack's host; roll back by itself when the new release is not healthy in time."""
    say = progress or (lambda _m: None)
    started = time.monotonic()
    new = updated_config(config, changes)
    token = uuid.uuid4().hex
    try:
        result = deploy(new, host, say, key_path=key_path, keep_previous=token)
    except StepFailed as failed:  # the batch stopped: an app kept by this update returns to what it ran
        say(f"step {failed.step} failed: rolling back what this update changed")
        back = rollback(new, host, token=token, key_path=key_path, progress=say)
        if not back.apps:
            raise
        _healthy_again(config, host, timeout_s, key_path, say, f"step '{failed.step}' failed")
        raise UpdateRolledBack(config.stack, f"deploy step '{failed.step}' failed", back.apps) from None
    apps = [a for a in new.apps if f"files:{a}" in result.changed]
    if not apps:
        return UpdateResult([], [], time.monotonic() - started, new)
    say(f"waiting up to {timeout_s:.0f}s until every service answers its health check")
    try:
        wait_healthy(new, host, timeout_s, key_path=key_path, progress=say)
    except ServiceUnhealthy as sick:
        why = f"service '{sick.service}' was not healthy within {timeout_s:.0f}s ({_detail(sick)})"
        say(f"{why}: rolling back to the previous release")
        if not rollback(new, host, token=token, key_path=key_path, progress=say).apps:
            raise  # nothing was running before (a first deploy): there is no release to return to
        _healthy_again(config, host, timeout_s, key_path, say, why)
        raise UpdateRolledBack(config.stack, why, apps, sick.service) from None
    return UpdateResult(result.changed, apps, time.monotonic() - started, new)


def _detail(sick: ServiceUnhealthy) -> str:
    """What the probe said: the part of ServiceUnhealthy's message between "(URL: " and ")."."""
    text = str(sick)
    start, end = text.find("("), text.rfind("). ")
    return text[start + 1:end] if 0 <= start < end else text


def _healthy_again(config: StackConfig, host: GpuHost, timeout_s: float, key_path: Path | None,
                   say: Progress, why: str) -> None:
    try:
        wait_healthy(config, host, timeout_s, key_path=key_path, progress=say)
    except ServiceUnhealthy as sick:
        raise RollbackFailed(
            f"the update of stack '{config.stack}' failed ({why}) and after rolling back, service '{sick.service}' "
            f"is not healthy either ({_detail(sick)}). Look at its log (`fab logs --stack {config.stack} --service "
            f"{sick.service}`), then `gpuprov deploy --stack {config.stack}`") from None


def rollback(config: StackConfig, host: GpuHost, apps: Iterable[str] | None = None, *, token: str | None = None,
             key_path: Path | None = None, progress: Progress | None = None) -> RollbackResult:
    """Swap the apps' current and previous releases on the host (all of the stack's apps by default) in ONE
    round trip. ``token``: only the apps that update kept (its automatic rollback)."""
    say = progress or (lambda _m: None)
    names = list(apps) if apps is not None else list(config.apps)
    for name in names:
        registry().app(name)  # a name no app declares: AppError at once
    with Remote(target_for(config, host, key_path)) as remote:
        code, out, err = remote.script(release.rollback_script(names, token),
                                       on_line=lambda line: None if line.startswith("@@") else say(f"  {line}"))
    if code != 0:
        raise RollbackFailed(f"returning to the previous release failed on the host (exit {code}): "
                             f"{' '.join((out + err).split())[-600:]}")
    marks = [line.split(" ", 1) for line in out.splitlines() if line.startswith("@@gpuprov-")]
    rolled = [v for k, v in marks if k == "@@gpuprov-rolled"]
    return RollbackResult(rolled, [v for k, v in marks if k == "@@gpuprov-image"],
                          [v for k, v in marks if k == "@@gpuprov-noprevious"])


def rollback_and_check(config: StackConfig, host: GpuHost, apps: Iterable[str] | None = None, *,
                       timeout_s: float = 600.0, progress: Progress | None = None) -> RollbackResult:
    """``gpuprov rollback``: the previous release back, then every service healthy."""
    result = rollback(config, host, apps, progress=progress)
    if not result.apps:
        raise NothingToRollBack(f"no app of stack '{config.stack}' has a previous release on its host "
                                "(`gpuprov update` keeps one); nothing was changed")
    try:
        wait_healthy(config, host, timeout_s, progress=progress)
    except ServiceUnhealthy as sick:
        raise RollbackFailed(
            f"rolled back {', '.join(result.apps)}, but service '{sick.service}' is not healthy ({_detail(sick)}). "
            f"If your config names the newer values, its probe may expect them: `gpuprov rollback --stack "
            f"{config.stack}` again returns to the newer release") from None
    return result
