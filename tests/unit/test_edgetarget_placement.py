"""Which nodes an EdgeTarget stands for: `cloud` picks hub nodes, `k3s` picks nodes at the site."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from edgeferry.models import edgetarget as et

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SECRET = {"kubeconfigSecretRef": {"name": "factory-7"}}


def k3s(**section: Any) -> et.EdgeTargetSpec:
    return et.parse_spec({"type": "K3s", "namespace": "models", "k3s": {**SECRET, **section}})


def test_a_k3s_target_places_pods_by_its_own_node_selector_and_tolerations() -> None:
    spec = k3s(nodeSelector={"hardware": "gpu"}, tolerations=[GPU_TOLERATION])
    assert spec.placement == et.Placement(
        node_selector={"hardware": "gpu"},
        tolerations=(et.Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),),
    )


def test_a_k3s_target_without_placement_stands_for_every_node() -> None:
    assert k3s().placement == et.Placement()


def test_the_k3s_placement_carries_no_kubeconfig_reference() -> None:
    placement = k3s(nodeSelector={"hardware": "gpu"}).placement
    assert type(placement) is et.Placement
    assert "kubeconfigSecretRef" not in placement.model_dump(by_alias=True)


def test_a_cloud_target_places_pods_by_its_cloud_section() -> None:
    spec = et.parse_spec(
        {
            "type": "Cloud",
            "namespace": "models",
            "cloud": {"nodeSelector": {"pool": "gpu"}, "tolerations": [GPU_TOLERATION]},
        }
    )
    assert spec.placement.node_selector == {"pool": "gpu"}
    assert spec.placement.tolerations[0].key == "nvidia.com/gpu"


def test_a_k3s_target_with_a_cloud_section_is_told_where_site_placement_goes() -> None:
    with pytest.raises(
        pydantic.ValidationError, match=r"use k3s\.nodeSelector and k3s\.tolerations"
    ):
        et.parse_spec(
            {
                "type": "K3s",
                "namespace": "models",
                "k3s": SECRET,
                "cloud": {"nodeSelector": {"pool": "gpu"}},
            }
        )


def test_a_k3s_toleration_is_checked_like_a_cloud_one() -> None:
    with pytest.raises(pydantic.ValidationError, match="operator"):
        k3s(tolerations=[{"key": "gpu", "operator": "Sometimes"}])


def test_mirror_credentials_need_a_mirror_as_the_crd_says() -> None:
    with pytest.raises(pydantic.ValidationError, match="registryMirrorCredentialsSecret needs"):
        et.parse_spec(
            {
                "type": "K3s",
                "namespace": "models",
                "k3s": SECRET,
                "registryMirrorCredentialsSecret": "mirror-auth",
            }
        )
    spec = et.parse_spec(
        {
            "type": "K3s",
            "namespace": "models",
            "k3s": SECRET,
            "registryMirror": "mirror.site:5000",
            "registryMirrorCredentialsSecret": "mirror-auth",
        }
    )
    assert spec.registry_mirror_credentials_secret == "mirror-auth"
