"""Paths on the host are *logical* (``/opt/gpuprov/...``, ``/etc/gpuprov/...``, ``/usr/local/bin/...``).

Every remote script prefixes them with ``"${GPUPROV_HOST_ROOT:-}"``, evaluated on the host (like
``DESTDIR``): a cloud host leaves it unset, so the paths are what they say; the local sandbox host
shares this machine's filesystem, and its sshd sets ``GPUPROV_HOST_ROOT`` to the sandbox's own folder.
"""

from __future__ import annotations

import shlex

HOST_ROOT = '"${GPUPROV_HOST_ROOT:-}"'
ROOT = "/opt/gpuprov"  # where gpuprov's files live on a host


def on_host(path: str) -> str:
    """The shell word for logical ``path`` on the host: its declared root, then the path, quoted."""
    return HOST_ROOT + shlex.quote(path)
