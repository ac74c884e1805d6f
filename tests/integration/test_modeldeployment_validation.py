"""A ModelDeployment that cannot work is refused by the API server, with a message that says why.

Each case breaks one field of a valid ModelDeployment and sends it with a server-side dry run to
the hub's real kube-apiserver, which evaluates the CRD's schema and CEL rules; the control case
shows that the valid document is accepted, so each refusal is that field's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from edgeferry_testbed import handles, procs
from tests.integration import _resources

pytestmark = pytest.mark.integration


QUERY = 'sum(rate(x{namespace="{{ namespace }}", image=~".*@{{digest}}"}[1m])) / {{ wave }}'


def valid() -> dict[str, Any]:
    return _resources.model_deployment(
        "validation",
        image="iris",
        selector={"matchLabels": {"tier": "edge"}},
        rollout={
            "analysis": {
                "count": 3,
                "metrics": [
                    {"name": "error-rate", "query": QUERY, "successCondition": {"max": 0.05}}
                ],
            }
        },
    )


def _metric(s: dict[str, Any]) -> dict[str, Any]:
    metric: dict[str, Any] = s["rollout"]["analysis"]["metrics"][0]
    return metric


INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "zero replicas",
        lambda s: s["template"].update(replicas=0),
        "template.replicas must be at least 1",
    ),
    (
        "an empty selector",
        lambda s: s["targets"].update(selector={}),
        "targets.selector must not be empty",
    ),
    (
        "In without values",
        lambda s: s["targets"].update(
            selector={"matchExpressions": [{"key": "region", "operator": "In"}]}
        ),
        "operators In and NotIn need at least one value",
    ),
    (
        "requests above limits",
        lambda s: s["template"].update(
            resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}
        ),
        "template.resources.requests must not exceed template.resources.limits",
    ),
    (
        "an unknown query placeholder",
        lambda s: _metric(s).update(query='x{pod="{{ pod }}"}'),
        "query may only use the placeholders",
    ),
    (
        "a success condition without bounds",
        lambda s: _metric(s).update(successCondition={}),
        "successCondition needs min, max or both",
    ),
    (
        "min above max",
        lambda s: _metric(s).update(successCondition={"min": 2, "max": 1}),
        "successCondition.min must not be greater than max",
    ),
    (
        "a failure limit the count can never exceed",
        lambda s: s["rollout"]["analysis"].update(failureLimit=3),
        "failureLimit must be less than count",
    ),
    (
        "no node allowed to pre-pull",
        lambda s: s["rollout"].update(prePull={"enabled": True, "maxConcurrentNodes": 0}),
        "rollout.prePull.maxConcurrentNodes must be between 1 and 1000",
    ),
    (
        "more pre-pulling nodes than the bound",
        lambda s: s["rollout"].update(prePull={"maxConcurrentNodes": 1001}),
        "rollout.prePull.maxConcurrentNodes must be between 1 and 1000",
    ),
    (
        "an unknown onBlocked policy",
        lambda s: s.update(onBlocked="Rollback"),
        "onBlocked must be Keep",
    ),
]


def test_the_valid_model_deployment_is_accepted(
    hub: handles.Cluster, operator: procs.Managed | None
) -> None:
    assert _resources.refused_at_apply(hub, valid()) is None


@pytest.mark.parametrize(("what", "break_spec", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_model_deployment_is_refused_at_apply_time_with_a_clear_message(
    hub: handles.Cluster,
    operator: procs.Managed | None,
    what: str,
    break_spec: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    doc = valid()
    break_spec(doc["spec"])
    refusal = _resources.refused_at_apply(hub, doc)
    assert refusal is not None, what
    assert message in refusal, refusal
