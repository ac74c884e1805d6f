"""A new advisory after admission halts the fleet: real grype, a real DB update, two policies.

An image that ships urllib3 1.26.4's installed metadata is admitted against the testbed's DB
(`tests/fixtures/advisories`, nothing on urllib3) and rolled out to `cloud` and `edge-2` by three
ModelDeployments: `keep` (`onBlocked: Keep`), `back` (`onBlocked: RollBack`, which ran a clean
image before) and `stale` (`onBlocked: RollBack`, which ran another urllib3 1.26.4 image before).
The operator runs as air-gapped sites run it: grype updates its DB from a mirror on the host
address (`GRYPE_DB_UPDATE_URL`, the testbed's grype DB mirror; the DB watch runs `grype db
update` every 60 s). Then the mirror starts serving a DB built from the same records plus the
real GHSA-q2q7-5pp4-w6pg (urllib3 `>= 1.25.4, < 1.26.5`, High;
`tests/fixtures/advisories-after-admission`). The operator's own update fetches it, the DB watch
notices, every image's cached SBOM is re-matched, the image is `Admitted=False` naming the
advisory, and the deployments go `Blocked`: `keep`'s targets keep the digest (Warning event,
alert expression true in the testbed's Prometheus), `back`'s return to the clean digest once the
clean image is re-matched, `stale`'s keep it because the release they ran before is blocked too
(`NoCleanReleaseToRollBackTo`). Last, the testbed's own DB is imported into the operator's cache
(what an air-gapped site without a mirror does): the watch notices that too, and the image is
admitted again.

The time from the mirror's new listing to each deployment `Blocked` is printed, never asserted
(it is bounded by the 60 s update interval plus the 15 s watch). The testbed's DB is restored
in the operator's cache and the mirror afterwards, and the operator restarted with the suite's
settings, whatever happened.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeferry.adapters import grype_env, scanner, vulndb
from edgeferry_testbed import handles, incluster, operator_process, testbed
from tests.integration import _resources as res
from tests.integration.conftest import Fleet
from tests.integration.test_prometheus_alerts import (  # noqa: F401 (fixtures)
    prometheus,
    rules_loaded,
)
from tests.integration.test_rollout import running_digest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("rules_loaded")]

NEW_ADVISORY = operator_process.ADVISORIES.parent / "advisories-after-admission"
ADVISORY_ID = "GHSA-q2q7-5pp4-w6pg"
AMD64 = {"matchLabels": {"arch": "amd64"}}
TARGETS = ("cloud", "edge-2")
UPDATE_SECONDS = 60
"""The operator's `EDGEFERRY_SCAN_DB_UPDATE_SECONDS` here (the setting's minimum)."""


def urllib3_image(name: str, *, fleet: Fleet) -> tuple[dict[str, Any], dict[str, Any]]:
    """The busybox server with urllib3 1.26.4's installed metadata (clean under the testbed DB)."""
    site = "/opt/app/site-packages/urllib3-1.26.4.dist-info"
    base = fleet.bed.env.base_images["busybox"]
    dockerfile = (
        f"FROM {base}\n"
        f"RUN mkdir -p {site} /srv \\\n"
        " && printf 'Metadata-Version: 2.1\\nName: urllib3\\nVersion: 1.26.4\\n'"
        f" > {site}/METADATA \\\n"
        " && echo ok > /srv/healthz\n"
        f"COPY model/{res.MODEL_KEY} /srv/{res.MODEL_KEY}\n"
        "USER 10001:10001\nEXPOSE 8080\n"
        'CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/srv"]\n'
    )
    return res.model_image(
        name,
        dockerfile=dockerfile,
        model_text=f"{fleet.namespace}/{name}",
        repository=f"{fleet.bed.registry}/rollout-tests/{name}",
    )


@pytest.fixture
def operator_db() -> Iterator[scanner.ScannerConfig]:
    """The operator's grype DB cache; rebuilt from the testbed's own records afterwards."""
    lay = testbed.Testbed().layout
    config = scanner.ScannerConfig(
        grype=grype_env.GrypeSettings.offline(lay.state_dir / "grype-db")
    )
    try:
        yield config
    finally:
        vulndb.install_offline_db(
            operator_process.ADVISORIES, lay.state_dir / "grype-db-build", config=config
        )


@pytest.fixture
def updating_operator(testbed_handle: handles.Testbed) -> Iterator[str]:
    """The operator, restarted to update its DB from the testbed's grype DB mirror; the mirror's
    URL. Afterwards the mirror serves the testbed's DB again and the operator runs as before."""
    bed = testbed.Testbed()
    url = incluster.ensure_grype_mirror(bed)
    overrides = {
        "GRYPE_DB_AUTO_UPDATE": "true",
        "GRYPE_DB_UPDATE_URL": url,
        "EDGEFERRY_SCAN_DB_UPDATE_SECONDS": str(UPDATE_SECONDS),
    }
    operator_process.start(bed, testbed_handle.env, overrides=overrides)
    try:
        yield url
    finally:
        incluster.ensure_grype_mirror(bed)
        operator_process.start(bed, testbed_handle.env)


def build_db_with_new_advisory(work: Path) -> Path:
    """The testbed's records plus the new advisory, built (not imported): the mirror serves it."""
    records = work / "records"
    shutil.copytree(operator_process.ADVISORIES, records)
    shutil.copytree(NEW_ADVISORY, records, dirs_exist_ok=True)
    vulndb.build_offline_db(records, work / "build")
    return work / "build"


def pods_run(fleet: Fleet, name: str, reference: str) -> bool:
    return all(
        res.pod_images(fleet.cluster_of(t), fleet.namespace, name) == {reference} for t in TARGETS
    )


def wait_running(fleet: Fleet, name: str, reference: str) -> None:
    res.wait_deployment_phase(
        fleet.hub,
        fleet.namespace,
        name,
        phase="Ready",
        check=lambda _: pods_run(fleet, name, reference),
    )


def test_a_new_advisory_from_the_db_mirror_blocks_the_image_and_each_deployment_follows_on_blocked(
    fleet: Fleet,
    operator_db: scanner.ScannerConfig,
    updating_operator: str,
    testbed_handle: handles.Testbed,
    tmp_path: Path,
) -> None:
    hub, ns = fleet.hub, fleet.namespace
    began = time.monotonic()
    base = fleet.bed.env.base_images["busybox"]
    res.create_model_image(
        hub, ns, res.server_image("clean", base=base, registry=fleet.bed.registry, variant=ns)
    )
    res.create_model_image(hub, ns, urllib3_image("affected", fleet=fleet))
    res.create_model_image(hub, ns, urllib3_image("affected-old", fleet=fleet))
    clean = res.image_reference(res.wait_model_image(hub, ns, "clean", phase="Ready"))
    affected = res.image_reference(res.wait_model_image(hub, ns, "affected", phase="Ready"))
    old = res.image_reference(res.wait_model_image(hub, ns, "affected-old", phase="Ready"))

    print(f"\nthree images admitted and pushed in {time.monotonic() - began:.0f}s")
    back = res.model_deployment("back", image="clean", selector=AMD64, replicas=1)
    stale = res.model_deployment("stale", image="affected-old", selector=AMD64, replicas=1)
    for doc in (back, stale):
        doc["spec"]["onBlocked"] = "RollBack"
    res.apply(hub, ns, back, stale)
    for name, ran in (("back", clean), ("stale", old)):
        wait_running(fleet, name, ran)
    for doc in (back, stale):
        doc["spec"]["imageRef"]["name"] = "affected"
    keep = res.model_deployment("keep", image="affected", selector=AMD64, replicas=1)
    res.apply(hub, ns, back, stale, keep)
    for name in ("back", "stale", "keep"):
        wait_running(fleet, name, affected)

    print(f"three deployments rolled out, {time.monotonic() - began:.0f}s in")
    built = build_db_with_new_advisory(tmp_path)
    started = time.monotonic()
    incluster.ensure_grype_mirror(testbed.Testbed(), build_dir=built)
    blocked_after: dict[str, float] = {}

    def all_blocked() -> bool:
        for name in ("back", "keep", "stale"):
            obj = res.get_object(hub, ns, "modeldeployments", name) or {}
            if name not in blocked_after and obj.get("status", {}).get("phase") == "Blocked":
                blocked_after[name] = time.monotonic() - started
        return len(blocked_after) == 3

    res.wait_until(
        "the ModelDeployments to be Blocked", all_blocked, timeout=UPDATE_SECONDS + 90, interval=0.5
    )
    print(
        "new advisory from the mirror: Blocked "
        + ", ".join(f"{n} {s:.1f}s" for n, s in sorted(blocked_after.items()))
        + f" after the mirror listed it (operator updates every {UPDATE_SECONDS}s)"
    )
    installed = scanner.db_status(config=operator_db).built
    assert installed is not None, "the operator's grype has no DB"
    offset = abs((installed - vulndb.load_summary(built).built).total_seconds())
    assert offset < 1, f"the operator's DB (built {installed}) is not the mirror's"

    image = res.get_object(hub, ns, "modelimages", "affected") or {}
    admitted = res.condition(image, "Admitted")
    assert admitted["status"] == "False" and admitted["reason"] == "VulnerabilitiesFound"
    assert all(word in admitted["message"] for word in (ADVISORY_ID, "urllib3", "(high)")), admitted
    revoked = [
        m
        for t, r, m in res.wait_events(hub, ns, "affected", "AdmissionRevoked")
        if r == "AdmissionRevoked"
    ]
    assert revoked and ADVISORY_ID in revoked[-1]
    assert image["status"]["scan"]["blocking"][0]["id"] == ADVISORY_ID

    # Keep: the targets keep the blocked digest, say so, and the alert's expression holds.
    res.wait_until(
        "keep's targets to report the blocked digest",
        lambda: all(
            "gate now blocks"
            in (
                res.target_line(res.get_object(hub, ns, "modeldeployments", "keep") or {}, t).get(
                    "message"
                )
                or ""
            )
            for t in TARGETS
        ),
        timeout=30,
    )
    for target in TARGETS:
        assert running_digest(fleet, target, "keep") == affected
    assert pods_run(fleet, "keep", affected)
    keep_events = res.wait_events(hub, ns, "keep", "BlockedDigestRunning")
    warnings = [(t, m) for t, r, m in keep_events if r == "BlockedDigestRunning"]
    assert warnings and warnings[-1][0] == "Warning" and ADVISORY_ID in warnings[-1][1]
    query = (
        f'max by (namespace, name) (edgeferry_rollout_blocked_targets{{namespace="{ns}",'
        'name="keep"}) > 0'
    )
    result = res.wait_until(
        "the EdgeferryBlockedDigestRunning expression to hold in Prometheus",
        lambda: prometheus(testbed_handle, "/api/v1/query", query=query)["result"] or None,
        timeout=45,
        interval=2,
    )
    assert float(result[0]["value"][1]) == len(TARGETS)

    # RollBack: the targets go back to the clean digest they ran before.
    res.wait_until(
        "back's targets to run the clean digest again",
        lambda: pods_run(fleet, "back", clean),
        timeout=60,
    )
    for target in TARGETS:
        assert running_digest(fleet, target, "back") == clean
    status = res.get_object(hub, ns, "modeldeployments", "back") or {}
    assert res.target_line(status, TARGETS[0])["digest"] == clean
    assert res.wait_events(hub, ns, "back", "RolledBackBlockedDigest")

    # RollBack to a release the new DB blocks too: not done, and said why.
    refused = res.wait_until(
        "stale's NoCleanReleaseToRollBackTo events",
        lambda: (
            [m for _, r, m in res.events(hub, ns, "stale") if r == "NoCleanReleaseToRollBackTo"]
            if len(
                [r for _, r, _ in res.events(hub, ns, "stale") if r == "NoCleanReleaseToRollBackTo"]
            )
            >= len(TARGETS)
            else None
        ),
        timeout=30,
    )
    assert all("affected-old" in m and "blocked too" in m for m in refused), refused
    for target in TARGETS:
        assert running_digest(fleet, target, "stale") == affected
    assert pods_run(fleet, "stale", affected)
    status = res.get_object(hub, ns, "modeldeployments", "stale") or {}
    assert "not rolled back" in res.target_line(status, TARGETS[0])["message"]
    assert not any(r == "RolledBackBlockedDigest" for _, r, _ in res.events(hub, ns, "stale"))

    # An imported DB (the testbed's, without the advisory) is noticed too: admitted again.
    started = time.monotonic()
    vulndb.install_offline_db(
        operator_process.ADVISORIES, tmp_path / "testbed-build", config=operator_db
    )
    res.wait_until(
        "affected to be admitted again",
        lambda: (
            res.condition(res.get_object(hub, ns, "modelimages", "affected") or {}, "Admitted").get(
                "status"
            )
            == "True"
        ),
        timeout=60,
    )
    print(f"testbed DB imported: affected admitted again {time.monotonic() - started:.1f}s later")
