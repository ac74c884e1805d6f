"""A ModelImage as the rollout sees it: admitted with a digest to roll out, or why not.

Only `Admitted=True` together with a pushed reference moves anything; every other state is a
reason the ModelDeployment reports as `Blocked` (the image is missing, not admitted yet, refused
by the gate, or admitted but not pushed). The platforms and per-architecture sizes come along,
for the compatibility and size-budget checks of each target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from edgeferry.decisions import compat
from edgeferry.decisions import rollout_types as rt
from edgeferry.models import modelimage as mi
from edgeferry.models import reasons


def from_body(name: str, body: Mapping[str, Any] | None) -> rt.Image:
    """A ModelImage as the rollout sees it: admitted only with `Admitted=True` and a reference."""
    if body is None:
        return rt.Image(
            name=name,
            admitted=False,
            reason=reasons.IMAGE_NOT_FOUND,
            message=f"ModelImage {name} does not exist in this namespace; create it, or fix "
            "spec.imageRef.name",
        )
    try:
        status = mi.parse_status(body.get("status"))
    except pydantic.ValidationError:
        status = mi.ModelImageStatus()
    admitted = status.condition(reasons.ADMITTED)
    scan_db = status.scan.db_checksum if status.scan is not None else None
    reference = status.image.reference if status.image is not None else None
    # Every built platform (an OCI index when several), with its unpacked size for the
    # targets' size budgets; images from before `status.image.platforms` have one platform.
    built = status.image.platform_images if status.image is not None else ()
    platforms = tuple(p.platform for p in built)
    try:
        sizes = tuple(
            (compat.parse_platform(p.platform).architecture, p.size) for p in built if p.size
        )
        for platform in platforms:
            compat.parse_platform(platform)
    except ValueError as exc:
        # Status is editable by hand; a platform nobody can read must not crash the rollout,
        # and must not roll out either: wait until the ModelImage's pipeline rewrites it.
        return rt.Image(
            name=name,
            admitted=False,
            reason=reasons.IMAGE_NOT_ADMITTED,
            message=f"status.image of ModelImage {name} is unreadable ({exc}); its pipeline "
            "rewrites it on the next reconcile",
        )
    if admitted is not None and admitted.status == "True" and reference:
        push = (body.get("spec") or {}).get("push") or {}
        secret = push.get("credentialsSecret") if isinstance(push, Mapping) else None
        return rt.Image(
            name=name,
            admitted=True,
            digest=reference,
            platforms=platforms,
            sizes=sizes,
            credentials_secret=secret if isinstance(secret, str) and secret else None,
            scan_db=scan_db,
        )
    if admitted is not None and admitted.status == "False":
        reason, message = admitted.reason or reasons.IMAGE_NOT_ADMITTED, admitted.message
        if reason == reasons.VULNERABILITIES_FOUND and reference:
            # Pushed, so admitted once: a later scan (a new advisory) blocks what may run.
            return rt.Image(
                name=name,
                admitted=False,
                platforms=platforms,
                reason=reason,
                message=message,
                blocked_digest=reference,
                scan_db=scan_db,
            )
    elif admitted is not None and admitted.status == "True":
        reason = reasons.IMAGE_NOT_PUSHED
        message = "admitted, waiting for the push to the registry to record its digest"
    else:
        reason = reasons.IMAGE_NOT_ADMITTED
        message = f"its pipeline has not decided yet (phase {status.phase or 'Pending'})"
    return rt.Image(name=name, admitted=False, platforms=platforms, reason=reason, message=message)
