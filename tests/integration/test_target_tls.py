"""A kubeconfig Secret that turns TLS verification off is refused by the running operator."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeferry_testbed import handles
from tests.integration import _resources as res
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration


def test_kubeconfig_that_skips_tls_verification_is_refused_with_the_fix(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    config = yaml.safe_load(Path(testbed_handle.cluster("edge-1").target_kubeconfig).read_text())
    cluster = config["clusters"][0]["cluster"]
    cluster.pop("certificate-authority-data", None)
    cluster["insecure-skip-tls-verify"] = True
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "unverified"},
        "stringData": {"kubeconfig": yaml.safe_dump(config)},
    }
    target = res.edge_target(
        "unverified", workload_namespace=fleet.namespace, labels={}, secret="unverified"
    )
    res.apply(fleet.hub, fleet.namespace, secret, target)

    def reported() -> dict[str, object] | None:
        obj = res.get_object(fleet.hub, fleet.namespace, "edgetargets", "unverified")
        return obj if res.condition(obj, "Ready").get("reason") == "InsecureTLSRefused" else None

    obj = res.wait_until("EdgeTarget unverified to refuse its kubeconfig", reported, timeout=30)
    ready = res.condition(obj, "Ready")
    assert ready["status"] == "False"
    assert "certificate-authority-data" in ready["message"]
    assert "EDGEFERRY_ALLOW_INSECURE_TARGET_TLS" in ready["message"]
    assert res.condition(obj, "Stalled")["status"] == "True"
