"""The ModelImage CRD file: a structural schema that teaches, and agrees with the models.

The API server is the real judge (an integration test applies the CRD); these checks catch the
mistakes that are easy to make by hand in 700 lines of YAML, and keep the CRD and the pydantic
models from drifting apart: a status field the models write but the CRD lacks would be pruned
silently by the API server, and a default that differs would change what a spec means.
"""

from __future__ import annotations

import copy
import pathlib
import re
import typing
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
import yaml

from edgeferry.models import modelimage

CRD_PATH = pathlib.Path(__file__).resolve().parents[2] / "crds" / "modelimage.yaml"
CRD: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
VERSION: dict[str, Any] = CRD["spec"]["versions"][0]
ROOT: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
SPEC: dict[str, Any] = ROOT["properties"]["spec"]
STATUS: dict[str, Any] = ROOT["properties"]["status"]

MINIMAL_SPEC: dict[str, Any] = {
    "model": {
        "format": "sklearn",
        "source": {"configMap": {"name": "iris-model", "key": "model.pkl"}},
        "sha256": "a" * 64,
    },
    "build": {
        "runtime": {
            "template": "sklearn-http",
            "baseImage": "127.0.0.1:5000/base/python-sklearn@sha256:" + "b" * 64,
        }
    },
    "smokeTest": {"predict": {"body": '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'}},
    "push": {"repository": "127.0.0.1:5000/models/iris", "tags": ["v1"]},
}


def _nodes(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `schema` (properties, list items, map values) with its path."""
    for name, prop in schema.get("properties", {}).items():
        yield f"{path}.{name}", prop
        yield from _nodes(prop, f"{path}.{name}")
    if "items" in schema:
        yield f"{path}[]", schema["items"]
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield f"{path}{{}}", schema["additionalProperties"]
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def _node(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The node at a dotted path like `spec.scan.failOn` (`[]` steps into list items)."""
    node = schema
    for part in dotted.split("."):
        node = node["properties"][part.removesuffix("[]")]
        if part.endswith("[]"):
            node = node["items"]
    return node


def _patterns(dotted: str) -> list[str]:
    """The regexes the CEL rules of one field use with `matches()`."""
    rules = [r["rule"] for r in _node(ROOT, dotted).get("x-kubernetes-validations", [])]
    return [p for rule in rules for p in re.findall(r"matches\('([^']*)'\)", rule)]


def _nested_model(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The pydantic model inside an annotation like `list[X] | None`, if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _wire_names(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """camelCase name -> annotation of every field, computed ones included."""
    names = {f.alias or n: f.annotation for n, f in model.model_fields.items()}
    for name, computed in model.model_computed_fields.items():
        names[computed.alias or name] = computed.return_type
    return names


def _schema_mismatches(
    model: type[pydantic.BaseModel], schema: dict[str, Any], path: str
) -> Iterator[str]:
    fields = _wire_names(model)
    properties = schema.get("properties", {})
    for name in sorted(fields.keys() - properties.keys()):
        yield f"{path}.{name} is in {model.__name__} but not in the CRD"
    for name in sorted(properties.keys() - fields.keys()):
        yield f"{path}.{name} is in the CRD but not in {model.__name__}"
    for name, annotation in fields.items():
        nested = _nested_model(annotation)
        if nested is None or name not in properties:
            continue
        prop = properties[name]
        yield from _schema_mismatches(nested, prop.get("items", prop), f"{path}.{name}")


def _default_mismatches(
    model: type[pydantic.BaseModel], schema: dict[str, Any], path: str
) -> Iterator[str]:
    properties = schema["properties"]
    for name, field in model.model_fields.items():
        wire = field.alias or name
        prop = properties[wire]
        where = f"{path}.{wire}"
        if field.is_required():
            if "default" in prop:
                yield f"{where}: required in {model.__name__} but defaulted in the CRD"
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, pydantic.BaseModel):
            if prop.get("default") != {}:
                yield f"{where}: the model defaults to {default!r}, the CRD needs default {{}}"
        elif default in (None, [], {}):
            if "default" in prop:
                yield f"{where}: the CRD defaults to {prop['default']!r}, the model to {default!r}"
        elif prop.get("default") != default:
            yield f"{where}: the CRD defaults to {prop.get('default')!r}, the model to {default!r}"
        nested = _nested_model(field.annotation)
        if nested is not None:
            yield from _default_mismatches(nested, prop.get("items", prop), where)


def _apply_crd_defaults(value: Any, schema: dict[str, Any]) -> None:
    """Default like the API server: missing properties with a default, then recurse."""
    if isinstance(value, dict) and "properties" in schema:
        for key, prop in schema["properties"].items():
            if key not in value and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                _apply_crd_defaults(value[key], prop)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _apply_crd_defaults(item, schema["items"])


def test_crd_is_namespaced_v1alpha1_with_short_name_and_category() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == "modelimages.edgeferry.io"
    assert CRD["spec"]["scope"] == "Namespaced"
    assert CRD["spec"]["names"]["shortNames"] == ["mi"]
    assert CRD["spec"]["names"]["categories"] == ["edgeferry"]
    assert [v["name"] for v in CRD["spec"]["versions"]] == ["v1alpha1"]
    assert VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}


def test_every_field_has_a_type_and_a_description() -> None:
    missing = [
        path
        for path, node in _nodes(ROOT, "")
        if path != ".metadata" and ("type" not in node or not node.get("description"))
    ]
    assert missing == []


def test_metadata_carries_nothing_but_its_type() -> None:
    assert ROOT["properties"]["metadata"] == {"type": "object"}


def test_status_is_a_schema_not_preserved_unknown_fields() -> None:
    assert "x-kubernetes-preserve-unknown-fields" not in STATUS
    assert not any("x-kubernetes-preserve-unknown-fields" in n for _, n in _nodes(ROOT, ""))


def test_every_cel_rule_has_a_message() -> None:
    rules = [
        (path, rule)
        for path, node in [("", ROOT), *_nodes(ROOT, "")]
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert rules
    assert [path for path, rule in rules if not rule.get("message") or not rule.get("rule")] == []


def test_spec_strings_lists_and_maps_are_bounded_for_cel_cost() -> None:
    unbounded = []
    for path, node in _nodes(SPEC, "spec"):
        kind = node.get("type")
        if kind == "string" and not ({"maxLength", "enum", "format"} & node.keys()):
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
    assert unbounded == []


def test_enums_name_every_severity_and_threshold() -> None:
    assert _node(ROOT, "spec.scan.failOn")["enum"] == list(typing.get_args(modelimage.Severity))
    assert _node(ROOT, "spec.lint.failureThreshold")["enum"] == list(
        typing.get_args(modelimage.LintThreshold)
    )
    assert _node(ROOT, "status.phase")["enum"] == list(typing.get_args(modelimage.Phase))


def test_enums_name_every_template_and_model_format() -> None:
    templates = _node(ROOT, "spec.build.runtime.template")["enum"]
    assert templates == list(typing.get_args(modelimage.TemplateName))
    assert templates == list(modelimage.TEMPLATE_FORMATS)
    formats = _node(ROOT, "spec.model.format")["enum"]
    assert set(modelimage.TEMPLATE_FORMATS.values()) < set(formats)


def test_a_cel_rule_ties_each_template_to_its_model_format() -> None:
    rules = [r["rule"] for r in _node(ROOT, "spec")["x-kubernetes-validations"]]
    for template, model_format in modelimage.TEMPLATE_FORMATS.items():
        assert any(
            f"self.build.runtime.template != '{template}'" in rule
            and f"self.model.format == '{model_format}'" in rule
            for rule in rules
        ), (template, rules)


def test_printer_columns_read_fields_the_status_has() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert list(columns)[:5] == ["Phase", "Digest", "Critical", "High", "Age"]
    for column in columns.values():
        path = re.sub(r"\[\?\(.*?\)\]", "[]", column["jsonPath"]).lstrip(".")
        if path.startswith("status."):
            node = _node(ROOT, path)
            assert node["type"] in {"string", "integer"}, column["name"]


def test_spec_fields_match_the_model_fields() -> None:
    assert list(_schema_mismatches(modelimage.ModelImageSpec, SPEC, "spec")) == []


def test_status_fields_match_the_model_fields() -> None:
    assert list(_schema_mismatches(modelimage.ModelImageStatus, STATUS, "status")) == []


def test_crd_defaults_equal_the_model_defaults() -> None:
    assert list(_default_mismatches(modelimage.ModelImageSpec, SPEC, "spec")) == []


def test_spec_defaulted_by_the_crd_means_the_same_as_without_defaults() -> None:
    defaulted = copy.deepcopy(MINIMAL_SPEC)
    _apply_crd_defaults(defaulted, SPEC)
    assert defaulted != MINIMAL_SPEC
    assert modelimage.parse_spec(defaulted) == modelimage.parse_spec(MINIMAL_SPEC)


@pytest.mark.parametrize(
    ("field", "pattern"),
    [
        ("spec.model.sha256", modelimage.SHA256_HEX),
        ("spec.build.runtime.baseImage", modelimage.PINNED_IMAGE),
        ("spec.push.tags[]", modelimage.DOCKER_TAG),
        ("spec.scan.rescanInterval", modelimage.DURATION),
        ("spec.push.repository", modelimage.REGISTRY_HOST),
        ("spec.lint.ignore[]", modelimage.LINT_RULE),
        ("spec.model.source.oci.digest", modelimage.OCI_DIGEST),
        ("spec.model.source.oci.repository", modelimage.REGISTRY_HOST),
        ("spec.model.source.oci.fileName", modelimage.MODEL_FILE_NAME),
        ("spec.model.source.http.url", modelimage.HTTP_URL),
        ("spec.model.source.http.fileName", modelimage.MODEL_FILE_NAME),
    ],
)
def test_cel_rules_and_models_use_the_same_patterns(field: str, pattern: str) -> None:
    assert pattern in _patterns(field)
