"""Errors a runner raises to say "look again soon" instead of recording a failure."""

from __future__ import annotations

from edgeferry.models import reasons


class TransientError(RuntimeError):
    """Trouble that retrying later may fix (Docker daemon, registry or scanner unavailable).

    `reason` is the condition reason the stage records while it waits for its next attempt
    (one of `reasons.TRANSIENT_FAILURES`).
    """

    def __init__(self, message: str, *, reason: str = reasons.DOCKER_UNAVAILABLE) -> None:
        super().__init__(message)
        self.reason = reason
