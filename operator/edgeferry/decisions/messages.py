"""Wording shared by rollout messages: bounded lists of names.

A message that names a thousand targets helps nobody and bloats status and events, so every
list in a rollout message goes through `names`/`detail`, which show a few and count the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_NAMES_IN_MESSAGE = 5


def names(items: Sequence[str]) -> str:
    """`a, b, c, d, e and 3 more`."""
    shown = ", ".join(items[:MAX_NAMES_IN_MESSAGE])
    more = len(items) - MAX_NAMES_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")


def detail(items: Sequence[tuple[str, str | None]]) -> str:
    """`a (why); b (why); and 3 more` for (name, text) pairs."""
    shown = "; ".join(f"{name} ({text})" for name, text in items[:MAX_NAMES_IN_MESSAGE])
    more = len(items) - MAX_NAMES_IN_MESSAGE
    return shown + (f"; and {more} more" if more > 0 else "")
