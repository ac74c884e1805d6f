"""Generated inputs through the decision functions: a decision never raises on what it is given.

Specs and statuses come from the seeded generator in `fuzz_specs` (only those the models
accept: the parsers refuse the rest, see `test_fuzz`); targets, annotations and times are drawn
from the same seed. A decision that raised on such input would crash a reconcile loop instead
of writing a status; so each call here must return its value.
"""

from __future__ import annotations

import datetime
import os
import random
from collections.abc import Iterator
from typing import Any

import pydantic

from edgeferry.decisions import pipeline, rollout_image, rollout_types, waves
from edgeferry.models import modeldeployment as md
from edgeferry.models import modelimage as mi
from edgeferry.models import release
from tests.unit import fuzz_specs

SEED = int(os.environ.get("EDGEFERRY_FUZZ_SEED", "20261201"))
COUNT = 1000
NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
DIGESTS = ("sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64)


def parsed(kind: str, parse: Any, *, of: str, seed: int) -> Iterator[Any]:
    """The generated documents the parser accepts, forever (cycling the seed)."""
    while True:
        for doc in fuzz_specs.mutants(kind, count=200, seed=seed, of=of):
            try:
                yield parse(doc)
            except pydantic.ValidationError:
                continue
        seed += 1


def test_next_step_decides_for_every_parsed_spec_and_status() -> None:
    specs = parsed("ModelImage", mi.parse_spec, of="spec", seed=SEED)
    statuses = parsed("ModelImage", mi.parse_status, of="status", seed=SEED)
    rng = random.Random(SEED)
    steps = set()
    for _ in range(COUNT):
        spec, status = next(specs), next(statuses)
        plan = pipeline.next_step(
            spec,
            status,
            generation=rng.randint(1, 5),
            inputs_digest=rng.choice([status.inputs_digest or DIGESTS[0], DIGESTS[1]]),
            now=NOW + datetime.timedelta(hours=rng.randint(-48, 48 * 30)),
            scan_db_checksum=rng.choice([None, "db-1", "db-2"]),
            image_present=rng.random() < 0.8,
        )
        pipeline.progress_conditions(plan)
        assert plan.phase
        steps.add(plan.step)
    assert len(steps) >= 3, steps  # the inputs reach several branches, not one


def test_the_rollout_image_is_read_from_any_model_image_body() -> None:
    for status in fuzz_specs.mutants("ModelImage", count=COUNT, seed=SEED, of="status"):
        image = rollout_image.from_body("iris", {"status": status, "metadata": {"generation": 1}})
        assert isinstance(image, rollout_types.Image)
        assert image.admitted == bool(image.admitted and image.digest)


def test_target_records_read_back_from_hand_edited_annotations() -> None:
    rng = random.Random(SEED)
    keys = [
        release.DIGEST,
        release.PREVIOUS_DIGEST,
        release.STARTED_AT,
        release.READY_AT,
        release.ROLLED_BACK_GENERATION,
        release.ROLLED_BACK_BECAUSE,
        release.ARCHITECTURES,
        release.TEMPLATE,
    ]
    values = ["", "x", "2026-13-01T00:00:00Z", "2026-12-01T00:00:00Z", "-1", "9" * 30, ",,", "{"]
    for _ in range(COUNT):
        annotations = {
            k: rng.choice([*values, *DIGESTS]) for k in rng.sample(keys, rng.randint(0, 7))
        }
        found = release.record_from_annotations(annotations)
        if found is not None:
            assert release.record_from_annotations(release.record_annotations(found)) == found


def random_target(rng: random.Random, name: str) -> rollout_types.TargetState:
    record = None
    if rng.random() < 0.7:
        digest = rng.choice(DIGESTS)
        record = release.TargetRecord(
            digest=digest,
            previous_digest=rng.choice([None, *DIGESTS]),
            started_at=rng.choice([None, NOW - datetime.timedelta(seconds=rng.randint(0, 900))]),
            ready_at=rng.choice([None, NOW - datetime.timedelta(seconds=rng.randint(0, 900))]),
            rolled_back_from=rng.choice([None, *DIGESTS]),
            rolled_back_generation=rng.choice([None, 1, 2, 3]),
            architectures=tuple(rng.sample(["amd64", "arm64"], rng.randint(0, 2))),
        )
    replicas = rng.randint(0, 3)
    return rollout_types.TargetState(
        name=name,
        cluster_type=rng.choice(["Cloud", "K3s"]),
        reachable=rng.random() < 0.8,
        unreachable_since=rng.choice([None, NOW - datetime.timedelta(seconds=rng.randint(0, 600))]),
        architectures=tuple(rng.sample(["amd64", "arm64", "riscv64"], rng.randint(0, 2))),
        size_budget_bytes=rng.choice([None, 1, 10**9]),
        record=record,
        available=rng.random() < 0.5,
        ready_replicas=rng.randint(0, replicas),
        replicas=replicas,
        failing=rng.random() < 0.2,
        failure=rng.choice([None, "CrashLoopBackOff"]),
    )


def test_next_actions_plans_for_any_fleet() -> None:
    rng = random.Random(SEED)
    specs = parsed("ModelDeployment", md.parse_spec, of="spec", seed=SEED)
    statuses = parsed("ModelDeployment", md.parse_status, of="status", seed=SEED)
    phases = set()
    for _ in range(COUNT):
        spec, recorded = next(specs), next(statuses)
        fleet = [random_target(rng, f"t{n}") for n in range(rng.randint(0, 6))]
        image = rollout_types.Image(
            name="iris",
            admitted=rng.random() < 0.85,
            digest=rng.choice([None, *(f"reg/iris@{d}" for d in DIGESTS)]),
            platforms=tuple(rng.sample(["linux/amd64", "linux/arm64"], rng.randint(0, 2))),
        )
        plan = waves.next_actions(
            fleet,
            image=image,
            rollout=spec.rollout,
            generation=rng.randint(1, 4),
            now=NOW,
            recorded=recorded if rng.random() < 0.7 else None,
            template=rng.choice([None, '{"port": 8080}']),
        )
        phases.add(plan.phase)
        assert {w.target for w in plan.writes} <= {t.name for t in fleet}
    assert len(phases) >= 3, phases
