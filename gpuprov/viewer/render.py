"""The viewer stack's files, rendered into ``<state>/viewer/<stack>/``: compose.yaml, nginx.conf, orthanc.json.

nginx.conf comes from OHIF-AI's own template (``files/nginx.conf.template``, differences listed in
its header) with the tunnel's port filled in; orthanc.json is OHIF-AI's own
(``Viewers/platform/app/.recipes/Nginx-Orthanc/config/orthanc.json`` at the pinned commit, shipped as
``files/orthanc.json``) with authentication turned on for generated credentials. Both hold those
credentials and are written 0600; nothing here is ever printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from gpuprov.infra.config import ViewerConfig
from gpuprov.viewer.paths import FILES, viewer_dir

_PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


@dataclass(frozen=True)
class OrthancCredentials:
    user: str
    password: str

    def __repr__(self) -> str:  # never print the password by accident
        return f"OrthancCredentials(user={self.user!r}, password=<hidden>)"

    @property
    def basic(self) -> str:
        return base64.b64encode(f"{self.user}:{self.password}".encode()).decode()


def credentials_path(stack: str) -> Path:
    return viewer_dir(stack) / "orthanc-credentials.json"


def orthanc_credentials(stack: str) -> OrthancCredentials:
    """Orthanc's account for this stack's viewer, generated once and kept 0600. It lives as long as
    Orthanc's data does (``viewer down --purge`` removes both), whichever GPU host comes and goes."""
    path = credentials_path(stack)
    viewer_dir(stack, create=True)
    try:
        return OrthancCredentials(**json.loads(path.read_text()))
    except FileNotFoundError:
        pass
    fresh = OrthancCredentials(user="gpuprov", password=secrets.token_urlsafe(24))
    _write_private(path, json.dumps(asdict(fresh)))
    return fresh


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a 0600 file, atomically (never readable by others, not even briefly)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


def fill(template: str, values: dict[str, str]) -> str:
    """``${NAME}`` -> value, as the upstream entrypoint's envsubst does for its named variables only;
    nginx's own ``$variables`` are left alone. A placeholder without a value is a bug, not a blank."""
    def one(match: re.Match[str]) -> str:
        return values[match[1]]

    return _PLACEHOLDER.sub(one, template)


def nginx_conf(viewer: ViewerConfig, tunnel_port: int, creds: OrthancCredentials) -> str:
    return fill((FILES / "nginx.conf.template").read_text(), {
        "VIEWER_PORT": str(viewer.port),
        "ORTHANC_PORT": str(viewer.orthanc_port),
        "ORTHANC_BASIC_AUTH": creds.basic,
        "MONAI_TUNNEL_PORT": str(tunnel_port),
    })


def orthanc_json(creds: OrthancCredentials) -> str:
    conf = json.loads((FILES / "orthanc.json").read_text())
    conf.update({
        # Docker's port forward arrives from the bridge, not from 127.0.0.1: remote access stays on,
        # and every request needs the generated account (the upstream turns authentication off).
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {creds.user: creds.password},
        "HttpVerbose": False,
    })
    return json.dumps(conf, indent=2)


@dataclass(frozen=True)
class Rendered:
    directory: Path
    viewer_hash: str  # what the viewer container runs with; a change recreates it
    orthanc_hash: str


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def render(stack: str, viewer: ViewerConfig, tunnel_port: int, viewer_image: str) -> Rendered:
    """Write the stack's viewer files; returns what the containers must run with."""
    d = viewer_dir(stack, create=True)
    creds = orthanc_credentials(stack)
    nginx, orthanc = nginx_conf(viewer, tunnel_port, creds), orthanc_json(creds)
    compose = (FILES / "compose.yaml").read_text()
    (d / "compose.yaml").write_text(compose)
    _write_private(d / "nginx.conf", nginx)
    _write_private(d / "orthanc.json", orthanc)
    return Rendered(d, _digest(compose, nginx, viewer_image), _digest(compose, orthanc, viewer.orthanc_image))
