"""A ModelImage as the rollout sees it: only Admitted=True with a pushed digest moves."""

from __future__ import annotations

from typing import Any

from edgeferry.decisions import rollout_image

DIGEST = "sha256:" + "1" * 64
REPO = "registry.local:5000/models/iris"


def body(admitted: str | None, *, pushed: bool = True, **status: Any) -> dict[str, Any]:
    conds = [] if admitted is None else [{"type": "Admitted", "status": admitted, **status}]
    image: dict[str, Any] = {
        "platforms": [
            {"platform": "linux/amd64", "id": "sha256:a", "size": 100},
            {"platform": "linux/arm64", "id": "sha256:b", "size": 90},
        ]
    }
    if pushed:
        image |= {"repository": REPO, "digest": DIGEST}
    return {"status": {"phase": "Scanning", "conditions": conds, "image": image}}


def test_a_missing_image_is_not_found_and_says_what_to_fix() -> None:
    image = rollout_image.from_body("iris", None)
    assert not image.admitted and image.reason == "ImageNotFound"
    assert "spec.imageRef.name" in image.message


def test_admitted_and_pushed_rolls_out_by_digest_with_its_platforms_and_sizes() -> None:
    image = rollout_image.from_body("iris", body("True"))
    assert image.admitted and image.digest == f"{REPO}@{DIGEST}"
    assert image.platforms == ("linux/amd64", "linux/arm64")
    assert image.sizes == (("amd64", 100), ("arm64", 90))


def test_admitted_but_not_pushed_waits_for_the_push() -> None:
    image = rollout_image.from_body("iris", body("True", pushed=False))
    assert not image.admitted and image.reason == "ImageNotPushed"


def test_refused_by_the_gate_carries_the_gate_reason_and_message() -> None:
    refused = body("False", reason="VulnerabilitiesFound", message="2 critical findings")
    image = rollout_image.from_body("iris", refused)
    assert not image.admitted
    assert (image.reason, image.message) == ("VulnerabilitiesFound", "2 critical findings")


def test_undecided_names_the_pipeline_phase() -> None:
    image = rollout_image.from_body("iris", body(None))
    assert image.reason == "ImageNotAdmitted" and "phase Scanning" in image.message


def test_an_unreadable_status_reads_as_not_admitted() -> None:
    image = rollout_image.from_body("iris", {"status": {"conditions": "garbage"}})
    assert not image.admitted and image.reason == "ImageNotAdmitted"


def test_an_unreadable_platform_in_the_image_status_blocks_without_crashing() -> None:
    """Found by the decision fuzz: a hand-edited platform used to raise out of the rollout."""
    body = {
        "status": {
            "conditions": [{"type": "Admitted", "status": "True", "reason": "x", "message": ""}],
            "image": {
                "repository": "reg/iris",
                "digest": "sha256:" + "a" * 64,
                "platforms": [{"platform": "linux/a/b/c", "id": "sha256:" + "b" * 64, "size": 9}],
            },
        }
    }
    image = rollout_image.from_body("iris", body)
    assert not image.admitted
    assert "unreadable" in image.message


def test_a_pushed_image_the_gate_now_blocks_names_the_digest_that_may_run() -> None:
    revoked = body("False", reason="VulnerabilitiesFound", message="GHSA-q2q7-5pp4-w6pg (high)")
    image = rollout_image.from_body("iris", revoked)
    assert not image.admitted and image.digest is None
    assert image.blocked_digest == f"{REPO}@{DIGEST}"


def test_an_image_blocked_before_its_push_has_no_blocked_digest() -> None:
    refused = body("False", pushed=False, reason="VulnerabilitiesFound", message="2 critical")
    assert rollout_image.from_body("iris", refused).blocked_digest is None


def test_a_failed_smoke_test_is_no_revoked_admission() -> None:
    failed = body("False", reason="SmokeTestFailed", message="exited 1")
    assert rollout_image.from_body("iris", failed).blocked_digest is None


def test_an_admitted_image_carries_the_push_credentials_a_mirror_copy_reads_it_with() -> None:
    doc = body("True") | {"spec": {"push": {"repository": REPO, "credentialsSecret": "push"}}}
    assert rollout_image.from_body("iris", doc).credentials_secret == "push"
    assert rollout_image.from_body("iris", body("True")).credentials_secret is None
