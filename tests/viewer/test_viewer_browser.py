"""`gpuprov viewer` as a user runs it, checked in a real browser: the viewer page on 127.0.0.1, the
sample study listed, MONAI Label reached through gpuprov's SSH tunnel (the stand-in on the sandbox
host logs the request), a screenshot kept; loopback-only listeners, a reused tunnel, a replaced host
followed with no edit, and a `down` that leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import need, run_cli
from tests.viewer.conftest import UserDocker, ViewerImages, json_of, listeners

# The first test also makes the Debian root for the images (about a minute, cached afterwards).
pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(900)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    root: Path  # the state root: the sandbox's key, pins, stack record and the viewer's files
    stack: str
    box: Any  # the LocalSandbox serving MONAI Label's stand-in
    docker: UserDocker
    images: ViewerImages
    port: int
    orthanc_port: int

    @property
    def env(self) -> dict[str, str]:
        return {**self.docker.env, "GPUPROV_HOME": str(self.root)}

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--stack", self.stack, env=self.env, timeout=timeout)

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli("viewer", "up", "--cloud", "local", "--port", str(self.port),
                        "--orthanc-port", str(self.orthanc_port), *extra)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def monai_log(self) -> str:
        sock = self.box.docker_socket
        done = subprocess.run(["docker", f"--host=unix://{sock}", "logs", "monai_sam2"], capture_output=True, text=True)
        return done.stdout + done.stderr


def _deploy(box, root: Path, stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox host up and serving (MONAI Label's stand-in on its 127.0.0.1:8002), as `gpuprov up` leaves it."""
    from gpuprov.infra import records
    from gpuprov.infra.config import load_config
    from gpuprov.provisioning.deploy import deploy
    from gpuprov.provisioning.health import wait_healthy

    monkeypatch.setenv("GPUPROV_HOME", str(root))
    host = box.create()
    cfg = load_config(None, {"stack": stack, "cloud": "local", "apps": ["monai_label"]})
    records.save(stack, "local", host)
    deploy(cfg, host)
    wait_healthy(cfg, host, 60)


@pytest.fixture(scope="module")
def world(user_docker: UserDocker, viewer_images: ViewerImages,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need(Path(CHROMIUM).exists(), "Debian's chromium is not installed (make setup)")
    from gpuprov.infra.clouds.local.sandbox import LocalSandbox

    root = tmp_path_factory.mktemp("viewer-home")
    stack = f"v-{uuid.uuid4().hex[:6]}"
    box = LocalSandbox(stack, root=root)
    with pytest.MonkeyPatch.context() as mp:
        try:
            _deploy(box, root, stack, mp)
            w = World(root, stack, box, user_docker, viewer_images, _free_port(), _free_port())
            print(f"viewer site: {viewer_images.site}")
            yield w
            done = w.cli("viewer", "down", "--purge")
            assert done.returncode == 0, done.stderr
        finally:
            # Whatever a failed test left: the viewer (containers, tunnel) first, then the GPU host.
            run_cli("viewer", "down", "--purge", "--stack", stack, env={**user_docker.env, "GPUPROV_HOME": str(root)})
            mp.setenv("GPUPROV_HOME", str(root))
            box.destroy()


@pytest.fixture(scope="module")
def viewer_up(world: World) -> World:
    done = world.up()
    assert done.returncode == 0, done.stderr
    assert f"viewer  {world.url('')}" in done.stdout
    assert "segmentation" in done.stdout  # MONAI Label's models, read through the viewer's /monai/ path
    return world


def _runs(pid: int) -> bool:
    """Whether ``pid`` still runs (an exited process not yet reaped by its new parent does not)."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return False


def _artifact(shot: Path) -> None:
    """Keep the screenshot where CI collects artifacts, when it says where."""
    where = os.environ.get("GPUPROV_ARTIFACTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(where) / shot.name)


def test_up_without_a_host_says_how_to_get_one(user_docker: UserDocker, tmp_path: Path):
    done = run_cli("viewer", "up", "--stack", "nohost", "--cloud", "local", env={**user_docker.env, "GPUPROV_HOME": str(tmp_path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr  # an unknown stack, as every command says it
    assert "error: no stack named 'nohost': there are no stacks; `gpuprov up --stack nohost` brings one up" in done.stderr


def test_the_browser_shows_the_sample_study_and_reaches_monai_label_through_the_tunnel(viewer_up: World, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    w = viewer_up
    done = w.cli("viewer", "import", "--sample")
    assert done.returncode == 0, done.stderr
    assert "imported 24 instance(s) in 1 study(ies)" in done.stdout
    before = w.monai_log().count('"GET /monai/info/')

    shot = tmp_path / "viewer-with-sample-study.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            response = page.goto(w.url(), wait_until="load")
            assert response is not None and response.status == 200
            # The study list (QIDO-RS through nginx to Orthanc) shows the imported sample.
            page.get_by_text("Phantom", exact=False).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)  # let the list and panel settle before the picture
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            _artifact(shot)
            text = page.inner_text("body")
            assert "Phantom" in text and "GPUPROV-SAMPLE" in text, text[:2000]  # patient name and MRN of the sample
            # MONAI Label through the viewer's /monai/ path: nginx -> SSH tunnel -> the GPU host.
            info = page.evaluate("fetch('/monai/info/').then(r => r.json())")
            assert "segmentation" in info["models"]
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    after = w.monai_log().count('"GET /monai/info/')
    assert after > before, "no /monai/info/ request reached MONAI Label's stand-in on the sandbox host"


def test_viewer_and_orthanc_listen_on_loopback_only_and_orthanc_needs_its_credentials(viewer_up: World):
    w = viewer_up
    assert listeners(w.port) == ["127.0.0.1"]
    assert listeners(w.orthanc_port) == ["127.0.0.1"]
    # Orthanc itself refuses anyone without the generated account; the viewer's proxy adds it.
    assert requests.get(f"http://127.0.0.1:{w.orthanc_port}/system", timeout=10).status_code == 401
    assert requests.get(w.url("/pacs/system"), timeout=10).json()["Version"]
    # A page elsewhere whose name resolves to 127.0.0.1 gets nothing through the viewer.
    assert requests.get(w.url("/pacs/system"), headers={"Host": "evil.example"}, timeout=10).status_code == 421
    files = w.root / "viewer" / w.stack
    for name in ("orthanc-credentials.json", "nginx.conf", "orthanc.json"):
        assert stat.S_IMODE((files / name).stat().st_mode) == 0o600, name
    password = json.loads((files / "orthanc-credentials.json").read_text())["password"]
    cmdlines = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists()]
    assert not any(password.encode() in c for c in cmdlines)


def test_a_second_up_reuses_the_tunnel_and_recreates_nothing(viewer_up: World):
    w = viewer_up
    before = json_of(w.cli("viewer", "status", "--json").stdout)
    ids = w.docker.docker("ps", "-q", "--filter", f"label=com.docker.compose.project=gpuprov-viewer-{w.stack}").stdout.split()
    again = w.up("--json")
    assert again.returncode == 0, again.stderr
    assert "reusing the SSH tunnel" in again.stderr
    assert json_of(again.stdout)["tunnel_pid"] == before["tunnel_pid"]
    assert w.docker.docker("ps", "-q", "--filter", f"label=com.docker.compose.project=gpuprov-viewer-{w.stack}"
                           ).stdout.split() == ids


def test_a_replaced_host_is_followed_by_the_next_up_with_no_edit(viewer_up: World, monkeypatch: pytest.MonkeyPatch):
    w = viewer_up
    old = json_of(w.cli("viewer", "status", "--json").stdout)
    w.box.destroy()  # the GPU host goes (down), a new one comes (up)
    # The old tunnel notices its host is gone and ends by itself: nothing keeps calling a dead address.
    deadline = time.monotonic() + 30
    while _runs(old["tunnel_pid"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _runs(old["tunnel_pid"])
    _deploy(w.box, w.root, w.stack, monkeypatch)
    again = w.up("--json")
    assert again.returncode == 0, again.stderr
    new = json_of(again.stdout)
    assert "started the SSH tunnel" in again.stderr and _runs(new["tunnel_pid"])
    assert "segmentation" in requests.get(w.url("/monai/info/"), timeout=10).json()["models"]
    assert '"GET /monai/info/' in w.monai_log()  # the NEW host's MONAI Label answered


def test_down_leaves_nothing_running_and_keeps_the_studies_until_purged(viewer_up: World):
    w = viewer_up
    assert w.cli("viewer", "import", "--sample").returncode == 0
    pid = json_of(w.cli("viewer", "status", "--json").stdout)["tunnel_pid"]
    done = w.cli("viewer", "down")
    assert done.returncode == 0, done.stderr
    assert "no container or tunnel left" in done.stdout
    assert w.docker.docker("ps", "-aq").stdout.split() == []
    assert not _runs(pid)
    assert listeners(w.port) == [] and listeners(w.orthanc_port) == []
    status = w.cli("viewer", "status")
    assert "tunnel: not running" in status.stdout

    assert w.up().returncode == 0  # the studies survived `down`
    studies = requests.get(w.url("/pacs/dicom-web/studies"), timeout=10).json()
    assert len(studies) == 1

    purged = w.cli("viewer", "down", "--purge")
    assert purged.returncode == 0, purged.stderr
    volumes = w.docker.docker("volume", "ls", "-q").stdout
    assert f"gpuprov-viewer-{w.stack}_orthanc-db" not in volumes
    assert w.docker.docker("ps", "-aq").stdout.split() == []
    assert w.up().returncode == 0  # and a fresh one starts empty
    assert requests.get(w.url("/pacs/dicom-web/studies"), timeout=10).json() == []


def test_without_an_image_the_viewer_is_built_once_from_the_repository_recipe(
        user_docker: UserDocker, viewer_images: ViewerImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The clone -> checkout -> `docker build -f <recipe> Viewers/` path, against a repository of our own
    (no GitHub here) whose recipe builds on the test's Debian base (no registry here)."""
    from gpuprov.infra.config import load_config, viewer_config
    from gpuprov.viewer.image import RECIPE, ensure_viewer_image
    from gpuprov.viewer.stack import docker

    repo = tmp_path / "ohif-ai"
    recipe = repo / "Viewers" / RECIPE
    recipe.parent.mkdir(parents=True)
    recipe.write_text("FROM gpuprov-test/debian-viewer-base:bookworm\n"
                      "RUN mkdir -p /var/www/html && echo built-from-recipe > /var/www/html/index.html\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "recipe"], check=True)
    ref = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    for key, value in {**user_docker.env, "DOCKER_BUILDKIT": "0"}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(None, {"stack": "b", "monai_label_repo": f"file://{repo}", "monai_label_ref": ref})
    said: list[str] = []
    image = ensure_viewer_image(cfg, viewer_config(), docker, said.append)
    assert image == f"gpuprov/ohif-ai-viewer:{ref}" and any("building the viewer image" in m for m in said)
    out = user_docker.docker("run", "--rm", "--entrypoint", "cat", image, "/var/www/html/index.html").stdout
    assert out.strip() == "built-from-recipe"
    said.clear()
    assert ensure_viewer_image(cfg, viewer_config(), docker, said.append) == image and said == []  # built once
    named = viewer_config(image="registry.example/ohif-ai-viewer:mine")
    assert ensure_viewer_image(cfg, named, docker, said.append) == "registry.example/ohif-ai-viewer:mine"
