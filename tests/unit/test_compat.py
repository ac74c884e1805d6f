"""Whether a target's nodes can run an image's platform."""

from __future__ import annotations

import pytest

from edgeferry.decisions import compat


def test_matching_architecture_is_compatible() -> None:
    verdict = compat.check(["linux/amd64"], ["amd64"])
    assert verdict.status == "Compatible"
    assert verdict.compatible
    assert verdict.architectures == ("amd64",)


def test_arm64_image_on_amd64_nodes_is_incompatible_and_names_both_sides() -> None:
    verdict = compat.check(["linux/arm64"], ["amd64"])
    assert verdict.status == "Incompatible"
    assert not verdict.compatible
    assert "linux/arm64" in verdict.message
    assert "amd64" in verdict.message
    assert verdict.architectures == ()


def test_incompatible_message_says_what_to_do() -> None:
    verdict = compat.check(["linux/arm64"], ["amd64"])
    assert "Build the ModelImage for linux/amd64" in verdict.message
    assert "targets.selector" in verdict.message


def test_mixed_cluster_is_compatible_and_pins_only_the_matching_architecture() -> None:
    verdict = compat.check(["linux/arm64"], ["amd64", "arm64"])
    assert verdict.compatible
    assert verdict.architectures == ("arm64",)


def test_multi_arch_image_runs_on_every_matching_node_architecture() -> None:
    verdict = compat.check(["linux/amd64", "linux/arm64"], ["arm64", "amd64"])
    assert verdict.architectures == ("amd64", "arm64")


def test_unknown_node_architectures_are_unknown_not_incompatible() -> None:
    verdict = compat.check(["linux/arm64"], [])
    assert verdict.status == "Unknown"
    assert not verdict.compatible
    assert "probe" in verdict.message


def test_unknown_image_platform_is_let_through_on_every_node_architecture() -> None:
    verdict = compat.check([], ["amd64", "arm64"])
    assert verdict.compatible
    assert verdict.architectures == ("amd64", "arm64")


def test_architecture_aliases_are_normalized() -> None:
    assert compat.check(["linux/aarch64"], ["arm64"]).compatible
    assert compat.check(["linux/amd64"], ["x86_64"]).compatible


def test_platform_variant_is_ignored() -> None:
    assert compat.check(["linux/arm/v7"], ["arm"]).compatible


def test_bare_architecture_means_linux() -> None:
    assert compat.parse_platform("arm64") == compat.Platform(os="linux", architecture="arm64")


def test_platform_parses_os_architecture_and_variant() -> None:
    platform = compat.parse_platform("linux/arm/v7")
    assert platform == compat.Platform(os="linux", architecture="arm", variant="v7")
    assert str(platform) == "linux/arm/v7"


def test_non_linux_image_is_incompatible() -> None:
    verdict = compat.check(["windows/amd64"], ["amd64"])
    assert verdict.status == "Incompatible"
    assert "Linux" in verdict.message


def test_malformed_platform_is_refused() -> None:
    with pytest.raises(ValueError, match="os/arch"):
        compat.parse_platform("linux/arm/v7/extra")


# --- size budget ---------------------------------------------------------------------------------
def test_an_image_within_the_budget_keeps_the_verdict() -> None:
    verdict = compat.check(["linux/amd64"], ["amd64"])
    assert compat.check_size(verdict, {"amd64": 100}, budget_bytes=100) == verdict
    assert compat.check_size(verdict, {"amd64": 10**9}, budget_bytes=None) == verdict


def test_an_image_over_the_budget_is_incompatible_and_says_both_sizes() -> None:
    verdict = compat.check(["linux/amd64"], ["amd64"])
    result = compat.check_size(verdict, {"amd64": 248_000_000}, budget_bytes=100_000_000)
    assert result.status == "Incompatible"
    assert "248.0 MB" in result.message and "100.0 MB" in result.message
    assert "imageSizeBudgetBytes" in result.message


def test_only_architectures_whose_image_fits_are_pinned() -> None:
    verdict = compat.check(["linux/amd64", "linux/arm64"], ["amd64", "arm64"])
    result = compat.check_size(verdict, {"amd64": 300, "arm64": 100}, budget_bytes=200)
    assert result.status == "Compatible"
    assert result.architectures == ("arm64",)


def test_an_unknown_size_is_not_held_against_the_target() -> None:
    verdict = compat.check(["linux/amd64"], ["amd64"])
    assert compat.check_size(verdict, {}, budget_bytes=1) == verdict


def test_the_budget_does_not_revive_an_incompatible_or_unknown_verdict() -> None:
    incompatible = compat.check(["linux/arm64"], ["amd64"])
    unknown = compat.check(["linux/arm64"], [])
    assert compat.check_size(incompatible, {"arm64": 1}, budget_bytes=10) == incompatible
    assert compat.check_size(unknown, {"arm64": 1}, budget_bytes=10) == unknown
