"""An EdgeTarget's placement that cannot work is refused by the API server, naming its field.

`cloud` and `k3s` share one schema for node selector and tolerations (YAML anchors in
`crds/edgetarget.yaml`); these cases send each broken field with a server-side dry run to the
hub's real kube-apiserver, which evaluates the CRD's schema and CEL rules, so the messages a
user meets are the section's own. The control cases show the valid documents are accepted, so
each refusal is that field's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from edgeferry_testbed import handles, procs
from tests.integration import _resources

pytestmark = pytest.mark.integration

REAL_NODES = {"edgeferry.io/node-kind": "real"}
REAL_TOLERATION = {"key": "edgeferry.io/real-node", "value": "true", "effect": "NoSchedule"}


def cloud() -> dict[str, Any]:
    doc = _resources.edge_target(
        "validation-cloud", workload_namespace="models", labels={}, node_selector=REAL_NODES
    )
    doc["spec"]["cloud"]["tolerations"] = [dict(REAL_TOLERATION)]
    return doc


def k3s() -> dict[str, Any]:
    doc = _resources.edge_target(
        "validation-k3s", workload_namespace="models", labels={}, secret="site-kubeconfig"
    )
    doc["spec"]["k3s"] |= {"nodeSelector": dict(REAL_NODES), "tolerations": [REAL_TOLERATION]}
    return doc


def k3s_with_mirror() -> dict[str, Any]:
    doc = k3s()
    doc["spec"] |= {
        "registryMirror": "mirror.site-a.local:5000/proxy",
        "registryMirrorCredentialsSecret": "site-a-mirror",
    }
    return doc


VALID = {"cloud": cloud, "k3s": k3s, "k3s-with-mirror": k3s_with_mirror}

INVALID: list[tuple[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None], str]] = [
    (
        "a cloud node selector key that is no label key",
        cloud,
        lambda s: s["cloud"].update(nodeSelector={"not a key": "x"}),
        "cloud.nodeSelector keys must be label keys",
    ),
    (
        "a k3s node selector key that is no label key",
        k3s,
        lambda s: s["k3s"].update(nodeSelector={"not a key": "x"}),
        "k3s.nodeSelector keys must be label keys",
    ),
    (
        "a k3s toleration with operator Exists and a value",
        k3s,
        lambda s: s["k3s"].update(tolerations=[{"key": "gpu", "operator": "Exists", "value": "1"}]),
        "a toleration with operator Exists matches any value",
    ),
    (
        "a k3s toleration without key",
        k3s,
        lambda s: s["k3s"].update(tolerations=[{"value": "1"}]),
        "a toleration without key must use operator Exists",
    ),
    (
        "a k3s toleration with an unknown effect",
        k3s,
        lambda s: s["k3s"].update(tolerations=[{"key": "gpu", "effect": "Sometimes"}]),
        "spec.k3s.tolerations[0].effect",
    ),
    (
        "a k3s target with a cloud section",
        k3s,
        lambda s: s.update(cloud={"nodeSelector": dict(REAL_NODES)}),
        "to pick nodes of the remote cluster, set k3s.nodeSelector and k3s.tolerations",
    ),
    (
        "mirror credentials without a mirror",
        k3s,
        lambda s: s.update(registryMirrorCredentialsSecret="mirror-auth"),
        "registryMirrorCredentialsSecret holds credentials for registryMirror",
    ),
    (
        "mirror credentials that are no Secret name",
        k3s,
        lambda s: s.update(
            registryMirror="mirror.site:5000", registryMirrorCredentialsSecret="Mirror_Auth"
        ),
        "registryMirrorCredentialsSecret must be a Secret name",
    ),
    (
        "a mirror with a scheme",
        k3s,
        lambda s: s.update(registryMirror="https://mirror.site:5000"),
        "registryMirror must be host[:port]",
    ),
]


@pytest.mark.parametrize("kind", sorted(VALID))
def test_the_valid_edge_target_with_placement_is_accepted(
    hub: handles.Cluster, operator: procs.Managed | None, kind: str
) -> None:
    assert _resources.refused_at_apply(hub, VALID[kind]()) is None


@pytest.mark.parametrize(
    ("what", "valid", "break_spec", "message"), INVALID, ids=[i[0] for i in INVALID]
)
def test_invalid_edge_target_placement_is_refused_at_apply_time_naming_its_field(
    hub: handles.Cluster,
    operator: procs.Managed | None,
    what: str,
    valid: Callable[[], dict[str, Any]],
    break_spec: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    doc = valid()
    break_spec(doc["spec"])
    refusal = _resources.refused_at_apply(hub, doc)
    assert refusal is not None, what
    assert message in refusal, refusal
