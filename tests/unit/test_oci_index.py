"""The OCI image index document a multi-platform ModelImage is pushed as."""

from __future__ import annotations

import json

import pytest

from edgeferry.adapters import oci_index

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
AMD64 = oci_index.Descriptor(DOCKER_MANIFEST, "sha256:" + "a" * 64, 528, "linux", "amd64")
ARM64 = oci_index.Descriptor(DOCKER_MANIFEST, "sha256:" + "b" * 64, 529, "linux", "arm64")


def test_index_names_each_child_with_type_digest_size_and_platform_in_order() -> None:
    document = json.loads(oci_index.render_index([AMD64, ARM64]))
    assert document == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": AMD64.digest,
                "size": 528,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": ARM64.digest,
                "size": 529,
                "platform": {"architecture": "arm64", "os": "linux"},
            },
        ],
    }


def test_index_bytes_and_digest_are_the_same_for_the_same_children() -> None:
    one = oci_index.render_index([AMD64, ARM64])
    assert one == oci_index.render_index([AMD64, ARM64])
    assert oci_index.digest_of(one) != oci_index.digest_of(oci_index.render_index([ARM64, AMD64]))


def test_variant_is_written_only_when_known() -> None:
    v8 = oci_index.Descriptor(DOCKER_MANIFEST, ARM64.digest, 1, "linux", "arm64", "v8")
    (entry,) = json.loads(oci_index.render_index([v8]))["manifests"]
    assert entry["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}


@pytest.mark.parametrize("children", [[], [AMD64, AMD64]], ids=["empty", "repeated"])
def test_index_refuses_no_children_or_a_platform_twice(
    children: list[oci_index.Descriptor],
) -> None:
    with pytest.raises(ValueError, match="index"):
        oci_index.render_index(children)


def test_parsed_children_round_trip_and_skip_attestations() -> None:
    document = json.loads(oci_index.render_index([AMD64, ARM64]))
    attestation = {"mediaType": "x", "digest": "sha256:" + "c" * 64, "size": 9}
    document["manifests"].append({**attestation, "platform": {"architecture": "unknown"}})
    assert oci_index.parse_children(document) == (AMD64, ARM64)
    assert oci_index.is_index(document)


def test_platform_tag_appends_the_platform_and_stays_a_valid_tag() -> None:
    assert oci_index.platform_tag("v1", "linux/arm64") == "v1-linux-arm64"
    long = oci_index.platform_tag("x" * 128, "linux/arm64")
    assert len(long) == 128 and long.endswith("-linux-arm64")


def test_split_platform_reads_os_architecture_and_variant() -> None:
    assert oci_index.split_platform("linux/arm64/v8") == ("linux", "arm64", "v8")
    with pytest.raises(ValueError):
        oci_index.split_platform("arm64")
