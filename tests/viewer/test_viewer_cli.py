"""`gpuprov viewer` without a Docker engine or a host: what it refuses and says, the files it renders,
the sample series it writes. (The whole flow in a browser: test_viewer_browser.py.)"""

from __future__ import annotations

import json
import re
import stat
import zipfile
from pathlib import Path

import pytest

from gpuprov.infra.config import ConfigError, load_config, viewer_config
from gpuprov.viewer.render import nginx_conf, orthanc_credentials, orthanc_json, render
from gpuprov.viewer.studies import dicom_candidates, write_sample_series
from tests.conftest import run_cli


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_bad_flags_are_refused_with_exit_2_naming_the_flag():
    done = run_cli("viewer", "up", "--image", "Not An Image")
    assert done.returncode == 2 and "'--image'" in _one_error_line(done.stderr)
    done = run_cli("viewer", "up", "--port", "8042", "--orthanc-port", "8042")
    assert done.returncode == 2 and "two different ports" in _one_error_line(done.stderr)
    with pytest.raises(ConfigError, match="from 1024 to 65535"):
        viewer_config(orthanc_port=443)


def test_import_needs_one_source_and_a_running_viewer(tmp_path: Path):
    done = run_cli("viewer", "import")
    assert done.returncode == 2 and "one of the two" in _one_error_line(done.stderr)
    done = run_cli("viewer", "import", str(tmp_path), "--sample")
    assert done.returncode == 2
    done = run_cli("viewer", "import", "--sample", "--stack", "none")
    assert done.returncode == 1
    assert "no viewer for stack 'none'; start one first: gpuprov viewer up --stack none" in _one_error_line(done.stderr)


def test_up_without_docker_says_what_to_install():
    done = run_cli("viewer", "up", "--stack", "nodocker", "--cloud", "local", env={"PATH": "/nonexistent"})
    assert done.returncode == 3
    assert "docker is not installed here" in _one_error_line(done.stderr)


def test_status_and_down_of_a_stack_without_a_viewer(gpuprov_home: Path):
    done = run_cli("viewer", "status", "--stack", "quiet")
    assert done.returncode == 0 and "no viewer for stack 'quiet'" in done.stdout
    done = run_cli("viewer", "status", "--stack", "quiet", "--json")
    assert json.loads(done.stdout)["url"] is None
    done = run_cli("viewer", "down", "--stack", "quiet")
    assert done.returncode == 0 and "no container or tunnel left" in done.stdout
    assert not (gpuprov_home / "viewer" / "quiet").exists()  # asking leaves no trace


def test_nginx_config_listens_on_loopback_and_sends_monai_to_the_tunnel_only(gpuprov_home: Path):
    viewer = viewer_config(port=1026, orthanc_port=8042)
    creds = orthanc_credentials("dev")
    conf = "\n".join(line for line in nginx_conf(viewer, 40123, creds).splitlines() if not line.lstrip().startswith("#"))
    assert re.findall(r"^\s*listen (.*);$", conf, re.M) == ["127.0.0.1:1026 default_server"]
    assert "proxy_pass http://127.0.0.1:40123;" in conf  # /monai/ -> the SSH tunnel, path passed as is
    assert "proxy_pass http://127.0.0.1:8042/;" in conf  # /pacs/ -> Orthanc
    proxied = re.findall(r"proxy_pass http://([^:/;]+)", conf)
    assert set(proxied) == {"127.0.0.1"}  # never a public address
    assert "${" not in conf and "Access-Control-Allow-Origin" not in conf
    assert creds.basic in conf


def test_orthanc_config_is_ohif_ai_s_own_with_authentication_on(gpuprov_home: Path):
    creds = orthanc_credentials("dev")
    conf = json.loads(orthanc_json(creds))
    assert conf["AuthenticationEnabled"] is True and conf["RegisteredUsers"] == {creds.user: creds.password}
    assert conf["DicomWeb"]["Enable"] is True and conf["DicomWeb"]["Root"] == "/dicom-web/"
    assert conf["StorageDirectory"] == "/var/lib/orthanc/db"
    assert orthanc_credentials("dev") == creds  # generated once
    assert "password=<hidden>" in repr(creds) and creds.password not in repr(creds)


def test_rendered_files_holding_credentials_are_private_and_a_new_tunnel_port_changes_the_viewer_hash(gpuprov_home: Path):
    viewer = viewer_config()
    first = render("dev", viewer, 40001, "img:1")
    for name in ("nginx.conf", "orthanc.json", "orthanc-credentials.json"):
        assert stat.S_IMODE((first.directory / name).stat().st_mode) == 0o600
    again = render("dev", viewer, 40001, "img:1")
    moved = render("dev", viewer, 40002, "img:1")
    assert again.viewer_hash == first.viewer_hash and moved.viewer_hash != first.viewer_hash
    assert moved.orthanc_hash == first.orthanc_hash  # Orthanc is not recreated for a new tunnel


def test_the_sample_series_is_one_synthetic_ct_study_with_stable_uids(tmp_path: Path):
    import pydicom

    paths = write_sample_series(tmp_path / "a", slices=4, size=16)
    again = write_sample_series(tmp_path / "b", slices=4, size=16)
    first = [pydicom.dcmread(p) for p in paths]
    assert len({d.StudyInstanceUID for d in first}) == 1 and len({d.SOPInstanceUID for d in first}) == 4
    assert [d.SOPInstanceUID for d in first] == [pydicom.dcmread(p).SOPInstanceUID for p in again]
    assert first[0].Modality == "CT" and str(first[0].PatientName) == "Sample^Phantom"
    assert len(first[0].PixelData) == 16 * 16 * 2


def test_a_zip_of_a_folder_is_read_member_by_member(tmp_path: Path):
    paths = write_sample_series(tmp_path / "s", slices=2, size=8)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in paths:
            z.write(p, f"series/{p.name}")
    assert [name for name, _ in dicom_candidates(archive)] == ["series/slice-001.dcm", "series/slice-002.dcm"]


def test_the_viewer_follows_the_stack_s_ohif_ai_commit():
    from gpuprov.viewer.image import build_label, built_image

    commit = "abc1234" * 5 + "abcde"
    cfg = load_config(None, {"monai_label_ref": commit})
    assert built_image(cfg) == f"gpuprov/ohif-ai-viewer:{commit}"
    assert build_label(cfg) == f"https://github.com/anandpreshob/OHIF-AI@{commit}"
