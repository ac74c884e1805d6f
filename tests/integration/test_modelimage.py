"""ModelImage end to end: the real operator, hadolint, Docker, syft/grype and registry."""

from __future__ import annotations

import contextlib
import copy
import datetime
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgeferry.adapters import docker_build, index_push, registry
from edgeferry_testbed import (
    env,
    handles,
    images,
    layout,
    operator_process,
    procs,
    samples,
    testbed,
)
from tests.integration import _resources
from tests.integration._resources import apply, condition, events

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "edgeferry.io", "v1alpha1", "modelimages"


@pytest.fixture
def image_operator(operator: procs.Managed | None) -> testbed.Testbed:
    """The real operator process on the hub (conftest's `operator`), as a handle to restart."""
    return testbed.Testbed()


@pytest.fixture(scope="module")
def crds_installed(testbed_handle: handles.Testbed) -> None:
    operator_process.install_crds(testbed_handle.env)


@pytest.fixture
def namespace(
    hub: handles.Cluster, testbed_handle: handles.Testbed, unique_name: str
) -> Iterator[str]:
    """A fresh namespace with the samples' ConfigMaps in it."""
    with hub.api_client() as api:
        samples.install_inputs(api, unique_name, layout.default_layout(), testbed_handle.env)
    operator_process.grant_namespace(testbed_handle.env, unique_name)
    yield unique_name
    hub.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


def sample(described: env.TestbedEnv, file: str) -> dict[str, Any]:
    values = samples.placeholders(layout.default_layout(), described)
    return samples.render(samples.SAMPLES / file, values)[0]


def renamed_variant(
    described: env.TestbedEnv, name: str, *, dockerfile: str | None = None
) -> dict[str, Any]:
    """The vulnerable sample under another name and push repository; with `dockerfile`, an
    inline Dockerfile (`{base}` is the busybox base) replaces its build."""
    doc = sample(described, "modelimage-vulnerable.yaml")
    doc["metadata"]["name"] = name
    doc["spec"]["push"]["repository"] = f"{described.registry}/models/{name}"
    if dockerfile is not None:
        base = described.base_images["busybox"]
        doc["spec"]["build"] = {"dockerfile": dockerfile.replace("{base}", base)}
    return doc


def get(hub: handles.Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = _resources.get_object(hub, namespace, PLURAL, name)
    assert obj is not None, f"ModelImage {namespace}/{name} does not exist"
    return obj


def wait_for(
    hub: handles.Cluster,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 240,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = get(hub, namespace, name)
        if check(obj):
            return obj
        time.sleep(1)
    raise AssertionError(f"{namespace}/{name} did not settle: {obj.get('status')}")


def settled(phase: str) -> Callable[[dict[str, Any]], bool]:
    return lambda obj: obj.get("status", {}).get("phase") == phase


def test_clean_model_image_is_admitted_pushed_and_ready(
    image_operator: testbed.Testbed,
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    namespace: str,
) -> None:
    apply(hub, namespace, sample(testbed_handle.env, "modelimage-iris.yaml"))
    obj = wait_for(hub, namespace, "iris", settled("Ready"), timeout=600)  # arm64 is emulated
    for type_ in ("Linted", "Built", "SmokeTested", "Scanned", "Admitted", "Pushed", "Ready"):
        assert condition(obj, type_)["status"] == "True", (type_, condition(obj, type_))
    # kstatus' abnormal-true types are absent, not False, on a resource at rest.
    assert condition(obj, "Stalled") == {}
    assert condition(obj, "Reconciling") == {}
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["smokeTest"]["result"] == "Passed"
    assert '"predictions": [0, 2]' in status["smokeTest"]["prediction"]
    # Both platforms ran, each its own build's image, arm64 under emulation.
    smoke = condition(obj, "SmokeTested")["message"]
    assert re.fullmatch(
        r"linux/amd64: prediction ok in [0-9.]+ s; linux/arm64 \(emulated\): prediction ok in "
        r"[0-9.]+ s",
        smoke,
    ), smoke
    assert status["scan"]["counts"]["critical"] == 0 and status["scan"]["counts"]["high"] == 0
    assert status["scan"]["grypeVersion"] and status["scan"]["dbChecksum"]
    repository = f"{testbed_handle.registry}/models/iris"
    served = registry.manifest_digest(repository, "v1")
    assert served == status["image"]["digest"]
    assert status["image"]["reference"] == f"{repository}@{served}"
    with contextlib.closing(testbed_handle.docker()) as client:
        labels = client.images.get(status["image"]["id"]).labels
    assert labels["edgeferry.io/inputs-digest"] == status["inputsDigest"]
    reasons = {r for _, r, _ in events(hub, namespace, "iris")}
    assert {"Built", "Admitted", "Pushed"} <= reasons
    # Built for both platforms from the base index, each from its own platform's base, and
    # pushed as one index: the digest the rollouts use runs on amd64 and arm64 nodes.
    built = {p["platform"]: p for p in status["image"]["platforms"]}
    assert set(built) == {"linux/amd64", "linux/arm64"}
    assert served is not None
    with registry.RegistryClient() as client:
        assert client.platforms(repository, served) == ("linux/amd64", "linux/arm64")
        children = {c.platform: c.digest for c in client.children(repository, served)}
    assert {p: built[p]["digest"] for p in built} == children
    with contextlib.closing(testbed_handle.docker()) as client:
        arm64 = client.images.get(built["linux/arm64"]["id"]).attrs
    assert arm64["Architecture"] == "arm64"


def test_server_that_never_gets_healthy_is_not_admitted_and_leaves_no_container(
    image_operator: testbed.Testbed,
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    namespace: str,
) -> None:
    doc = renamed_variant(
        testbed_handle.env,
        "sleepy",
        dockerfile="FROM {base}\nCOPY model/weights.json /srv/weights.json\nUSER 10001:10001\n"
        'CMD ["sh", "-c", "echo loading weights forever; sleep 3600"]\n',
    )
    doc["spec"]["smokeTest"] = {"timeoutSeconds": 8}
    apply(hub, namespace, doc)
    obj = wait_for(hub, namespace, "sleepy", settled("Blocked"))
    admitted = condition(obj, "Admitted")
    assert admitted["status"] == "False" and admitted["reason"] == "SmokeTestFailed"
    assert "loading weights forever" in admitted["message"]
    assert obj["status"]["smokeTest"]["result"] == "Failed"
    assert registry.manifest_digest(f"{testbed_handle.registry}/models/sleepy", "v1") is None
    with contextlib.closing(testbed_handle.docker()) as client:
        left = client.containers.list(
            all=True, filters={"label": f"edgeferry.io/smoke-test={namespace}.sleepy"}
        )
    assert left == []


def test_image_with_high_advisory_is_blocked_with_finding_event_and_no_push(
    image_operator: testbed.Testbed,
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    namespace: str,
) -> None:
    apply(hub, namespace, sample(testbed_handle.env, "modelimage-vulnerable.yaml"))
    obj = wait_for(hub, namespace, "legacy-scorer", settled("Blocked"))
    admitted = condition(obj, "Admitted")
    assert admitted["status"] == "False" and admitted["reason"] == "VulnerabilitiesFound"
    blocking = obj["status"]["scan"]["blocking"]
    assert {
        "id": "GHSA-x84v-xcm2-53pg",
        "severity": "high",
        "package": "requests",
        "installed": "2.19.1",
        "fixedIn": "2.20.0",
    }.items() <= blocking[0].items()
    assert "GHSA-x84v-xcm2-53pg" in admitted["message"]
    assert condition(obj, "Pushed") == {}
    assert "digest" not in obj["status"]["image"]
    repository = f"{testbed_handle.registry}/models/legacy-scorer"
    assert registry.manifest_digest(repository, "v1") is None
    warnings = [
        m
        for t, r, m in events(hub, namespace, "legacy-scorer")
        if t == "Warning" and r == "Blocked"
    ]
    assert warnings and "GHSA-x84v-xcm2-53pg" in warnings[0]


def test_dockerfile_with_hadolint_error_stops_at_linted_false(
    image_operator: testbed.Testbed,
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    namespace: str,
) -> None:
    doc = renamed_variant(
        testbed_handle.env, "sloppy", dockerfile='FROM {base}\nWORKDIR srv\nCMD ["true"]\n'
    )
    apply(hub, namespace, doc)
    obj = wait_for(
        hub, namespace, "sloppy", lambda o: condition(o, "Linted").get("status") == "False"
    )
    findings = obj["status"]["lint"]["findings"]
    assert findings[0]["rule"] == "DL3000" and findings[0]["line"] == 2
    assert findings[0]["level"] == "error"
    assert "DL3000" in condition(obj, "Linted")["message"]
    time.sleep(3)
    obj = get(hub, namespace, "sloppy")
    assert condition(obj, "Built") == {}
    assert obj["status"].get("image") is None


def test_exception_admits_until_it_expires(
    image_operator: testbed.Testbed,
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    namespace: str,
) -> None:
    today = datetime.datetime.now(datetime.UTC).date()
    doc = renamed_variant(testbed_handle.env, "excepted")
    doc["spec"]["scan"]["exceptions"] = [
        {
            "id": "GHSA-x84v-xcm2-53pg",
            "reason": "the server never sends requests with cookies",
            "expires": (today + datetime.timedelta(days=30)).isoformat(),
        }
    ]
    apply(hub, namespace, doc)
    obj = wait_for(hub, namespace, "excepted", settled("Ready"))
    assert condition(obj, "Admitted")["status"] == "True"
    assert obj["status"]["scan"]["excepted"][0]["id"] == "GHSA-x84v-xcm2-53pg"
    assert obj["status"]["scan"]["counts"]["high"] == 1

    expired = copy.deepcopy(doc)
    expired["spec"]["scan"]["exceptions"] = [
        {
            "id": "CVE-2018-18074",
            "reason": "accepted for the Q3 release only",
            "expires": (today - datetime.timedelta(days=1)).isoformat(),
        }
    ]
    apply(hub, namespace, expired)
    obj = wait_for(
        hub,
        namespace,
        "excepted",
        lambda o: (
            settled("Blocked")(o)
            and o["status"]["observedGeneration"] == o["metadata"]["generation"]
        ),
    )
    assert condition(obj, "Admitted")["reason"] == "VulnerabilitiesFound"
    assert obj["status"]["scan"]["expiredExceptions"] == ["CVE-2018-18074"]
    assert obj["status"]["scan"]["blocking"][0]["id"] == "GHSA-x84v-xcm2-53pg"


def test_operator_restart_on_converged_image_builds_scans_and_pushes_nothing(
    image_operator: testbed.Testbed,
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    namespace: str,
) -> None:
    apply(hub, namespace, sample(testbed_handle.env, "modelimage-iris.yaml"))
    before = wait_for(hub, namespace, "iris", settled("Ready"))
    operator_process.stop(image_operator)
    log = image_operator.sup.logs / "operator.log"
    offset = log.stat().st_size
    operator_process.start(image_operator, testbed_handle.env)
    marker = f"{namespace}/iris: at rest: UpToDate"
    deadline = time.monotonic() + 120
    while marker not in log.read_text()[offset:]:
        assert time.monotonic() < deadline, "the restarted operator never looked at the image"
        time.sleep(1)
    after = get(hub, namespace, "iris")
    since_restart = log.read_text()[offset:]
    for step in ("Lint", "Build", "SmokeTest", "Scan", "Rescan", "Push"):
        assert f"{namespace}/iris: {step} (" not in since_restart
    for key in ("image", "scan", "smokeTest", "inputsDigest"):
        assert after["status"][key] == before["status"][key]
    assert [c["lastTransitionTime"] for c in after["status"]["conditions"]] == [
        c["lastTransitionTime"] for c in before["status"]["conditions"]
    ]


INVALID = [
    (
        "both an inline Dockerfile and a runtime template",
        lambda s: s["build"].update(dockerfile="FROM scratch\n"),
        "set exactly one of build.dockerfile",
    ),
    (
        "an exception without reason or expiry",
        lambda s: s.update(scan={"exceptions": [{"id": "CVE-2018-18074"}]}),
        "an exception needs a reason",
    ),
    (
        "an unknown severity",
        lambda s: s.update(scan={"failOn": "severe"}),
        'supported values: "negligible", "low", "medium", "high", "critical"',
    ),
    (
        "a push repository without a host",
        lambda s: s["push"].update(repository="models/iris"),
        "push.repository must start with a registry host",
    ),
    (
        "a base image not pinned by digest",
        lambda s: s["build"]["runtime"].update(baseImage="127.0.0.1:5000/base/python:3.11"),
        "build.runtime.baseImage must be pinned by digest",
    ),
    (
        "both platform and platforms",
        lambda s: s["build"].update(platform="linux/amd64", platforms=["linux/arm64"]),
        "set build.platform (one platform) or build.platforms",
    ),
    (
        "a platform listed twice",
        lambda s: s["build"].update(platforms=["linux/arm64", "linux/arm64"]),
        'Duplicate value: "linux/arm64"',
    ),
]


@pytest.mark.parametrize(("what", "break_spec", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_spec_is_refused_at_apply_time_with_a_clear_message(
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    image_operator: testbed.Testbed,
    what: str,
    break_spec: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    doc = sample(testbed_handle.env, "modelimage-iris.yaml")
    break_spec(doc["spec"])
    refusal = _resources.refused_at_apply(hub, doc)
    assert refusal is not None, what
    assert message in refusal, refusal


# --- several platforms ----------------------------------------------------------------------------
BOTH_PLATFORMS = ["linux/amd64", "linux/arm64"]


def multi_platform_image(
    described: env.TestbedEnv, namespace: str, name: str, *, dockerfile: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ModelImage for linux/amd64 and linux/arm64, smoke test off, pushed to its own repo."""
    config_map, image = _resources.model_image(
        name,
        dockerfile=dockerfile,
        model_text=f"{namespace}/{name}",
        repository=f"{described.registry}/models/{namespace}/{name}",
        smoke_test=False,
    )
    del image["spec"]["build"]["platform"]
    image["spec"]["build"]["platforms"] = BOTH_PLATFORMS
    return config_map, image


def test_two_platform_image_is_pushed_as_an_oci_index_of_both(
    image_operator: testbed.Testbed,
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    namespace: str,
) -> None:
    dockerfile = (
        "FROM scratch\n"
        f"COPY model/{_resources.MODEL_KEY} /srv/{_resources.MODEL_KEY}\n"
        "USER 10001:10001\n"
    )
    apply(
        hub,
        namespace,
        *multi_platform_image(testbed_handle.env, namespace, "multi", dockerfile=dockerfile),
    )
    obj = wait_for(hub, namespace, "multi", settled("Ready"), timeout=300)
    image = obj["status"]["image"]
    assert [p["platform"] for p in image["platforms"]] == BOTH_PLATFORMS
    assert (image["id"], image["platform"]) == (image["platforms"][0]["id"], "linux/amd64")
    assert image["platforms"][0]["id"] != image["platforms"][1]["id"]
    repository = f"{testbed_handle.registry}/models/{namespace}/multi"
    with registry.RegistryClient() as client:
        _, media_type = client.manifest(repository, image["digest"])
        children = client.children(repository, image["digest"])
        assert client.manifest_digest(repository, "v1") == image["digest"]
        arm_config = client.config(repository, children[1].digest)
    assert media_type == "application/vnd.oci.image.index.v1+json"
    assert [c.platform for c in children] == BOTH_PLATFORMS
    assert [c.digest for c in children] == [p["digest"] for p in image["platforms"]]
    assert arm_config["architecture"] == "arm64"
    assert "linux/amd64, linux/arm64" in condition(obj, "Scanned")["message"]
    assert obj["status"]["scan"]["imageIds"] == [p["id"] for p in image["platforms"]]


def test_multi_platform_dockerfile_with_run_fails_to_build_naming_arm64(
    image_operator: testbed.Testbed,
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    namespace: str,
) -> None:
    # The busybox base exists for amd64 only. Engine 20.10 either refuses the cached amd64 step
    # ("does not match the specified platform") or builds amd64 natively, which build_image
    # refuses; either way the message starts with the platform and names what it got.
    base = testbed_handle.env.base_images["busybox"]
    dockerfile = (
        f"FROM {base}\n"
        "RUN mkdir -p /srv\n"
        f"COPY model/{_resources.MODEL_KEY} /srv/{_resources.MODEL_KEY}\n"
        "USER 10001:10001\n"
    )
    apply(
        hub,
        namespace,
        *multi_platform_image(testbed_handle.env, namespace, "runs", dockerfile=dockerfile),
    )
    obj = wait_for(hub, namespace, "runs", settled("Failed"), timeout=300)
    built = condition(obj, "Built")
    assert (built["status"], built["reason"]) == ("False", "BuildFailed")
    assert built["message"].startswith("linux/arm64: "), built["message"]
    assert "linux/amd64" in built["message"], built["message"]
    assert not (obj["status"].get("image") or {}).get("platforms")
    repository = f"{testbed_handle.registry}/models/{namespace}/runs"
    assert registry.manifest_digest(repository, "v1") is None


def test_an_image_whose_arm64_server_exits_fails_the_smoke_test_naming_linux_arm64(
    image_operator: testbed.Testbed,
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    namespace: str,
) -> None:
    # A base index whose arm64 variant lacks scikit-learn (as a publisher's broken arm64 build
    # would): its amd64 child is the testbed's sklearn base, its arm64 child that base with a
    # RUN step, run under emulation, that removes sklearn. The sample's template and model stay.
    registry_host = testbed_handle.registry
    with contextlib.closing(testbed_handle.docker()) as client:
        api = client.api
        arm64_base = images.ensure_python_sklearn_arm64_base(client, registry_host)
        broken = docker_build.build_image(
            api,
            f"FROM {arm64_base}\nRUN rm -r /usr/lib/python3/dist-packages/sklearn\n",
            platform="linux/arm64",
        )
        amd64_id = api.inspect_image(testbed_handle.env.base_images["pythonSklearn"])["Id"]
        base_repository = f"{registry_host}/base/{namespace}/sklearn-arm64-broken"
        pushed = index_push.push_index(
            api,
            [
                index_push.PlatformBuild("linux/amd64", amd64_id),
                index_push.PlatformBuild("linux/arm64", broken.image_id),
            ],
            base_repository,
            ["v1"],
        )
    doc = sample(testbed_handle.env, "modelimage-iris.yaml")
    doc["metadata"]["name"] = "iris-arm-broken"
    doc["spec"]["build"]["runtime"]["baseImage"] = f"{base_repository}@{pushed.digest}"
    repository = f"{registry_host}/models/{namespace}/iris-arm-broken"
    doc["spec"]["push"]["repository"] = repository
    apply(hub, namespace, doc)
    obj = wait_for(hub, namespace, "iris-arm-broken", settled("Blocked"), timeout=600)
    tested = condition(obj, "SmokeTested")
    assert (tested["status"], tested["reason"]) == ("False", "ContainerExited"), tested
    message = tested["message"]
    assert message.startswith("linux/arm64 (emulated): container exited with code 1"), message
    assert "; linux/amd64: prediction ok in " in message, message
    assert "container log tail (linux/arm64):" in message, message
    assert "No module named 'sklearn'" in message, message
    admitted = condition(obj, "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "SmokeTestFailed")
    assert registry.manifest_digest(repository, "v1") is None
