"""One ModelImage reconcile: gather inputs, ask `pipeline.next_step`, run the step, record it.

Synchronous on purpose: every step is a blocking call to Docker, hadolint, syft/grype or the
registry, and the Kopf daemon runs this in a worker thread. Status is written after every step,
so a restarted operator (or a crash mid-build) resumes from the last finished step, and a
converged image costs a few cheap reads: no build, no scan, no push.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
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
from edgeferry.decisions import base_images, dockerfile, gate, inputs, lint_verdict, pipeline
from edgeferry.models import conditions, modelimage

PLURAL = "modelimages"
LOCAL_REPOSITORY = "edgeferry-local"
"""Local tags live here: never a registry host, so a local tag is never a deployable reference."""
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
        update_url=config.scan.db_update_url,
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
            if plan.new_run:
                self.status = pipeline.begin_run(self.status, inputs_digest=materials.inputs_digest)
            self._set(pipeline.progress_conditions(plan), phase=plan.phase)
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
            self._scan(spec, fresh=step is pipeline.Step.RESCAN, trigger=plan.reason)
        elif step is pipeline.Step.PUSH:
            self._push(spec)

    # --- steps ----------------------------------------------------------------------------------
    def _keys(self, spec: modelimage.ModelImageSpec) -> modelimage.StageInputs:
        image_ids = self.status.image.image_ids if self.status.image else ()
        return pipeline.stage_keys(spec, image_ids=image_ids)

    def _lint(self, spec: modelimage.ModelImageSpec, materials: Materials) -> None:
        findings = hadolint.lint(materials.dockerfile, ignore=spec.lint.ignore)
        verdict = lint_verdict.decide(
            findings, threshold=spec.lint.failure_threshold, ignore=spec.lint.ignore
        )
        for level in ("error", "warning", "info", "style"):
            metrics.LINT_FINDINGS.labels(self.namespace, self.name, level).set(
                getattr(verdict.status, f"{level}s")
            )
        self._record(lint=verdict.status, stage_inputs=self._stage("lint", spec))
        self._set([verdict.condition])
        if not verdict.passed:
            self.post_event("Warning", "LintFailed", verdict.condition.message)

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
            platform_tag = tag if len(platforms) == 1 else f"{tag}-{platform.replace('/', '-')}"
            try:
                text = self._dockerfile_for(materials.dockerfile, platform)
                with metrics.BUILD_DURATION.labels(self.namespace, self.name).time():
                    results.append(
                        docker_build.build_image(
                            self._docker(),
                            text,
                            files=materials.files,
                            tag=platform_tag,
                            build_args=spec.build.args,
                            labels=labels,
                            platform=platform,
                            timeout_s=spec.build.timeout_seconds,
                        )
                    )
            except (docker_build.BuildError, registry.NoSuchPlatformError) as exc:
                metrics.BUILDS.labels(self.namespace, self.name, "failed").inc()
                log_tail = exc.log_tail if isinstance(exc, docker_build.BuildError) else ()
                tail = "\n".join(log_tail[-15:])
                what = exc.args[0] if exc.args else exc
                message = f"{platform}: {what}; log tail:\n{tail}"[-1500:]
                if len(message) == 1500:  # keep the platform in view when the tail is cut
                    message = f"{platform}: ...{message[len(platform) + 5 :]}"
                self._set([conditions.Condition("Built", "False", "BuildFailed", message)])
                self.post_event("Warning", "BuildFailed", message[-900:])
                return
        metrics.BUILDS.labels(self.namespace, self.name, "succeeded").inc()
        images = [
            modelimage.PlatformImage(
                platform=r.platform, id=r.image_id, size=r.size_bytes, layers=r.layers
            )
            for r in results
        ]
        first = images[0]
        self._record(
            image=modelimage.ImageStatus(
                id=first.id,
                size=first.size,
                layers=first.layers,
                platform=first.platform,
                platforms=images,
            )
        )
        built = ", ".join(
            f"{r.platform} {r.image_id[:19]} ({r.layers} layers, {r.size_bytes / 1e6:.1f} MB)"
            for r in results
        )
        seconds = sum(r.duration_s for r in results)
        self._set(
            [conditions.Condition("Built", "True", "Built", f"built {built} in {seconds:.1f}s")]
        )
        self.post_event("Normal", "Built", f"built {built}; local tag {tag}"[:900])

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
        """Pull every platform's image back by its manifest digest (an index gives the daemon
        only its own platform); a single image by its reference, as before."""
        image = self.status.image
        assert image is not None and image.reference and image.repository
        platforms = image.platform_images
        wanted = [(image.reference, platforms[0].platform if platforms else None)]
        if len(platforms) > 1:
            wanted = [(f"{image.repository}@{p.digest}", p.platform) for p in platforms]
        for reference, platform in wanted:
            try:
                self._docker().pull(reference, platform=platform)
            except docker.errors.APIError as exc:
                raise TransientError(f"pull of {reference} failed: {exc.explanation}") from exc

    def _smoke_test(self, spec: modelimage.ModelImageSpec) -> None:
        image = self.status.image
        assert image is not None and image.id
        keys = self._stage("smoke_test", spec)
        host_platform = modelimage.HOST_PLATFORM
        runnable = [p for p in image.platform_images if p.platform == host_platform]
        others = [p.platform for p in image.platform_images if p.platform != host_platform]
        if not spec.smoke_test.enabled or not runnable:
            why = (
                "spec.smokeTest.enabled is false"
                if not spec.smoke_test.enabled
                else f"image platform {', '.join(others)} cannot run on this {host_platform} host"
            )
            self._record(
                smoke_test=modelimage.SmokeTestStatus(result="Skipped", message=why),
                stage_inputs=keys,
            )
            self._set([conditions.Condition("SmokeTested", "True", "Skipped", why)])
            return
        predict = spec.smoke_test.predict
        result = smoke.smoke_test(
            self._docker(),
            runnable[0].id,
            port=spec.smoke_test.port,
            health_path=spec.smoke_test.health_path,
            prediction=smoke.PredictionRequest(body=predict.body.encode(), path=predict.path)
            if predict
            else None,
            timeout_s=spec.smoke_test.timeout_seconds,
            labels={"edgeferry.io/smoke-test": f"{self.namespace}.{self.name}"},
        )
        prediction = result.prediction
        if result.passed:
            message = f"healthy after {result.startup_ms or 0:.0f} ms" + (
                f"; prediction answered in {prediction.latency_ms:.0f} ms" if prediction else ""
            )
        else:
            tail = "\n".join(result.log_tail[-10:])
            message = f"{result.message}; container log tail:\n{tail}"[-1200:]
        if others:
            verb = "is" if len(others) == 1 else "are"
            message = (
                f"smoke-tested {host_platform} only; {', '.join(others)} cannot run on this "
                f"{host_platform} host and {verb} not smoke-tested; {message}"
            )
        self._record(
            smoke_test=modelimage.SmokeTestStatus(
                result="Passed" if result.passed else "Failed",
                health_latency_ms=result.health_latency_ms,
                prediction_latency_ms=prediction.latency_ms if prediction else None,
                prediction=prediction.body[:512] if prediction else None,
                message=message,
            ),
            stage_inputs=keys,
        )
        if result.passed:
            self._set([conditions.Condition("SmokeTested", "True", "Passed", message)])
            return
        self._set(
            [
                conditions.Condition("SmokeTested", "False", result.reason, message),
                conditions.Condition(
                    "Admitted",
                    "False",
                    "SmokeTestFailed",
                    f"not admitted: the smoke test failed: {message}",
                ),
            ]
        )
        metrics.IMAGE_BLOCKED.labels(self.namespace, self.name, "SmokeTestFailed").set(1)
        self.post_event("Warning", "SmokeTestFailed", message[-900:])

    def _scan_one(self, image_id: str, *, trigger: str) -> scanner.ScanResult:
        """Scan one platform's image, re-matching its cached SBOM unless a fresh scan is due."""
        sbom_path = self.config.build.workdir / "sboms" / f"{image_id.replace(':', '-')}.json"
        sbom_path.parent.mkdir(parents=True, exist_ok=True)
        if sbom_path.exists() and trigger != "RescanDue":
            return scanner.match(sbom_path, config=self.scan_config, source=f"docker:{image_id}")
        return scanner.scan(f"docker:{image_id}", config=self.scan_config, sbom_path=sbom_path)

    def _scan(self, spec: modelimage.ModelImageSpec, *, fresh: bool, trigger: str) -> None:
        """Scan every platform's image and gate on the union of their findings."""
        image = self.status.image
        assert image is not None and image.id
        platforms = image.platform_images
        kind = (
            "dbchange" if trigger == "ScanDatabaseChanged" else ("interval" if fresh else "build")
        )
        results: list[scanner.ScanResult] = []
        for platform_image in platforms:
            try:
                results.append(self._scan_one(platform_image.id, trigger=trigger))
            except scanner.ScanError as exc:
                metrics.SCANS.labels("failed", kind).inc()
                message = f"{platform_image.platform}: {exc}"[-1200:]
                self._set([conditions.Condition("Scanned", "False", "ScanFailed", message)])
                self.post_event("Warning", "ScanFailed", message[-900:])
                return
        metrics.SCANS.labels("succeeded", kind).inc()
        result = results[0]
        findings = gate.union(scanner.gate_findings(r.findings) for r in results)
        today = self.now().date()
        decision = gate.decide(
            findings,
            today=today,
            fail_on=spec.scan.fail_on,
            only_fixed=spec.scan.only_fixed,
            exceptions=spec.scan.exceptions,
        )
        db = result.descriptor.db
        scan_status = modelimage.ScanStatus(
            syft_version=result.descriptor.syft_version or None,
            grype_version=result.descriptor.grype_version or None,
            db_built=db.built if db else None,
            db_checksum=db.identity if db else None,
            scanned_at=self.now().replace(microsecond=0),
            image_id=image.id,
            image_ids=[p.id for p in platforms],
            platforms=[p.platform for p in platforms],
            counts=decision.counts,
            blocking=list(decision.blocking),
            blocking_total=decision.blocking_total,
            excepted=list(decision.applied_exceptions),
            expired_exceptions=list(decision.expired_exceptions),
        )
        self._record(scan=scan_status, stage_inputs=self._stage("scan", spec))
        counts = decision.counts
        self._set(
            [
                conditions.Condition(
                    "Scanned",
                    "True",
                    "Scanned",
                    f"{len(findings)} findings: {counts.critical} critical, "
                    f"{counts.high} high, {counts.medium} medium, {counts.low} low "
                    f"(grype {scan_status.grype_version}; scanned "
                    f"{', '.join(p.platform for p in platforms)})",
                ),
                decision.condition,
            ]
        )
        for severity, count in counts.model_dump().items():
            metrics.VULNERABILITIES.labels(self.namespace, self.name, severity).set(count)
        if db is not None and db.built is not None:
            metrics.SCAN_DB_AGE.set((self.now() - db.built).total_seconds())
        verdict = "admitted" if decision.admitted else "blocked"
        metrics.GATE_DECISIONS.labels(self.namespace, self.name, verdict).inc()
        metrics.IMAGE_BLOCKED.labels(self.namespace, self.name, "VulnerabilitiesFound").set(
            0 if decision.admitted else 1
        )
        metrics.IMAGE_BLOCKED.labels(self.namespace, self.name, "SmokeTestFailed").set(0)
        if decision.admitted:
            self.post_event("Normal", "Admitted", decision.condition.message[:900])
        else:
            self.post_event("Warning", "Blocked", decision.condition.message[:900])

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
            if len(platforms) == 1:
                digest = self._push_single(platforms[0].id, spec, credentials)
                children = [digest]
            else:
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
        except registry.RegistryError as exc:
            self._set([conditions.Condition("Pushed", "False", "PushFailed", str(exc)[-1200:])])
            self._record(stage_inputs=self._stage("push", spec))
            self.post_event("Warning", "PushFailed", str(exc)[-900:])
            return
        self._record(
            image=image.model_copy(
                update={
                    "repository": repository,
                    "tags": list(spec.push.tags),
                    "digest": digest,
                    "platforms": [
                        p.model_copy(update={"digest": d})
                        for p, d in zip(platforms, children, strict=True)
                    ],
                }
            ),
            stage_inputs=self._stage("push", spec),
        )
        reference = f"{repository}@{digest}"
        what = (
            f"an image index of {', '.join(p.platform for p in platforms)}"
            if len(platforms) > 1
            else platforms[0].platform
        )
        self._set(
            [conditions.Condition("Pushed", "True", "Pushed", f"pushed {what} as {reference}")]
        )
        self.post_event(
            "Normal", "Pushed", f"pushed {what} as {reference} (tags {', '.join(spec.push.tags)})"
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
        admitted = status.condition("Admitted")
        blocked_by = admitted.reason if admitted is not None and admitted.status == "False" else ""
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

    def _stage(self, stage: str, spec: modelimage.ModelImageSpec) -> modelimage.StageInputs:
        """`status.stageInputs` with one stage's key updated to what it just ran with."""
        keys = self._keys(spec)
        return self.status.stage_inputs.model_copy(update={stage: getattr(keys, stage)})

    def _record(self, **fields: Any) -> None:
        self.status = self.status.model_copy(update=fields)

    def _set(self, updates: Any, *, phase: modelimage.Phase | None = None) -> None:
        self.status = self.status.with_conditions(updates, generation=self.generation)
        self.status = self.status.model_copy(update={"observed_generation": self.generation})
        if phase is not None:
            self.status = self.status.model_copy(update={"phase": phase})

    def _write(self) -> None:
        hub.patch_status(PLURAL, self.namespace, self.name, self.status.to_patch())

    def _stall(self, reason: str, message: str, *, retry_s: int = 300) -> Outcome:
        self._set(
            [
                conditions.Condition("Ready", "False", reason, message),
                conditions.Condition("Reconciling", "False", reason, ""),
                conditions.Condition("Stalled", "True", reason, message),
            ],
            phase="Failed",
        )
        self._write()
        self.post_event("Warning", reason, message[:900])
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
