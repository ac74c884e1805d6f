"""The Deployment and Service edgeferry applies at one target."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from edgeferry.decisions import workload
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import release, target_objects

DIGEST = "registry.local:5000/models/iris@sha256:" + "1" * 64
PREVIOUS = "registry.local:5000/models/iris@sha256:" + "0" * 64
STARTED = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def spec(**template: Any) -> md.ModelDeploymentSpec:
    return md.ModelDeploymentSpec.model_validate(
        {
            "imageRef": {"name": "iris"},
            "targets": {"selector": {"matchLabels": {"region": "eu"}}},
            "template": template,
            "rollout": {"minReadySeconds": 15, "progressDeadlineSeconds": 300},
        }
    )


def cloud(**extra: Any) -> et.EdgeTargetSpec:
    return et.EdgeTargetSpec.model_validate({"type": "Cloud", "namespace": "models", **extra})


def k3s(**extra: Any) -> et.EdgeTargetSpec:
    return et.EdgeTargetSpec.model_validate(
        {
            "type": "K3s",
            "namespace": "edge-models",
            "k3s": {"kubeconfigSecretRef": {"name": "edge-a"}},
            **extra,
        }
    )


def record(**kw: Any) -> release.TargetRecord:
    kw.setdefault("digest", DIGEST)
    kw.setdefault("architectures", ("arm64",))
    return release.TargetRecord(**kw)


def render(
    *,
    template: dict[str, Any] | None = None,
    target: et.EdgeTargetSpec | None = None,
    rec: release.TargetRecord | None = None,
    name: str = "iris",
) -> target_objects.Workload:
    return workload.render(
        namespace="ml",
        name=name,
        spec=spec(**(template or {})),
        target=target or cloud(),
        record=rec or record(),
    )


def pod_spec(w: target_objects.Workload) -> dict[str, Any]:
    result: dict[str, Any] = w.deployment["spec"]["template"]["spec"]
    return result


def container(w: target_objects.Workload) -> dict[str, Any]:
    result: dict[str, Any] = pod_spec(w)["containers"][0]
    return result


# --- image ---------------------------------------------------------------------------------------
def test_image_is_pinned_by_digest() -> None:
    assert container(render())["image"] == DIGEST


def test_tag_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="sha256"):
        render(rec=record(digest="registry.local:5000/models/iris:latest"))


def test_registry_mirror_replaces_the_registry_host() -> None:
    w = render(target=k3s(registryMirror="mirror.site-a.local:5000"))
    assert container(w)["image"] == "mirror.site-a.local:5000/models/iris@sha256:" + "1" * 64


def test_registry_mirror_with_a_path_prefix_keeps_the_repository_path() -> None:
    ref = workload.image_reference(DIGEST, registry_mirror="harbor.local/proxy/")
    assert ref == "harbor.local/proxy/models/iris@sha256:" + "1" * 64


def test_registry_mirror_for_a_docker_hub_image_uses_the_library_path() -> None:
    ref = workload.image_reference("python@sha256:" + "a" * 64, registry_mirror="m.local")
    assert ref == "m.local/library/python@sha256:" + "a" * 64


def test_image_is_pulled_only_when_missing() -> None:
    assert container(render())["imagePullPolicy"] == "IfNotPresent"


# --- identity ------------------------------------------------------------------------------------
def test_objects_are_named_after_the_model_deployment_in_the_target_namespace() -> None:
    w = render(target=k3s())
    for obj in (w.deployment, w.service):
        assert obj["metadata"]["name"] == "iris"
        assert obj["metadata"]["namespace"] == "edge-models"


def test_labels_name_the_app_the_manager_and_the_owning_deployment() -> None:
    labels = render().deployment["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "iris",
        "app.kubernetes.io/managed-by": "edgeferry",
        "edgeferry.io/deployment": "ml.iris",
    }


def test_selector_does_not_change_with_the_digest() -> None:
    first = render(rec=record(digest=PREVIOUS)).deployment["spec"]["selector"]
    second = render(rec=record(digest=DIGEST)).deployment["spec"]["selector"]
    assert first == second == {"matchLabels": target_objects.selector_labels("ml", "iris")}


def test_long_names_are_cut_to_a_dns_label_with_a_hash() -> None:
    long_name = "a" * 80
    name = target_objects.workload_name(long_name)
    assert len(name) <= 63
    assert name != target_objects.workload_name("a" * 81)


def test_names_become_dns_1035_labels() -> None:
    assert target_objects.workload_name("iris.v2") == "iris-v2"
    assert target_objects.workload_name("3dmodel") == "md-3dmodel"


def test_owner_label_fits_a_label_value() -> None:
    value = target_objects.owner_label("n" * 63, "m" * 200)
    assert len(value) <= 63
    assert value[-1].isalnum()


def test_objects_of_another_owner_are_not_ours() -> None:
    labels = render().deployment["metadata"]["labels"]
    assert target_objects.is_ours(labels, namespace="ml", name="iris")
    assert not target_objects.is_ours(labels, namespace="other", name="iris")
    assert not target_objects.is_ours({}, namespace="ml", name="iris")


def test_label_selector_finds_what_one_model_deployment_made() -> None:
    selector = target_objects.label_selector("ml", "iris")
    assert selector == "edgeferry.io/deployment=ml.iris,app.kubernetes.io/managed-by=edgeferry"


# --- the record ----------------------------------------------------------------------------------
def test_digest_and_previous_digest_are_annotated_on_the_deployment() -> None:
    annotations = render(rec=record(previous_digest=PREVIOUS)).deployment["metadata"]["annotations"]
    assert annotations["edgeferry.io/digest"] == DIGEST
    assert annotations["edgeferry.io/previous-digest"] == PREVIOUS


def test_record_round_trips_through_annotations() -> None:
    full = release.TargetRecord(
        digest=DIGEST,
        previous_digest=PREVIOUS,
        started_at=STARTED,
        ready_at=STARTED + dt.timedelta(seconds=40),
        rolled_back_from="r@sha256:" + "9" * 64,
        rolled_back_generation=3,
        rolled_back_because="pods clearly fail 12s after the write, before its 600s deadline",
        architectures=("amd64", "arm64"),
        previous_architectures=("arm64",),
    )
    assert release.record_from_annotations(release.record_annotations(full)) == full


def test_the_rollback_reason_is_kept_bounded_on_the_deployment() -> None:
    long = release.TargetRecord(digest=DIGEST, rolled_back_because="x" * 1000)
    kept = release.record_annotations(long)["edgeferry.io/rolled-back-because"]
    assert len(kept) == release.REASON_LIMIT and kept.endswith("...")
    found = release.record_from_annotations(release.record_annotations(long))
    assert found is not None and found.rolled_back_because == kept
    edited = release.record_from_annotations(
        {"edgeferry.io/digest": DIGEST, "edgeferry.io/rolled-back-because": "y" * 1000}
    )
    assert edited is not None and edited.rolled_back_because == "y" * 297 + "..."


def test_unset_record_fields_are_left_out_so_apply_removes_them() -> None:
    assert release.record_annotations(release.TargetRecord(digest=DIGEST)) == {
        "edgeferry.io/digest": DIGEST
    }


def test_hand_edited_annotations_read_as_unset() -> None:
    found = release.record_from_annotations(
        {
            "edgeferry.io/digest": DIGEST,
            "edgeferry.io/started-at": "yesterday",
            "edgeferry.io/rolled-back-generation": "three",
        }
    )
    assert found == release.TargetRecord(digest=DIGEST)


def test_deployment_without_a_digest_annotation_has_no_record() -> None:
    assert release.record_from_annotations({"other": "x"}) is None
    assert release.record_from_annotations(None) is None


def test_record_annotations_stay_off_the_pod_template() -> None:
    pod_annotations = render().deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert not any(k.startswith("edgeferry.io/") for k in pod_annotations)


# --- placement -----------------------------------------------------------------------------------
def test_node_selector_pins_os_architecture_and_the_cloud_selector() -> None:
    w = render(target=cloud(cloud={"nodeSelector": {"pool": "gpu"}}))
    assert pod_spec(w)["nodeSelector"] == {
        "pool": "gpu",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "arm64",
    }


def test_several_architectures_use_node_affinity_instead() -> None:
    w = render(rec=record(architectures=("amd64", "arm64")))
    assert "kubernetes.io/arch" not in pod_spec(w)["nodeSelector"]
    term = pod_spec(w)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}
    ]


def test_unpinned_record_only_pins_the_os() -> None:
    w = render(rec=record(architectures=()))
    assert pod_spec(w)["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "affinity" not in pod_spec(w)


def test_cloud_tolerations_reach_the_pods() -> None:
    tolerations = [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    w = render(target=cloud(cloud={"tolerations": tolerations}))
    assert pod_spec(w)["tolerations"] == tolerations


def test_k3s_target_without_placement_only_pins_os_and_architecture() -> None:
    w = render(target=k3s())
    assert pod_spec(w)["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "arm64",
    }
    assert "tolerations" not in pod_spec(w)


def test_k3s_node_selector_and_tolerations_reach_the_pods_at_the_site() -> None:
    tolerations = [{"key": "edgeferry.io/real-node", "value": "true", "effect": "NoSchedule"}]
    section = {
        "kubeconfigSecretRef": {"name": "edge-a"},
        "nodeSelector": {"edgeferry.io/node-kind": "real"},
        "tolerations": tolerations,
    }
    w = render(target=k3s(k3s=section))
    assert pod_spec(w)["nodeSelector"] == {
        "edgeferry.io/node-kind": "real",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "arm64",
    }
    assert pod_spec(w)["tolerations"] == [{"operator": "Equal", **tolerations[0]}]


def test_k3s_selector_on_architecture_gives_way_to_the_checked_architectures() -> None:
    section = {
        "kubeconfigSecretRef": {"name": "edge-a"},
        "nodeSelector": {"kubernetes.io/arch": "x"},
    }
    w = render(target=k3s(k3s=section), rec=record(architectures=("amd64", "arm64")))
    assert pod_spec(w)["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "affinity" in pod_spec(w)


# --- the template --------------------------------------------------------------------------------
def test_template_resources_env_and_probes_reach_the_container() -> None:
    w = render(
        template={
            "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
            "env": [
                {"name": "THREADS", "value": "2"},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            ],
            "readinessProbe": {"httpGet": {"path": "/healthz"}, "periodSeconds": 3},
            "livenessProbe": {"tcpSocket": {"port": 9000}, "initialDelaySeconds": 30},
        }
    )
    c = container(w)
    assert c["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}
    assert c["env"] == [
        {"name": "THREADS", "value": "2"},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    assert c["readinessProbe"] == {
        "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
        "periodSeconds": 3,
    }
    assert c["livenessProbe"] == {"tcpSocket": {"port": 9000}, "initialDelaySeconds": 30}


def test_template_labels_and_annotations_reach_the_pods() -> None:
    w = render(template={"labels": {"team": "ml"}, "annotations": {"prometheus.io/scrape": "1"}})
    meta = w.deployment["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "ml"
    assert meta["annotations"] == {"prometheus.io/scrape": "1"}


def test_template_labels_cannot_override_the_selector_labels() -> None:
    w = render(template={"labels": {"app.kubernetes.io/name": "other", "edgeferry.io/x": "1"}})
    labels = w.deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "iris"
    assert "edgeferry.io/x" not in labels


def test_default_readiness_probe_checks_the_model_port() -> None:
    assert container(render())["readinessProbe"] == {
        "tcpSocket": {"port": "http"},
        "periodSeconds": 5,
    }


def test_replicas_and_port_come_from_the_template() -> None:
    w = render(template={"replicas": 3, "port": 9000})
    assert w.deployment["spec"]["replicas"] == 3
    assert container(w)["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]


def test_pods_run_non_root_read_only_without_capabilities() -> None:
    w = render()
    assert pod_spec(w)["securityContext"]["runAsNonRoot"] is True
    assert pod_spec(w)["automountServiceAccountToken"] is False
    assert container(w)["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_read_only_root_filesystem_comes_with_a_scratch_tmp() -> None:
    w = render()
    assert container(w)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod_spec(w)["volumes"][0]["emptyDir"] == {"sizeLimit": workload.TMP_SIZE_LIMIT}


def test_rollout_timings_and_a_short_history_are_set_on_the_deployment() -> None:
    deployment_spec = render().deployment["spec"]
    assert deployment_spec["minReadySeconds"] == 15
    assert deployment_spec["progressDeadlineSeconds"] == 300
    assert deployment_spec["revisionHistoryLimit"] == workload.REVISION_HISTORY_LIMIT


def test_service_exposes_the_model_port_to_the_pods() -> None:
    service = render(template={"port": 9000}).service
    assert service["spec"]["selector"] == target_objects.selector_labels("ml", "iris")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}
    ]


# --- the template carried by the record ----------------------------------------------------------
FULL_TEMPLATE: dict[str, Any] = {
    "replicas": 3,
    "port": 9000,
    "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},
    "env": [{"name": "MODE", "value": "fast"}],
    "readinessProbe": {"httpGet": {"path": "/healthz"}, "periodSeconds": 3},
    "labels": {"team": "ml"},
    "annotations": {"note": "x"},
}


def test_template_document_is_canonical_and_leaves_out_replicas_and_defaults() -> None:
    document = workload.template_document(spec(**FULL_TEMPLATE).template)
    reordered = dict(reversed(list(FULL_TEMPLATE.items())))
    assert document == workload.template_document(spec(**reordered).template)
    assert '"replicas"' not in document
    assert workload.template_document(spec().template) == "{}"
    assert workload.template_document(spec(replicas=7).template) == "{}"


def test_template_document_round_trips_to_the_same_template() -> None:
    template = spec(**FULL_TEMPLATE).template
    back = workload.template_from_document(
        workload.template_document(template), fallback=spec(replicas=3).template
    )
    assert back == template


def test_render_takes_the_template_from_the_record_and_replicas_from_the_spec() -> None:
    old = workload.template_document(spec(port=9000, env=[{"name": "V", "value": "1"}]).template)
    w = render(template={"port": 8080, "replicas": 4}, rec=record(template=old))
    container = pod_spec(w)["containers"][0]
    assert container["ports"][0]["containerPort"] == 9000
    assert container["env"] == [{"name": "V", "value": "1"}]
    assert w.service["spec"]["ports"][0]["port"] == 9000
    assert w.deployment["spec"]["replicas"] == 4


def test_record_without_a_template_renders_the_spec_template() -> None:
    w = render(template={"port": 8081}, rec=record())
    assert pod_spec(w)["containers"][0]["ports"][0]["containerPort"] == 8081


def test_hand_edited_template_annotation_falls_back_to_the_spec_template() -> None:
    w = render(template={"port": 8082}, rec=record(template="{not json"))
    assert pod_spec(w)["containers"][0]["ports"][0]["containerPort"] == 8082


def test_templates_round_trip_through_annotations() -> None:
    rec = record(template='{"port":9000}', previous_template='{"port":8080}')
    annotations = release.record_annotations(rec)
    assert annotations[release.TEMPLATE] == '{"port":9000}'
    assert release.record_from_annotations(annotations) == rec
