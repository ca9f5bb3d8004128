"""``gpuprov viewer up | down | status``: OHIF-AI's local viewer stack as one Compose project on this machine.

``up`` is idempotent: it (re)uses the tunnel (:mod:`gpuprov.viewer.tunnel`), renders the files
(:mod:`gpuprov.viewer.render`), makes sure the viewer image exists (:mod:`gpuprov.viewer.image`),
runs ``docker compose up -d`` (Compose recreates only a container whose config label changed), then
checks what a user would: the page, Orthanc behind it, and MONAI Label behind the tunnel.
``down`` removes the containers and the tunnel and then looks again; Orthanc's volume stays unless purged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from gpuprov.infra.config import StackConfig, ViewerConfig
from gpuprov.infra.host import GpuHost
from gpuprov.viewer import tunnel
from gpuprov.viewer.errors import DockerMissing, ViewerError, ViewerLeftovers
from gpuprov.viewer.image import ensure_viewer_image
from gpuprov.viewer.paths import viewer_dir
from gpuprov.viewer.render import credentials_path, render

Progress = Callable[[str], None]


def project_name(stack: str) -> str:
    return f"gpuprov-viewer-{stack}"


def _settings_path(stack: str) -> Path:
    return viewer_dir(stack) / "viewer.json"


def saved_settings(stack: str) -> dict[str, Any] | None:
    """What the last ``viewer up`` ran with (ports, images): ``import`` and ``status`` read it."""
    try:
        return dict(json.loads(_settings_path(stack).read_text()))
    except FileNotFoundError:
        return None


def docker(*args: str, check: bool = True, env: dict[str, str] | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI with ``args`` (a list, never a shell line)."""
    if shutil.which("docker") is None:
        raise DockerMissing("docker is not installed here; the viewer runs in Docker: install Docker Engine "
                            "(https://docs.docker.com/engine/install/) with its Compose plugin, then run again")
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        raise ViewerError(f"`docker {' '.join(args[:3])}` did not finish within {timeout:.0f}s") from None
    if check and done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise ViewerError(f"`docker {' '.join(args[:4])}` failed: {last}")
    return done


def check_docker() -> None:
    """A Docker engine that answers, with Compose v2; else one line saying what to install or start."""
    info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
    if info.returncode != 0:
        raise DockerMissing("the Docker engine does not answer (`docker info` failed: "
                            f"{(info.stderr.strip() or 'no output').splitlines()[-1]}); start Docker and run again")
    if docker("compose", "version", check=False, timeout=30).returncode != 0:
        raise DockerMissing("Docker Compose v2 is missing (`docker compose version` failed); install the "
                            "docker-compose-plugin package (or Docker Desktop) and run again")


def _compose(stack: str, *args: str, env: dict[str, str] | None = None, check: bool = True,
             timeout: float = 600) -> subprocess.CompletedProcess[str]:
    d = viewer_dir(stack)
    return docker("compose", "-p", project_name(stack), "--project-directory", str(d), "-f", str(d / "compose.yaml"),
                  *args, env=env, check=check, timeout=timeout)


def containers(stack: str) -> list[dict[str, str]]:
    """The project's containers, running or not, as Docker lists them (by Compose's project label)."""
    done = docker("ps", "-a", "--filter", f"label=com.docker.compose.project={project_name(stack)}",
                  "--format", "{{json .}}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return [{"name": r.get("Names", ""), "state": r.get("State", ""), "status": r.get("Status", ""),
             "ports": r.get("Ports", "")} for r in rows]


@dataclass
class ViewerStatus:
    stack: str
    url: str | None = None
    orthanc_url: str | None = None
    monai_via: str | None = None  # the tunnel's local URL
    host: str | None = None  # the GPU host's address the tunnel reaches
    tunnel_pid: int | None = None
    tunnel_reused: bool = False
    containers: list[dict[str, str]] = field(default_factory=list)
    monai: dict[str, Any] | None = None  # MONAI Label's /info/ as seen through the viewer

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def up(config: StackConfig, viewer: ViewerConfig, host: GpuHost, *, config_path: Path | None,
       progress: Progress, timeout_s: float = 180.0) -> ViewerStatus:
    """Bring the viewer stack up (or bring it in line), wired to ``host``'s MONAI Label through the tunnel.
    The caller has checked Docker (:func:`check_docker`)."""
    if tunnel.APP not in config.apps:
        raise ViewerError(f"stack '{config.stack}' does not deploy {tunnel.APP} (its apps: {', '.join(config.apps)}); "
                          f"add it to `apps` and run `gpuprov deploy --stack {config.stack}`")
    record, started = tunnel.ensure(config, host, config_path=config_path)
    progress(f"{'started' if started else 'reusing'} the SSH tunnel to MONAI Label on {host.address} "
             f"(127.0.0.1:{record.port}, pid {record.pid})")
    image = ensure_viewer_image(config, viewer, docker, progress)
    rendered = render(config.stack, viewer, record.port, image)
    env = {"VIEWER_IMAGE": image, "ORTHANC_IMAGE": viewer.orthanc_image, "ORTHANC_PORT": str(viewer.orthanc_port),
           "VIEWER_CONFIG": rendered.viewer_hash, "ORTHANC_CONFIG": rendered.orthanc_hash}
    _settings_path(config.stack).write_text(json.dumps({**viewer.model_dump(), "viewer_image": image}))
    progress(f"starting the viewer (nginx on 127.0.0.1:{viewer.port}) and Orthanc (127.0.0.1:{viewer.orthanc_port})")
    _compose(config.stack, "up", "-d", "--pull", "missing", "--remove-orphans", env=env, timeout=1800)
    status = ViewerStatus(config.stack, url=f"http://127.0.0.1:{viewer.port}",
                          orthanc_url=f"http://127.0.0.1:{viewer.orthanc_port}", monai_via=record.url,
                          host=host.address, tunnel_pid=record.pid, tunnel_reused=not started)
    status.monai = _wait_serving(status, config.stack, timeout_s, progress)
    status.containers = containers(config.stack)
    return status


def _wait_serving(status: ViewerStatus, stack: str, timeout_s: float, progress: Progress) -> dict[str, Any]:
    """Until the page, Orthanc behind it and MONAI Label behind the tunnel all answer; MONAI's /info/."""
    assert status.url is not None
    checks = [("the viewer page", "/", None), ("Orthanc through the viewer", "/pacs/system", "Version"),
              ("MONAI Label through the tunnel", "/monai/info/", "models")]
    deadline = time.monotonic() + timeout_s
    answer: dict[str, Any] = {}
    for what, path, key in checks:
        last = "no answer yet"
        while True:
            try:
                r = requests.get(status.url + path, timeout=10)
                if r.status_code == 200 and (key is None or key in r.json()):
                    answer = r.json() if key else answer
                    break
                last = f"HTTP {r.status_code}"
            except (requests.RequestException, ValueError) as err:
                last = type(err).__name__
            if time.monotonic() > deadline:
                hint = (f"the tunnel runs, so MONAI Label on the host is not serving: `gpuprov deploy --stack {stack}`"
                        if path.startswith("/monai") else f"see `docker compose -p {project_name(stack)} logs`")
                raise ViewerError(f"{what} ({status.url}{path}) did not answer within {timeout_s:.0f}s ({last}); {hint}")
            time.sleep(0.5)
        progress(f"{what}: ok")
    return answer


def down(stack: str, *, purge: bool, progress: Progress) -> None:
    """Remove the viewer's containers (and its volume and files with ``purge``) and its tunnel, then
    check that nothing of it is left; :class:`ViewerLeftovers` names what is."""
    d = viewer_dir(stack)
    had_compose = (d / "compose.yaml").exists()
    if had_compose:
        check_docker()
        settings = saved_settings(stack) or {}
        env = {"VIEWER_IMAGE": settings.get("viewer_image", "unset"), "ORTHANC_IMAGE": settings.get("orthanc_image", "unset"),
               "ORTHANC_PORT": str(settings.get("orthanc_port", 8042)), "VIEWER_CONFIG": "", "ORTHANC_CONFIG": ""}
        progress("removing the viewer's containers" + (" and Orthanc's data" if purge else " (Orthanc's data is kept)"))
        _compose(stack, "down", "--remove-orphans", *(["--volumes"] if purge else []), env=env, timeout=300)
    tunnel.stop(stack)
    left = [f"container {c['name']} ({c['state']})" for c in (containers(stack) if had_compose else [])]
    if (record := tunnel.running(stack)) is not None:
        left.append(f"tunnel process {record.pid}")
    if left:
        raise ViewerLeftovers(f"the viewer of stack '{stack}' is not fully removed; still running: {', '.join(left)}. "
                              f"Run `gpuprov viewer down --stack {stack}` again")
    if purge:
        credentials_path(stack).unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)


def status(stack: str) -> ViewerStatus:
    settings = saved_settings(stack)
    st = ViewerStatus(stack)
    if settings is None:
        return st
    st.url, st.orthanc_url = f"http://127.0.0.1:{settings['port']}", f"http://127.0.0.1:{settings['orthanc_port']}"
    st.containers = containers(stack)
    if (record := tunnel.running(stack)) is not None:
        st.monai_via, st.host, st.tunnel_pid = record.url, record.address, record.pid
    return st
