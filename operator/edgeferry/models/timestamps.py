"""Timestamps and digests the way status, annotations and messages show them.

Kubernetes writes RFC 3339 in UTC with seconds and a `Z`; edgeferry stores the same in its
annotations and status, so a person can compare them with `kubectl get -o yaml` and a restarted
operator reads back exactly what it wrote. One home, because thirteen copies had begun to
differ in how they treated naive datetimes and fractional seconds.
"""

from __future__ import annotations

import datetime

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SHORT_DIGEST_HEX = 12
"""Hex digits of a digest shown in messages and printer columns (as `docker images` does)."""


def format_rfc3339(moment: datetime.datetime) -> str:
    """`2026-12-01T22:10:56Z`: UTC, whole seconds. A naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime(_FORMAT)


def parse_rfc3339(value: object) -> datetime.datetime | None:
    """The aware UTC datetime in `value` (RFC 3339 / ISO 8601), or None when absent or unreadable.

    Lenient on purpose: annotations and status are user-editable, and a garbled timestamp must
    read as "unknown", never crash a reconcile.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        parsed = value
    else:
        try:
            parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.astimezone(datetime.UTC)


def short_digest(digest: str | None) -> str | None:
    """The first 12 hex characters of a `sha256:...` digest, the way Docker shortens ids."""
    if not digest:
        return None
    return digest.split(":", 1)[-1][:SHORT_DIGEST_HEX]


def short_reference(reference: str) -> str:
    """`repo@sha256:` and 12 hex characters: enough for a person, short enough for a message."""
    repo, sep, rest = reference.partition("@sha256:")
    return f"{repo}{sep}{rest[:SHORT_DIGEST_HEX]}" if sep else reference
