"""What our Deployment and its Pods at a target say: available, failing, or on its way."""

from __future__ import annotations

from typing import Any

from edgeferry.decisions import workload_health
from edgeferry.models import release, target_objects

IMAGE = "registry.local:5000/models/iris@sha256:" + "1" * 64
OLD_IMAGE = "registry.local:5000/models/iris@sha256:" + "0" * 64
OURS = {
    target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY,
    target_objects.DEPLOYMENT_LABEL: target_objects.owner_label("ml", "iris"),
}


def deployment(
    *,
    labels: dict[str, str] | None = None,
    available: int = 1,
    updated: int = 1,
    generation: int = 2,
    observed: int = 2,
    progressing: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "iris",
            "labels": OURS if labels is None else labels,
            "generation": generation,
            "annotations": annotations or {release.DIGEST: IMAGE},
        },
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "model", "image": IMAGE}]}},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": 1,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "readyReplicas": available,
            "conditions": [progressing] if progressing else [],
        },
    }


def pod(*, image: str = IMAGE, waiting: str | None = None, **status: Any) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting, "message": "back-off"}} if waiting else {}
    return {
        "metadata": {"name": "iris-abc"},
        "spec": {"containers": [{"name": "model", "image": image}]},
        "status": {"containerStatuses": [{"name": "model", "state": state}], **status},
    }


def assess(dep: dict[str, Any] | None, pods: list[dict[str, Any]]) -> workload_health.Observation:
    return workload_health.assess(dep, pods, md_namespace="ml", md_name="iris")


def test_no_deployment_means_nothing_of_ours_is_there() -> None:
    assert assess(None, []) == workload_health.Observation(exists=False)


def test_a_deployment_without_our_labels_is_foreign() -> None:
    found = assess(deployment(labels={"app": "someone-else"}), [])
    assert found.exists and found.foreign


def test_all_replicas_updated_and_available_is_available() -> None:
    found = assess(deployment(), [pod()])
    assert found.available and not found.failing
    assert found.record is not None and found.record.digest == IMAGE


def test_an_unobserved_generation_is_not_available_yet() -> None:
    assert not assess(deployment(observed=1), [pod()]).available


def test_a_crash_looping_pod_of_the_current_template_is_failing() -> None:
    found = assess(deployment(available=0), [pod(waiting="CrashLoopBackOff")])
    assert found.failing
    assert found.failure == "pod iris-abc: CrashLoopBackOff (back-off)"


def test_pods_of_an_older_template_are_not_blamed() -> None:
    found = assess(deployment(available=0), [pod(image=OLD_IMAGE, waiting="ErrImagePull")])
    assert not found.failing and found.failure is None


def test_a_failed_pod_names_its_exit_code() -> None:
    failed = pod(phase="Failed")
    failed["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 3, "reason": "Error"}
    }
    found = assess(deployment(available=0), [failed])
    assert found.failure == "pod iris-abc failed: container model exited 3 (Error)"


def test_progress_deadline_exceeded_is_failing_even_without_failing_pods() -> None:
    stuck = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet has timed out progressing",
    }
    found = assess(deployment(progressing=stuck), [pod()])
    assert found.failing and not found.available
    assert found.failure == "ProgressDeadlineExceeded: ReplicaSet has timed out progressing"


def test_many_failures_are_summarised_in_one_line() -> None:
    assert workload_health.summarize_failures(["a", "b", "c"]) == "a (and 2 more failing pods)"
    assert workload_health.summarize_failures([]) is None


# --- clear failures, before any deadline ---------------------------------------------------------
def failed_pod(n: int) -> dict[str, Any]:
    done = {"terminated": {"exitCode": 1, "reason": "Error"}}
    found = pod(phase="Failed")
    found["metadata"]["name"] = f"iris-{n}"
    found["status"]["containerStatuses"] = [{"name": "model", "state": done}]
    return found


def test_failed_pods_up_to_the_limit_make_a_target_crashing() -> None:
    limit = workload_health.FAILED_PODS_LIMIT
    almost = assess(deployment(available=0), [failed_pod(n) for n in range(limit - 1)])
    assert almost.failing and not almost.crashing
    seen = assess(deployment(available=0), [failed_pod(n) for n in range(limit)])
    assert seen.failing and seen.crashing


def test_restarts_of_one_container_up_to_the_limit_make_a_target_crashing() -> None:
    running = pod()
    running["status"]["containerStatuses"][0]["restartCount"] = workload_health.RESTARTS_LIMIT
    seen = assess(deployment(available=0), [running])
    assert seen.failing and seen.crashing
    assert seen.failure is not None and "restarted" in seen.failure


def test_image_pull_back_off_is_stuck_not_crashing() -> None:
    seen = assess(deployment(available=0), [pod(waiting="ImagePullBackOff")])
    assert seen.failing and seen.stuck and not seen.crashing


def test_a_slow_start_is_neither_stuck_nor_crashing() -> None:
    seen = assess(deployment(available=0), [pod(waiting="ContainerCreating")])
    assert not (seen.failing or seen.stuck or seen.crashing)


def test_failures_of_an_older_template_do_not_make_a_target_crashing() -> None:
    old = [failed_pod(n) for n in range(workload_health.FAILED_PODS_LIMIT)]
    for found in old:
        found["spec"]["containers"][0]["image"] = OLD_IMAGE
    assert not assess(deployment(available=0), old).crashing
