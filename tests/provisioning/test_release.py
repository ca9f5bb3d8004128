"""What the host scripts of releases do, on a real shell with a stand-in `docker` (no engine needed):
the kept release is the one that ran, a rollback swaps, and an automatic one touches only what its update kept."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from gpuprov.provisioning.release import rollback_script, snapshot, with_snapshots
from gpuprov.provisioning.steps import Action, batch_script

DOCKER = """#!/bin/sh
# stand-in docker: image inspect answers an id per reference; everything else is logged
case "$1 $2" in
  "image inspect") [ "$3" = "-f" ] && echo "sha256:id-of-$5" || exit 0 ;;
  *) echo "docker $*" >> "$DOCKER_LOG" ;;
esac
"""


def _host(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(DOCKER)
    (bin_dir / "docker").chmod(0o755)
    app = tmp_path / "root/opt/gpuprov/vllm_cxr"
    app.mkdir(parents=True)
    (app / "compose.yaml").write_text("v1\n")
    (app / ".env").write_text("VLLM_IMAGE=vllm/vllm-openai:v1\nOPEN_WEBUI_IMAGE=ghcr.io/open-webui/open-webui:v1\n")
    (app / "webui.env").write_text("SECRET=1\n")
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GPUPROV_HOST_ROOT": str(tmp_path / "root"),
            "DOCKER_LOG": str(tmp_path / "docker.log")}


def _sh(script: str, env: dict[str, str]) -> str:
    done = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_snapshots_go_before_the_first_file_is_written_and_only_for_apps_whose_files_change():
    actions = [Action("docker_engine", ""), Action("directories", ""), Action("files:vllm_cxr", "", ["files:vllm_cxr"]),
               Action("files:system", ""), Action("compose:vllm_cxr", "")]
    steps = [a.step for a in with_snapshots(actions, "t1")]
    assert steps == ["docker_engine", "keep_previous:vllm_cxr", "directories", "files:vllm_cxr", "files:system",
                     "compose:vllm_cxr"]
    assert with_snapshots([Action("compose:vllm_cxr", "")], "t1")[0].step == "compose:vllm_cxr"


def test_keep_then_rollback_swaps_releases_and_a_foreign_token_touches_nothing(tmp_path: Path):
    env = _host(tmp_path)
    app = tmp_path / "root/opt/gpuprov/vllm_cxr"
    _sh(batch_script([snapshot("vllm_cxr", "t1")]), env)
    kept = app / "previous"
    assert (kept / ".env").read_text().startswith("VLLM_IMAGE=vllm/vllm-openai:v1")
    assert "vllm/vllm-openai:v1 sha256:id-of-vllm/vllm-openai:v1" in (kept / "images").read_text()
    assert not (kept / "webui.env").exists()  # secrets are the stack's current ones, never a release's
    assert kept.stat().st_mode & 0o777 == 0o700
    (app / ".env").write_text("VLLM_IMAGE=vllm/vllm-openai:v2\nOPEN_WEBUI_IMAGE=ghcr.io/open-webui/open-webui:v1\n")

    assert "@@gpuprov-noprevious vllm_cxr" in _sh(rollback_script(["vllm_cxr"], token="other"), env)
    assert "v2" in (app / ".env").read_text()  # another update's rollback leaves it alone

    out = _sh(rollback_script(["vllm_cxr"], token="t1"), env)
    assert "@@gpuprov-rolled vllm_cxr" in out and "@@gpuprov-image vllm/vllm-openai:v1" in out
    assert "v1" in (app / ".env").read_text() and "v2" in (kept / ".env").read_text()  # swapped
    assert (app / "webui.env").read_text() == "SECRET=1\n"  # the current secrets stay
    log = (tmp_path / "docker.log").read_text()
    assert "docker tag sha256:id-of-vllm/vllm-openai:v1 vllm/vllm-openai:v1" in log
    assert "compose -p gpuprov-vllm-cxr -f compose.yaml up -d --pull missing --remove-orphans" in log
    _sh(rollback_script(["vllm_cxr"]), env)  # on demand, again: forward
    assert "v2" in (app / ".env").read_text()
