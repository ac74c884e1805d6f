"""A new advisory after admission halts the fleet: real grype, a real imported DB, two policies.

An image that ships urllib3 1.26.4's installed metadata is admitted against the testbed's DB
(`tests/fixtures/advisories`, nothing on urllib3) and rolled out to `cloud` and `edge-2` by two
ModelDeployments: `keep` (`onBlocked: Keep`) and `back` (`onBlocked: RollBack`, which ran a
clean image before). Then a DB built from the same records plus the real GHSA-q2q7-5pp4-w6pg
(urllib3 `>= 1.25.4, < 1.26.5`, High; `tests/fixtures/advisories-after-admission`) is imported
into the operator's grype cache, as an air-gapped site would. The operator's DB watch notices,
the image's cached SBOM is re-matched, the image is `Admitted=False` naming the advisory, and
both deployments go `Blocked`: `keep`'s targets keep the digest (Warning event, alert
expression true in the testbed's Prometheus), `back`'s return to the clean digest.

The time from the import to both deployments `Blocked` is printed, never asserted. The testbed's
DB is restored afterwards, whatever happened.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeferry.adapters import grype_env, scanner, vulndb
from edgeferry_testbed import handles, operator_process, testbed
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


def import_db_with_new_advisory(config: scanner.ScannerConfig, work: Path) -> None:
    """What an air-gapped site does: build a DB with the new records and import it."""
    records = work / "records"
    shutil.copytree(operator_process.ADVISORIES, records)
    shutil.copytree(NEW_ADVISORY, records, dirs_exist_ok=True)
    vulndb.install_offline_db(records, work / "build", config=config)


def pods_run(fleet: Fleet, name: str, reference: str) -> bool:
    return all(
        res.pod_images(fleet.cluster_of(t), fleet.namespace, name) == {reference} for t in TARGETS
    )


def test_a_new_advisory_blocks_the_admitted_image_and_each_deployment_follows_on_blocked(
    fleet: Fleet,
    operator_db: scanner.ScannerConfig,
    testbed_handle: handles.Testbed,
    tmp_path: Path,
) -> None:
    hub, ns = fleet.hub, fleet.namespace
    base = fleet.bed.env.base_images["busybox"]
    res.create_model_image(
        hub, ns, res.server_image("clean", base=base, registry=fleet.bed.registry, variant=ns)
    )
    res.create_model_image(hub, ns, urllib3_image("affected", fleet=fleet))
    clean = res.image_reference(res.wait_model_image(hub, ns, "clean", phase="Ready"))
    affected = res.image_reference(res.wait_model_image(hub, ns, "affected", phase="Ready"))

    back = res.model_deployment("back", image="clean", selector=AMD64, replicas=1)
    back["spec"]["onBlocked"] = "RollBack"
    res.apply(hub, ns, back)
    res.wait_deployment_phase(
        hub, ns, "back", phase="Ready", check=lambda _: pods_run(fleet, "back", clean)
    )
    back["spec"]["imageRef"]["name"] = "affected"
    res.apply(
        hub, ns, back, res.model_deployment("keep", image="affected", selector=AMD64, replicas=1)
    )
    res.wait_deployment_phase(
        hub, ns, "back", phase="Ready", check=lambda _: pods_run(fleet, "back", affected)
    )
    res.wait_deployment_phase(
        hub, ns, "keep", phase="Ready", check=lambda _: pods_run(fleet, "keep", affected)
    )

    started = time.monotonic()
    import_db_with_new_advisory(operator_db, tmp_path)
    imported = time.monotonic() - started
    blocked_after: dict[str, float] = {}

    def both_blocked() -> bool:
        for name in ("back", "keep"):
            obj = res.get_object(hub, ns, "modeldeployments", name) or {}
            if name not in blocked_after and obj.get("status", {}).get("phase") == "Blocked":
                blocked_after[name] = time.monotonic() - started
        return len(blocked_after) == 2

    res.wait_until("both ModelDeployments to be Blocked", both_blocked, timeout=150, interval=0.5)
    print(
        f"\nnew advisory: DB build+import {imported:.1f}s; Blocked "
        + ", ".join(f"{n} {s:.1f}s" for n, s in sorted(blocked_after.items()))
        + " after the import started"
    )

    image = res.get_object(hub, ns, "modelimages", "affected") or {}
    admitted = res.condition(image, "Admitted")
    assert admitted["status"] == "False" and admitted["reason"] == "VulnerabilitiesFound"
    assert all(word in admitted["message"] for word in (ADVISORY_ID, "urllib3", "(high)")), admitted
    revoked = [m for t, r, m in res.events(hub, ns, "affected") if r == "AdmissionRevoked"]
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
    warnings = [(t, m) for t, r, m in res.events(hub, ns, "keep") if r == "BlockedDigestRunning"]
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
    assert any(r == "RolledBackBlockedDigest" for _, r, _ in res.events(hub, ns, "back"))
