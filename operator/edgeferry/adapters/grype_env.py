"""The environment syft and grype run in: where the vulnerability DB lives and whether grype may
reach the network for it.

grype is configured through ``GRYPE_*`` variables (its config file would depend on the working
directory and home of whoever runs the operator). Building the whole environment from one typed
settings object means two things hold for every scan:

- ambient ``GRYPE_*``/``SYFT_*`` variables of the operator's process never change a verdict: they
  are dropped, and only what the settings say is set;
- "offline" is one switch with a clear meaning (no DB update check, no application update check,
  a fixed DB directory), which is what air-gapped clusters and the test suite need.

Production keeps grype's defaults for the DB (auto-update on, age validated), so a connected
operator always scans against a fresh database. Neither tool ever checks for a newer release of
itself: the operator pins its tools.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class GrypeSettings:
    """Where grype keeps its vulnerability DB and how it refreshes it."""

    db_cache_dir: pathlib.Path | None = None
    """``GRYPE_DB_CACHE_DIR``; ``None`` keeps grype's default (``~/.cache/grype/db``)."""

    auto_update: bool = True
    """Check for (and download) a newer DB before a scan. Off when air-gapped or in tests."""

    validate_age: bool = True
    """Refuse to scan with a DB built longer than ``max_built_age`` ago."""

    max_built_age: datetime.timedelta | None = None
    """``GRYPE_DB_MAX_ALLOWED_BUILT_AGE``; ``None`` keeps grype's default (120 h)."""

    update_url: str | None = None
    """``GRYPE_DB_UPDATE_URL``: a mirror's ``latest.json`` for clusters with their own DB host."""

    def __post_init__(self) -> None:
        # grype runs in whatever directory the scanner gives it; a relative DB directory would
        # name a different folder there than where it was configured (or imported).
        if self.db_cache_dir is not None and not self.db_cache_dir.is_absolute():
            object.__setattr__(self, "db_cache_dir", self.db_cache_dir.absolute())

    @classmethod
    def offline(cls, db_cache_dir: pathlib.Path, *, validate_age: bool = False) -> GrypeSettings:
        """A DB that only changes when we import one: no update checks, no network.

        Age validation is off by default: an air-gapped DB is as fresh as its last import, and
        the rescan-on-DB-change logic, not grype's age limit, is what keeps verdicts current.
        """
        return cls(db_cache_dir=db_cache_dir, auto_update=False, validate_age=validate_age)

    @property
    def is_offline(self) -> bool:
        """True when grype will not contact the network for its DB."""
        return not self.auto_update


def _without_prefixes(base: Mapping[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in base.items() if not k.upper().startswith(prefixes)}


def grype_environment(
    settings: GrypeSettings, *, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The full environment for a grype process (``base`` defaults to ``os.environ``)."""
    env = _without_prefixes(os.environ if base is None else base, ("GRYPE_",))
    env["GRYPE_CHECK_FOR_APP_UPDATE"] = "false"
    env["GRYPE_DB_AUTO_UPDATE"] = _flag(settings.auto_update)
    env["GRYPE_DB_VALIDATE_AGE"] = _flag(settings.validate_age)
    if settings.db_cache_dir is not None:
        env["GRYPE_DB_CACHE_DIR"] = str(settings.db_cache_dir)
    if settings.max_built_age is not None:
        hours = settings.max_built_age.total_seconds() / 3600
        env["GRYPE_DB_MAX_ALLOWED_BUILT_AGE"] = f"{hours:g}h"
    if settings.update_url is not None:
        env["GRYPE_DB_UPDATE_URL"] = settings.update_url
    return env


def syft_environment(*, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The full environment for a syft process: no ambient ``SYFT_*``, no update check."""
    env = _without_prefixes(os.environ if base is None else base, ("SYFT_",))
    env["SYFT_CHECK_FOR_APP_UPDATE"] = "false"
    return env


def _flag(value: bool) -> str:
    return "true" if value else "false"
