"""Multi-platform ModelImages: `spec.build.platforms`, one image per platform, one index.

The pipeline tests' `World` and `converge` build one image per platform the spec names, so
these read as the story of an amd64 + arm64 image.
"""

from __future__ import annotations

import datetime
from typing import Any

import pydantic
import pytest

from edgeferry.decisions import inputs, stages
from edgeferry.decisions.pipeline import Step
from edgeferry.models import modelimage
from tests.unit.test_modelimage_crd import SPEC
from tests.unit.test_modelimage_pipeline import (
    IMAGE_ID,
    NOW,
    World,
    converge,
    decide,
    make_spec,
)

BOTH = ["linux/amd64", "linux/arm64"]


def dockerfile_build(**build: Any) -> dict[str, Any]:
    return {"dockerfile": "FROM scratch\nCOPY model/model.pkl /m\n", **build}


def multi_spec(**changes: Any) -> modelimage.ModelImageSpec:
    return make_spec(build=dockerfile_build(platforms=BOTH), **changes)


# --- spec ---------------------------------------------------------------------------------------


def test_platforms_list_is_the_target_platforms_in_order() -> None:
    spec = make_spec(build=dockerfile_build(platforms=["linux/arm64", "linux/amd64"]))
    assert spec.build.target_platforms == ("linux/arm64", "linux/amd64")


def test_single_platform_field_still_works() -> None:
    spec = make_spec(build=dockerfile_build(platform="linux/arm64"))
    assert spec.build.target_platforms == ("linux/arm64",)


def test_no_platform_means_linux_amd64() -> None:
    assert make_spec(build=dockerfile_build()).build.target_platforms == ("linux/amd64",)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        ({"platform": "linux/amd64", "platforms": BOTH}, "not both"),
        ({"platforms": ["linux/arm64", "linux/arm64"]}, "must not repeat"),
        ({"platforms": []}, "at least 1 item"),
        ({"platforms": [*BOTH, "linux/amd64"]}, "at most 2 items"),
        ({"platforms": ["linux/s390x"]}, "linux/amd64"),
    ],
    ids=["both", "repeated", "empty", "too-many", "unknown"],
)
def test_invalid_platforms_are_refused_with_a_clear_message(
    build: dict[str, Any], message: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        make_spec(build=dockerfile_build(**build))


# --- CRD ----------------------------------------------------------------------------------------


def test_crd_refuses_platform_and_platforms_together() -> None:
    build = SPEC["properties"]["build"]
    rules = {r["rule"]: r for r in build["x-kubernetes-validations"]}
    rule = rules["!(has(self.platform) && has(self.platforms))"]
    assert "not both" in rule["message"] and rule["fieldPath"] == ".platforms"


def test_crd_platforms_is_a_set_of_one_or_two_known_platforms() -> None:
    platforms = SPEC["properties"]["build"]["properties"]["platforms"]
    assert (platforms["minItems"], platforms["maxItems"]) == (1, 2)
    assert platforms["x-kubernetes-list-type"] == "set"
    assert platforms["items"]["enum"] == BOTH


def test_crd_platform_has_no_default_so_platforms_alone_is_valid() -> None:
    # A defaulted `platform` would be set next to every `platforms` and break the CEL rule.
    assert "default" not in SPEC["properties"]["build"]["properties"]["platform"]


# --- inputs digest ------------------------------------------------------------------------------


def _digest(platform: str | list[str]) -> str:
    return inputs.inputs_digest(
        dockerfile="FROM scratch\n", context={}, model_sha256="a" * 64, platform=platform
    )


def test_a_list_of_one_platform_hashes_like_that_platform() -> None:
    assert _digest(["linux/arm64"]) == _digest("linux/arm64")


def test_adding_or_reordering_platforms_changes_the_inputs_digest() -> None:
    digests = {_digest("linux/amd64"), _digest(BOTH), _digest(list(reversed(BOTH)))}
    assert len(digests) == 3


# --- pipeline -----------------------------------------------------------------------------------


def test_two_platforms_build_once_and_converge_with_one_image_each() -> None:
    world = World()
    status, plan = converge(multi_spec(), modelimage.ModelImageStatus(), world)
    assert world.steps == [Step.LINT, Step.BUILD, Step.SMOKE_TEST, Step.SCAN, Step.PUSH]
    assert plan.reason == "UpToDate"
    assert status.image is not None and status.scan is not None
    assert [p.platform for p in status.image.platforms] == BOTH
    assert status.scan.scanned_ids == status.image.image_ids
    assert len(set(status.image.image_ids)) == 2


def test_a_rebuilt_second_platform_reruns_smoke_test_scan_and_push() -> None:
    world = World()
    spec = multi_spec()
    status, _ = converge(spec, modelimage.ModelImageStatus(), world)
    assert status.image is not None
    arm = status.image.platforms[1].model_copy(update={"id": "sha256:" + "7" * 64})
    rebuilt = status.image.model_copy(update={"platforms": [status.image.platforms[0], arm]})
    world.steps.clear()
    world.image_present = True
    status, plan = converge(spec, status.model_copy(update={"image": rebuilt}), world)
    assert world.steps == [Step.SMOKE_TEST, Step.SCAN, Step.PUSH]
    assert plan.reason == "UpToDate"


def test_stage_keys_cover_every_platform_image() -> None:
    spec = multi_spec()
    one = stages.stage_keys(spec, image_ids=[IMAGE_ID, "sha256:" + "4" * 64])
    two = stages.stage_keys(spec, image_ids=[IMAGE_ID, "sha256:" + "5" * 64])
    assert one.lint == two.lint
    assert one.smoke_test != two.smoke_test and one.scan != two.scan and one.push != two.push


def test_a_scan_of_only_the_first_platform_is_not_a_scan_of_the_image() -> None:
    world = World()
    status, _ = converge(multi_spec(), modelimage.ModelImageStatus(), world)
    assert status.scan is not None and status.image is not None
    partial = status.scan.model_copy(update={"image_ids": [status.image.image_ids[0]]})
    plan = decide(multi_spec(), status.model_copy(update={"scan": partial}), world)
    assert (plan.step, plan.reason) == (Step.SCAN, "NotScanned")


def test_missing_platform_images_are_pulled_back_by_their_manifest_digests() -> None:
    world = World()
    status, _ = converge(multi_spec(), modelimage.ModelImageStatus(), world)
    world.now = NOW + datetime.timedelta(days=1)
    world.image_present = False
    plan = decide(multi_spec(), status, world)
    assert (plan.step, plan.reason) == (Step.PULL, "ImageMissing")


def test_platform_images_without_child_digests_are_rebuilt_not_pulled() -> None:
    world = World()
    status, _ = converge(multi_spec(), modelimage.ModelImageStatus(), world)
    assert status.image is not None
    no_children = [p.model_copy(update={"digest": None}) for p in status.image.platforms]
    image = status.image.model_copy(update={"platforms": no_children})
    world.now = NOW + datetime.timedelta(days=1)
    world.image_present = False
    plan = decide(multi_spec(), status.model_copy(update={"image": image}), world)
    assert (plan.step, plan.reason) == (Step.BUILD, "ImageMissing")


# --- status -------------------------------------------------------------------------------------


def test_status_from_before_platforms_existed_reads_as_one_platform() -> None:
    old = modelimage.parse_status(
        {"image": {"id": IMAGE_ID, "platform": "linux/arm64", "size": 5, "layers": 1}}
    )
    assert old.image is not None
    (only,) = old.image.platform_images
    assert (only.platform, only.id, only.size) == ("linux/arm64", IMAGE_ID, 5)


def test_scan_from_before_image_ids_existed_covers_its_one_image() -> None:
    assert modelimage.ScanStatus(image_id=IMAGE_ID).scanned_ids == (IMAGE_ID,)


def test_platform_images_survive_the_status_round_trip() -> None:
    world = World()
    status, _ = converge(multi_spec(), modelimage.ModelImageStatus(), world)
    again = modelimage.parse_status(status.to_patch())
    assert again.image == status.image
    patch = status.to_patch()["image"]["platforms"]
    assert set(patch[1]) == {"platform", "id", "size", "layers", "digest"}
