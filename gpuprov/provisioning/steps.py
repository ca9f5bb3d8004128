"""The deploy steps, each a check and an apply: given the host's facts and what it should hold,
return the shell to run, or nothing when the host already matches (pyinfra's operations).

Pure functions of data: tests feed them facts and read the commands they would run, which is
how the paths that need the internet (Docker's and NVIDIA's apt repositories) are tested.
Every path they touch is a logical host path, prefixed on the host (:func:`on_host`).
"""

from __future__ import annotations

import base64
import os
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from gpuprov.infra.image_registry import registry_ref
from gpuprov.provisioning.desired import Desired, RemoteFile, upload_path
from gpuprov.provisioning.errors import ProvisioningError
from gpuprov.provisioning.facts import HostFacts
from gpuprov.provisioning.hostpaths import on_host
from gpuprov.provisioning.phases import MARKER as MARKER_PHASE

q = shlex.quote
APT = "DEBIAN_FRONTEND=noninteractive $SUDO apt-get"
CONFLICTING_PACKAGES = ("docker.io", "docker-doc", "docker-compose", "podman-docker", "containerd", "runc")
DOCKER_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin")
CUDA_CHECK_IMAGE = "nvidia/cuda:12.1.1-base-ubuntu22.04"
SAY = "@@gpuprov-say "  # a batch line the user is told as a step line, not as the step's output
WAIT_DOCKER = "for i in $(seq 60); do $SUDO docker info >/dev/null 2>&1 && break; sleep 1; done; $SUDO docker info >/dev/null"


@dataclass
class Action:
    """One step's apply: the shell to run and what it changes (names reported as ``changed``)."""

    step: str
    script: str
    changed: list[str] = field(default_factory=list)


def wait_cloud_init(facts: HostFacts) -> Action | None:
    if facts.cloud_init in ("absent", "done", "disabled", "error", ""):
        return None
    return Action("wait_cloud_init", "cloud-init status --wait >/dev/null 2>&1 || true")


def wait_apt_locks(facts: HostFacts, will_use_apt: bool) -> Action | None:
    if not will_use_apt or facts.apt_lock == "free":
        return None
    # Unattended upgrades hold the dpkg lock for minutes after boot: wait instead of failing.
    return Action("wait_apt_locks", "if command -v fuser >/dev/null; then for i in $(seq 600); do "
                  "$SUDO fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1"
                  " || break; sleep 2; done; fi")


def docker_engine(facts: HostFacts) -> Action | None:
    """Docker Engine from Docker's own apt repository, only when the host has none (or lacks Compose v2)."""
    if facts.docker and facts.compose:
        return None
    if facts.sandbox:
        # A sandbox shares another machine: gpuprov never installs anything on it.
        if os.geteuid() != 0:  # the sandbox shares this machine: whether it has an engine depends on who we are
            raise ProvisioningError(
                "the local sandbox host has no Docker engine: it starts one only when gpuprov runs as root (dockerd "
                "needs root). Run gpuprov as root to deploy apps there; as this user, `gpuprov up --no-deploy` "
                "brings the host up without apps (SSH only)")
        raise ProvisioningError(
            "the local sandbox host has no Docker engine with Compose: install dockerd and the compose plugin "
            "(`make setup` does, as root), then recreate the host (`gpuprov down --stack NAME`, `gpuprov up --stack NAME`)")
    if facts.os_id not in ("ubuntu", "debian"):
        raise ProvisioningError(
            f"the host runs '{facts.os_id}' without Docker Engine + Compose v2; gpuprov installs them on Ubuntu or "
            "Debian only. Install Docker (https://docs.docker.com/engine/install/) and run deploy again"
        )
    repo = f"https://download.docker.com/linux/{facts.os_id}"
    if facts.docker:  # engine there, Compose v2 plugin missing
        lines = [f"{APT} update -qq", f"{APT} install -y -qq docker-compose-plugin"]
        return Action("docker_compose_plugin", "\n".join(lines), ["docker_compose_plugin"])
    lines = [
        f"for p in {' '.join(CONFLICTING_PACKAGES)}; do {APT} remove -y -qq $p >/dev/null 2>&1 || true; done",
        f"{APT} update -qq",
        f"{APT} install -y -qq ca-certificates curl",
        "$SUDO install -m 0755 -d /etc/apt/keyrings",
        f"$SUDO curl -fsSL {repo}/gpg -o /etc/apt/keyrings/docker.asc",
        "$SUDO chmod a+r /etc/apt/keyrings/docker.asc",
        f'echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] {repo} '
        f'{facts.os_codename} stable" | $SUDO tee /etc/apt/sources.list.d/docker.list >/dev/null',
        f"{APT} update -qq",
        f"{APT} install -y -qq {' '.join(DOCKER_PACKAGES)}",
        "$SUDO systemctl enable --now docker 2>/dev/null || true",
        WAIT_DOCKER,
    ]
    return Action("docker_engine", "\n".join(lines), ["docker_engine"])


def nvidia_toolkit(facts: HostFacts) -> Action | None:
    """NVIDIA Container Toolkit (never the deprecated nvidia-docker2) and the Docker runtime, on GPU hosts only."""
    if facts.gpus == 0:
        return None
    lines: list[str] = []
    if not facts.nvidia_toolkit:
        keyring = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
        lines += [
            f"curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | $SUDO gpg --batch --yes --dearmor -o {keyring}",
            "curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list"
            f" | sed 's#deb https://#deb [signed-by={keyring}] https://#g'"
            " | $SUDO tee /etc/apt/sources.list.d/nvidia-container-toolkit.list >/dev/null",
            f"{APT} update -qq",
            f"{APT} install -y -qq nvidia-container-toolkit",
        ]
    if not facts.nvidia_toolkit or "nvidia" not in facts.docker_runtimes:
        lines += ["$SUDO nvidia-ctk runtime configure --runtime=docker", "$SUDO systemctl restart docker", WAIT_DOCKER]
    return Action("nvidia_toolkit", "\n".join(lines), ["nvidia_toolkit"]) if lines else None


def gpu_in_container(facts: HostFacts, root: str, toolkit_changed: bool) -> Action | None:
    """Prove the GPU is visible inside a container, once (and again after the toolkit changed)."""
    if facts.gpus == 0 or ("gpu-verified" in facts.markers and not toolkit_changed):
        return None
    return Action("gpu_check", "\n".join([
        f"$SUDO docker run --rm --gpus all {CUDA_CHECK_IMAGE} nvidia-smi -L",
        f"$SUDO install -d -m 0700 {on_host(root + '/.markers')} && $SUDO touch {on_host(root + '/.markers/gpu-verified')}",
    ]), ["gpu_check"])


def _write(f: RemoteFile) -> str:
    data = base64.encodebytes(f.content).decode()
    tmp = on_host(f"{f.path}.gpuprov-tmp")
    # umask 077 first: a secret file is never readable by others, not even for an instant.
    return (f"$SUDO mkdir -p {on_host(str(PurePosixPath(f.path).parent))}\n"
            f"base64 -d <<'GPUPROV_EOF' | $SUDO tee {tmp} >/dev/null\n{data}GPUPROV_EOF\n"
            f"$SUDO chmod {f.mode:o} {tmp}\n$SUDO mv -f {tmp} {on_host(f.path)}")


def files(facts: HostFacts, want: Desired) -> list[Action]:
    """Upload only the files whose content differs, one action per project directory touched."""
    stale = [f for f in want.files if facts.files.get(f.path) != f.sha256]
    if not stale:
        return []
    dirs = "\n".join(f"$SUDO install -d -m 0700 {on_host(d)}" for d in want.directories)
    by_dir: dict[str, list[RemoteFile]] = {}
    for f in stale:
        rel = f.path[len(want.root) + 1:] if f.path.startswith(want.root + "/") else f.path
        by_dir.setdefault(rel.split("/")[0] if rel != f.path else "system", []).append(f)
    actions = [Action("directories", dirs)]
    for group, group_files in by_dir.items():
        actions.append(Action(f"files:{group}", "\n".join(_write(f) for f in group_files), [f"files:{group}"]))
    return actions


def pulled_or_built(want: Desired, image: str, pull_from: str | None, label: str, build: list[str],
                    minutes: tuple[float, float]) -> str:
    """The script of an image a stack builds: with a registry, pull ``pull_from`` when it holds an image of
    the same label, else say so and what the build costs, then ``build``; without one, ``build``."""
    built = "\n".join([f"echo '{MARKER_PHASE}image_build'", *build])
    if pull_from is None:
        return built
    lo, hi = minutes
    if hi:
        cost = (f"{lo:g} to {hi:g} minutes" + (f", ${lo * want.usd_hour / 60:.2f} to ${hi * want.usd_hour / 60:.2f} "
                f"at ${want.usd_hour:.2f}/h" if want.usd_hour else "") + " of this host's time")
    else:
        cost = "seconds (a stand-in)"
    say = (f"no image {pull_from} in the registry, or this host may not pull from it: building {image} on the "
           f"host instead ({cost}); "
           "`gpuprov build --stack NAME` builds and pushes it off the GPU meter")
    fmt = q('{{index .Config.Labels "gpuprov.label"}}')
    return "\n".join([
        f"echo '{MARKER_PHASE}image_pull'",
        f"if $SUDO docker pull -q {q(pull_from)} >/dev/null 2>&1 && "
        f"[ \"$($SUDO docker image inspect -f {fmt} {q(pull_from)})\" = {q(label)} ]; then",
        f"$SUDO docker tag {q(pull_from)} {q(image)}",
        f"echo {q(SAY + f'pulled {image} from {pull_from}')}",
        "else",
        f"echo {q(SAY + say)}",
        built,
        "fi",
    ])


def images(facts: HostFacts, want: Desired) -> list[Action]:
    """Build stand-ins (sandbox), build from pinned commits, pull the rest: only what is missing. With an
    ``image_registry``, what would be built is pulled from it first when it holds a matching image."""
    actions: list[Action] = []
    for ref, standin in want.standins.items():
        have = facts.images.get(ref)
        if have and have.present and have.label == standin.label:
            continue
        ctx = on_host(standin.context)
        pull_from = (registry_ref(want.registry, ref, standin.label.removeprefix("standin:"), standin=True)
                     if want.registry else None)
        script = [
            f'cp "$(command -v busybox)" {ctx}/busybox',
            f"DOCKER_BUILDKIT=0 $SUDO docker build -q --build-arg SERVICE={q(standin.service)} "
            f"--label gpuprov.label={q(standin.label)} -t {q(ref)} {ctx} >/dev/null",
        ]
        actions.append(Action(f"image:{ref}", pulled_or_built(want, ref, pull_from, standin.label, script, (0, 0)),
                              [f"image:{ref}"]))
    for build in want.builds:
        label = build.label
        have = facts.images.get(build.image)
        if have and have.present and have.label == label:
            continue
        checkout = on_host(build.checkout)
        lines = [
            f"if [ ! -d {checkout}/.git ]; then $SUDO git clone -q -- {q(build.repo)} {checkout}; fi",
            f"cd {checkout} && ($SUDO git cat-file -e {q(build.ref + '^{commit}')} 2>/dev/null || $SUDO git fetch -q origin)",
            f"$SUDO git -C {checkout} checkout -q --force {q(build.ref)}",
        ]
        for name in sorted(build.inputs):
            lines.append(f"$SUDO install -D -m 0600 {on_host(upload_path(name))} "
                         f"{on_host(build.checkout + '/' + build.dests[name])}")
        if build.note:
            lines.append(f"echo {q(build.note)}")
        # Stream the build's step lines (progress for a 15-minute wait) without losing its exit status.
        rc = on_host(f"{build.checkout}.build-rc")
        lines.append(f"{{ $SUDO docker build --label gpuprov.label={q(label)} -t {q(build.image)} "
                     f"{on_host(build.checkout + '/' + build.context)} 2>&1; echo $? | $SUDO tee {rc} >/dev/null; }}"
                     f" | grep --line-buffered -E '^(Step |#[0-9]+ \\[|ERROR|error)' || true")
        lines.append(f"exit \"$($SUDO cat {rc})\"")
        pull_from = registry_ref(want.registry, build.image, build.ref, build.inputs) if want.registry else None
        actions.append(Action(f"image:{build.image}",
                              pulled_or_built(want, build.image, pull_from, label, lines, build.minutes),
                              [f"image:{build.image}"]))
    for ref in want.pulls:
        have = facts.images.get(ref)
        if have and have.present:
            continue
        actions.append(Action(f"image:{ref}", f"echo '{MARKER_PHASE}image_pull'\n$SUDO docker pull {q(ref)}",
                              [f"image:{ref}"]))
    return actions


def services(facts: HostFacts, want: Desired, rebuilt: set[str] | None = None) -> list[Action]:
    """Start (or recreate) only the services whose container is missing, stopped, runs another
    config, or whose image was just rebuilt under the same tag (``rebuilt``: image references)."""
    running = {(c.project, c.service): c for c in facts.containers}
    rebuilt = rebuilt or set()
    actions: list[Action] = []
    for project in want.projects:
        stale = [s for s, config in project.services.items()
                 if (c := running.get((project.name, s))) is None or c.state != "running" or c.config != config
                 or project.images[s] in rebuilt]
        if not stale:
            continue
        files_args = " ".join(f"-f {q(name)}" for name in project.compose_files)
        pull = "--pull never" if want.sandbox else "--pull missing"
        force = "--force-recreate " if any(project.images[s] in rebuilt for s in stale) else ""
        actions.append(Action(f"compose:{project.app}", (
            f"cd {on_host(project.directory)} && $SUDO docker compose -p {q(project.name)} {files_args} up -d --no-deps "
            f"{pull} {force}--remove-orphans {' '.join(q(s) for s in stale)}"
        ), stale))
    wanted = {p.name for p in want.projects}
    for gone in sorted({c.project for c in facts.containers if c.project.startswith("gpuprov-")} - wanted):
        actions.append(Action(f"remove:{gone}", f"$SUDO docker compose -p {q(gone)} down", [f"removed:{gone}"]))
    return actions


def plan(facts: HostFacts, want: Desired, extra: list[Action] | None = None,
         before_images: list[Action] | None = None) -> list[Action]:
    """Every action the host needs, in order; empty when it already serves what ``want`` says.
    ``before_images``: uploads an image build needs (build inputs); ``extra``: more steps (the idle agent)."""
    engine = docker_engine(facts)
    toolkit = nvidia_toolkit(facts)
    actions = [a for a in (wait_cloud_init(facts), wait_apt_locks(facts, bool(engine or toolkit)), engine, toolkit,
                           gpu_in_container(facts, want.root, toolkit is not None)) if a]
    actions += files(facts, want)
    actions += list(before_images or [])
    image_actions = images(facts, want)
    actions += image_actions
    actions += list(extra or [])
    actions += services(facts, want, {a.step.removeprefix("image:") for a in image_actions})
    return actions


def batch_script(actions: list[Action]) -> str:
    """All actions as ONE script (one round trip). Each runs in its own subshell with ``set -e``;
    the first failure stops the batch and names its step. (The status is read on the next line:
    a subshell inside ``a || b`` would run with ``set -e`` silently ignored.)"""
    head = ('umask 077\nif [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi\nexport SUDO\n')
    body = []
    for a in actions:
        body.append(f"echo '@@gpuprov-step {a.step}'\n(\nset -e\n{a.script}\n)\nrc=$?\n"
                    f"if [ $rc -ne 0 ]; then echo '@@gpuprov-failed {a.step}' \"$rc\"; exit $rc; fi")
    return head + "\n".join(body) + "\necho '@@gpuprov-done'\n"
