"""What a copy to a site's registry mirror sends, skips and mounts, and which writes need one."""

from __future__ import annotations

import datetime as dt
import json

from edgeferry.decisions import mirror_copy as mc
from edgeferry.decisions import rollout_types as rt
from edgeferry.decisions import target_state, waves
from edgeferry.models import modeldeployment as md
from edgeferry.models import release

DIGEST = "sha256:" + "1" * 64
SOURCE = f"127.0.0.1:5000/models/iris@{DIGEST}"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def write(target: str, reason: rt.WriteReason = "rollout", digest: str = SOURCE) -> rt.Write:
    return rt.Write(target, reason, release.TargetRecord(digest=digest, started_at=NOW))


def manifest(config: str, *layers: str, foreign: str | None = None) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": config, "size": 10},
        "layers": [{"digest": d, "size": 100} for d in layers]
        + ([{"digest": foreign, "size": 5, "urls": ["https://elsewhere"]}] if foreign else []),
    }
    return json.dumps(doc).encode()


def sha(c: str) -> str:
    return "sha256:" + c * 64


def test_rollout_writes_to_targets_with_a_mirror_need_a_copy_to_the_mirror_repository() -> None:
    copies = mc.copies_for(
        [write("site-a"), write("cloud")], {"site-a": mc.Mirror("mirror.site-a:5000")}
    )
    assert copies == (
        mc.Copy(
            source=SOURCE,
            mirror="mirror.site-a:5000",
            destination="mirror.site-a:5000/models/iris",
            targets=("site-a",),
        ),
    )
    assert copies[0].digest == DIGEST
    assert copies[0].source_repository == "127.0.0.1:5000/models/iris"


def test_targets_sharing_a_mirror_share_one_copy() -> None:
    mirror = mc.Mirror("mirror.local/proxy", credentials_secret="mirror-auth")
    (copy,) = mc.copies_for([write("b"), write("a")], {"a": mirror, "b": mirror})
    assert copy.targets == ("a", "b")
    assert copy.destination == "mirror.local/proxy/models/iris"
    assert copy.credentials_secret == "mirror-auth"


def test_rollbacks_and_reapplies_are_checked_too_a_mirror_never_gets_a_dangling_ref() -> None:
    mirrors = {"a": mc.Mirror("m:5000"), "b": mc.Mirror("m:5000")}
    older = "127.0.0.1:5000/models/iris@sha256:" + "0" * 64
    copies = mc.copies_for([write("a", "rollback", older), write("b", "maintain")], mirrors)
    assert [(c.source, c.targets) for c in copies] == [(older, ("a",)), (SOURCE, ("b",))]


def test_a_record_without_a_digest_reference_needs_no_copy_its_render_refuses_it() -> None:
    assert mc.copies_for([write("a", "maintain", "iris:latest")], {"a": mc.Mirror("m")}) == ()


def test_an_index_names_every_manifest_attestations_included() -> None:
    index = {
        "manifests": [
            {"digest": sha("a"), "mediaType": "application/vnd.oci.image.manifest.v1+json"},
            {"digest": sha("b"), "platform": {"architecture": "unknown", "os": "unknown"}},
        ]
    }
    assert mc.is_index(index)
    assert mc.children_of(index) == (
        (sha("a"), "application/vnd.oci.image.manifest.v1+json"),
        (sha("b"), ""),
    )
    assert not mc.is_index(json.loads(manifest(sha("c"))))


def test_blobs_shared_by_platforms_are_listed_once_config_first() -> None:
    amd = manifest(sha("c"), sha("1"), sha("2"))
    arm = manifest(sha("d"), sha("1"), sha("3"))
    assert [b.digest for b in mc.unique_blobs([amd, arm])] == [
        sha("c"),
        sha("1"),
        sha("2"),
        sha("d"),
        sha("3"),
    ]


def test_foreign_layers_are_not_copied() -> None:
    blobs = mc.blobs_of(json.loads(manifest(sha("c"), sha("1"), foreign=sha("f"))))
    assert [b.digest for b in blobs] == [sha("c"), sha("1")]


def test_only_blobs_the_mirror_lacks_are_sent() -> None:
    blobs = mc.unique_blobs([manifest(sha("c"), sha("1"), sha("2"))])
    assert mc.missing(blobs, {sha("c"), sha("2")}) == (mc.Blob(sha("1"), 100),)
    assert mc.missing(blobs, {b.digest for b in blobs}) == ()


def test_a_blob_another_repository_of_the_mirror_holds_is_mounted_from_there() -> None:
    known = {sha("1"): "models/wine"}
    assert mc.mount_source(sha("1"), "models/iris", known) == "models/wine"
    assert mc.mount_source(sha("1"), "models/wine", known) is None
    assert mc.mount_source(sha("2"), "models/iris", known) is None


def test_a_failed_copy_names_the_mirror_and_what_failed() -> None:
    (copy,) = mc.copies_for([write("a")], {"a": mc.Mirror("mirror.site-a:5000")})
    message = mc.failure_message(copy, "HEAD manifest: connection refused")
    assert "mirror mirror.site-a:5000" in message
    assert "connection refused" in message
    assert SOURCE in message


def test_the_copied_event_says_what_was_sent_and_what_not() -> None:
    (copy,) = mc.copies_for([write("a")], {"a": mc.Mirror("m:5000")})
    report = mc.Report(manifests=3, blobs_sent=2, bytes_sent=2048, blobs_mounted=1)
    assert "2 blob(s) sent (2048 bytes), 1 mounted" in mc.copied_message(copy, report)
    assert "nothing sent" in mc.copied_message(copy, mc.Report(already_there=True))


# --- what a failed copy does to the rollout (the handler plans again with the target unreachable)
def _plan(*targets: rt.TargetState, grace: int = 120) -> rt.Plan:
    return waves.next_actions(
        list(targets),
        image=rt.Image(name="iris", admitted=True, digest=SOURCE, platforms=("linux/amd64",)),
        rollout=md.RolloutStrategy.model_validate(
            {"canary": 0, "maxPerWave": "100%", "offlineGraceSeconds": grace}
        ),
        generation=1,
        now=NOW,
    )


def _running_old(name: str) -> rt.TargetState:
    old = "127.0.0.1:5000/models/iris@sha256:" + "0" * 64
    record = release.TargetRecord(
        digest=old, started_at=NOW - dt.timedelta(hours=1), ready_at=NOW - dt.timedelta(hours=1)
    )
    return rt.TargetState(name=name, architectures=("amd64",), record=record, available=True)


def test_a_target_whose_copy_failed_is_deferred_and_nothing_is_written_there() -> None:
    site, other = _running_old("site-a"), _running_old("site-b")
    first = _plan(site, other)
    (copy,) = mc.copies_for(first.writes, {"site-a": mc.Mirror("m:5000")})
    error = mc.failure_message(copy, "connection refused")
    failed, _ = target_state.unanswered(site, since=NOW, error=error)

    again = _plan(failed, other)
    assert [w.target for w in again.writes] == ["site-b"], "nothing is written at site-a"
    line = {t.name: t for t in again.targets}["site-a"]
    assert line.phase == "Deferred"
    assert "holds wave 1" in (line.message or "")


def test_after_the_offline_grace_the_wave_goes_on_without_the_target_whose_copy_fails() -> None:
    site = _running_old("site-a")
    failed, _ = target_state.unanswered(site, since=NOW - dt.timedelta(seconds=300), error="x")
    plan = _plan(failed, grace=120)
    line = {t.name: t for t in plan.targets}["site-a"]
    assert line.phase == "Deferred"
    assert "goes on without it" in (line.message or "")
    assert plan.writes == ()


def test_a_copy_failure_is_told_once_per_distinct_error() -> None:
    (event,) = mc.failure_events({"site-a": "copy failed: refused"}, None)
    assert (event.type, event.reason) == ("Warning", "MirrorCopyFailed")
    assert event.message.startswith("site-a: ")
    recorded = md.ModelDeploymentStatus.model_validate(
        {"targets": [{"name": "site-a", "phase": "Deferred", "lastError": "copy failed: refused"}]}
    )
    assert mc.failure_events({"site-a": "copy failed: refused"}, recorded) == ()
