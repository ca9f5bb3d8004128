"""Who made a resource, as a reference that means the same from every machine (the reaper's ownership rule).

- ``GPUPROV_OWNER`` when set (a team's shared service account, a test's second operator);
- ``gha:<owner>/<repo>`` under GitHub Actions (``GITHUB_REPOSITORY``): every run of a
  repository's workflow is the same owner, whichever fresh runner it lands on;
- ``<user>@<machine-id>`` otherwise (``/etc/machine-id``, machine-id(5): unique per installation).

Clouds cannot carry ``@``, ``:`` or ``/`` in every tag value (GCP labels take lower-case
letters, digits, ``_`` and ``-``, at most 63 characters), so the tag holds
:func:`owner_label`: a readable form plus a hash of the exact reference, so two references
never share a label.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
from collections.abc import Mapping

from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.processes import machine_id

OWNER_ENV = "GPUPROV_OWNER"
REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
GITHUB_REPOSITORY = re.compile(r"[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}")
LABEL = re.compile(r"[a-z0-9_-]{1,50}-[0-9a-f]{12}")


class OwnerUnknown(GpuprovError):
    """No owner reference can be made here (no machine id, or a bad GPUPROV_OWNER)."""

    exit_code = 2


def owner_reference(environ: Mapping[str, str] | None = None) -> str:
    """This caller's owner reference (module docstring)."""
    env = os.environ if environ is None else environ
    explicit = env.get(OWNER_ENV)
    if explicit:
        if not REFERENCE.fullmatch(explicit):
            raise OwnerUnknown(f"{OWNER_ENV}={explicit!r} is not an owner reference: use up to 128 letters, digits "
                               "and . _ : / @ + -, starting with a letter or digit (e.g. alice@lab or gha:org/repo)")
        return explicit
    repo = env.get("GITHUB_REPOSITORY", "")
    if env.get("GITHUB_ACTIONS") == "true" and GITHUB_REPOSITORY.fullmatch(repo):
        return f"gha:{repo.lower()}"
    machine = machine_id()
    if not machine:
        raise OwnerUnknown(f"this machine has no /etc/machine-id to tell its resources from others'; set {OWNER_ENV} "
                           "to a reference unique to you (e.g. alice@laptop-2026)")
    user = env.get("USER") or getpass.getuser()
    return f"{user}@{machine}"


def owner_label(reference: str) -> str:
    """The tag value for ``reference``: readable, valid on every cloud, and unique to it."""
    readable = re.sub(r"[^a-z0-9_-]", "_", reference.lower())[:50]
    return f"{readable}-{hashlib.sha256(reference.encode()).hexdigest()[:12]}"
