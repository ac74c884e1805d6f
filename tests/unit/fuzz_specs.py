"""A seeded generator of broken and odd resource documents, for the fuzz tests.

It starts from the shipped samples (valid documents a user would apply) and mutates them the
way hand edits, templating mistakes and API-server pruning do: a key dropped, a value of the
wrong type, an empty or huge string, a number out of range, a list where a map was, a nested
`null`, unicode. The API server's schema refuses most of these at apply time, but the
operator must not rely on that: status is user-editable, CRDs are upgraded under stored
objects, and `kubectl replace --validate=false` exists. Seeded, so a failure repeats.
"""

from __future__ import annotations

import copy
import pathlib
import random
import re
from collections.abc import Iterator
from typing import Any

import yaml

SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "samples"
STATUSES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "status"

ODD_VALUES: tuple[Any, ...] = (
    None,
    "",
    " ",
    "x" * 5000,
    "ünïcødé-名前",
    "-1",
    "1e309",
    0,
    -1,
    1,
    2**63,
    -(2**31),
    0.5,
    float("inf"),
    True,
    False,
    [],
    [None],
    {},
    {"": None},
    "sha256:" + "0" * 64,
    "100%",
    "150%",
    "0%",
    "24h",
    "-5m",
    "2026-13-45T99:99:99Z",
    "linux/riscv64",
)


PLACEHOLDERS = {
    "@@REGISTRY@@": "127.0.0.1:5000",
    "@@BUSYBOX_BASE@@": "127.0.0.1:5000/base/busybox@sha256:" + "1" * 64,
    "@@PYTHON_SKLEARN_MULTIARCH_BASE@@": "127.0.0.1:5000/base/python-sklearn@sha256:" + "2" * 64,
    "@@IRIS_MODEL_SHA256@@": "3" * 64,
    "@@IRIS_MODEL_DIGEST@@": "sha256:" + "5" * 64,
    "@@LEGACY_MODEL_SHA256@@": "4" * 64,
}
"""What the demo substitutes into the samples (a registry, pinned bases, model and artifact
digests)."""


def samples(kind: str) -> list[dict[str, Any]]:
    """The `spec`s of every shipped sample of that kind, placeholders filled in."""
    found: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        text = path.read_text()
        for placeholder, value in PLACEHOLDERS.items():
            text = text.replace(placeholder, value)
        if re.search(r"@@[A-Z0-9_]+@@", text):
            raise AssertionError(f"{path.name} has a placeholder the fuzz tests do not know")
        for doc in yaml.safe_load_all(text):
            if isinstance(doc, dict) and doc.get("kind") == kind:
                found.append(doc["spec"])
    if not found:
        raise AssertionError(f"no {kind} sample under {SAMPLES}")
    return found


def statuses(kind: str) -> list[dict[str, Any]]:
    """The `status` of every captured status snapshot of that kind (tests/fixtures/status)."""
    found = [
        doc["status"]
        for path in sorted(STATUSES.glob("*.yaml"))
        if isinstance(doc := yaml.safe_load(path.read_text()), dict)
        and doc.get("kind") == kind
        and doc.get("status")
    ]
    if not found:
        raise AssertionError(f"no {kind} status snapshot under {STATUSES}")
    return found


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def _mutate_once(doc: dict[str, Any], rng: random.Random) -> None:
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return
    path = rng.choice(paths)
    parent = _get(doc, path[:-1])
    key = path[-1]
    action = rng.randrange(6)
    if action == 0 and isinstance(parent, dict):
        del parent[key]
    elif action == 1:
        parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif action == 2 and isinstance(parent, dict):
        parent[rng.choice(["unknownField", "x-extra", key + "s"])] = copy.deepcopy(
            rng.choice(ODD_VALUES)
        )
    elif action == 3:
        value = parent[key]
        parent[key] = [copy.deepcopy(value)] if not isinstance(value, list) else {"0": value}
    elif action == 4:
        value = parent[key]
        if isinstance(value, int | float) and not isinstance(value, bool):
            parent[key] = rng.choice([value * 1000, -value, value + 1, 0])
        elif isinstance(value, str):
            parent[key] = rng.choice([value.upper(), value * 3, value[: len(value) // 2], ""])
    else:
        parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))


def mutants(kind: str, *, count: int, seed: int, of: str = "spec") -> Iterator[dict[str, Any]]:
    """`count` mutated copies of the samples (`of="spec"`) or status snapshots (`of="status"`)
    of `kind`, one to four mutations each."""
    rng = random.Random(seed)
    bases = samples(kind) if of == "spec" else statuses(kind)
    for _ in range(count):
        doc = copy.deepcopy(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            _mutate_once(doc, rng)
        yield doc
