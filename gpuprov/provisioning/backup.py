"""``gpuprov backup`` / ``gpuprov restore`` (and ``fab backup``): the data an app declares, one archive.

What is archived is what each app declares (:class:`gpuprov.apps.base.App`): folders under its
host folder (``backup``: MONAI Label's ``data/predictions`` and ``data/studies``) and named volumes
of its compose file (``backup_volumes``: Open WebUI's ``webui-data``: accounts, chats, uploads).
The archive (``STACK-STAMP.tar.gz``, 0600 from its first byte: studies are likely patient data)
holds them as ``APP/FOLDER/...`` and ``APP/volumes/VOLUME/...``, a manifest, and the generated
secrets of the apps it holds data of (Open WebUI's accounts were made with them).

The host streams plain tar over one exec channel (nothing staged there); the archive is written
here. A restore checks every member name first, sends the archive over sftp (0600), stops each app,
replaces its folders' and volumes' contents, then deploys (the secrets back in its env files, the
containers started) — on the same stack, typically a new host after ``down`` and ``up``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from gpuprov.apps import registry
from gpuprov.apps.base import App, AppError
from gpuprov.infra.config import ConfigError, StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.deploy import deploy
from gpuprov.provisioning.errors import ProvisioningError
from gpuprov.provisioning.hostpaths import ROOT, on_host
from gpuprov.provisioning.release import COMPOSE_ORDER
from gpuprov.provisioning.secrets import restore_app_secrets, stored
from gpuprov.provisioning.ssh import Remote, target_for

Progress = Callable[[str], None]
MANIFEST = "gpuprov-backup.json"
SECRETS = "gpuprov-secrets.json"
SUDO = 'if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi\n'
FORMAT = 1


class BadArchive(GpuprovError):
    """An archive restore will not use: not gpuprov's, another stack's, or with members outside its apps' data."""

    exit_code = 2


def _deployed(config: StackConfig, name: str) -> App:
    app = registry().app(name)
    if name not in config.apps:
        raise AppError(f"app {name!r} is not deployed on this stack; deployed: {', '.join(config.apps)}")
    return app


def backup_apps(config: StackConfig, app_name: str | None = None) -> list[App]:
    """The deployed apps whose data is archived: those that declare folders or volumes (or the one named)."""
    apps = [_deployed(config, app_name)] if app_name else [
        a for a in registry().selected(config.apps) if a.backup or a.backup_volumes]
    if not apps or not any(a.backup or a.backup_volumes for a in apps):
        raise AppError(f"{'app ' + repr(app_name) if app_name else 'no deployed app'} declares nothing to back up")
    return apps


def volume_name(app: App, volume: str) -> str:
    """What Compose names a project's volume on the host."""
    return f"{app.project}_{volume}"


def _mountpoint(app: App, volume: str) -> str:
    name = volume_name(app, volume)  # both parts checked by the registry's grammars
    return (f'mp=$($SUDO docker volume inspect -f "{{{{.Mountpoint}}}}" {name} 2>/dev/null) || '
            f'{{ echo "volume {name} does not exist on the host: deploy the stack first" >&2; exit 3; }}')


def _archive_script(apps: list[App]) -> str:
    """Plain tar on stdout: each app's folders, then each volume renamed APP/volumes/VOLUME (one tar each,
    concatenated; read with ignore_zeros)."""
    lines = [SUDO + "set -e", f"root={on_host(ROOT)}"]
    for app in apps:
        if app.backup:
            members = " ".join(f"{app.name}/{p}" for p in app.backup)  # declared by the app, plain words
            lines.append(f'$SUDO tar --numeric-owner -cf - -C "$root" {members}')
        for volume in app.backup_volumes:
            lines += [_mountpoint(app, volume),
                      f"$SUDO tar --numeric-owner -cf - -C \"$mp\" --transform 's,^\\.,{app.name}/volumes/{volume},S' ."]
    return "\n".join(lines) + "\n"


def _pump(remote: Remote, script: str, sink_fd: int, result: list[object]) -> None:
    try:
        with os.fdopen(sink_fd, "wb") as sink:
            result.append(remote.stream_to(script, sink))
    except BaseException as err:  # noqa: BLE001 - handed to the reading thread, which says what failed
        result.append(err)


def backup(config: StackConfig, host: GpuHost, destination: Path, app_name: str | None = None,
           key_path: Path | None = None) -> Path:
    """Archive the apps' declared data into ``destination/STACK-STAMP.tar.gz`` (0600); returns its path."""
    apps = backup_apps(config, app_name)
    destination.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    archive = destination / f"{config.stack}-{stamp}.tar.gz"
    manifest = {"format": FORMAT, "stack": config.stack, "created": stamp,
                "apps": {a.name: {"folders": list(a.backup), "volumes": list(a.backup_volumes)} for a in apps}}
    kept = stored(config)
    secrets = {a.name: kept[a.name] for a in apps if a.secrets and a.name in kept}
    fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    pumped: list[object] = []
    try:
        with Remote(target_for(config, host, key_path)) as remote, os.fdopen(fd, "wb") as raw, \
                tarfile.open(fileobj=raw, mode="w:gz") as out:
            _add_json(out, MANIFEST, manifest)
            if secrets:
                _add_json(out, SECRETS, secrets)
            read_fd, write_fd = os.pipe()
            pump = threading.Thread(target=_pump, args=(remote, _archive_script(apps), write_fd, pumped), daemon=True)
            pump.start()
            with os.fdopen(read_fd, "rb") as source:
                try:
                    _copy_members(source, out)
                except tarfile.ReadError:
                    pass  # nothing came: the host's tar failed before writing (its exit code says so below)
            pump.join()
        code = pumped[0] if pumped else None
        if isinstance(code, BaseException):
            raise code
        if code != 0:
            where = "; ".join(f"{a.name}: {', '.join([*a.backup, *(f'volume {v}' for v in a.backup_volumes)])}"
                              for a in apps)
            raise ProvisioningError(f"the backup tar on the host failed (exit {code}); is the stack deployed "
                                    f"(`gpuprov deploy --stack {config.stack}`)? It archives {where}")
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    return archive


def _add_json(out: tarfile.TarFile, name: str, value: object) -> None:
    data = json.dumps(value, indent=1).encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(datetime.now(timezone.utc).timestamp())
    out.addfile(info, io.BytesIO(data))


def _copy_members(source: BinaryIO, out: tarfile.TarFile) -> None:
    with tarfile.open(fileobj=source, mode="r|", ignore_zeros=True) as tar:
        for member in tar:
            out.addfile(member, tar.extractfile(member) if member.isreg() else None)


# --- destinations: a local folder or s3:// --------------------------------------------------------


def check_destination(where: str) -> None:
    """Refuse a destination gpuprov cannot write before anything runs."""
    if where.startswith("gs://"):
        raise ConfigError("--dest", where, "gs:// is not supported yet (google-cloud-storage is not a gpuprov "
                          "dependency); write to a folder and copy it with `gcloud storage cp`")
    if where.startswith("s3://") and not where[5:].split("/", 1)[0]:
        raise ConfigError("--dest", where, "expected s3://bucket or s3://bucket/prefix")
    if "://" in where and not where.startswith("s3://"):
        raise ConfigError("--dest", where, "expected a local folder or s3://bucket/prefix")


def _bucket_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def upload(archive: Path, uri: str) -> str:
    """Upload ``archive`` to ``s3://bucket/prefix`` (boto3, credentials from the environment); its URI."""
    import boto3  # lazily: only backups to S3 need it
    from botocore.exceptions import BotoCoreError, ClientError

    check_destination(uri)
    bucket, prefix = _bucket_key(uri)
    key = f"{prefix.rstrip('/')}/{archive.name}" if prefix.strip("/") else archive.name
    try:
        boto3.client("s3").upload_file(str(archive), bucket, key, ExtraArgs={"ServerSideEncryption": "AES256"})
    except (BotoCoreError, ClientError) as err:
        raise ProvisioningError(f"uploading {archive.name} to s3://{bucket}/{key} failed ({err}); the archive is "
                                f"kept at {archive}") from None
    return f"s3://{bucket}/{key}"


def download(uri: str, folder: Path) -> Path:
    """Fetch ``s3://bucket/key`` into ``folder`` (0600); its path."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_key(uri)
    if not bucket or not key or key.endswith("/"):
        raise ConfigError("ARCHIVE", uri, "expected s3://bucket/key of one archive, or a local file")
    local = folder / PurePosixPath(key).name
    fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as sink:
            boto3.client("s3").download_fileobj(bucket, key, sink)
    except (BotoCoreError, ClientError) as err:
        local.unlink(missing_ok=True)
        raise ProvisioningError(f"downloading {uri} failed ({err})") from None
    return local


# --- restore --------------------------------------------------------------------------------------


@dataclass
class Contents:
    stack: str
    apps: dict[str, dict[str, list[str]]]  # app -> {"folders": [...], "volumes": [...]}
    secrets: dict[str, dict[str, str]]
    members: int


def read_archive(archive: Path) -> Contents:
    """The archive's manifest and secrets, every member checked to lie inside its apps' declared data."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            names = {m.name: m for m in members}
            if MANIFEST not in names:
                raise BadArchive(f"{archive} is not a gpuprov backup (no {MANIFEST} in it)")
            manifest = json.loads(_read_member(tar, names[MANIFEST]))
            secrets = json.loads(_read_member(tar, names[SECRETS])) if SECRETS in names else {}
    except (OSError, tarfile.TarError, EOFError, json.JSONDecodeError) as err:
        raise BadArchive(f"{archive} cannot be read as a gpuprov backup ({err})") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("apps"), dict):
        raise BadArchive(f"{archive} is a backup of another format ({manifest.get('format')!r}); this gpuprov reads {FORMAT}")
    apps: dict[str, dict[str, list[str]]] = manifest["apps"]
    allowed = [f"{a}/{f}" for a, parts in apps.items() for f in parts.get("folders", [])]
    allowed += [f"{a}/volumes/{v}" for a, parts in apps.items() for v in parts.get("volumes", [])]
    for m in members:
        if m.name in (MANIFEST, SECRETS):
            continue
        path = PurePosixPath(m.name)
        inside = any(m.name == p or m.name.startswith(p + "/") for p in allowed)
        unsafe = path.is_absolute() or ".." in path.parts or not (m.isreg() or m.isdir() or m.issym() or m.islnk())
        if m.issym() or m.islnk():
            target = PurePosixPath(m.linkname)
            unsafe = unsafe or target.is_absolute() or ".." in target.parts
        if unsafe or not inside:
            raise BadArchive(f"{archive} holds {m.name!r}, outside its apps' data or unsafe to extract; "
                             "restore only archives `gpuprov backup` wrote")
    return Contents(str(manifest.get("stack", "")), apps, secrets, len(members))


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise tarfile.TarError(f"{member.name} is not a file")
    return fh.read()


def _restore_script(staged: str, contents: Contents) -> str:
    lines = [SUDO + "set -e\numask 077", f"root={on_host(ROOT)}", f"a={staged}", "trap '$SUDO rm -f \"$a\"' EXIT"]
    for name, parts in contents.apps.items():
        app = registry().app(name)
        files = " ".join(f"$([ -f {n} ] && printf -- '-f %s ' {n})" for n in COMPOSE_ORDER)
        lines.append(f'cd "$root/{app.name}" && $SUDO docker compose -p {app.project} {files}stop 2>&1')
        for folder in parts.get("folders", []):
            if folder not in app.backup:
                raise BadArchive(f"the archive restores folder {folder!r} of {name}, which the app does not declare")
            lines += [f'$SUDO rm -rf "$root/{name}/{folder}"',
                      f'$SUDO tar --numeric-owner -xzf "$a" -C "$root" {name}/{folder}']
        for volume in parts.get("volumes", []):
            if volume not in app.backup_volumes:
                raise BadArchive(f"the archive restores volume {volume!r} of {name}, which the app does not declare")
            lines += [_mountpoint(app, volume), '$SUDO find "$mp" -mindepth 1 -delete',
                      f'$SUDO tar --numeric-owner -xzf "$a" -C "$mp" --strip-components=3 {name}/volumes/{volume}']
        lines.append(f"echo '@@gpuprov-restored {name}'")
    return "\n".join(lines) + "\n"


def _send(remote: Remote, archive: Path, staged: str) -> None:
    """The archive onto the host at ``staged`` over sftp, 0600 before the first byte."""
    sftp = remote.conn.sftp()
    with sftp.open(staged, "wb") as sink, archive.open("rb") as source:
        sink.chmod(0o600)
        shutil.copyfileobj(source, sink, 32768)
    remote.round_trips += 3 + archive.stat().st_size // 32768


def restore(config: StackConfig, host: GpuHost, archive: Path, progress: Progress | None = None,
            key_path: Path | None = None) -> list[str]:
    """Put ``archive``'s data onto the stack's host (replacing what its folders and volumes hold), then
    deploy so the containers run again with the backup's secrets; the apps restored."""
    say = progress or (lambda _m: None)
    contents = read_archive(archive)
    if contents.stack != config.stack:
        raise BadArchive(f"{archive} is a backup of stack '{contents.stack}', not '{config.stack}'; "
                         f"restore it with --stack {contents.stack}")
    for name in contents.apps:
        _deployed(config, name)
    staged = f"/tmp/gpuprov-restore-{uuid.uuid4().hex[:12]}.tar.gz"
    script = _restore_script(staged, contents)  # checks what it restores before anything is sent
    with Remote(target_for(config, host, key_path)) as remote:
        say(f"sending {archive.name} ({archive.stat().st_size / 1e6:.1f} MB) over sftp")
        _send(remote, archive, staged)
        say(f"stopping {', '.join(contents.apps)} and restoring their data")
        code, out, err = remote.script(script)
    if code != 0:
        raise ProvisioningError(f"restoring {archive.name} on the host failed (exit {code}): "
                                f"{' '.join((out + err).split())[-600:]}")
    if contents.secrets:
        restore_app_secrets(config, {a: v for a, v in contents.secrets.items() if a in contents.apps})
    say("deploying: the apps start again with the backup's secrets")
    deploy(config, host, say, key_path=key_path)
    return [line.split()[1] for line in out.splitlines() if line.startswith("@@gpuprov-restored ")]
