"""One source of truth: the Helm chart and the kustomize manifests install the same objects.

Each test renders both sides with matching settings and compares the objects field by field.
What legitimately differs is normalised away and named here: Helm's `helm.sh/chart` and
`app.kubernetes.io/managed-by` labels, and the Namespace object that kustomize creates and Helm
leaves to `--create-namespace`. The chart's copies of the CRDs and of the alert rules must be
byte-identical to the originals.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit import _binaries

REPO = _binaries.REPO
CHART = REPO / "charts" / "edgeferry"
MANIFESTS = REPO / "manifests"
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
UPDATE = os.environ.get("EDGEFERRY_UPDATE_GENERATED") == "1"
"""Set to 1 to rewrite the chart's copies instead of failing on a difference."""

Key = tuple[str, str, str, str]


def _key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def normalise(docs: Iterable[dict[str, Any] | None]) -> dict[Key, dict[str, Any]]:
    objects: dict[Key, dict[str, Any]] = {}
    for doc in docs:
        if not doc:
            continue
        for labels in _label_maps(doc):
            for label in HELM_ONLY_LABELS:
                labels.pop(label, None)
        objects[_key(doc)] = doc
    return objects


def _label_maps(obj: dict[str, Any]) -> list[dict[str, Any]]:
    maps = [obj["metadata"].get("labels") or {}]
    template = obj.get("spec", {}).get("template", {})
    if isinstance(template, dict) and "metadata" in template:
        maps.append(template["metadata"].get("labels") or {})
    return maps


def kustomize(
    *,
    resources: Sequence[Path],
    components: Sequence[Path] = (),
    namespace: str = "",
    tmp_path: Path,
) -> dict[Key, dict[str, Any]]:
    """`kubectl kustomize` of an overlay in tmp_path over the given bases and components."""
    overlay: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(r, tmp_path) for r in resources],
    }
    if components:
        overlay["components"] = [os.path.relpath(c, tmp_path) for c in components]
    if namespace:
        overlay["namespace"] = namespace
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    out = _binaries.run([_binaries.kubectl(), "kustomize", str(tmp_path)])
    return normalise(yaml.safe_load_all(out))


def helm_template(*values: str, include_crds: bool = True) -> dict[Key, dict[str, Any]]:
    command = [_binaries.helm(), "template", "edgeferry", str(CHART)]
    command += ["--namespace", "edgeferry-system"]
    if include_crds:
        command.append("--include-crds")
    for value in values:
        command += ["--set", value]
    return normalise(yaml.safe_load_all(_binaries.run(command)))


def assert_same_objects(helm: dict[Key, dict[str, Any]], kust: dict[Key, dict[str, Any]]) -> None:
    assert sorted(helm) == sorted(kust), "the two installs create different objects"
    for key, expected in kust.items():
        assert helm[key] == expected, f"{key} differs:\n" + _diff(helm[key], expected)


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    import difflib

    left = json.dumps(a, indent=1, sort_keys=True).splitlines()
    right = json.dumps(b, indent=1, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(left, right, "helm", "kustomize", lineterm=""))


def test_chart_defaults_render_the_kustomize_base(tmp_path: Path) -> None:
    kust = kustomize(resources=[MANIFESTS], tmp_path=tmp_path)
    namespace = ("v1", "Namespace", "", "edgeferry-system")
    assert namespace in kust, "the kustomize base creates its namespace"
    del kust[namespace]
    assert_same_objects(helm_template(), kust)


def test_monitoring_toggle_renders_the_monitoring_component(tmp_path: Path) -> None:
    kust = kustomize(
        resources=[MANIFESTS], components=[MANIFESTS / "monitoring"], tmp_path=tmp_path
    )
    del kust[("v1", "Namespace", "", "edgeferry-system")]
    assert_same_objects(helm_template("monitoring.enabled=true"), kust)


@pytest.mark.parametrize(
    ("base", "value"),
    [
        ("namespace-access", "rbac.namespaces={team-a}"),
        ("workload-access", "rbac.workloadNamespaces={team-a}"),
    ],
)
def test_per_namespace_grants_match_the_chart_values(base: str, value: str, tmp_path: Path) -> None:
    kust = kustomize(resources=[MANIFESTS / base], namespace="team-a", tmp_path=tmp_path)
    helm = {k: v for k, v in helm_template(value).items() if k[1] == "RoleBinding"}
    assert_same_objects(helm, kust)


def test_watched_namespaces_are_also_granted() -> None:
    objects = helm_template("watchNamespaces={ml,edge}", "rbac.namespaces={ml}")
    bindings = sorted(k[2] for k in objects if k[1] == "RoleBinding")
    assert bindings == ["edge", "ml"]
    deployment = objects[("apps/v1", "Deployment", "edgeferry-system", "edgeferry")]
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["EDGEFERRY_NAMESPACES"] == "ml,edge"


@pytest.mark.parametrize(
    "crd", sorted(p.name for p in (REPO / "crds").glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_chart_crds_are_byte_identical_to_crds_dir(crd: str) -> None:
    _same_bytes(REPO / "crds" / crd, CHART / "crds" / crd)


def test_chart_has_no_crd_that_crds_dir_lacks() -> None:
    originals = {p.name for p in (REPO / "crds").glob("*.yaml")} - {"kustomization.yaml"}
    assert {p.name for p in (CHART / "crds").glob("*.yaml")} == originals


def test_chart_rules_are_byte_identical_to_the_plain_rules_file() -> None:
    _same_bytes(
        MANIFESTS / "monitoring" / "edgeferry-rules.yaml", CHART / "files" / "edgeferry-rules.yaml"
    )


def _same_bytes(original: Path, copy: Path) -> None:
    if UPDATE and (not copy.exists() or copy.read_bytes() != original.read_bytes()):
        copy.write_bytes(original.read_bytes())
    assert copy.exists() and copy.read_bytes() == original.read_bytes(), (
        f"{copy.relative_to(REPO)} is not a copy of {original.relative_to(REPO)}; "
        "regenerate with EDGEFERRY_UPDATE_GENERATED=1 .venv/bin/pytest "
        "tests/unit/test_install_parity.py"
    )
