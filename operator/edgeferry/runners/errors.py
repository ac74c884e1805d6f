"""Errors a runner raises to say "look again soon" instead of recording a failure."""


class TransientError(RuntimeError):
    """Trouble that retrying later may fix (Docker daemon or registry unreachable)."""
