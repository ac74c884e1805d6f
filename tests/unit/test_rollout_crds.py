"""The EdgeTarget and ModelDeployment CRDs agree with the pydantic models that read them.

The API server fills in CRD defaults and prunes unknown fields, so a default that differs from
the model's, or a status field the schema does not know, would silently change behaviour. These
tests compare the two sides without a cluster.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
import yaml

from edgeferry.decisions import rollout_status, rollout_types
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md

CRDS = pathlib.Path(__file__).resolve().parents[2] / "crds"
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{kind}.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def apply_defaults(node: dict[str, Any], value: Any, path: str, seen: set[str]) -> Any:
    """Default `value` the way the API server does; record the paths that got a default."""
    if isinstance(value, dict):
        out = dict(value)
        for key, sub in node.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = sub["default"]
                seen.add(f"{path}.{key}")
            if key in out:
                out[key] = apply_defaults(sub, out[key], f"{path}.{key}", seen)
        return out
    if isinstance(value, list) and "items" in node:
        return [apply_defaults(node["items"], v, f"{path}[]", seen) for v in value]
    return value


def default_paths(node: dict[str, Any], path: str) -> Iterator[str]:
    for key, sub in node.get("properties", {}).items():
        if "default" in sub:
            yield f"{path}.{key}"
        yield from default_paths(sub, f"{path}.{key}")
    if "items" in node:
        yield from default_paths(node["items"], f"{path}[]")


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{key}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def keys_of(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield f"{path}.{key}"
            yield from keys_of(sub, f"{path}.{key}")
    elif isinstance(value, list):
        for sub in value:
            yield from keys_of(sub, f"{path}[]")


def schema_paths(node: dict[str, Any], path: str) -> set[str]:
    """Every field path the schema declares (the API server prunes anything else)."""
    return {p for p, _ in walk(node, path)}


# --- defaults ------------------------------------------------------------------------------------
EDGE_TARGET_SAMPLES = [
    {"type": "Cloud", "namespace": "models", "cloud": {"tolerations": [{"key": "gpu"}]}},
    {"type": "K3s", "namespace": "models", "k3s": {"kubeconfigSecretRef": {"name": "edge-a"}}},
    {
        "type": "K3s",
        "namespace": "models",
        "k3s": {"kubeconfigSecretRef": {"name": "edge-a"}, "tolerations": [{"key": "gpu"}]},
    },
]
MODEL_DEPLOYMENT_SAMPLE = {
    "imageRef": {"name": "iris"},
    "targets": {"selector": {"matchLabels": {"region": "eu"}}},
    "template": {
        "readinessProbe": {"httpGet": {}},
        "livenessProbe": {"httpGet": {}},
    },
    "rollout": {
        "analysis": {
            "metrics": [{"name": "errors", "query": "vector(0)", "successCondition": {"max": 0.05}}]
        }
    },
}


def check_defaults(
    kind: str, model: type[pydantic.BaseModel], samples: list[dict[str, Any]]
) -> set[str]:
    spec_schema = schema(kind)["properties"]["spec"]
    seen: set[str] = set()
    for sample in samples:
        defaulted = apply_defaults(spec_schema, sample, "spec", seen)
        assert model.model_validate(sample) == model.model_validate(defaulted), sample
    return seen


def test_edgetarget_crd_defaults_equal_model_defaults() -> None:
    seen = check_defaults("edgetarget", et.EdgeTargetSpec, EDGE_TARGET_SAMPLES)
    assert seen == set(default_paths(schema("edgetarget")["properties"]["spec"], "spec"))


def test_modeldeployment_crd_defaults_equal_model_defaults() -> None:
    seen = check_defaults(
        "modeldeployment",
        md.ModelDeploymentSpec,
        [
            MODEL_DEPLOYMENT_SAMPLE,
            {k: v for k, v in MODEL_DEPLOYMENT_SAMPLE.items() if k not in ("template", "rollout")},
        ],
    )
    assert seen == set(default_paths(schema("modeldeployment")["properties"]["spec"], "spec"))


def test_model_defaults_are_the_documented_rollout_settings() -> None:
    rollout = md.RolloutStrategy()
    assert (rollout.canary, rollout.max_per_wave, rollout.min_ready_seconds) == (1, "50%", 10)
    assert (rollout.progress_deadline_seconds, rollout.max_failures) == (120, 0)
    assert (rollout.paused, rollout.auto_rollback, rollout.offline_grace_seconds) == (
        False,
        True,
        60,
    )


# --- shape ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["edgetarget", "modeldeployment"])
def test_every_field_has_a_description(kind: str) -> None:
    missing = [
        path
        for path, node in walk(schema(kind), "")
        if path not in ("", ".metadata") and "description" not in node
    ]
    assert missing == []


@pytest.mark.parametrize(("kind", "short"), [("edgetarget", "et"), ("modeldeployment", "md")])
def test_short_name_and_category(kind: str, short: str) -> None:
    crd = yaml.safe_load((CRDS / f"{kind}.yaml").read_text())
    assert crd["spec"]["names"]["shortNames"] == [short]
    assert crd["spec"]["names"]["categories"] == ["edgeferry"]
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def full_edgetarget_status() -> dict[str, Any]:
    return et.EdgeTargetStatus(
        observed_generation=1,
        reachable=True,
        kubernetes_version="v1.31.4+k3s1",
        cluster_id="6f1d3c2a-8b4e-4c1d-9a7f-2e5b8c9d0a1b",
        ready_nodes=2,
        total_nodes=3,
        architectures=("amd64", "arm64"),
        last_probe_time="2025-06-01T12:00:00Z",
        message="ok",
        conditions=({"type": "Ready", "status": "True", "reason": "Reachable", "message": ""},),
    ).to_status()


def full_modeldeployment_status() -> dict[str, Any]:
    outcome = rollout_types.TargetOutcome(
        name="a",
        cluster_type="K3s",
        phase="Progressing",
        wave=1,
        digest="r@sha256:" + "1" * 64,
        previous_digest="r@sha256:" + "0" * 64,
        template_hash="0123456789ab",
        ready_replicas=1,
        available_since=NOW,
        last_transition_time=NOW,
        message="soaking",
        error="one pod restarted",
        record=None,
    )
    plan = rollout_types.Plan(
        phase="Progressing",
        digest="r@sha256:" + "1" * 64,
        template_hash="0123456789ab",
        waves=(("a",), ("b",)),
        current_wave=1,
        targets=(outcome, dataclasses.replace(outcome, name="b", phase="Pending")),
        writes=(),
        conditions=(),
        message="wave 1/2",
        events=(),
        recheck_after_seconds=None,
        analysis=(
            md.AnalysisTally(
                target="a",
                metric="error-rate",
                digest="r@sha256:" + "1" * 64,
                template_hash="0123456789ab",
                passed=1,
                failed=1,
                inconclusive=1,
                last_at=NOW,
                last_value=0.5,
                failed_value=0.5,
                failed_query="q",
                inconclusive_error="no sample (or NaN)",
                inconclusive_query="q",
            ),
        ),
    )
    status = rollout_status.build(plan, generation=1, now=NOW, limit=1).to_status()
    assert status["targetsNotListed"] == 1
    return status


@pytest.mark.parametrize(
    ("kind", "status"),
    [("edgetarget", full_edgetarget_status), ("modeldeployment", full_modeldeployment_status)],
)
def test_every_status_field_the_models_write_is_in_the_schema(kind: str, status: Any) -> None:
    sch = schema(kind)["properties"]["status"]
    known = schema_paths(sch, "status")
    written = set(keys_of(status(), "status"))
    pruned = sorted(p for p in written if not p.startswith("status.conditions") and p not in known)
    assert pruned == []


@pytest.mark.parametrize(
    ("kind", "model"),
    [("edgetarget", et.EdgeTargetSpec), ("modeldeployment", md.ModelDeploymentSpec)],
)
def test_every_spec_field_of_the_schema_is_read_by_the_model(
    kind: str, model: type[pydantic.BaseModel]
) -> None:
    def model_paths(m: type[pydantic.BaseModel], path: str) -> Iterator[tuple[str, bool]]:
        for name, field in m.model_fields.items():
            alias = field.alias or name
            nested = list(_model_args(field.annotation))
            yield f"{path}.{alias}", not nested
            for arg in nested:
                yield from model_paths(arg, f"{path}.{alias}")

    sch = schema(kind)["properties"]["spec"]
    in_schema = {p.replace("[]", "") for p, _ in walk(sch, "spec") if "{}" not in p}
    read = dict(model_paths(model, "spec"))
    free = [p for p, leaf in read.items() if leaf]
    unread = [
        p
        for p in in_schema - set(read)
        if p != "spec" and not any(p.startswith(f + ".") for f in free)
    ]
    assert sorted(unread) == []
    assert sorted(set(read) - in_schema) == []


def _model_args(annotation: Any) -> Iterator[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        yield annotation
        return
    for arg in getattr(annotation, "__args__", ()):
        yield from _model_args(arg)


def test_edgetarget_arch_column_reads_a_comma_separated_status_string() -> None:
    crd = yaml.safe_load((CRDS / "edgetarget.yaml").read_text())
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Arch"]["jsonPath"] == ".status.arch"
    assert full_edgetarget_status()["arch"] == "amd64,arm64"
    assert "arch" not in et.EdgeTargetStatus().to_status(), "never probed: no column value"
    nothing_ready = et.EdgeTargetStatus(reachable=True, architectures=()).to_status()
    assert nothing_ready["arch"] == "", "an emptied list must overwrite an old value"


def test_zero_replicas_is_refused_by_the_crd_and_the_model_alike() -> None:
    replicas = schema("modeldeployment")["properties"]["spec"]["properties"]["template"][
        "properties"
    ]["replicas"]
    assert [r["rule"] for r in replicas["x-kubernetes-validations"]] == ["self >= 1"]
    spec = {"imageRef": {"name": "iris"}, "targets": {"selector": {"matchLabels": {"a": "b"}}}}
    assert md.parse_spec({**spec, "template": {"replicas": 1}}).template.replicas == 1
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 1"):
        md.parse_spec({**spec, "template": {"replicas": 0}})


def test_k3s_placement_has_the_cloud_schema_and_rules_with_messages_naming_k3s() -> None:
    spec = schema("edgetarget")["properties"]["spec"]["properties"]
    cloud, k3s = spec["cloud"]["properties"], spec["k3s"]["properties"]
    assert k3s["tolerations"] == cloud["tolerations"]

    def without_messages(node: dict[str, Any]) -> dict[str, Any]:
        rules = [{"rule": r["rule"]} for r in node["x-kubernetes-validations"]]
        return {**node, "x-kubernetes-validations": rules}

    assert without_messages(k3s["nodeSelector"]) == without_messages(cloud["nodeSelector"])
    (message,) = [r["message"] for r in k3s["nodeSelector"]["x-kubernetes-validations"]]
    assert message.startswith("k3s.nodeSelector keys ")


def test_the_k3s_rule_against_a_cloud_section_points_to_the_k3s_placement() -> None:
    rules = schema("edgetarget")["properties"]["spec"]["x-kubernetes-validations"]
    (forbid_cloud,) = [r for r in rules if r.get("fieldPath") == ".cloud"]
    assert "set k3s.nodeSelector and k3s.tolerations" in forbid_cloud["message"]


def test_the_crd_query_rule_is_the_models_placeholder_pattern() -> None:
    """The CEL rule and the model refuse the same queries (one pattern, written twice)."""
    node = schema("modeldeployment")["properties"]["spec"]["properties"]["rollout"]
    query = node["properties"]["analysis"]["properties"]["metrics"]["items"]["properties"]["query"]
    (rule,) = query["x-kubernetes-validations"]
    inner = rule["rule"].removeprefix("self.matches('").removesuffix("')")
    assert inner.replace("\\\\", "\\") == md.QUERY_PATTERN
