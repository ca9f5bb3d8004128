"""`gpuprov backup` / `gpuprov restore`: a backup from one sandbox host, `down`, a new `up` of the same
stack, `restore`, and the same studies listed by MONAI Label and the same Open WebUI data there; an
archive that is not gpuprov's, or reaches outside its apps' data, is refused before any connection;
S3 (moto) round trip."""

from __future__ import annotations

import io
import json
import shlex
import tarfile
from pathlib import Path

import pytest
import requests

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.infra.config import load_config
from gpuprov.provisioning import hostpaths
from gpuprov.provisioning.hostpaths import ROOT
from gpuprov.provisioning.tunnel import Tunnel
from tests.conftest import need_sandbox, run_cli
from tests.provisioning.conftest import on_host

HOST_ROOT = hostpaths.on_host(ROOT)
STACK = "change-bk"
CHAT = "/app/backend/data/gpuprov-test-chat.json"



def studies(cfg, host) -> list[str]:
    with Tunnel(cfg, host) as tunnel:
        r = requests.get(f"{tunnel.urls['monai_label']}/datastore/?output=all", timeout=30)
    assert r.status_code == 200, r.text
    return sorted(r.json()["objects"])


@pytest.mark.sandbox
def test_a_backup_restored_onto_a_new_host_of_the_same_stack(gpuprov_home: Path, tmp_path: Path):
    need_sandbox()
    cfg = load_config(None, {"stack": STACK, "cloud": "local"})
    box = LocalSandbox(STACK, root=gpuprov_home)
    up = run_cli("up", "--stack", STACK)
    try:
        assert up.returncode == 0, up.stderr
        host = box.host()
        assert host is not None
        # (A fresh host, so also the place to see) a rollback with no kept release: exit 1, nothing changed.
        nothing = run_cli("rollback", "--stack", STACK)
        assert nothing.returncode == 1 and "no app of stack 'change-bk' has a previous release" in nothing.stderr
        on_host(cfg, host, f"printf 'NIfTI stand-in' > {HOST_ROOT}/monai_label/data/studies/ct-001.nii.gz && "
                           f"echo mask > {HOST_ROOT}/monai_label/data/predictions/ct-001.txt")
        on_host(cfg, host, f"docker exec open-webui sh -c {shlex.quote(f'echo chat-42 > {CHAT}')}")
        assert studies(cfg, host) == ["ct-001"]

        made = run_cli("backup", "--stack", STACK, "--dest", str(tmp_path))
        assert made.returncode == 0, made.stderr
        archive = Path(made.stdout.strip())
        assert archive.parent == tmp_path and archive.stat().st_mode & 0o777 == 0o600
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert "monai_label/data/studies/ct-001.nii.gz" in names and "monai_label/data/predictions/ct-001.txt" in names
        assert "vllm_cxr/volumes/webui-data/gpuprov-test-chat.json" in names

        assert run_cli("down", "--stack", STACK).returncode == 0
        again = run_cli("up", "--stack", STACK)
        assert again.returncode == 0, again.stderr
        host = box.host()
        assert host is not None
        assert studies(cfg, host) == []  # a fresh host: nothing of the old one

        done = run_cli("restore", str(archive), "--stack", STACK)
        assert done.returncode == 0, done.stderr
        assert "restored" in done.stdout and "all healthy" in done.stdout
        assert studies(cfg, host) == ["ct-001"]
        assert on_host(cfg, host, f"docker exec open-webui cat {CHAT}").strip() == "chat-42"
        assert on_host(cfg, host, f"cat {HOST_ROOT}/monai_label/data/predictions/ct-001.txt").strip() == "mask"
        assert on_host(cfg, host, "ls /tmp | grep -c gpuprov-restore- || true").strip() == "0"  # nothing staged left
        # Open WebUI's restored accounts: the backup's admin signs in (its secrets came back with its data).
        shown = run_cli("secrets", "show", "--stack", STACK)
        password = shown.stdout.rsplit(" ", 1)[-1].strip()
        with Tunnel(cfg, host) as tunnel:
            r = requests.post(f"{tunnel.urls['open_webui']}/api/v1/auths/signin", timeout=30,
                              json={"email": f"admin@{STACK}.gpuprov.local", "password": password})
        assert r.status_code == 200, r.text
    finally:
        assert run_cli("down", "--stack", STACK).returncode == 0
    assert box.leftovers() == []


def _archive(path: Path, members: dict[str, bytes], manifest: dict | None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {**({"gpuprov-backup.json": json.dumps(manifest).encode()} if manifest else {}), **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


MANIFEST = {"format": 1, "stack": "dev", "apps": {"monai_label": {"folders": ["data/studies"], "volumes": []}}}


@pytest.mark.parametrize("members, manifest, says", [
    ({"x": b"1"}, None, "is not a gpuprov backup"),
    ({"monai_label/data/studies/../../../../etc/cron.d/x": b"1"}, MANIFEST, "unsafe to extract"),
    ({"vllm_cxr/secrets.env": b"1"}, MANIFEST, "outside its apps' data"),
])
def test_restore_refuses_an_archive_it_should_not_extract(tmp_path: Path, members, manifest, says):
    bad = _archive(tmp_path / "bad.tar.gz", members, manifest)
    done = run_cli("restore", str(bad), "--stack", "dev")
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


def test_backup_refuses_gs_before_anything_runs():
    done = run_cli("backup", "--dest", "gs://bucket/x")
    assert done.returncode == 2 and "gs:// is not supported yet" in done.stderr


def test_an_archive_goes_to_s3_and_comes_back_byte_for_byte_and_0600(tmp_path: Path, monkeypatch):
    from moto import mock_aws

    from gpuprov.provisioning.backup import download, upload

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    archive = _archive(tmp_path / "dev-20260101T000000Z.tar.gz", {"monai_label/data/studies/a": b"study"}, MANIFEST)
    with mock_aws():
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="backups")
        uri = upload(archive, "s3://backups/gpuprov/")
        assert uri == "s3://backups/gpuprov/dev-20260101T000000Z.tar.gz"
        head = s3.head_object(Bucket="backups", Key="gpuprov/dev-20260101T000000Z.tar.gz")
        assert head["ServerSideEncryption"] == "AES256"
        (tmp_path / "back").mkdir()
        got = download(uri, tmp_path / "back")
    assert got.read_bytes() == archive.read_bytes() and got.stat().st_mode & 0o777 == 0o600
