"""The tags every paid resource carries, the same on every cloud, so the reaper can find them.

Values are kept to lower-case letters, digits, ``-`` and ``_`` (epoch seconds for
times), which every cloud accepts: Lambda tag keys (``^[a-z][a-z0-9-:]+$``), AWS
tags, and GCP labels (the strictest).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import expiry, utcnow

TAG_MANAGED = "gpuprov-managed"  # value "true": made by gpuprov
TAG_STACK = "gpuprov-stack"
TAG_OWNER = "gpuprov-owner"
TAG_CREATED_AT = "gpuprov-created-at"  # epoch seconds
TAG_EXPIRES_AT = "gpuprov-expires-at"  # epoch seconds: the reaper removes the resource after this


def _label_value(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def stack_tags(config: StackConfig, now: datetime | None = None) -> dict[str, str]:
    """The tags for a resource of ``config``'s stack created at ``now``."""
    created = now or utcnow()
    return {
        TAG_MANAGED: "true",
        TAG_STACK: config.stack,
        TAG_OWNER: _label_value(config.owner),
        TAG_CREATED_AT: str(int(created.timestamp())),
        TAG_EXPIRES_AT: str(int(expiry(created, config.max_lifetime_hours).timestamp())),
    }


def expires_at(tags: dict[str, str]) -> datetime | None:
    """When a tagged resource must be gone, or None when it carries no expiry."""
    value = tags.get(TAG_EXPIRES_AT)
    return datetime.fromtimestamp(int(value), timezone.utc) if value and value.isdigit() else None
