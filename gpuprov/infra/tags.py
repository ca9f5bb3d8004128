"""The tags every paid resource carries, the same on every cloud, so the reaper can find them.

Values are kept to lower-case letters, digits, ``-`` and ``_`` (epoch seconds for
times), which every cloud accepts: Lambda tag keys (``^[a-z][a-z0-9-:]+$``), AWS
tags, and GCP labels (the strictest: at most 63 characters of ``[a-z0-9_-]``).

``gpuprov-owner`` is the owner *reference* (:mod:`gpuprov.infra.owner`): who made it,
the same from every machine; the reaper's ownership rule reads nothing else.
``gpuprov-origin`` is ``ci`` for a ``gpuprov ci`` run's host (ephemeral by construction:
the only kind an owner-scoped orphan sweep takes) and ``stack`` for everything else
(``gpuprov up`` and ``pulumi up`` alike: its truth is a Pulumi backend no other machine can see).
``gpuprov-contact`` is the config's ``owner`` (a person or address to ask).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone

from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import expiry, utcnow
from gpuprov.infra.owner import owner_label, owner_reference

TAG_MANAGED = "gpuprov-managed"  # value "true": made by gpuprov
TAG_STACK = "gpuprov-stack"
TAG_OWNER = "gpuprov-owner"  # owner_label(owner reference)
TAG_ORIGIN = "gpuprov-origin"  # ci | stack
TAG_CONTACT = "gpuprov-contact"
TAG_CREATED_AT = "gpuprov-created-at"  # epoch seconds
TAG_EXPIRES_AT = "gpuprov-expires-at"  # epoch seconds: the reaper removes the resource after this

ORIGIN_ENV = "GPUPROV_ORIGIN"  # set to "ci" by gpuprov ci for the program it runs
ORIGINS = ("ci", "stack")


def _label_value(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def origin() -> str:
    value = os.environ.get(ORIGIN_ENV, "stack")
    return value if value in ORIGINS else "stack"


@contextlib.contextmanager
def origin_as(value: str) -> Iterator[None]:
    """Tag what is created inside as ``value`` (the environment carries it to a Pulumi CLI program too)."""
    before = os.environ.get(ORIGIN_ENV)
    os.environ[ORIGIN_ENV] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ORIGIN_ENV, None)
        else:
            os.environ[ORIGIN_ENV] = before


def stack_tags(config: StackConfig, now: datetime | None = None) -> dict[str, str]:
    """The tags for a resource of ``config``'s stack created at ``now``."""
    created = now or utcnow()
    return {
        TAG_MANAGED: "true",
        TAG_STACK: config.stack,
        TAG_OWNER: owner_label(owner_reference()),
        TAG_ORIGIN: origin(),
        TAG_CONTACT: _label_value(config.owner),
        TAG_CREATED_AT: str(int(created.timestamp())),
        TAG_EXPIRES_AT: str(int(expiry(created, config.max_lifetime_hours).timestamp())),
    }


def expires_at(tags: dict[str, str]) -> datetime | None:
    """When a tagged resource must be gone, or None when it carries no expiry."""
    value = tags.get(TAG_EXPIRES_AT)
    return datetime.fromtimestamp(int(value), timezone.utc) if value and value.isdigit() else None
