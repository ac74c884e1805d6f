"""One ModelImage reconcile: gather inputs, ask `pipeline.next_step`, run the step, record it.

A runner, between the Kopf handler and the adapters: it does the I/O a step needs (hadolint,
Docker, syft/grype, the registry) and leaves every judgement to `decisions`: which step
(`pipeline`), and what the step's result means for status and events (`image_steps`,
`scan_step`). So the branches here choose an adapter call, never a condition, a phase or a
message.

Synchronous on purpose: every step is a blocking call, and the Kopf daemon runs this in a
worker thread. Status is written after every step, so a restarted operator (or a crash
mid-build) resumes from the last finished step, and a converged image costs a few cheap reads:
no build, no scan, no push.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import docker
import pydantic

from edgeferry import metrics, settings
from edgeferry.adapters import docker_build, hadolint, hub, registry, scanner, smoke
from edgeferry.decisions import (
    image_steps,
    lint_verdict,
    pipeline,
    retries,
    scan_step,
    smoke_platforms,
)
from edgeferry.models import modelimage, reasons
from edgeferry.runners import (
    errors,
    image_build,
    image_inputs,
    image_metrics,
    image_push,
    image_scan,
)

PLURAL = "modelimages"
RETRY_SECONDS = 30.0
"""How soon to look again after a reconcile that raised."""
_PIPELINES = threading.BoundedSemaphore(2)
"""At most two pipelines (builds, scans) at a time per operator."""
_LOG = logging.getLogger("edgeferry.modelimage")

EventSink = Callable[[str, str, str], None]
"""(type Normal|Warning, reason, message) -> posts a Kubernetes event on the ModelImage."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one reconcile ended with, for the daemon's scheduling."""

    plan: pipeline.Plan | None
    recheck_after: datetime.timedelta


def reconcile_once(config: settings.Settings, body: dict[str, Any], post_event: EventSink) -> float:
    """Run the pipeline until it rests (at most two at a time); seconds until the next look.

    Trouble that may pass (`errors.TransientError`) is retried soon with a `Retrying` event;
    anything else is logged and retried as well, with a `ReconcileError` event naming it.
    """
    started = time.monotonic()
    name = body["metadata"]["name"]
    reconciler = Reconciler(config=config, body=body, post_event=post_event)
    with _PIPELINES:
        try:
            outcome = reconciler.run()
            metrics.RECONCILES.labels("ModelImage", "succeeded").inc()
            return outcome.recheck_after.total_seconds()
        except errors.TransientError as exc:
            metrics.RECONCILES.labels("ModelImage", "retried").inc()
            _LOG.warning("%s: %s; retrying in %.0fs", name, exc, RETRY_SECONDS)
            post_event("Warning", reasons.RETRYING, f"{exc}; retrying in {RETRY_SECONDS:.0f}s")
            return RETRY_SECONDS
        except Exception as exc:
            metrics.RECONCILES.labels("ModelImage", "failed").inc()
            _LOG.exception("%s: reconcile failed", name)
            post_event("Warning", reasons.RECONCILE_ERROR, f"{type(exc).__name__}: {exc}"[:900])
            return RETRY_SECONDS
        finally:
            reconciler.close()
            metrics.RECONCILE_DURATION.labels("ModelImage").observe(time.monotonic() - started)


class Reconciler:
    """Runs one ModelImage's pipeline until it rests; one instance per reconcile."""

    def __init__(
        self,
        *,
        config: settings.Settings,
        body: dict[str, Any],
        post_event: EventSink,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.config = config
        self.namespace = str(body["metadata"]["namespace"])
        self.name = str(body["metadata"]["name"])
        self.generation = int(body["metadata"].get("generation") or 1)
        self.raw_spec = dict(body.get("spec") or {})
        self.status = modelimage.parse_status(body.get("status"))
        self.post_event = post_event
        self.now = now
        self.scan_config = image_scan.scanner_config(config)
        self._api: docker.APIClient | None = None

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> Outcome:
        try:
            spec = modelimage.parse_spec(self.raw_spec)
        except pydantic.ValidationError as exc:
            return self._stall(
                reasons.INVALID_SPEC, f"spec does not parse: {exc.errors()[0]['msg']}"
            )
        try:
            materials = image_inputs.gather(spec, namespace=self.namespace, name=self.name)
        except hub.MissingInputError as exc:
            return self._stall(reasons.INPUT_MISSING, f"{exc}; waiting for it", retry_s=30)
        except image_inputs.ModelDigestMismatchError as exc:
            return self._stall(reasons.MODEL_DIGEST_MISMATCH, str(exc), retry_s=60)
        db = image_scan.db_identity(self.scan_config)
        while True:
            plan = pipeline.next_step(
                spec,
                self.status,
                generation=self.generation,
                inputs_digest=materials.inputs_digest,
                now=self.now(),
                scan_db_checksum=db,
                image_present=self._image_present(),
            )
            self.status = image_steps.starting(
                plan,
                self.status,
                inputs_digest=materials.inputs_digest,
                generation=self.generation,
            )
            self._write()
            if plan.step is pipeline.Step.NONE:
                _LOG.info("%s/%s: at rest: %s", self.namespace, self.name, plan.reason)
                image_metrics.from_status(
                    self.status, namespace=self.namespace, name=self.name, now=self.now()
                )
                recheck = plan.recheck_after or datetime.timedelta(minutes=10)
                return Outcome(plan, min(recheck, datetime.timedelta(minutes=10)))
            _LOG.info("%s/%s: %s (%s)", self.namespace, self.name, plan.step.value, plan.message)
            started = self.now()
            try:
                self._run_step(plan, spec, materials)
            except image_inputs.ModelDigestMismatchError as exc:
                return self._stall(reasons.MODEL_DIGEST_MISMATCH, str(exc), retry_s=60)
            except image_inputs.ModelSourceRefusedError as exc:
                return self._stall(reasons.INPUT_MISSING, f"{exc}; waiting for a fix", retry_s=60)
            except hub.MissingInputError as exc:
                return self._stall(reasons.INPUT_MISSING, f"{exc}; waiting for it", retry_s=30)
            except errors.TransientError as exc:
                _LOG.warning("%s/%s: %s: %s", self.namespace, self.name, plan.step.value, exc)
                metrics.STAGE_RETRIES.labels(plan.step.value.lower(), exc.reason).inc()
                self._apply(
                    retries.retry_later(
                        self.status,
                        plan.step,
                        reason=exc.reason,
                        error=str(exc),
                        now=self.now(),
                        generation=self.generation,
                    )
                )
            else:
                self.status = retries.finished(self.status)
            metrics.STAGE_DURATION.labels(plan.step.value.lower()).observe(
                (self.now() - started).total_seconds()
            )
            self._write()

    def _run_step(
        self,
        plan: pipeline.Plan,
        spec: modelimage.ModelImageSpec,
        materials: image_inputs.Materials,
    ) -> None:
        step = plan.step
        if step is pipeline.Step.LINT:
            self._lint(spec, materials)
        elif step is pipeline.Step.BUILD:
            self._build(spec, materials)
        elif step is pipeline.Step.PULL:
            self._pull()
        elif step is pipeline.Step.SMOKE_TEST:
            self._smoke_test(spec)
        elif step in (pipeline.Step.SCAN, pipeline.Step.RESCAN):
            self._scan(spec, plan)
        elif step is pipeline.Step.PUSH:
            self._push(spec)

    # --- steps ----------------------------------------------------------------------------------
    def _lint(self, spec: modelimage.ModelImageSpec, materials: image_inputs.Materials) -> None:
        findings = hadolint.lint(materials.dockerfile, ignore=spec.lint.ignore)
        verdict = lint_verdict.decide(
            findings, threshold=spec.lint.failure_threshold, ignore=spec.lint.ignore
        )
        image_metrics.linted(verdict.status, namespace=self.namespace, name=self.name)
        self._apply(image_steps.linted(self.status, spec, verdict, generation=self.generation))

    def _build(self, spec: modelimage.ModelImageSpec, materials: image_inputs.Materials) -> None:
        """One Docker build per platform; the first failure fails the stage, naming its platform."""
        tag = image_inputs.local_tag(self.namespace, self.name, materials.inputs_digest)
        labels = {
            **spec.build.labels,
            "edgeferry.io/inputs-digest": materials.inputs_digest,
            "edgeferry.io/model-sha256": spec.model.sha256,
            "edgeferry.io/modelimage": f"{self.namespace}.{self.name}",
        }
        try:
            with image_inputs.model_in_context(
                spec, materials, namespace=self.namespace, config=self.config.build
            ) as complete:
                results = image_build.build(
                    self._docker,
                    spec,
                    complete,
                    tag=tag,
                    labels=labels,
                    insecure=self.config.build.insecure_registries,
                    metric_labels=(self.namespace, self.name),
                    scratch_dir=self.config.build.workdir,
                )
        except image_build.PlatformBuildError as exc:
            metrics.BUILDS.labels(self.namespace, self.name, "failed").inc()
            self._apply(
                image_steps.build_failed(
                    self.status,
                    platform=exc.platform,
                    error=exc.error,
                    log_tail=exc.log_tail,
                    generation=self.generation,
                )
            )
            return
        metrics.BUILDS.labels(self.namespace, self.name, "succeeded").inc()
        images = [
            modelimage.PlatformImage(
                platform=r.platform, id=r.image_id, size=r.size_bytes, layers=r.layers
            )
            for r in results
        ]
        seconds = sum(r.duration_s for r in results)
        self._apply(
            image_steps.built(
                self.status, images, seconds=seconds, tag=tag, generation=self.generation
            )
        )

    def _pull(self) -> None:
        """Pull every platform's image back from the registry (`image_steps.pull_references`)."""
        assert self.status.image is not None
        for reference, platform in image_steps.pull_references(self.status.image):
            try:
                self._docker().pull(reference, platform=platform)
            except docker.errors.APIError as exc:
                raise errors.TransientError(
                    f"pull of {reference} failed: {exc.explanation}",
                    reason=reasons.REGISTRY_UNAVAILABLE,
                ) from exc

    def _smoke_test(self, spec: modelimage.ModelImageSpec) -> None:
        """Run each platform's own image (`smoke_platforms.plan`), stopping at the first failure."""
        image = self.status.image
        assert image is not None and image.id
        daemon_platform = docker_build.daemon_platform(self._docker())
        plan = smoke_platforms.plan(
            image,
            daemon_platform=daemon_platform,
            skip_emulated=self.config.build.skip_emulated_smoke_tests,
        )
        skip = image_steps.smoke_test_skip(spec, plan, daemon_platform=daemon_platform)
        if skip is not None:
            self._apply(
                image_steps.smoke_test_skipped(self.status, spec, skip, generation=self.generation)
            )
            return
        predict = spec.smoke_test.predict
        outcomes: list[image_steps.SmokeOutcome] = []
        for run in plan.runs:
            result = smoke.smoke_test(
                self._docker(),
                run.image_id,
                probe_image=self.config.build.smoke_probe_image,
                port=spec.smoke_test.port,
                health_path=spec.smoke_test.health_path,
                prediction=smoke.PredictionRequest(body=predict.body.encode(), path=predict.path)
                if predict
                else None,
                timeout_s=smoke_platforms.timeout_seconds(run, spec.smoke_test.timeout_seconds),
                request_timeout_s=smoke_platforms.request_timeout_seconds(run),
                labels={"edgeferry.io/smoke-test": f"{self.namespace}.{self.name}"},
                platform=run.platform,
            )
            _LOG.info("%s/%s: %s: %s", self.namespace, self.name, run.label, result.message)
            prediction = result.prediction
            outcomes.append(
                image_steps.SmokeOutcome(
                    run=run,
                    passed=result.passed,
                    reason=result.reason,
                    message=result.message,
                    log_tail=result.log_tail,
                    startup_ms=result.startup_ms,
                    health_latency_ms=result.health_latency_ms,
                    prediction_latency_ms=prediction.latency_ms if prediction else None,
                    prediction=prediction.body if prediction else None,
                )
            )
            if not result.passed:
                break
        recorded = image_steps.smoke_tested(
            self.status, spec, outcomes, skipped=plan.skipped, generation=self.generation
        )
        self._apply(recorded)
        if not outcomes[-1].passed:
            metrics.IMAGE_BLOCKED.labels(self.namespace, self.name, reasons.SMOKE_TEST_FAILED).set(
                1
            )

    def _scan(self, spec: modelimage.ModelImageSpec, plan: pipeline.Plan) -> None:
        """Scan every platform's image; `scan_step.scanned` gates on their findings."""
        image = self.status.image
        assert image is not None and image.id
        kind = scan_step.scan_kind(plan)
        results: list[scanner.ScanResult] = []
        for platform_image in image.platform_images:
            try:
                results.append(
                    image_scan.scan_one(
                        platform_image.id,
                        trigger=plan.reason,
                        workdir=self.config.build.workdir,
                        config=self.scan_config,
                    )
                )
            except scanner.ScanError as exc:
                metrics.SCANS.labels("failed", kind).inc()
                raise errors.TransientError(
                    f"{platform_image.platform}: {exc}", reason=reasons.SCAN_FAILED
                ) from exc
        metrics.SCANS.labels("succeeded", kind).inc()
        facts = image_scan.facts(results)
        recorded, decision = scan_step.scanned(
            self.status, spec, facts, now=self.now(), generation=self.generation
        )
        image_metrics.gated(
            decision,
            db_built=facts.db_built,
            namespace=self.namespace,
            name=self.name,
            now=self.now(),
        )
        self._apply(recorded)

    def _push(self, spec: modelimage.ModelImageSpec) -> None:
        image = self.status.image
        assert image is not None and image.id
        try:
            digest, children, uploaded = image_push.push(
                self._docker(),
                image,
                spec.push,
                namespace=self.namespace,
                insecure=self.config.build.insecure_registries,
            )
        except registry.RegistryError as exc:
            if exc.transient:
                raise errors.TransientError(str(exc), reason=reasons.REGISTRY_UNAVAILABLE) from exc
            self._apply(
                image_steps.push_failed(self.status, spec, str(exc), generation=self.generation)
            )
            return
        metrics.PUSH_BYTES_UPLOADED.labels(self.namespace, self.name).inc(uploaded)
        self._apply(
            image_steps.pushed(
                self.status, spec, digest=digest, children=children, generation=self.generation
            )
        )

    # --- bookkeeping ----------------------------------------------------------------------------
    def _apply(self, recorded: image_steps.Recorded) -> None:
        """Keep the step's status (written after the step) and post its event now."""
        self.status = recorded.status
        if recorded.event is not None:
            event = recorded.event
            self.post_event(event.type, event.reason, event.message)

    def _write(self) -> None:
        hub.patch_status(PLURAL, self.namespace, self.name, self.status.to_patch())

    def _stall(self, reason: str, message: str, *, retry_s: int = 300) -> Outcome:
        recorded = image_steps.stalled(self.status, reason, message, generation=self.generation)
        self.status = recorded.status
        self._write()
        self._apply(recorded)
        return Outcome(None, datetime.timedelta(seconds=retry_s))

    def _docker(self) -> docker.APIClient:
        if self._api is None:
            try:
                self._api = docker_build.connect(self.config.build.docker_host)
                self._api.ping()
            except Exception as exc:
                self._api = None
                raise errors.TransientError(
                    f"Docker daemon at {self.config.build.docker_host} unreachable: {exc}"
                ) from exc
        return self._api

    def _image_present(self) -> bool:
        """Whether the daemon still has every platform's image (True when none was built)."""
        image = self.status.image
        if image is None or not image.id:
            return True
        for image_id in image.image_ids:
            try:
                self._docker().inspect_image(image_id)
            except docker.errors.ImageNotFound:
                return False
        return True

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
