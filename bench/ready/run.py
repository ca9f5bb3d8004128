"""`make bench-ready`: where the minutes of an `up` go, on the local sandbox, with a real registry on this
machine (Debian's docker-registry, the CNCF distribution registry), side by side:

1. an `up` whose images are built on the host (the registry has none: deploy says so and builds);
2. an `up` whose images are pulled from the registry (after `gpuprov build` pushed them from a Docker
   engine of the bench's own, the operator's machine in the story);
3. an `up` with a cold and then a warm model cache (`cache: true`): Lambda's stand-in API with the
   sandbox host as its instance, as tests/lambda_cloud/test_cache_on_sandbox.py does; `down` keeps the
   filesystem, so the second `up` finds the model the stand-in vLLM downloaded (64 MB) on the first;
4. a realistic image (a Debian root filesystem from mmdebstrap plus generated layers: BENCH_LAYERS x
   BENCH_LAYER_MB) built on the sandbox host's engine vs pulled there from the registry.

Then a projected table for Lambda A10 / AWS g5.xlarge / GCP g2-standard-4, each figure with its source.
Figures only: nothing here asserts a timing. Needs root (the sandbox), mmdebstrap, docker-registry.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "bench-ready"
LAYERS = int(os.environ.get("BENCH_LAYERS", "6"))
LAYER_MB = int(os.environ.get("BENCH_LAYER_MB", "100"))
sys.path.insert(0, str(REPO))  # `python bench/ready/run.py` from a checkout: this tree's gpuprov
from gpuprov.provisioning.phases import PHASES  # noqa: E402


def gp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "gpuprov", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"gpuprov {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rootfs() -> Path:
    tar = CACHE / "bookworm-minbase.tar"
    if not tar.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print("making a Debian bookworm root filesystem with mmdebstrap (once; cached in .cache/bench-ready)",
              file=sys.stderr)
        part = CACHE / "bookworm-minbase.part.tar"  # mmdebstrap picks the format by the suffix
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(part)], check=True)
        part.rename(tar)
    return tar


def timed(*cmd: str, env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return time.monotonic() - start


def realistic_context(tmp: Path) -> Path:
    ctx = tmp / "realistic"
    ctx.mkdir()
    lines = ["FROM bench/debian-bookworm:minbase"]
    lines += [f"RUN head -c {LAYER_MB}M /dev/urandom > /layer{i}.bin" for i in range(LAYERS)]
    lines += ["LABEL gpuprov.bench=realistic", 'CMD ["/bin/true"]']
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    return ctx


def main() -> int:
    if os.geteuid() != 0:
        print("make bench-ready needs root (the local sandbox host: network namespace, dockerd)", file=sys.stderr)
        return 2
    for tool in ("docker-registry", "mmdebstrap", "dockerd"):
        if not shutil.which(tool):
            print(f"{tool} is not installed; run `make setup` as root", file=sys.stderr)
            return 2
    tar = rootfs()
    tmp = Path(tempfile.mkdtemp(prefix="ready-bench-"))
    home = tmp / "home"
    env = {"GPUPROV_HOME": str(home)}
    os.environ.update(env)
    stack = f"bench-ready-{uuid.uuid4().hex[:4]}"
    plain = tmp / "plain.yaml"
    plain.write_text(f"stack: {stack}\ncloud: local\napps: [vllm_cxr]\n")
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, float]] = {}
    realistic: dict[str, float] = {}
    try:
        gp("up", "--config", str(plain), "--no-deploy")
        rec = json.loads(gp("status", "--json", "--stack", stack).stdout)["stacks"][0]
        launch = rec["last_up_phases_s"].get("launch", 0.0)
        inner = rec["address"]
        outer = inner.rsplit(".", 1)[0] + "." + str(int(inner.rsplit(".", 1)[1]) - 1)
        port = free_port()
        (tmp / "reg").mkdir()
        (tmp / "reg.yml").write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                                     f"    rootdirectory: {tmp / 'reg'}\nhttp:\n  addr: {outer}:{port}\n")
        procs.append(subprocess.Popen(["docker-registry", "serve", str(tmp / "reg.yml")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        registry = f"{outer}:{port}"
        for _ in range(100):
            try:
                requests.get(f"http://{registry}/v2/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        short = Path(f"/tmp/rb-{uuid.uuid4().hex[:6]}")
        short.mkdir()
        procs.append(subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false", f"--data-root={tmp / 'builder'}",
             f"--exec-root={short / 'exec'}", f"--host=unix://{short / 'd.sock'}", f"--pidfile={short / 'd.pid'}",
             "--insecure-registry=10.213.0.0/16"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        builder = {"DOCKER_HOST": f"unix://{short / 'd.sock'}"}
        for _ in range(240):
            if subprocess.run(["docker", "info"], capture_output=True, env={**os.environ, **builder}).returncode == 0:
                break
            time.sleep(0.25)
        cfg = tmp / "registry.yaml"
        cfg.write_text(plain.read_text() + f"image_registry: {registry}\n")
        from gpuprov.infra.clouds.local.sandbox import LocalSandbox

        host_docker = ["docker", f"--host=unix://{LocalSandbox(stack).docker_socket}"]

        # 1. built on the host (the registry is empty)
        first = json.loads(gp("deploy", "--config", str(cfg), "--json", "--timeout", "300").stdout)
        results["build on host"] = {"launch": launch, **first["phases_s"]}
        # 2. gpuprov build here, push; the host loses its images (a new host), deploy pulls
        start = time.monotonic()
        gp("build", "--config", str(cfg), env=builder)
        build_s = time.monotonic() - start
        images = subprocess.run([*host_docker, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
                                capture_output=True, text=True, check=True).stdout.split()
        containers = subprocess.run([*host_docker, "ps", "-aq"], capture_output=True, text=True).stdout.split()
        if containers:  # a new host has neither containers nor images
            subprocess.run([*host_docker, "rm", "-f", *containers], capture_output=True, check=True)
        subprocess.run([*host_docker, "rmi", "-f", *images], capture_output=True, check=True)
        volumes = subprocess.run([*host_docker, "volume", "ls", "-q", "--filter", "name=model-cache"],
                                 capture_output=True, text=True).stdout.split()
        if volumes:  # nor the model the first deploy downloaded (no cache is kept: `cache` is not set)
            subprocess.run([*host_docker, "volume", "rm", "-f", *volumes], capture_output=True, check=True)
        second = json.loads(gp("deploy", "--config", str(cfg), "--json", "--timeout", "300").stdout)
        results["pull from registry"] = {"launch": launch, **second["phases_s"]}

        # 3. a realistic image: built on the host's engine vs pulled there
        ctx = realistic_context(tmp)
        ref = f"{registry}/bench/realistic:1"
        realistic["import rootfs (host)"] = timed(*host_docker, "import", str(tar), "bench/debian-bookworm:minbase")
        realistic["build on host"] = timed(*host_docker, "build", "-q", "-t", "bench/realistic:1", str(ctx),
                                           env={"DOCKER_BUILDKIT": "0"})
        timed("docker", "import", str(tar), "bench/debian-bookworm:minbase", env=builder)
        timed("docker", "build", "-q", "-t", ref, str(ctx), env={**builder, "DOCKER_BUILDKIT": "0"})
        realistic["push from builder"] = timed("docker", "push", "-q", ref, env=builder)
        realistic["pull on host"] = timed(*host_docker, "pull", "-q", ref)
        size = subprocess.run([*host_docker, "image", "inspect", "-f", "{{.Size}}", ref], capture_output=True,
                              text=True, check=True).stdout.strip()
        layers = subprocess.run([*host_docker, "image", "inspect", "-f", "{{len .RootFS.Layers}}", ref],
                                capture_output=True, text=True, check=True).stdout.strip()
    finally:
        subprocess.run([sys.executable, "-m", "gpuprov", "down", "--config", str(plain)], capture_output=True)
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)

    results |= model_cache_columns()
    print_measured(results, build_s, realistic, int(size), layers)
    print_projected(realistic, int(size))
    return 0


def model_cache_columns() -> dict[str, dict[str, float]]:
    """An `up` with a cold model cache, `down` (the cache is kept), an `up` with it warm: the phases of each."""
    from gpuprov.infra.clouds.local.sandbox import LocalSandbox
    from gpuprov.testing.egress_echo import EgressEcho
    from gpuprov.testing.lambda_api import LambdaStandIn

    tmp = Path(tempfile.mkdtemp(prefix="ready-cache-"))
    key = f"bench-{uuid.uuid4().hex}"
    api = LambdaStandIn(boot_seconds=0.3, terminate_seconds=0.2, api_key=key).start()
    echo = EgressEcho().start()  # SSH opens from "this machine's address", as the stand-in echo answers it
    env = {"LAMBDA_API_URL": api.url, "LAMBDA_API_KEY": key, "GPUPROV_LAMBDA_RATE_SCALE": "0.02",
           "GPUPROV_EGRESS_URL": echo.url,
           "GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_POLL_S": "0.1", "GPUPROV_VERIFY_TIMEOUT_S": "30",
           "GPUPROV_HOME": str(tmp / "home"), "GPUPROV_OWNER": "bench-ready@lab"}
    stack = f"br{uuid.uuid4().hex[:4]}"
    cfg = tmp / "lambda.yaml"
    cfg.write_text(json.dumps({"cloud": "lambda", "stack": stack, "cache": True, "apps": ["vllm_cxr"]}))
    box = LocalSandbox(f"rc{uuid.uuid4().hex[:4]}", root=tmp / "boxes", login_user="ubuntu")
    out: dict[str, dict[str, float]] = {}
    try:
        box.create()
        api.attach(box)
        for column in ("cold model cache", "warm model cache"):
            gp("up", "--config", str(cfg), env=env)
            rec = json.loads(gp("status", "--json", "--stack", stack, env=env).stdout)["stacks"][0]
            out[column] = dict(rec["last_up_phases_s"])
            gp("down", "--config", str(cfg), env=env)  # keeps the cache (and says what it costs a month)
    finally:
        subprocess.run([sys.executable, "-m", "gpuprov", "down", "--purge", "--config", str(cfg)],
                       capture_output=True, env={**os.environ, **env})
        box.destroy()
        api.stop()
        echo.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def print_measured(results: dict[str, dict[str, float]], build_s: float, realistic: dict[str, float],
                   size: int, layers: str) -> None:
    cols = list(results)
    print("\nMeasured on the local sandbox (stand-in images; seconds per phase):")
    print(f"  {'phase':<18}" + "".join(f"{c:>20}" for c in cols))
    for phase in PHASES + ("total",):
        cells = []
        for c in cols:
            value = sum(results[c].values()) if phase == "total" else results[c].get(phase)
            cells.append("-" if value is None else f"{value:.2f}")
        print(f"  {phase:<18}" + "".join(f"{x:>20}" for x in cells))
    print(f"  gpuprov build + push here (off the GPU meter): {build_s:.2f} s")
    print("  build / pull: `cloud: local`, a deploy on the sandbox host (launch: its `up --no-deploy`, the same "
          "for both); cold / warm model cache: `up` through Lambda's stand-in API (0.3 s boots) with the sandbox "
          "host as the instance and `cache: true`; the stand-in vLLM's model is 64 MB written locally")
    print(f"\nRealistic image ({layers} layers, {size / 1e6:.0f} MB: Debian bookworm minbase from mmdebstrap + "
          f"{LAYERS} x {LAYER_MB} MB layers), on the sandbox host's engine:")
    for k, v in realistic.items():
        print(f"  {k:<24}{v:>8.2f} s")
    if realistic.get("pull on host"):
        print(f"  pull rate on this machine: {size / 1e6 / realistic['pull on host']:.0f} MB/s (loopback/veth; a "
              "cloud pull is network-bound, see below)")


# Projection inputs. Each figure carries where it came from; "assumed" ones are not a published figure.
IMAGE_GB = (5.0, "MONAI Label image, ~5 GB of Python packages (seed guide, as quoted in issue #16)")
BUILD_MIN = (17.5, "15 to 20 minutes (seed guide, as quoted in issue #16); midpoint")
MODEL_GB = (6.0, "NV-Reason-CXR-3B weights, ~6 GB (issue #16)")
Figure = tuple[float, str]  # a value and where it came from
CLOUDS: list[dict[str, Figure]] = [
    {"usd_hour": (0.75, "gpuprov cost catalog: Lambda public price list, 2025-10"),
     "launch_min": (4.0, "assumed: 3 to 5 minutes for a 1-GPU instance as commonly reported; midpoint; not "
                                 "re-checked against a Lambda page"),
     "pull_MBps": (100.0, "assumed ~1 Gbit/s effective from a registry; not a published figure")},  # Lambda A10
    {"usd_hour": (1.006, "gpuprov cost catalog: AWS on-demand, us-east-1, 2026-06"),
     "launch_min": (2.0, "assumed ~1-2 min to running + SSH for an EC2 GPU instance; not a published figure"),
     "pull_MBps": (150.0, "assumed from ECR in-region at 'up to 10 Gbit/s' (g5.xlarge), EBS-bound; assumed")},  # AWS
    {"usd_hour": (0.71, "gpuprov cost catalog: GCP on-demand, us-central1, 2026-05"),
     "launch_min": (1.5, "assumed ~1-2 min to RUNNING + SSH; not a published figure"),
     "pull_MBps": (150.0, "assumed from Artifact Registry in-region, pd-balanced-bound; assumed")},  # GCP
]


CLOUD_NAMES = ("Lambda gpu_1x_a10", "AWS g5.xlarge", "GCP g2-standard-4")  # in the order of CLOUDS


def print_projected(realistic: dict[str, float], size: int) -> None:
    print("\nProjected (not measured) per `up`, minutes and $ at the on-demand price:")
    print(f"  {'target':<20}{'launch':>8}{'build on host':>15}{'pull':>8}{'model dl':>10}"
          f"{'up (build)':>12}{'up (pull)':>11}{'$ saved/up':>12}")
    for name, c in zip(CLOUD_NAMES, CLOUDS, strict=True):
        launch, rate, usd = c["launch_min"][0], c["pull_MBps"][0], c["usd_hour"][0]
        pull = IMAGE_GB[0] * 1000 / rate / 60
        model = MODEL_GB[0] * 1000 / rate / 60
        up_build, up_pull = launch + BUILD_MIN[0] + model, launch + pull + model
        saved = (up_build - up_pull) * usd / 60
        print(f"  {name:<20}{launch:>8.1f}{BUILD_MIN[0]:>15.1f}{pull:>8.1f}{model:>10.1f}"
              f"{up_build:>12.1f}{up_pull:>11.1f}{saved:>12.3f}")
    print("  sources:")
    for fig in (IMAGE_GB, BUILD_MIN, MODEL_GB):
        print(f"    {fig[0]:g}: {fig[1]}")
    for name, c in zip(CLOUD_NAMES, CLOUDS, strict=True):
        for key in ("usd_hour", "launch_min", "pull_MBps"):
            print(f"    {name} {key} {c[key][0]:g}: {c[key][1]}")
    if realistic.get("build on host") and realistic.get("pull on host"):
        ratio = realistic["build on host"] / realistic["pull on host"]
        print(f"    measured sandbox ratio build/pull for the realistic image: {ratio:.1f}x (its build only writes "
              "layers; a real build also downloads and installs ~5 GB of packages, hence the seed guide's minutes)")


if __name__ == "__main__":
    sys.exit(main())
