"""Facts about a host: what is there now. Each fact is a shell snippet plus a parser (the pyinfra
idea); :func:`probe_script` joins every snippet into ONE script whose output is split into
delimited sections, so all checks cost a single SSH round trip.

The host also says what it is: ``GPUPROV_HOST_ROOT`` (where its logical paths live) and
``GPUPROV_SANDBOX`` (a sandbox: stand-in images, nothing installed, no GPU used), both set by
its sshd on the local sandbox host and unset on a cloud host.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from gpuprov.infra.gpus import GpuSpec, from_host
from gpuprov.provisioning.hostpaths import on_host

MARK = "@@gpuprov-fact:"


@dataclass
class ImageFact:
    present: bool
    image_id: str = ""
    label: str = ""  # the gpuprov.label label (what a stand-in or host build was made from), "" when unset


@dataclass
class ContainerFact:
    project: str
    service: str
    state: str
    config: str  # the gpuprov.config label: the hash of what the service was started with
    image: str


@dataclass
class HostFacts:
    host_root: str = ""  # GPUPROV_HOST_ROOT: the folder its logical paths live under ("": /)
    sandbox: bool = False  # GPUPROV_SANDBOX: it shares another machine (stand-ins, no installs, no GPUs)
    own_sshd: bool = False  # GPUPROV_SSHD_CONFIG: a sandbox whose sshd is configured as a cloud image's (hardenable)
    os_id: str = ""
    os_codename: str = ""
    arch: str = ""
    cloud_init: str = "absent"  # absent | running | done | error | disabled ...
    apt_lock: str = "free"  # free | held | unknown
    docker: str | None = None  # server version, None when missing or not answering
    compose: str | None = None
    gpus: int = 0
    gpu_report: str = ""  # nvidia-smi's `name, compute_cap, memory.total` of the first GPU ("" without one)
    nvidia_driver: str = ""  # the NVIDIA driver's version (nvidia-smi's driver_version, "575.57.08"; "" without one)
    nvidia_toolkit: bool = False
    docker_runtimes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # logical path -> sha256
    images: dict[str, ImageFact] = field(default_factory=dict)
    containers: list[ContainerFact] = field(default_factory=list)
    markers: set[str] = field(default_factory=set)
    stack_marker: str = ""  # the stack marker's JSON (gpuprov.provisioning.marker), "" when the host has none
    cache: str = ""  # the stack's cache mount (cache: true): "" absent, "mounted" (empty), "warm" (holds a model)


def gpu_spec(facts: HostFacts) -> GpuSpec | None:
    """The host's first GPU as gpuprov sizes for it (its own report, completed from the table), or None."""
    if not facts.gpus or not facts.gpu_report:
        return None
    fields = [f.strip() for f in facts.gpu_report.split(",")]
    cc = fields[1] if len(fields) >= 3 else ""  # the second form has no compute_cap (drivers before 510)
    return from_host(fields[0], cc, fields[-1] if len(fields) >= 2 else "")


def probe_script(root: str, paths: list[str], images: list[str], cache: str | None = None) -> str:
    """One shell script that prints every fact in its own section. ``root``, ``paths``: logical host paths;
    ``cache``: the logical path where the stack's cache would be mounted (cache: true)."""
    q = shlex.quote
    if cache:
        from gpuprov.infra.cache import DISK_MOUNT_ROOT, HF_DIR

        hf, mnt = on_host(f"{cache}/{HF_DIR}"), on_host(cache)
        there, wait = f"[ -d {mnt} ]", ""
        if cache.startswith(f"{DISK_MOUNT_ROOT}/"):  # a block device the boot mounts: mounted, not a bare dir
            there = f"mountpoint -q {mnt}"
            # Mounted by cloud-init (AWS) or by Compute Engine's startup script (GCP's images have no cloud-init).
            wait = (f"if ! {there} && command -v cloud-init >/dev/null 2>&1; then "
                    "$SUDO cloud-init status --wait >/dev/null 2>&1 || true; fi; "
                    "n=0; while ! " + there + " && [ $n -lt 600 ] && [ \"$(systemctl is-active "
                    "google-startup-scripts.service 2>/dev/null)\" = activating ]; do n=$((n+1)); sleep 1; done; ")
        cache_line = (f"{wait}if {there}; then if [ -n \"$($SUDO ls -A {hf} 2>/dev/null)\" ]; "
                      "then echo warm; else echo mounted; fi; fi")
    else:
        cache_line = ":"
    label = ' {{.Id}} {{index .Config.Labels "gpuprov.label"}}'
    image_lines = "\n".join(
        f"$SUDO docker image inspect --format {q(ref + label)} {q(ref)} 2>/dev/null || echo {q(ref + ' missing')}"
        for ref in images
    )
    # Hashed from the host root, relative, so the output names logical paths.
    files = " ".join(q(p.lstrip("/")) for p in paths)
    return f"""set +e
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi
s() {{ printf '\\n{MARK}%s\\n' "$1"; }}
s host_root; printf '%s\\n' "${{GPUPROV_HOST_ROOT:-}}"
s sandbox; printf '%s\\n' "${{GPUPROV_SANDBOX:-0}}"
s own_sshd; printf '%s\\n' "${{GPUPROV_SSHD_CONFIG:+1}}"
s os; ( . /etc/os-release 2>/dev/null; echo "${{ID:-unknown}} ${{VERSION_CODENAME:-unknown}} $(uname -m)" )
s cloud_init; if command -v cloud-init >/dev/null 2>&1; then cloud-init status 2>/dev/null | sed -n 's/^status: //p'; else echo absent; fi
s apt_lock; if command -v fuser >/dev/null 2>&1; then if fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1; then echo held; else echo free; fi; else echo unknown; fi
s docker; $SUDO docker version --format '{{{{.Server.Version}}}}' 2>/dev/null || echo missing
s compose; $SUDO docker compose version --short 2>/dev/null || echo missing
s gpus; if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>/dev/null | grep -c '^GPU'; else echo 0; fi
s nvidia_driver; if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1; fi
s gpu; if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1 || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1; fi
s nvidia_toolkit; if command -v nvidia-ctk >/dev/null 2>&1; then echo installed; else echo missing; fi
s docker_runtimes; $SUDO docker info --format '{{{{json .Runtimes}}}}' 2>/dev/null
s files; {f'(cd "${{GPUPROV_HOST_ROOT:-}}/" && $SUDO sha256sum -- {files} 2>/dev/null)' if files else ":"}
s images
{image_lines or ":"}
s containers; $SUDO docker ps -a --filter label=com.docker.compose.project --format '{{{{.Label "com.docker.compose.project"}}}}|{{{{.Label "com.docker.compose.service"}}}}|{{{{.State}}}}|{{{{.Label "gpuprov.config"}}}}|{{{{.Image}}}}' 2>/dev/null
s markers; $SUDO ls {on_host(root + "/.markers")} 2>/dev/null
s stack; $SUDO cat {on_host(root + "/stack.json")} 2>/dev/null
s cache; {cache_line}
s end
exit 0
"""


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(MARK):
            current = out.setdefault(line[len(MARK):].strip(), [])
        elif current is not None and line.strip():
            current.append(line.strip())
    if "end" not in out:
        raise ValueError("the host's fact script stopped early; output: " + text[-500:])
    return out


def parse_facts(text: str) -> HostFacts:
    """Parse :func:`probe_script`'s output into HostFacts."""
    sec = _sections(text)
    first = lambda name, default="": (sec.get(name) or [default])[0]  # noqa: E731
    facts = HostFacts()
    facts.host_root = first("host_root")
    facts.sandbox = first("sandbox", "0") not in ("", "0")
    facts.own_sshd = first("own_sshd") == "1"
    parts = first("os", "unknown unknown unknown").split()
    facts.os_id, facts.os_codename, facts.arch = (parts + ["unknown"] * 3)[:3]
    facts.cloud_init = first("cloud_init", "absent") or "absent"
    facts.apt_lock = first("apt_lock", "unknown")
    docker = first("docker", "missing")
    facts.docker = None if docker == "missing" else docker
    compose = first("compose", "missing")
    facts.compose = None if compose == "missing" else compose
    gpus = first("gpus", "0")
    # A sandbox shares another machine: its GPUs are not ours to use.
    facts.gpus = int(gpus) if gpus.isdigit() and not facts.sandbox else 0
    facts.gpu_report = "" if facts.sandbox else first("gpu")
    facts.nvidia_driver = "" if facts.sandbox else first("nvidia_driver")
    facts.nvidia_toolkit = first("nvidia_toolkit") == "installed"
    runtimes = first("docker_runtimes", "{}")
    try:
        facts.docker_runtimes = sorted(json.loads(runtimes) or {})
    except json.JSONDecodeError:
        facts.docker_runtimes = []
    for line in sec.get("files", []):
        digest, _, path = line.partition("  ")
        facts.files["/" + path.lstrip("/")] = digest
    for line in sec.get("images", []):
        ref, _, rest = line.partition(" ")
        if rest == "missing":
            facts.images[ref] = ImageFact(False)
        else:
            image_id, _, label = rest.partition(" ")
            facts.images[ref] = ImageFact(True, image_id, "" if label == "<no value>" else label)
    for line in sec.get("containers", []):
        bits = line.split("|")
        if len(bits) >= 5:
            facts.containers.append(ContainerFact(*bits[:5]))
    facts.markers = set(sec.get("markers", []))
    facts.stack_marker = "".join(sec.get("stack", []))
    facts.cache = first("cache")
    return facts
