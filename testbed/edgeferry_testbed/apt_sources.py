"""Which plain Debian mirror the host's apt uses, read from its sources files.

The testbed debootstraps its Python base from the same mirror as the host (no other network
may be reachable here). Both formats apt reads are understood: deb822 ``.sources`` stanzas and
one-line ``.list`` entries. Only a plain Debian suite counts (not ``-security``/``-updates``,
not third-party repositories with suite names of their own), and HTTP comes first: debootstrap
then needs no CA bundle.
"""

from __future__ import annotations

import pathlib
import re

_DEBIAN_SUITES = frozenset(
    {"bullseye", "bookworm", "trixie", "forky", "sid", "oldstable", "stable", "testing", "unstable"}
)


def _deb822_debian_uris(text: str) -> list[str]:
    uris = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", ""):
            continue
        if _DEBIAN_SUITES & set(fields.get("suites", "").split()):
            uris += [
                uri
                for uri in fields.get("uris", "").split()
                if uri.startswith(("http://", "https://"))
            ]
    return uris


def _one_line_debian_uris(text: str) -> list[str]:
    uris = []
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
        if (
            len(words) >= 3
            and words[0] == "deb"
            and words[2] in _DEBIAN_SUITES
            and words[1].startswith(("http://", "https://"))
        ):
            uris.append(words[1])
    return uris


def debian_mirrors(sources_dir: pathlib.Path) -> list[str]:
    """Every plain Debian mirror in ``sources.list`` and ``sources.list.d``, HTTP ones first."""
    candidates: list[str] = []
    files = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            candidates += _deb822_debian_uris(text)
        elif path.suffix == ".list" or path.name == "sources.list":
            candidates += _one_line_debian_uris(text)
    candidates.sort(key=lambda uri: not uri.startswith("http://"))
    return candidates
