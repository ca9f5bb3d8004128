"""`make bench-deploy`: gpuprov's deploy against Ansible, on the same local sandbox host, behind a
simulated 100 ms round trip. Prints wall time and round trips for a first deploy and a no-op
re-deploy of each, side by side. Figures only: nothing here asserts a timing.

Round trips: exec channels plus sftp requests, as each tool's own log says (gpuprov counts its
own; Ansible's from `-vvv`: one per `EXEC ssh`, an sftp transfer as 4 requests: init, open,
write, close). "Turns" come from the proxy and are tool-neutral: how often the client spoke again
after the server had answered (what a round-trip delay actually costs).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.deploy.proxy import DelayProxy  # noqa: E402
from gpuprov.apps import registry  # noqa: E402
from gpuprov.infra.clouds.local.sandbox import LocalSandbox  # noqa: E402
from gpuprov.infra.config import StackConfig, load_config  # noqa: E402
from gpuprov.infra.host import GpuHost  # noqa: E402
from gpuprov.provisioning import deploy as deploy_module  # noqa: E402
from gpuprov.provisioning import idle_agent  # noqa: E402
from gpuprov.provisioning.desired import HostShape, desired_state  # noqa: E402
from gpuprov.provisioning.hostpaths import ROOT  # noqa: E402
from gpuprov.provisioning.secrets import app_secrets  # noqa: E402
from gpuprov.provisioning.ssh import Remote, target_for  # noqa: E402

RTT_S = float(os.environ.get("BENCH_RTT_MS", "100")) / 1000


def gpuprov_run(cfg: StackConfig, host: GpuHost, proxy: DelayProxy) -> dict[str, object]:
    proxy.reset_counts()
    started = time.monotonic()
    result = deploy_module.deploy(cfg, host)
    return {"seconds": time.monotonic() - started, "round_trips": result.ssh_round_trips, "turns": proxy.turns,
            "changed": len(result.changed)}


def on_box(cfg: StackConfig, logical: str) -> str:
    """Where a logical host path lives on the sandbox (Ansible is handed plain paths)."""
    return str(LocalSandbox(cfg.stack).dir / "host") + logical


def reset_host(cfg: StackConfig, host: GpuHost) -> None:
    """Remove what a deploy made (containers, stand-in images, files) so the next tool starts fresh."""
    target = target_for(cfg, host)
    refs = " ".join(shlex.quote(s.image(cfg)) for s in registry().services(cfg.apps))
    with Remote(target) as remote:
        code, _, err = remote.script(
            "ids=$(docker ps -aq); [ -z \"$ids\" ] || docker rm -f -v $ids >/dev/null\n"
            f"docker rmi -f {refs} >/dev/null 2>&1; docker volume prune -f >/dev/null 2>&1\n"
            f"rm -rf {shlex.quote(on_box(cfg, ROOT))}\n")
    if code:
        raise RuntimeError(f"could not reset the bench host: {err}")


def ansible_inputs(cfg: StackConfig, host: GpuHost, work: Path) -> dict[str, object]:
    """The same files, images and services gpuprov would converge to, as playbook variables."""
    secrets, _ = app_secrets(cfg, registry().selected(cfg.apps))
    want = desired_state(cfg, HostShape(gpus=0, sandbox=True), secrets)
    agent_files, _ = idle_agent.install(cfg, host)
    staged = work / "files"
    staged.mkdir(mode=0o700)
    files = []
    for i, f in enumerate(want.files + agent_files):
        local = staged / str(i)
        local.write_bytes(f.content)
        files.append({"src": str(local), "dest": on_box(cfg, f.path), "mode": f"{f.mode:04o}"})
    dirs = sorted({on_box(cfg, d) for d in want.directories} | {str(Path(f["dest"]).parent) for f in files})
    return {
        "directories": dirs, "files": files,
        "standins": [{"ref": ref, "service": b.service, "label": b.label, "context": on_box(cfg, b.context)}
                     for ref, b in want.standins.items()],
        "projects": [{"name": p.name, "directory": on_box(cfg, p.directory), "services": list(p.services),
                      "files": " ".join(f"-f {n}" for n in p.compose_files),
                      "expected": [f"{s}={h}" for s, h in p.services.items()]} for p in want.projects],
    }


def ansible_run(cfg: StackConfig, host: GpuHost, key: Path, work: Path, proxy: DelayProxy) -> dict[str, object]:
    inventory = work / "inventory.ini"
    known = work / "known_hosts"
    known.write_text(f"[{host.address}]:{host.ssh_port} {host.host_key}\n")
    remote_tmp = LocalSandbox(cfg.stack).dir / "tmp"
    inventory.write_text(
        f"gpuhost ansible_host={host.address} ansible_port={host.ssh_port} ansible_user={host.ssh_user} "
        f"ansible_ssh_private_key_file={key} ansible_python_interpreter=/usr/bin/python3 "
        f"ansible_remote_tmp={remote_tmp} "
        f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'\n")
    variables = work / "vars.json"
    if not variables.exists():
        fd = os.open(variables, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(ansible_inputs(cfg, host, work), fh)
    env = {**os.environ, "ANSIBLE_PIPELINING": "True", "ANSIBLE_HOME": str(work / "ansible-home"),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"), "ANSIBLE_HOST_KEY_CHECKING": "True",
           "ANSIBLE_NOCOLOR": "1", "LC_ALL": "C.UTF-8", "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp")}
    playbook = Path(sys.executable).with_name("ansible-playbook")
    proxy.reset_counts()
    started = time.monotonic()
    out = subprocess.run([str(playbook), "-vvv", "-i", str(inventory), "-e", f"@{variables}",
                          str(Path(__file__).with_name("playbook.yml"))], capture_output=True, text=True, env=env)
    seconds = time.monotonic() - started
    if out.returncode != 0:
        raise RuntimeError(f"ansible-playbook failed:\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}")
    execs = len(re.findall(r"SSH: EXEC ssh ", out.stdout))
    sftp = len(re.findall(r"SSH: EXEC sftp ", out.stdout))
    recap = re.search(r"changed=(\d+)", out.stdout.rsplit("PLAY RECAP", 1)[-1])
    return {"seconds": seconds, "round_trips": execs + 4 * sftp, "turns": proxy.turns,
            "changed": int(recap.group(1)) if recap else -1}


def main() -> int:
    if os.geteuid() != 0:
        print("bench-deploy needs root (the local sandbox host: network namespace, dockerd)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="gpuprov-bench-deploy-"))
    os.environ["GPUPROV_HOME"] = str(work / "state")
    box = LocalSandbox("bench-deploy", progress=lambda m: print(f"  {m}", file=sys.stderr))
    try:
        real = box.create()
        cfg = load_config(None, {"stack": "bench-deploy", "cloud": "local"})
        with DelayProxy((real.address, real.ssh_port), RTT_S) as proxy:
            slow = real.model_copy(update={"address": "127.0.0.1", "ssh_port": proxy.port})
            print(f"sandbox host {real.address}:{real.ssh_port}, reached through a proxy adding "
                  f"{RTT_S * 1000:.0f} ms round trip at 127.0.0.1:{proxy.port}", file=sys.stderr)
            rows: dict[str, dict[str, Any]] = {"gpuprov first deploy": gpuprov_run(cfg, slow, proxy),
                    "gpuprov no-op re-deploy": gpuprov_run(cfg, slow, proxy)}
            reset_host(cfg, real)
            rows["ansible first deploy"] = ansible_run(cfg, slow, box.client_key, work, proxy)
            rows["ansible no-op re-deploy"] = ansible_run(cfg, slow, box.client_key, work, proxy)
        print(f"\n{'':26} {'wall s':>8} {'round trips':>12} {'turns':>7} {'changed':>8}")
        for name, r in rows.items():
            print(f"{name:26} {r['seconds']:8.2f} {r['round_trips']:12} {r['turns']:7} {r['changed']:8}")
        g, a = rows["gpuprov no-op re-deploy"], rows["ansible no-op re-deploy"]
        print(f"\nno-op re-deploy: gpuprov {g['round_trips']} round trips in {g['seconds']:.2f}s, "
              f"Ansible {a['round_trips']} in {a['seconds']:.2f}s: {a['seconds'] / g['seconds']:.1f}x faster "
              f"(simulated RTT {RTT_S * 1000:.0f} ms)")
        print(json.dumps({"rtt_ms": RTT_S * 1000, "rows": rows}))
        return 0
    finally:
        box.destroy()
        shutil.rmtree(work, ignore_errors=True)  # staged files held the stack's generated secrets


if __name__ == "__main__":
    raise SystemExit(main())
