"""The runner: make a stack's host serve both seed stacks, in as few SSH round trips as possible.

1. wait for SSH, connect with the host key pinned (:mod:`gpuprov.provisioning.ssh`);
2. gather EVERY fact in one exec (:mod:`gpuprov.provisioning.facts`);
3. compute what differs (:mod:`gpuprov.provisioning.steps`) and, if anything does, apply it all in ONE
   more exec (a batch script on stdin). A no-op re-deploy is therefore one round trip.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuprov.infra import records
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning import steps
from gpuprov.provisioning.desired import STACK_SERVICES, Desired, RemoteFile, desired_state
from gpuprov.provisioning.errors import ProvisioningError, StepFailed
from gpuprov.provisioning.facts import HostFacts, parse_facts, probe_script
from gpuprov.provisioning.secrets import StackSecrets, stack_secrets
from gpuprov.provisioning.ssh import Remote, Target, target_for, wait_for_ssh

Progress = Callable[[str], None]
SAM3_REMOTE = "uploads/sam3.pt"


@dataclass
class DeployResult:
    """What a deploy did: ``changed`` names steps and services; empty when the host already matched."""

    changed: list[str]
    ssh_round_trips: int
    seconds: float
    services: list[str] = field(default_factory=list)
    # Only on the deploy that generated them (show once); kept out of repr so a logged result leaks nothing.
    admin_credentials: dict[str, str] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        return {"changed": self.changed, "ssh_round_trips": self.ssh_round_trips, "seconds": round(self.seconds, 3)}


def deployed_services(config: StackConfig) -> list[str]:
    """The services ``config`` deploys, in a stable order."""
    return [s for stack in config.stacks for s in STACK_SERVICES[stack]]


def gather_facts(remote: Remote, target: Target, paths: list[str], images: list[str]) -> HostFacts:
    """Every check in ONE exec: the probe script's sections parsed into HostFacts."""
    code, out, err = remote.script(probe_script(target.remote_root, paths, images))
    try:
        return parse_facts(out)
    except ValueError as e:
        raise ProvisioningError(f"could not read the host's facts (exit {code}): {e} {err[-500:]}") from None


def _idle_agent(config: StackConfig, host: GpuHost, target: Target) -> tuple[list[RemoteFile], list[steps.Action]]:
    """The idle agent (issue 6, :mod:`gpuprov.provisioning.idle_agent`) as one more step, when that module is there.

    On the local sandbox host every path of the agent is moved under the sandbox's own directory
    (it shares this machine's filesystem) and the agent runs as a plain background process.
    """
    try:
        from gpuprov.provisioning import idle_agent
    except ImportError:  # the hook: deploy works without the agent
        return [], []
    import json
    import os

    prefix = str(Path(target.remote_root).parents[1]) if target.sandbox else ""
    files = [RemoteFile(remote, Path(local).read_bytes(), 0o644 if remote.endswith((".service", ".timer")) else 0o755)
             for remote, local in idle_agent.agent_files(root=prefix).items()]
    overrides: dict[str, Any] = {}
    if target.sandbox:  # "power off" on the sandbox means stopping its sshd
        overrides["sshd_pid_file"] = str(Path(prefix).parent / "sshd.pid")
    agent_cfg = idle_agent.agent_config(config, host, root=prefix, **overrides)
    files.append(RemoteFile(prefix + idle_agent.REMOTE_CONFIG, json.dumps(agent_cfg, indent=2, sort_keys=True).encode(),
                            0o600))
    secret = idle_agent.agent_secret(os.environ.get("LAMBDA_API_KEY")) if config.cloud == "lambda" else None
    if secret:
        files.append(RemoteFile(prefix + idle_agent.REMOTE_SECRET, secret.encode(), 0o600))
    background = idle_agent.background_command(root=prefix)
    if target.sandbox:
        start = background
    else:
        systemd = " && ".join(f"$SUDO {c}" for c in idle_agent.systemd_commands())
        start = f"if [ -d /run/systemd/system ]; then {systemd}; else $SUDO sh -c {steps.q(background)}; fi"
    return files, [steps.Action("idle_agent", start, ["idle_agent"])]


def _desired(config: StackConfig, target: Target, gpus: int, secrets: StackSecrets,
             agent_files: list[RemoteFile]) -> Desired:
    want = desired_state(config, target.remote_root, target.sandbox, gpus, secrets)
    want.files += agent_files
    return want


def deploy(config: StackConfig, host: GpuHost, progress: Progress | None = None, *,
           key_path: Path | None = None, sam3_checkpoint: Path | None = None,
           ssh_timeout_s: float = 300.0) -> DeployResult:
    """Bring ``host`` to serve ``config.stacks``; idempotent. Records the deployed services in the stack record."""
    say = progress or (lambda _m: None)
    started = time.monotonic()
    target = target_for(config, host, key_path)
    secrets, created = stack_secrets(config.stack)
    say(f"waiting for SSH on {host.address}:{host.ssh_port}")
    wait_for_ssh(host, ssh_timeout_s)
    agent_files, agent_actions = _idle_agent(config, host, target)
    sam3_remote = f"{target.remote_root}/{SAM3_REMOTE}"
    sam3_local = _sha256(Path(sam3_checkpoint)) if sam3_checkpoint else None
    with Remote(target) as remote:
        # The GPU override's presence depends on a fact, so probe the files of both shapes.
        shapes = [_desired(config, target, g, secrets, agent_files) for g in (0, 1)]
        paths = sorted({f.path for w in shapes for f in w.files} | {sam3_remote})
        say("checking the host (one round trip)")
        facts = gather_facts(remote, target, paths, shapes[0].image_refs)
        if target.sandbox:
            # The sandbox shares this machine: never install anything on it, never use its GPUs.
            facts.gpus = 0
            if not (facts.docker and facts.compose):
                raise ProvisioningError(
                    "the local sandbox host has no Docker engine with Compose (it starts one only as root, with "
                    "dockerd installed); run `make setup` as root, then `gpuprov down --cloud local` and `gpuprov up`")
        want = shapes[1] if facts.gpus else shapes[0]
        # The agent's start step runs only when one of its files changes (a no-op stays a no-op).
        agent_stale = any(facts.files.get(f.path) != f.sha256 for f in agent_files)
        extra = list(agent_actions) if agent_stale else []
        uploads: list[steps.Action] = []
        if sam3_checkpoint and sam3_local and facts.files.get(sam3_remote) != sam3_local:
            uploads = _sam3_upload(remote, Path(sam3_checkpoint), sam3_local, sam3_remote, say)
        # A sam3.pt on the host (uploaded now or before) is built into MONAI Label; its hash is in the image label.
        sam3_sha = sam3_local or facts.files.get(sam3_remote)
        if want.monai_build is not None and sam3_sha:
            want.monai_build.sam3, want.monai_build.sam3_sha = sam3_remote, sam3_sha
        actions = steps.plan(facts, want, extra, before_images=uploads)
        changed = [name for a in actions for name in a.changed]
        if actions:
            say(f"applying {len(actions)} step(s) in one batch: {', '.join(a.step for a in actions)}")
            _apply(remote, actions, say)
        rounds = remote.round_trips
    record = records.load(config.stack)
    services = deployed_services(config)
    if record is not None and record.deployed != services:
        records.write(record.model_copy(update={"deployed": services}))
    creds = None
    if created:
        creds = {"url_service": "open_webui", "email": secrets.webui_admin_email, "password": secrets.webui_admin_password}
    return DeployResult(changed, rounds, time.monotonic() - started, services,
                        creds if "vllm_cxr" in config.stacks else None)


def _sha256(path: Path) -> str:
    if not path.is_file():
        raise ProvisioningError(f"sam3 checkpoint {path} does not exist; download it from Meta's gated release first")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sam3_upload(remote: Remote, local: Path, sha: str, remote_path: str, say: Progress) -> list[steps.Action]:
    """sam3.pt is gated and big: upload it over sftp (only when the host's copy differs), then
    install it root-only in the batch."""
    say(f"uploading {local.name} ({local.stat().st_size / 1e9:.2f} GB) over sftp")
    staging = f"/tmp/gpuprov-sam3-{sha[:12]}.pt"
    sftp = remote.conn.sftp()
    sftp.put(str(local), staging)
    remote.round_trips += 3 + local.stat().st_size // 32768  # open, writes (32 KiB each), close
    return [steps.Action("sam3_checkpoint", f"$SUDO install -D -m 0600 {steps.q(staging)} {steps.q(remote_path)}\n"
                         f"rm -f {steps.q(staging)}", ["sam3_checkpoint"])]


def _apply(remote: Remote, actions: list[steps.Action], say: Progress) -> None:
    tail: list[str] = []
    current = ["?"]

    def on_line(line: str) -> None:
        if line.startswith("@@gpuprov-step "):
            current[0] = line.split(" ", 1)[1]
            say(f"step {current[0]}")
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
