"""The viewer tests' world: this machine as the user's laptop, with its own Docker engine, and a local
sandbox host serving MONAI Label's stand-in as the GPU box.

- The user's Docker engine is a real dockerd of the test's own (own socket, data and exec roots), with
  no default bridge, no iptables and no forwarding; Compose's network for Orthanc is a bridge on an
  address pool of our own (10.214.0.0/16), reached only through Docker's loopback port forward.
- Its images are made here, since no registry is reachable: a Debian root (mmdebstrap) with Debian's
  nginx, Orthanc and Orthanc's DICOMweb plugin, tagged as the references ``gpuprov viewer up`` runs,
  so the product's compose file runs unchanged. The viewer image serves OHIF-AI's real build when
  ``make viewer-dist`` made one (``GPUPROV_VIEWER_DIST``, default ``.cache/ohif-ai-viewer-dist``), else the
  stand-in page in ``gpuprov/testing/viewer_site``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import need, need_sandbox

REPO = Path(__file__).resolve().parents[2]
IMAGES = Path(__file__).parent / "images"
ROOTFS_PACKAGES = ("nginx-light", "orthanc", "orthanc-dicomweb", "ca-certificates")
STANDIN_SITE = REPO / "gpuprov" / "testing" / "viewer_site"


def _run(*cmd: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{' '.join(cmd[:4])} failed: {done.stderr[-2000:]}"
    return done


@dataclass
class UserDocker:
    """The user's Docker engine: pass ``env`` to anything that runs ``docker``."""

    env: dict[str, str]
    pid: int

    def docker(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return _run("docker", *args, env=self.env, timeout=timeout)


def _mounts_under(root: str) -> list[str]:
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return [line.split()[1] for line in lines if line.split()[1].startswith(root)]


@pytest.fixture(scope="session")
def user_docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserDocker]:
    need_sandbox()
    need(shutil.which("mmdebstrap") is not None, "mmdebstrap is not installed (make setup)")
    base = tmp_path_factory.mktemp("user-docker")
    run_dir = Path(f"/run/gpv-user-{uuid.uuid4().hex[:6]}")
    run_dir.mkdir(mode=0o700)
    plugins = base / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    compose = Path(sys.executable).with_name("docker-compose")
    (plugins / "docker-compose").symlink_to(compose if compose.exists() else shutil.which("docker-compose") or "")
    sock = run_dir / "docker.sock"
    log = (base / "dockerd.log").open("w")
    proc = subprocess.Popen(
        ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
         "--default-address-pool", "base=10.214.0.0/16,size=24", f"--data-root={base / 'data'}",
         f"--exec-root={run_dir / 'exec'}", f"--host=unix://{sock}", f"--pidfile={run_dir / 'docker.pid'}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"DOCKER_HOST": f"unix://{sock}", "DOCKER_CONFIG": str(base / "docker-config")}
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "info"], env={**os.environ, **env}, capture_output=True).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, f"the user's dockerd did not start: {base}/dockerd.log"
            time.sleep(0.25)
        yield UserDocker(env, proc.pid)
    finally:
        ids = subprocess.run(["docker", "ps", "-aq"], env={**os.environ, **env}, capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", "-v", *ids], env={**os.environ, **env}, capture_output=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for mount in reversed(_mounts_under(str(run_dir)) + _mounts_under(str(base))):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(run_dir, ignore_errors=True)


def _rootfs() -> Path:
    """The Debian root with nginx and Orthanc, made once per package list and kept in a cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpuprov-tests"
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(" ".join(ROOTFS_PACKAGES).encode()).hexdigest()[:12]
    tar = cache / f"viewer-rootfs-bookworm-{key}.tar"
    if not tar.exists():
        part = tar.with_name(f"{tar.stem}.part.tar")  # mmdebstrap picks its output format by the name
        _run("mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
             "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
             "bookworm", str(part), timeout=900)
        part.replace(tar)
    return tar


def viewer_site() -> tuple[Path, str]:
    """(site folder, what it is): OHIF-AI's real build when one was made, else the stand-in page."""
    dist = Path(os.environ.get("GPUPROV_VIEWER_DIST") or REPO / ".cache" / "ohif-ai-viewer-dist")
    if (dist / "index.html").exists():
        return dist, f"OHIF-AI's build ({dist})"
    return STANDIN_SITE, "the stand-in viewer page (gpuprov/testing/viewer_site; `make viewer-dist` builds the real one)"


@dataclass
class ViewerImages:
    viewer: str
    orthanc: str
    site: str  # what the viewer image serves


@pytest.fixture(scope="session")
def viewer_images(user_docker: UserDocker, tmp_path_factory: pytest.TempPathFactory) -> ViewerImages:
    from gpuprov.infra.config import ViewerConfig, load_config
    from gpuprov.viewer.image import build_label, built_image

    base = "gpuprov-test/debian-viewer-base:bookworm"
    user_docker.docker("import", str(_rootfs()), base, timeout=300)
    site, what = viewer_site()
    ctx = tmp_path_factory.mktemp("viewer-image")
    shutil.copytree(site, ctx / "site")
    shutil.copy(IMAGES / "viewer.Dockerfile", ctx / "Dockerfile")
    cfg = load_config(None, {"stack": "x"})
    viewer = built_image(cfg)
    build = {**user_docker.env, "DOCKER_BUILDKIT": "0"}
    _run("docker", "build", "-q", "--build-arg", f"BASE={base}", "--label", f"gpuprov.label={build_label(cfg)}",
         "-t", viewer, str(ctx), env=build)
    orthanc = ViewerConfig().orthanc_image
    octx = tmp_path_factory.mktemp("orthanc-image")
    shutil.copy(IMAGES / "orthanc.Dockerfile", octx / "Dockerfile")
    _run("docker", "build", "-q", "--build-arg", f"BASE={base}", "-t", orthanc, str(octx), env=build)
    return ViewerImages(viewer, orthanc, what)


def listeners(port: int) -> list[str]:
    """Local addresses listening on TCP ``port`` in this network namespace (from /proc/net/tcp{,6})."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, p = local.split(":")
                if state == "0A" and int(p, 16) == port:
                    found.append(_address(addr, width))
    return found


def _address(hexaddr: str, width: int) -> str:
    if width == 8:
        return ".".join(str(b) for b in reversed(bytes.fromhex(hexaddr)))
    words = [bytes.fromhex(hexaddr[i:i + 8])[::-1].hex() for i in range(0, 32, 8)]
    full = "".join(words)
    return ":".join(full[i:i + 4] for i in range(0, 32, 4))


def json_of(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])
