"""One ModelImage reconcile: gather inputs, ask `pipeline.next_step`, run the step, record it.

A runner, between the Kopf handler and the adapters: it does the I/O a step needs (hadolint,
Docker, syft/grype, the registry) and leaves every judgement to `decisions`: which step
(`pipeline`), and what the step's result means for status and events (`image_steps`). So the
branches here choose an adapter call, never a condition, a phase or a message.

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
from edgeferry.adapters import (
    docker_build,
    grype_env,
    hadolint,
    hub,
    index_push,
    registry,
    scanner,
    smoke,
)
from edgeferry.decisions import (
    base_images,
    dockerfile,
    image_steps,
    inputs,
    lint_verdict,
    pipeline,
)
from edgeferry.models import modelimage

PLURAL = "modelimages"
LOCAL_REPOSITORY = "edgeferry-local"
"""Local tags live here: never a registry host, so a local tag is never a deployable reference."""
RETRY_SECONDS = 30.0
"""How soon to look again after a reconcile that raised."""
_PIPELINES = threading.BoundedSemaphore(2)
"""At most two pipelines (builds, scans) at a time per operator."""
_LOG = logging.getLogger("edgeferry.modelimage")

EventSink = Callable[[str, str, str], None]
"""(type Normal|Warning, reason, message) -> posts a Kubernetes event on the ModelImage."""


def as_utc(moment: datetime.datetime) -> datetime.datetime:
    """Timestamps read back from status without a zone are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


class TransientError(RuntimeError):
    """Trouble that retrying later may fix (Docker daemon or registry unreachable)."""


@dataclasses.dataclass(frozen=True)
class Materials:
    """Everything that determines the image, read from the spec and its ConfigMaps."""

    dockerfile: str
    files: dict[str, bytes]
    inputs_digest: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one reconcile ended with, for the daemon's scheduling."""

    plan: pipeline.Plan | None
    recheck_after: datetime.timedelta


def scanner_config(config: settings.Settings) -> scanner.ScannerConfig:
    grype = grype_env.GrypeSettings(
        db_cache_dir=config.scan.db_cache_dir,
        auto_update=config.scan.db_auto_update,
        validate_age=config.scan.db_validate_age,
    )
    return scanner.ScannerConfig(grype=grype)


def gather(spec: modelimage.ModelImageSpec, *, namespace: str, name: str) -> Materials:
    """Dockerfile text, build-context files and the inputs digest; raises on missing inputs."""
    model_ref = spec.model.source.config_map
    model = hub.config_map_key(namespace, model_ref.name, model_ref.key)
    if not inputs.model_matches(model, sha256=spec.model.sha256):
        raise ModelDigestMismatchError(
            f"model in ConfigMap {model_ref.name}/{model_ref.key} has sha256 "
            f"{inputs.sha256_hex(model)}, spec.model.sha256 expects {spec.model.sha256}"
        )
    files: dict[str, bytes] = {}
    for source in spec.build.context_from:
        files.update(hub.config_map_files(namespace, source.config_map.name))
    files.update(dockerfile.template_files(spec))
    files[dockerfile.model_context_path(spec)] = model
    text = dockerfile.resolve(spec, name=name)
    digest = inputs.of_spec(
        spec,
        dockerfile=text,
        context={path: inputs.sha256_hex(data) for path, data in files.items()},
    )
    return Materials(dockerfile=text, files=files, inputs_digest=digest)


class ModelDigestMismatchError(ValueError):
    """The model artifact is not the one the spec pins."""


def local_tag(namespace: str, name: str, inputs_digest: str) -> str:
    return f"{LOCAL_REPOSITORY}/{namespace}/{name}:{inputs_digest.removeprefix('sha256:')[:16]}"


def reconcile_once(config: settings.Settings, body: dict[str, Any], post_event: EventSink) -> float:
    """Run the pipeline until it rests (at most two at a time); seconds until the next look.

    Trouble that may pass (`TransientError`) is retried soon with a `Retrying` event; anything
    else is logged and retried as well, with a `ReconcileError` event naming the exception.
    """
    started = time.monotonic()
    name = body["metadata"]["name"]
    reconciler = Reconciler(config=config, body=body, post_event=post_event)
    with _PIPELINES:
        try:
            outcome = reconciler.run()
            metrics.RECONCILES.labels("ModelImage", "succeeded").inc()
            return outcome.recheck_after.total_seconds()
        except TransientError as exc:
            metrics.RECONCILES.labels("ModelImage", "retried").inc()
            _LOG.warning("%s: %s; retrying in %.0fs", name, exc, RETRY_SECONDS)
            post_event("Warning", "Retrying", f"{exc}; retrying in {RETRY_SECONDS:.0f}s")
            return RETRY_SECONDS
        except Exception as exc:
            metrics.RECONCILES.labels("ModelImage", "failed").inc()
            _LOG.exception("%s: reconcile failed", name)
            post_event("Warning", "ReconcileError", f"{type(exc).__name__}: {exc}"[:900])
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
        self.scan_config = scanner_config(config)
        self._api: docker.APIClient | None = None

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> Outcome:
        try:
            spec = modelimage.parse_spec(self.raw_spec)
        except pydantic.ValidationError as exc:
            return self._stall("InvalidSpec", f"spec does not parse: {exc.errors()[0]['msg']}")
        try:
            materials = gather(spec, namespace=self.namespace, name=self.name)
        except hub.MissingInputError as exc:
            return self._stall("InputMissing", f"{exc}; waiting for it", retry_s=30)
        except ModelDigestMismatchError as exc:
            return self._stall("ModelDigestMismatchError", str(exc), retry_s=60)
        db = self._db_identity()
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
                self._export_metrics()
                recheck = plan.recheck_after or datetime.timedelta(minutes=10)
                return Outcome(plan, min(recheck, datetime.timedelta(minutes=10)))
            _LOG.info("%s/%s: %s (%s)", self.namespace, self.name, plan.step.value, plan.message)
            started = self.now()
            self._run_step(plan, spec, materials)
            metrics.STAGE_DURATION.labels(plan.step.value.lower()).observe(
                (self.now() - started).total_seconds()
            )
            self._write()

    def _run_step(
        self, plan: pipeline.Plan, spec: modelimage.ModelImageSpec, materials: Materials
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
    def _lint(self, spec: modelimage.ModelImageSpec, materials: Materials) -> None:
        findings = hadolint.lint(materials.dockerfile, ignore=spec.lint.ignore)
        verdict = lint_verdict.decide(
            findings, threshold=spec.lint.failure_threshold, ignore=spec.lint.ignore
        )
        for level in ("error", "warning", "info", "style"):
            metrics.LINT_FINDINGS.labels(self.namespace, self.name, level).set(
                getattr(verdict.status, f"{level}s")
            )
        self._apply(image_steps.linted(self.status, spec, verdict, generation=self.generation))

    def _build(self, spec: modelimage.ModelImageSpec, materials: Materials) -> None:
        """One Docker build per platform; the first failure fails the stage, naming its platform."""
        platforms = spec.build.target_platforms
        tag = local_tag(self.namespace, self.name, materials.inputs_digest)
        labels = {
            **spec.build.labels,
            "edgeferry.io/inputs-digest": materials.inputs_digest,
            "edgeferry.io/model-sha256": spec.model.sha256,
            "edgeferry.io/modelimage": f"{self.namespace}.{self.name}",
        }
        results: list[docker_build.BuildResult] = []
        for platform in platforms:
            try:
                text = self._dockerfile_for(materials.dockerfile, platform)
                with metrics.BUILD_DURATION.labels(self.namespace, self.name).time():
                    results.append(
                        docker_build.build_image(
                            self._docker(),
                            text,
                            files=materials.files,
                            tag=image_steps.build_tag(tag, platform, platforms=len(platforms)),
                            build_args=spec.build.args,
                            labels=labels,
                            platform=platform,
                            timeout_s=spec.build.timeout_seconds,
                        )
                    )
            except (docker_build.BuildError, registry.NoSuchPlatformError) as exc:
                metrics.BUILDS.labels(self.namespace, self.name, "failed").inc()
                log_tail = exc.log_tail if isinstance(exc, docker_build.BuildError) else ()
                error = str(exc.args[0] if exc.args else exc)
                self._apply(
                    image_steps.build_failed(
                        self.status,
                        platform=platform,
                        error=error,
                        log_tail=log_tail,
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

    def _dockerfile_for(self, dockerfile_text: str, platform: str) -> str:
        """The Dockerfile for one platform's build: bases pinned as an image index replaced by
        their child for that platform (see `decisions.base_images`)."""
        pinned = base_images.pinned_bases(dockerfile_text)
        if not pinned:
            return dockerfile_text
        try:
            resolved = registry.platform_children(
                pinned, platform, insecure=self.config.build.insecure_registries
            )
        except registry.NoSuchPlatformError:
            raise
        except registry.RegistryError as exc:
            raise TransientError(f"cannot resolve the base images for {platform}: {exc}") from exc
        return base_images.for_platform(dockerfile_text, resolved)

    def _pull(self) -> None:
        """Pull every platform's image back from the registry (`image_steps.pull_references`)."""
        assert self.status.image is not None
        for reference, platform in image_steps.pull_references(self.status.image):
            try:
                self._docker().pull(reference, platform=platform)
            except docker.errors.APIError as exc:
                raise TransientError(f"pull of {reference} failed: {exc.explanation}") from exc

    def _smoke_test(self, spec: modelimage.ModelImageSpec) -> None:
        image = self.status.image
        assert image is not None and image.id
        skip = image_steps.smoke_test_skip(spec, image)
        if skip is not None:
            self._apply(
                image_steps.smoke_test_skipped(self.status, spec, skip, generation=self.generation)
            )
            return
        target = image_steps.smoke_test_target(image)
        assert target is not None
        predict = spec.smoke_test.predict
        result = smoke.smoke_test(
            self._docker(),
            target.id,
            port=spec.smoke_test.port,
            health_path=spec.smoke_test.health_path,
            prediction=smoke.PredictionRequest(body=predict.body.encode(), path=predict.path)
            if predict
            else None,
            timeout_s=spec.smoke_test.timeout_seconds,
            labels={"edgeferry.io/smoke-test": f"{self.namespace}.{self.name}"},
        )
        prediction = result.prediction
        outcome = image_steps.SmokeOutcome(
            passed=result.passed,
            reason=result.reason,
            message=result.message,
            log_tail=result.log_tail,
            startup_ms=result.startup_ms,
            health_latency_ms=result.health_latency_ms,
            prediction_latency_ms=prediction.latency_ms if prediction else None,
            prediction=prediction.body if prediction else None,
        )
        recorded = image_steps.smoke_tested(self.status, spec, outcome, generation=self.generation)
        self._apply(recorded)
        if not result.passed:
            metrics.IMAGE_BLOCKED.labels(self.namespace, self.name, "SmokeTestFailed").set(1)

    def _scan_one(self, image_id: str, *, trigger: str) -> scanner.ScanResult:
        """Scan one platform's image, re-matching its cached SBOM when `image_steps` allows."""
        sbom_path = self.config.build.workdir / "sboms" / f"{image_id.replace(':', '-')}.json"
        sbom_path.parent.mkdir(parents=True, exist_ok=True)
        if image_steps.reuses_sbom(trigger, cached=sbom_path.exists()):
            return scanner.match(sbom_path, config=self.scan_config, source=f"docker:{image_id}")
        return scanner.scan(f"docker:{image_id}", config=self.scan_config, sbom_path=sbom_path)

    def _scan(self, spec: modelimage.ModelImageSpec, plan: pipeline.Plan) -> None:
        """Scan every platform's image; `image_steps.scanned` gates on their findings."""
        image = self.status.image
        assert image is not None and image.id
        kind = image_steps.scan_kind(plan)
        results: list[scanner.ScanResult] = []
        for platform_image in image.platform_images:
            try:
                results.append(self._scan_one(platform_image.id, trigger=plan.reason))
            except scanner.ScanError as exc:
                metrics.SCANS.labels("failed", kind).inc()
                self._apply(
                    image_steps.scan_failed(
                        self.status,
                        platform=platform_image.platform,
                        error=str(exc),
                        generation=self.generation,
                    )
                )
                return
        metrics.SCANS.labels("succeeded", kind).inc()
        descriptor = results[0].descriptor
        db = descriptor.db
        facts = image_steps.ScanFacts(
            findings_per_image=tuple(scanner.gate_findings(r.findings) for r in results),
            syft_version=descriptor.syft_version,
            grype_version=descriptor.grype_version,
            db_built=db.built if db else None,
            db_identity=db.identity if db else None,
        )
        recorded, decision = image_steps.scanned(
            self.status, spec, facts, now=self.now(), generation=self.generation
        )
        for severity, count in decision.counts.model_dump().items():
            metrics.VULNERABILITIES.labels(self.namespace, self.name, severity).set(count)
        if db is not None and db.built is not None:
            metrics.SCAN_DB_AGE.set((self.now() - db.built).total_seconds())
        verdict = "admitted" if decision.admitted else "blocked"
        metrics.GATE_DECISIONS.labels(self.namespace, self.name, verdict).inc()
        metrics.IMAGE_BLOCKED.labels(self.namespace, self.name, "VulnerabilitiesFound").set(
            0 if decision.admitted else 1
        )
        metrics.IMAGE_BLOCKED.labels(self.namespace, self.name, "SmokeTestFailed").set(0)
        self._apply(recorded)

    def _push(self, spec: modelimage.ModelImageSpec) -> None:
        image = self.status.image
        assert image is not None and image.id
        repository = spec.push.repository
        credentials = None
        if spec.push.credentials_secret:
            host = registry.parse_repository(repository).host
            user, password = hub.registry_credentials(
                self.namespace, spec.push.credentials_secret, registry_host=host
            )
            credentials = registry.Credentials(username=user, password=password)
        platforms = image.platform_images
        try:
            if image_steps.pushes_index(image):
                pushed = index_push.push_index(
                    self._docker(),
                    [index_push.PlatformBuild(p.platform, p.id) for p in platforms],
                    repository,
                    spec.push.tags,
                    credentials=credentials,
                    insecure=self.config.build.insecure_registries,
                )
                digest = pushed.digest
                children = [child.digest for child in pushed.children]
            else:
                digest = self._push_single(platforms[0].id, spec, credentials)
                children = [digest]
        except registry.RegistryError as exc:
            self._apply(
                image_steps.push_failed(self.status, spec, str(exc), generation=self.generation)
            )
            return
        self._apply(
            image_steps.pushed(
                self.status, spec, digest=digest, children=children, generation=self.generation
            )
        )

    def _push_single(
        self,
        image_id: str,
        spec: modelimage.ModelImageSpec,
        credentials: registry.Credentials | None,
    ) -> str:
        """Push one platform's image under every tag as a plain manifest; its digest."""
        digests = set()
        for tag in spec.push.tags:
            pushed = registry.push_image(
                self._docker(),
                image_id,
                spec.push.repository,
                tag,
                credentials=credentials,
                insecure=self.config.build.insecure_registries,
            )
            digests.add(pushed.digest)
        return sorted(digests)[0]

    # --- bookkeeping ----------------------------------------------------------------------------
    def _export_metrics(self) -> None:
        """Gauges from status, so a restarted operator exports the same verdicts (and alerts
        keep firing) without rescanning anything."""
        status, ns, name = self.status, self.namespace, self.name
        blocked_by = image_steps.blocked_by(status)
        for reason in ("VulnerabilitiesFound", "SmokeTestFailed"):
            metrics.IMAGE_BLOCKED.labels(ns, name, reason).set(1 if blocked_by == reason else 0)
        if status.scan is not None:
            for severity, count in status.scan.counts.model_dump().items():
                metrics.VULNERABILITIES.labels(ns, name, severity).set(count)
            if status.scan.db_built is not None:
                age = self.now() - as_utc(status.scan.db_built)
                metrics.SCAN_DB_AGE.set(age.total_seconds())
        if status.lint is not None:
            for level in ("error", "warning", "info", "style"):
                metrics.LINT_FINDINGS.labels(ns, name, level).set(getattr(status.lint, f"{level}s"))

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
                raise TransientError(
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

    def _db_identity(self) -> str | None:
        try:
            status = scanner.db_status(config=self.scan_config)
        except scanner.ScanError as exc:
            _LOG.warning("grype DB status unavailable: %s", exc)
            return None
        return status.identity if status.valid else None

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
