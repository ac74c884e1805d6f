"""Installing edgeferry on the hub: kustomize and Helm, idempotence, and what the RBAC allows.

The kustomize base is applied for real (server-side) into `edgeferry-system`; the Helm chart is
rendered and applied under other release names, and installed and uninstalled with `helm`. What
the operator's ServiceAccount may do is asked of the API server itself (`kubectl auth can-i
--as`), so the answers are the real authorizer's. Everything created here is deleted again,
except the CRDs, which the rest of the testbed uses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeferry_testbed import handles, layout, operator_process, samples, testbed

pytestmark = pytest.mark.integration

REPO = layout.REPO_ROOT
MANIFESTS = REPO / "manifests"
CHART = REPO / "charts" / "edgeferry"
NAMESPACE = "edgeferry-system"
SA = f"system:serviceaccount:{NAMESPACE}:edgeferry"
FIELD_MANAGER = "edgeferry-install-test"


def kubectl(hub: handles.Cluster, *args: str, stdin: str | None = None) -> str:
    done = hub.kubectl(*args, stdin=stdin, check=False, timeout=300)
    assert done.returncode == 0, f"kubectl {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def helm(bed: handles.Testbed, *args: str) -> str:
    command = [bed.env.tools["helm"], f"--kubeconfig={bed.hub.kubeconfig}", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def render(bed: handles.Testbed, release: str, namespace: str, *extra: str) -> str:
    return helm(bed, "template", release, str(CHART), "--namespace", namespace, *extra)


def without_crds(manifest: str) -> str:
    docs = [
        d for d in yaml.safe_load_all(manifest) if d and d["kind"] != "CustomResourceDefinition"
    ]
    return yaml.safe_dump_all(docs)


def overlay(tmp_path: Path, base: str, namespace: str) -> Path:
    """A kustomize overlay granting one namespace, the way a user would write it."""
    directory = tmp_path / f"{base}-{namespace}"
    directory.mkdir()
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"namespace": namespace, "resources": [os.path.relpath(MANIFESTS / base, directory)]}
        )
    )
    return directory


def can_i(hub: handles.Cluster, verb: str, resource: str, *flags: str) -> bool:
    done = hub.kubectl("auth", "can-i", verb, resource, f"--as={SA}", *flags, check=False)
    answer = done.stdout.strip()
    assert answer in {"yes", "no"}, f"can-i {verb} {resource} {flags}: {done.stderr}"
    return answer == "yes"


@pytest.fixture(scope="module")
def base_manifest(hub: handles.Cluster) -> str:
    return kubectl(hub, "kustomize", str(MANIFESTS))


@pytest.fixture(scope="module")
def installed(hub: handles.Cluster, base_manifest: str) -> Iterator[str]:
    """The kustomize base applied server-side, as `kubectl apply --server-side -k manifests/`.

    `--force-conflicts` only because the testbed applied the CRDs under its own field manager.
    A namespace still terminating from an earlier run is waited out first.
    """
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        phase = hub.kubectl(
            "get", "namespace", NAMESPACE, "-o", "jsonpath={.status.phase}", check=False
        ).stdout
        if phase != "Terminating":
            break
        time.sleep(2)
    # The testbed's operator may already run on this ServiceAccount's token (the suite's
    # default identity): then only what this fixture adds beyond it is removed afterwards.
    shared = (
        hub.kubectl("get", "serviceaccount", "edgeferry", "-n", NAMESPACE, check=False).returncode
        == 0
    )
    out = kubectl(
        hub,
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}",
        "-k",
        str(MANIFESTS),
    )
    yield out
    if shared:
        hub.kubectl(
            "-n", NAMESPACE, "delete", "deployment", "edgeferry", "--ignore-not-found", check=False
        )
        return
    hub.kubectl(
        "delete",
        "--ignore-not-found",
        "--wait=false",
        "-f",
        "-",
        stdin=without_crds(base_manifest),
        check=False,
    )


@pytest.fixture
def scratch_namespaces(hub: handles.Cluster) -> Iterator[list[str]]:
    names = [f"edgeferry-it-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    for name in names:
        kubectl(hub, "create", "namespace", name)
    yield names
    for name in names:
        hub.kubectl("delete", "namespace", name, "--wait=false", check=False)


# --- kustomize ---------------------------------------------------------------------------------


def test_kustomize_base_passes_a_server_side_dry_run(
    hub: handles.Cluster, installed: str, base_manifest: str
) -> None:
    out = kubectl(
        hub,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        f"--field-manager={FIELD_MANAGER}",
        "-k",
        str(MANIFESTS),
    )
    objects = [d for d in yaml.safe_load_all(base_manifest) if d]
    assert out.count("(server dry run)") == len(objects), out


def test_kustomize_base_applies_every_object(installed: str, base_manifest: str) -> None:
    objects = [d for d in yaml.safe_load_all(base_manifest) if d]
    assert installed.count("serverside-applied") == len(objects), installed
    kinds = {d["kind"] for d in objects}
    assert kinds == {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    }


def test_applying_the_base_twice_changes_nothing(hub: handles.Cluster, installed: str) -> None:
    for _ in range(2):
        done = hub.kubectl(
            "diff",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            "-k",
            str(MANIFESTS),
            check=False,
        )
        assert done.returncode == 0, f"kubectl diff found changes:\n{done.stdout}{done.stderr}"
        kubectl(
            hub,
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            "-k",
            str(MANIFESTS),
        )


def test_operator_pod_is_admitted_by_pod_security_restricted(
    hub: handles.Cluster, installed: str
) -> None:
    """The namespace enforces `restricted`; a non-compliant template would never get a Pod."""
    labels = yaml.safe_load(kubectl(hub, "get", "namespace", NAMESPACE, "-o", "yaml"))
    assert labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deployment = hub.wait_deployment_available(NAMESPACE, "edgeferry", timeout=120)
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pods = yaml.safe_load(
        kubectl(
            hub,
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-o",
            "yaml",
            "-l",
            "app.kubernetes.io/component=operator",
        )
    )
    assert len(pods["items"]) == 1


# --- what the ServiceAccount may do -------------------------------------------------------------


def test_service_account_reads_and_patches_its_own_resources(
    hub: handles.Cluster, installed: str
) -> None:
    for resource in ("modelimages", "edgetargets", "modeldeployments"):
        for verb in ("get", "list", "watch", "patch"):
            assert can_i(hub, verb, f"{resource}.edgeferry.io", "--all-namespaces")
        assert can_i(hub, "patch", f"{resource}.edgeferry.io", "--subresource=status", "-n", "x")
        for verb in ("create", "update", "delete", "deletecollection"):
            assert not can_i(hub, verb, f"{resource}.edgeferry.io", "-n", "x"), verb
    assert can_i(hub, "create", "events", "-n", "x")
    assert can_i(hub, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert can_i(hub, "list", "namespaces")
    assert can_i(hub, "list", "nodes")


def test_service_account_cannot_write_outside_its_resources(
    hub: handles.Cluster, installed: str
) -> None:
    forbidden = [
        ("delete", "nodes"),
        ("patch", "nodes"),
        ("create", "clusterroles"),
        ("create", "clusterrolebindings"),
        ("bind", "clusterroles"),
        ("bind", "clusterroles/cluster-admin"),
        ("escalate", "clusterroles"),
        ("patch", "namespaces"),
        ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        ("impersonate", "serviceaccounts"),
    ]
    for verb, resource in forbidden:
        assert not can_i(hub, verb, resource, "--all-namespaces"), (verb, resource)
    # A token for any ServiceAccount (the subresource; `serviceaccounts/token` would ask about a
    # ServiceAccount named token, which registration may create).
    assert not can_i(hub, "create", "serviceaccounts", "--subresource=token", "--all-namespaces")
    for verb, resource in [
        ("create", "pods"),
        ("create", "pods/exec"),
        ("create", "secrets"),
        ("patch", "configmaps"),
        ("create", "deployments.apps"),
    ]:
        assert not can_i(hub, verb, resource, "-n", "kube-system"), (verb, resource)
    assert not can_i(hub, "*", "*", "--all-namespaces")


def test_service_account_may_register_agents_and_bind_only_the_agent_role(
    hub: handles.Cluster, installed: str
) -> None:
    # Pull mode: the operator creates each Agent target's hub namespace, its ServiceAccount and
    # a RoleBinding to edgeferry-agent there (and deletes the namespace it labelled); binding
    # any other ClusterRole stays refused, so those rights grant nothing beyond the agent's.
    for verb, resource in [
        ("create", "namespaces"),
        ("delete", "namespaces"),
        ("create", "serviceaccounts"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("bind", "clusterroles/edgeferry-agent"),
    ]:
        assert can_i(hub, verb, resource, "--all-namespaces"), (verb, resource)
    assert not can_i(hub, "bind", "clusterroles/edgeferry-operator", "--all-namespaces")


def test_service_account_reads_secrets_only_in_namespaces_it_serves(
    hub: handles.Cluster, installed: str, scratch_namespaces: list[str], tmp_path: Path
) -> None:
    served, unserved, _ = scratch_namespaces
    for verb in ("get", "list"):
        assert not can_i(hub, verb, "secrets", "-n", served), "before the grant"
    kubectl(hub, "apply", "-k", str(overlay(tmp_path, "namespace-access", served)))
    assert can_i(hub, "get", "secrets", "-n", served)
    assert can_i(hub, "get", "configmaps", "-n", served)
    assert not can_i(hub, "list", "secrets", "-n", served), "get by name only, never list"
    assert not can_i(hub, "get", "secrets", "-n", unserved)
    assert not can_i(hub, "get", "configmaps", "-n", unserved)
    assert not can_i(hub, "get", "secrets", "-n", "kube-system")
    assert not can_i(hub, "get", "secrets", "--all-namespaces")
    assert not can_i(hub, "create", "secrets", "-n", served)


def test_service_account_deploys_only_into_granted_workload_namespaces(
    hub: handles.Cluster, installed: str, scratch_namespaces: list[str], tmp_path: Path
) -> None:
    _, other, workloads = scratch_namespaces
    kubectl(hub, "apply", "-k", str(overlay(tmp_path, "workload-access", workloads)))
    for verb in ("create", "patch", "delete", "get"):
        assert can_i(hub, verb, "deployments.apps", "-n", workloads), verb
        assert can_i(hub, verb, "services", "-n", workloads), verb
        assert can_i(hub, verb, "daemonsets.apps", "-n", workloads), verb  # rollout.prePull
        assert not can_i(hub, verb, "deployments.apps", "-n", other), verb
    assert can_i(hub, "list", "pods", "-n", workloads)
    assert not can_i(hub, "create", "pods", "-n", workloads)
    assert not can_i(hub, "get", "secrets", "-n", workloads)


def sa_kubeconfig(hub: handles.Cluster, path: Path) -> Path:
    """A kubeconfig for the operator's ServiceAccount, with a short-lived TokenRequest token."""
    token = kubectl(hub, "-n", NAMESPACE, "create", "token", "edgeferry", "--duration=10m").strip()
    config = yaml.safe_load(Path(hub.kubeconfig).read_text())
    cluster = config["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "edgeferry", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "edgeferry",
                        "context": {"cluster": cluster["name"], "user": "edgeferry"},
                    }
                ],
                "current-context": "edgeferry",
            }
        )
    )
    return path


def as_operator(
    hub: handles.Cluster, kubeconfig: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl with the operator's ServiceAccount token."""
    return subprocess.run(
        [hub.kubectl_path, f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_service_account_token_makes_the_operators_calls(
    hub: handles.Cluster, installed: str, scratch_namespaces: list[str], tmp_path: Path
) -> None:
    """The operator's own calls, with a token of its ServiceAccount: the hub adapter reads a
    ConfigMap and a Secret where the namespace is served and gets 403 where it is not; Kopf's
    list/watch, metadata patches, status patches and events are allowed; deleting is not."""
    served, unserved, _ = scratch_namespaces
    kubectl(hub, "apply", "-k", str(overlay(tmp_path, "namespace-access", served)))
    for namespace in (served, unserved):
        kubectl(hub, "-n", namespace, "create", "configmap", "model", "--from-literal=k=v")
        kubectl(hub, "-n", namespace, "create", "secret", "generic", "push", "--from-literal=k=v")
    kubeconfig = sa_kubeconfig(hub, tmp_path / "edgeferry.kubeconfig")

    probe = (
        "import sys\n"
        "from kubernetes.client import exceptions\n"
        "from edgeferry.adapters import hub\n"
        "for ns in sys.argv[1:]:\n"
        "    try:\n"
        "        print(ns, hub.config_map_files(ns, 'model'), hub.secret_data(ns, 'push'))\n"
        "    except exceptions.ApiException as exc:\n"
        "        print(ns, exc.status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, served, unserved],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"{served} {{'k': b'v'}} {{'k': b'v'}}" in done.stdout
    assert f"{unserved} 403" in done.stdout

    listed = as_operator(hub, kubeconfig, "get", "modelimages,edgetargets,modeldeployments", "-A")
    assert listed.returncode == 0, listed.stderr
    watched = as_operator(
        hub,
        kubeconfig,
        "get",
        "--raw",
        "/apis/edgeferry.io/v1alpha1/modelimages?watch=1&timeoutSeconds=1",
    )
    assert watched.returncode == 0, watched.stderr

    image = {
        "apiVersion": "edgeferry.io/v1alpha1",
        "kind": "ModelImage",
        "metadata": {"name": "rbac-probe", "namespace": served},
        "spec": {
            "model": {
                "format": "custom",
                "sha256": "0" * 64,
                "source": {"configMap": {"name": "model", "key": "k"}},
            },
            "build": {"dockerfile": "FROM scratch\n"},
            "push": {"repository": "127.0.0.1:5000/rbac/probe", "tags": ["probe"]},
            "smokeTest": {"enabled": False},
        },
    }
    manifest = yaml.safe_dump(image)
    created = as_operator(hub, kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=manifest)
    assert created.returncode != 0 and "forbidden" in created.stderr.lower()
    kubectl(hub, "create", "-f", "-", stdin=manifest)
    target = ("-n", served, "modelimage/rbac-probe", "--dry-run=server", "--type=merge")
    annotated = as_operator(
        hub,
        kubeconfig,
        "patch",
        *target,
        "-p",
        '{"metadata":{"annotations":{"edgeferry.io/probe":"1"}}}',
    )
    assert annotated.returncode == 0, annotated.stderr
    status = as_operator(
        hub,
        kubeconfig,
        "patch",
        *target,
        "--subresource=status",
        "-p",
        '{"status":{"phase":"Pending"}}',
    )
    assert status.returncode == 0, status.stderr
    deleted = as_operator(
        hub, kubeconfig, "-n", served, "delete", "modelimage", "rbac-probe", "--dry-run=server"
    )
    assert deleted.returncode != 0 and "forbidden" in deleted.stderr.lower()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "rbac-probe-", "namespace": served},
        "involvedObject": {
            "apiVersion": "edgeferry.io/v1alpha1",
            "kind": "ModelImage",
            "name": "rbac-probe",
            "namespace": served,
        },
        "reason": "Probe",
        "message": "RBAC probe",
        "type": "Normal",
    }
    posted = as_operator(
        hub, kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(event)
    )
    assert posted.returncode == 0, posted.stderr


# --- Helm ---------------------------------------------------------------------------------------


def test_helm_template_passes_a_server_side_dry_run(
    hub: handles.Cluster, testbed_handle: handles.Testbed, installed: str
) -> None:
    manifest = render(testbed_handle, "edgeferry", NAMESPACE, "--include-crds")
    out = kubectl(hub, "apply", "--dry-run=server", "-f", "-", stdin=manifest)
    objects = [d for d in yaml.safe_load_all(manifest) if d]
    assert out.count("(server dry run)") == len(objects), out


def test_helm_template_applies_under_another_release(
    hub: handles.Cluster, testbed_handle: handles.Testbed
) -> None:
    release, namespace = "ef-tmpl", f"edgeferry-tmpl-{uuid.uuid4().hex[:6]}"
    manifest = render(
        testbed_handle, release, namespace, "--set", f"rbac.namespaces={{{namespace}}}"
    )
    kubectl(hub, "create", "namespace", namespace)
    try:
        out = kubectl(hub, "apply", "-f", "-", stdin=manifest)
        assert "deployment.apps/ef-tmpl-edgeferry created" in out
        assert "clusterrole.rbac.authorization.k8s.io/ef-tmpl-edgeferry-operator created" in out
        done = hub.kubectl("diff", "-f", "-", stdin=manifest, check=False)
        assert done.returncode == 0, done.stdout
    finally:
        hub.kubectl("delete", "--ignore-not-found", "-f", "-", stdin=manifest, check=False)
        hub.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_helm_install_and_uninstall(hub: handles.Cluster, testbed_handle: handles.Testbed) -> None:
    release, namespace = "ef-helm", f"edgeferry-helm-{uuid.uuid4().hex[:6]}"
    try:
        helm(
            testbed_handle,
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--create-namespace",
            "--wait",
            "--timeout",
            "180s",
            "--set",
            f"watchNamespaces={{{namespace}}}",
        )
        status = helm(testbed_handle, "status", release, "--namespace", namespace)
        assert "STATUS: deployed" in status
        sa = f"--as=system:serviceaccount:{namespace}:{release}-edgeferry"
        done = hub.kubectl("auth", "can-i", "get", "secrets", "-n", namespace, sa, check=False)
        assert done.stdout.strip() == "yes", "a watched namespace is granted"
        helm(testbed_handle, "uninstall", release, "--namespace", namespace, "--wait")
        left = hub.kubectl("get", "clusterrole", f"{release}-edgeferry-operator", check=False)
        assert left.returncode != 0, "uninstall removes the cluster-scoped objects"
        crds = kubectl(hub, "get", "crd", "-o", "name")
        assert "modelimages.edgeferry.io" in crds, "CRDs stay (Helm never deletes crds/)"
    finally:
        subprocess.run(
            [
                testbed_handle.env.tools["helm"],
                f"--kubeconfig={hub.kubeconfig}",
                "uninstall",
                release,
                "--namespace",
                namespace,
                "--ignore-not-found",
            ],
            capture_output=True,
            check=False,
        )
        hub.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --- GitOps: the operator never writes spec, so a re-apply is a no-op -----------------------------


@pytest.fixture(scope="module")
def image_operator(testbed_handle: handles.Testbed) -> Iterator[None]:
    bed = testbed.Testbed()
    started = bed.sup.find("operator") is None
    operator_process.start(bed, testbed_handle.env)
    yield
    if started:
        operator_process.stop(bed)


def test_reapplying_a_reconciled_model_image_changes_nothing(
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    image_operator: None,
    unique_name: str,
) -> None:
    lay = layout.default_layout()
    with hub.api_client() as api:
        samples.install_inputs(api, unique_name, lay, testbed_handle.env)
    operator_process.grant_namespace(testbed_handle.env, unique_name)
    try:
        doc = samples.render(
            samples.SAMPLES / "modelimage-iris.yaml", samples.placeholders(lay, testbed_handle.env)
        )[0]
        manifest = yaml.safe_dump(doc)
        kubectl(hub, "-n", unique_name, "apply", "-f", "-", stdin=manifest)
        obj = _wait_ready(hub, unique_name, "iris")
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
        done = hub.kubectl("-n", unique_name, "diff", "-f", "-", stdin=manifest, check=False)
        assert done.returncode == 0, f"the operator changed what was applied:\n{done.stdout}"
        out = kubectl(hub, "-n", unique_name, "apply", "-f", "-", stdin=manifest)
        assert "unchanged" in out
        assert _spec_writers(hub, unique_name, "iris") == {"kubectl-client-side-apply"}
    finally:
        hub.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


def test_operator_owns_no_spec_field_of_any_resource_applied_with_kubectl(
    hub: handles.Cluster,
) -> None:
    """Across every edgeferry object on the hub: where kubectl applied the spec, nobody else
    (Kopf, the operator's status client) owns a field of it."""
    for plural in ("modelimages", "edgetargets", "modeldeployments"):
        listing = yaml.safe_load(
            kubectl(hub, "get", plural, "-A", "-o", "yaml", "--show-managed-fields")
        )
        for item in listing["items"]:
            writers = _spec_writers_of(item)
            if any(w.startswith("kubectl") for w in writers):
                meta = item["metadata"]
                assert all(w.startswith("kubectl") for w in writers), (
                    f"{plural} {meta['namespace']}/{meta['name']}: spec written by {writers}"
                )


def _wait_ready(hub: handles.Cluster, namespace: str, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 240
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = yaml.safe_load(kubectl(hub, "-n", namespace, "get", "modelimage", name, "-o", "yaml"))
        if obj.get("status", {}).get("phase") == "Ready":
            return obj
        time.sleep(1)
    raise AssertionError(f"{namespace}/{name} not Ready: {obj.get('status')}")


def _spec_writers(hub: handles.Cluster, namespace: str, name: str) -> set[str]:
    obj = yaml.safe_load(
        kubectl(
            hub, "-n", namespace, "get", "modelimage", name, "-o", "yaml", "--show-managed-fields"
        )
    )
    return _spec_writers_of(obj)


def _spec_writers_of(obj: dict[str, Any]) -> set[str]:
    return {
        entry["manager"]
        for entry in obj["metadata"].get("managedFields") or []
        if "f:spec" in (entry.get("fieldsV1") or {}) and entry.get("subresource") != "status"
    }


def test_documented_examples_pass_server_side_validation(
    hub: handles.Cluster, scratch_namespaces: list[str]
) -> None:
    """The ModelImage, EdgeTarget and ModelDeployment examples in docs/ are valid objects."""
    namespace = scratch_namespaces[0]
    docs = []
    for page in ("resources.md", "install.md"):
        text = (REPO / "docs" / page).read_text()
        for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL):
            for doc in yaml.safe_load_all(block):
                if doc and str(doc.get("apiVersion", "")).startswith("edgeferry.io/"):
                    doc["metadata"]["namespace"] = namespace
                    docs.append(doc)
    assert {d["kind"] for d in docs} == {"ModelImage", "EdgeTarget", "ModelDeployment"}
    out = kubectl(hub, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert out.count("created (server dry run)") == len(docs), out
