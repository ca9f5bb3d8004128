"""The runner: make a stack's host serve its apps, in as few SSH round trips as possible.

1. wait for SSH, connect with the host key pinned (:mod:`gpuprov.provisioning.ssh`);
2. gather EVERY fact in one exec (:mod:`gpuprov.provisioning.facts`), the host's own say on what
   it is (GPUs, a sandbox, where its files live) included;
3. compute what differs (:mod:`gpuprov.provisioning.steps`) and, if anything does, apply it all in ONE
   more exec (a batch script on stdin). A no-op re-deploy is therefore one round trip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpuprov.apps import registry
from gpuprov.apps.base import App, AppError, Secrets
from gpuprov.apps.fit import require_fit_on_host
from gpuprov.infra import records
from gpuprov.infra.clouds import driver_class
from gpuprov.infra.config import ConfigError, StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.infra.owner import owner_reference
from gpuprov.provisioning import idle_agent, marker, release, sshd, steps
from gpuprov.provisioning.desired import HostShape, RemoteFile, desired_state, upload_path
from gpuprov.provisioning.errors import ProvisioningError, StepFailed
from gpuprov.provisioning.facts import HostFacts, gpu_spec, parse_facts, probe_script
from gpuprov.provisioning.hostpaths import ROOT, on_host
from gpuprov.provisioning.phases import MARKER as PHASE_MARKER
from gpuprov.provisioning.phases import Phases
from gpuprov.provisioning.secrets import app_secrets, secrets_path, stored
from gpuprov.provisioning.ssh import Remote, target_for, wait_for_ssh

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Credentials:
    """A login gpuprov generated (an app's Login), shown once: on the deploy that generated it."""

    label: str
    service: str
    values: tuple[str, ...]
    kept_in: str


@dataclass
class DeployResult:
    """What a deploy did: ``changed`` names steps and services; empty when the host already matched."""

    changed: list[str]
    ssh_round_trips: int
    seconds: float
    services: list[str] = field(default_factory=list)
    # The stack's model cache as the host's facts saw it before the deploy: "warm", "mounted" (empty), or None (no
    # cache kept, or nothing mounted): the health wait counts a warm one's model start as model_cache_hit.
    model_cache: str | None = None
    # Only on the deploy that generated them (show once); kept out of repr so a logged result leaks nothing.
    credentials: list[Credentials] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, object]:
        return {"changed": self.changed, "ssh_round_trips": self.ssh_round_trips, "seconds": round(self.seconds, 3)}


def deployed_services(config: StackConfig) -> list[str]:
    """The services ``config`` deploys, in a stable order."""
    return [s.name for s in registry().services(config.apps)]


def gather_facts(remote: Remote, paths: list[str], images: list[str], cache: str | None = None) -> HostFacts:
    """Every check in ONE exec: the probe script's sections parsed into HostFacts."""
    code, out, err = remote.script(probe_script(ROOT, paths, images, cache))
    try:
        return parse_facts(out)
    except ValueError as e:
        raise ProvisioningError(f"could not read the host's facts (exit {code}): {e} {err[-500:]}") from None


def build_inputs_of(apps: list[App], given: Mapping[str, Path] | None) -> dict[str, tuple[Path, str]]:
    """The build inputs the user gave, checked against what the apps' builds take: name -> (file, SHA-256)."""
    declared = {i.name: a.name for a in apps if a.build for i in a.build.inputs}
    out: dict[str, tuple[Path, str]] = {}
    for name, path in (given or {}).items():
        if name not in declared:
            takes = ", ".join(f"{n} ({a})" for n, a in declared.items()) or "none"
            raise ConfigError("--build-input", name, f"no app of this stack takes it; build inputs: {takes}")
        out[name] = (Path(path), _sha256(Path(path)))
    return out


def deploy(config: StackConfig, host: GpuHost, progress: Progress | None = None, *,
           key_path: Path | None = None, build_inputs: Mapping[str, Path] | None = None,
           ssh_timeout_s: float = 300.0, keep_previous: str | None = None,
           phases: Phases | None = None) -> DeployResult:
    """Bring ``host`` to serve ``config.apps``; idempotent. Records the deployed services in the stack record.

    ``build_inputs``: files the apps' source builds take (``{NAME: Path}``), uploaded when they differ.
    ``keep_previous``: a release token (``gpuprov update``): each app whose files change keeps its running
    release in ``previous/`` first, in the same batch (:mod:`gpuprov.provisioning.release`).
    ``phases``: where the seconds go (:mod:`gpuprov.provisioning.phases`); the caller ends the last one.
    """
    say = progress or (lambda _m: None)
    phases = phases if phases is not None else Phases()
    started = time.monotonic()
    target = target_for(config, host, key_path)
    apps = registry().selected(config.apps)
    secrets, generated = app_secrets(config, apps)
    inputs = build_inputs_of(apps, build_inputs)
    owner = owner_reference()
    stack_marker = marker.marker_file(config.stack, owner)
    say(f"waiting for SSH on {host.address}:{host.ssh_port}")
    phases.begin("boot")  # until the SSH port answers with its banner
    wait_for_ssh(host, ssh_timeout_s)
    phases.begin("ssh_ready")  # until gpuprov is logged in
    agent_files, agent_start = idle_agent.install(config, host)
    idle_agent.warn_if_powerless(config)
    uploads = {i.name: upload_path(i.name) for a in apps if a.build for i in a.build.inputs}
    with Remote(target) as remote:
        # What the host should hold depends on what it says it is: probe the files of every shape.
        shapes = [desired_state(config, HostShape(g, s), secrets) for g in (0, 1) for s in (False, True)]
        paths = sorted({f.path for w in shapes for f in w.files + agent_files} | set(uploads.values())
                       | {sshd.DROP_IN, marker.MARKER})
        refs = list(dict.fromkeys(r for w in shapes for r in w.image_refs))
        say("checking the host (one round trip)")
        phases.begin("bootstrap")
        cache_mount = stack_cache_mount(config)
        facts = gather_facts(remote, paths, refs, cache_mount)
        # Before anything changes: a host serving another stack is not ours to take over.
        if note := marker.claim(facts, config.stack, owner, host.address):
            say(note)
        supplied = frozenset(n for n in uploads if n in inputs or facts.files.get(uploads[n]))
        cache_dir = _say_cache(config, facts, cache_mount, say)
        shape = HostShape(facts.gpus, facts.sandbox, gpu_spec(facts), facts.arch, supplied, cache_dir,
                          facts.nvidia_driver or None)
        serving = require_fit_on_host(config, shape.target).to_json()  # before anything changes: the GPU it really has
        want = desired_state(config, shape, secrets)
        want.usd_hour = host.usd_hour
        want.files = [stack_marker] + want.files + agent_files  # the marker first: it says whose the rest is
        if cache_dir and cache_mount:
            want.files.append(cache_marker(config, cache_mount, owner))
        # The agent's start step runs only when one of its files changes (a no-op stays a no-op).
        agent_stale = any(facts.files.get(f.path) != f.sha256 for f in agent_files)
        extra = [agent_start] if agent_stale else []
        # Only on hosts gpuprov made: an existing machine's sshd (a lab server's other users) is not ours
        # to change, and a sandbox's sshd is started by gpuprov with its own config (unless it is configured
        # as a cloud image's and says so: the stand-in of a cloud host, hardened the same way).
        if driver_class(config.cloud).creates_cloud_resources and (not facts.sandbox or facts.own_sshd):
            hardened = sshd.drop_in(host.ssh_user)
            want.files.append(hardened)
            if facts.files.get(hardened.path) != hardened.sha256:
                extra.append(sshd.apply())
        sent = [_upload(remote, name, local, sha, say) for name, (local, sha) in inputs.items()
                if facts.files.get(uploads[name]) != sha]
        # A build input on the host (uploaded now or before) is built in; its hash is in the image label.
        for build in want.builds:
            for name in build.dests:
                sha = inputs[name][1] if name in inputs else facts.files.get(uploads[name])
                if sha:
                    build.inputs[name] = sha
        actions = steps.plan(facts, want, extra, before_images=sent)
        if keep_previous:
            actions = release.with_snapshots(actions, keep_previous)
        changed = [name for a in actions for name in a.changed]
        if actions:
            say(f"applying {len(actions)} step(s) in one batch: {', '.join(a.step for a in actions)}")
            _apply(remote, actions, say, phases)
        rounds = remote.round_trips
    services = deployed_services(config)
    record = records.load(config.stack)
    if record is not None and (record.deployed, record.serving) != (services, serving):
        records.write(record.model_copy(update={"deployed": services, "serving": serving}))
    return DeployResult(changed, rounds, time.monotonic() - started, services,
                        model_cache=(facts.cache or None) if cache_dir else None,
                        credentials=_new_logins(config.stack, apps, secrets, generated))


def stack_cache_mount(config: StackConfig) -> str | None:
    """Where the stack's cache is mounted on its host (logical path), when the config keeps one."""
    if not config.cache:
        return None
    from gpuprov.infra.cache import cache_name_for, mount_point

    return mount_point(cache_name_for(config.stack, owner_reference()), driver_class(config.cloud).cache_mount_root)


def _say_cache(config: StackConfig, facts: HostFacts, mount: str | None, say: Callable[[str], None]) -> str | None:
    """Say what the cache fact means for this deploy; the mount as the host's engine sees it, or None."""
    if mount is None:
        return None
    if not facts.cache:
        say(f"cache: true, but the host has nothing mounted at {mount}: the models download into Docker volumes "
            "that go with the host")
        return None
    if facts.cache == "warm":
        say(f"model cache: hit on {mount} (kept from an earlier up): nothing to download")
    else:
        say(f"model cache: empty at {mount}: the models download once into it and stay across `gpuprov down`")
    return f"{facts.host_root}{mount}"


def cache_marker(config: StackConfig, mount: str, owner: str) -> RemoteFile:
    """The marker on the cache mount: which stack and owner it belongs to (read by people and by deploy)."""
    from gpuprov.infra.cache import MARKER

    body = json.dumps({"stack": config.stack, "owner": owner, "cloud": config.cloud}, sort_keys=True) + "\n"
    return RemoteFile(f"{mount}/{MARKER}", body.encode())


def stored_logins(config: StackConfig, apps: list[App]) -> list[Credentials]:
    """The logins of ``apps`` already generated for the stack (``gpuprov secrets show``)."""
    stack = config.stack
    store = stored(config)
    return [Credentials(a.login.label, a.login.service, tuple(store[a.name][n] for n in a.login.secrets),
                        str(secrets_path(stack)))
            for a in apps if a.login and set(a.login.secrets) <= set(store.get(a.name, {}))]


def _new_logins(stack: str, apps: list[App], secrets: dict[str, Secrets],
                generated: dict[str, list[str]]) -> list[Credentials]:
    out = []
    for app in apps:
        login = app.login
        if login and set(login.secrets) <= set(generated.get(app.name, ())):
            out.append(Credentials(login.label, login.service, tuple(secrets[app.name][n] for n in login.secrets),
                                   str(secrets_path(stack))))
    return out


def _sha256(path: Path) -> str:
    if not path.is_file():
        raise AppError(f"build input {path} does not exist; give the path of your copy (--build-input NAME=PATH)")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _upload(remote: Remote, name: str, local: Path, sha: str, say: Progress) -> steps.Action:
    """A build input can be big and gated: upload it over sftp (only when the host's copy differs),
    then install it root-only in the batch."""
    say(f"uploading {local.name} ({local.stat().st_size / 1e9:.2f} GB) over sftp")
    staging = f"/tmp/gpuprov-upload-{sha[:12]}"
    sftp = remote.conn.sftp()
    sftp.put(str(local), staging)
    remote.round_trips += 3 + local.stat().st_size // 32768  # open, writes (32 KiB each), close
    return steps.Action(f"upload:{name}", f"$SUDO install -D -m 0600 {steps.q(staging)} {on_host(upload_path(name))}\n"
                        f"rm -f {steps.q(staging)}", [f"upload:{name}"])


def _apply(remote: Remote, actions: list[steps.Action], say: Progress, phases: Phases) -> None:
    tail: list[str] = []
    current = ["?"]

    def on_line(line: str) -> None:
        if line.startswith("@@gpuprov-step "):
            current[0] = line.split(" ", 1)[1]
            say(f"step {current[0]}")
            if current[0].startswith(("compose:", "remove:")):
                phases.begin("services_started")
            elif not current[0].startswith("image:"):  # an image step says itself whether it pulls or builds
                phases.begin("bootstrap")
        elif line.startswith(steps.SAY):
            say(line[len(steps.SAY):].strip())
        elif line.startswith(PHASE_MARKER):
            with contextlib.suppress(ValueError):
                phases.begin(line[len(PHASE_MARKER):].strip())
        elif line.startswith("@@gpuprov-"):
            return
        else:
            tail.append(line)
            del tail[:-40]
            if line.strip():
                say(f"  {current[0]}: {line.strip()[:160]}")

    code, out, err = remote.script(steps.batch_script(actions), on_line=on_line)
    if code != 0 or "@@gpuprov-done" not in out:
        failed = next((ln.split()[1] for ln in out.splitlines() if ln.startswith("@@gpuprov-failed ")), current[0])
        raise StepFailed(failed, code, "\n".join(tail) + "\n" + err[-2000:])
