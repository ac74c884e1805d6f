"""Condition types and reasons: every CamelCase word edgeferry writes to a status or an event.

Named once, here, so that the docs, the Argo CD health scripts, the alert rules and the tests
can be checked against one list, and so that code compares constants instead of strings
(a misspelt constant fails at import; a misspelt string silently never matches). The style is
Flux's `condition_types.go`: a constant per word, with what it tells the user.

Reasons are grouped by the resource that reports them; a word that two resources share (such
as `InvalidSpec`) is listed once, under "Any resource".
"""

from __future__ import annotations

from typing import Final

# --- Condition types -------------------------------------------------------------------------

READY: Final = "Ready"
"""kstatus: the resource does what its spec asks (image admitted and pushed, target reachable,
rollout complete)."""
RECONCILING: Final = "Reconciling"
"""kstatus, abnormal-true: edgeferry is working towards the spec. Present only while True."""
STALLED: Final = "Stalled"
"""kstatus, abnormal-true: edgeferry cannot go on until the spec or an input changes. Present
only while True."""

LINTED: Final = "Linted"
"""ModelImage: hadolint's verdict on the Dockerfile."""
BUILT: Final = "Built"
"""ModelImage: the Docker build of every platform."""
SMOKE_TESTED: Final = "SmokeTested"
"""ModelImage: the image ran, answered /healthz and one real prediction."""
SCANNED: Final = "Scanned"
"""ModelImage: syft + grype ran against the current vulnerability DB."""
ADMITTED: Final = "Admitted"
"""ModelImage: the gate's verdict (False means blocked)."""
PUSHED: Final = "Pushed"
"""ModelImage: the admitted image is in the registry, by digest."""

PROGRESSING: Final = "Progressing"
"""ModelDeployment: a wave is being rolled out."""
DEGRADED: Final = "Degraded"
"""ModelDeployment: at least one target failed or was rolled back."""
BLOCKED: Final = "Blocked"
"""ModelDeployment: its ModelImage is not admitted, so no target is written."""

ABNORMAL_TRUE: Final = frozenset({RECONCILING, STALLED})
"""Types that kstatus reads as "something is wrong" whenever present: written only while True."""

# --- Any resource ----------------------------------------------------------------------------

INVALID_SPEC: Final = "InvalidSpec"
"""The spec does not parse; the message names the field. Fix the spec."""
RECONCILE_ERROR: Final = "ReconcileError"
"""Event: an unexpected error in one reconcile; it is retried."""

# --- ModelImage: what the pipeline does next (Reconciling=True) -------------------------------

NEW_INPUTS: Final = "NewInputs"
"""First run for these inputs: lint, build, test, scan, push."""
INPUTS_CHANGED: Final = "InputsChanged"
"""The Dockerfile, model, context or build args changed: start over."""
LINT_POLICY_CHANGED: Final = "LintPolicyChanged"
"""spec.lint changed: lint again."""
NOT_LINTED: Final = "NotLinted"
"""The Dockerfile has not been linted yet."""
NOT_BUILT: Final = "NotBuilt"
"""The image has not been built yet."""
RETRY_BUILD: Final = "RetryBuild"
"""The spec changed since the build failed: build again."""
IMAGE_MISSING: Final = "ImageMissing"
"""The built image is no longer in the Docker daemon: build again."""
NOT_SMOKE_TESTED: Final = "NotSmokeTested"
"""The image has not been run yet."""
SMOKE_TEST_CHANGED: Final = "SmokeTestChanged"
"""spec.smokeTest or the image changed: run it again."""
RETRY_SMOKE_TEST: Final = "RetrySmokeTest"
"""The spec changed since the smoke test failed: run it again."""
NOT_SCANNED: Final = "NotScanned"
"""The image has not been scanned yet."""
RETRY_SCAN: Final = "RetryScan"
"""The spec changed since the scan failed: scan again."""
SCAN_DATABASE_CHANGED: Final = "ScanDatabaseChanged"
"""The vulnerability DB changed: re-match the cached SBOM."""
RESCAN_DUE: Final = "RescanDue"
"""spec.scan.rescanInterval passed: re-match the cached SBOM."""
SCAN_POLICY_CHANGED: Final = "ScanPolicyChanged"
"""spec.scan (or the smoke test) changed: gate again."""
EXCEPTION_EXPIRED: Final = "ExceptionExpired"
"""A scan exception reached its expiry date: gate again without it."""
NOT_GATED: Final = "NotGated"
"""The scan has not been judged by the gate yet."""
NOT_PUSHED: Final = "NotPushed"
"""The admitted image has not been pushed yet."""
PUSH_TARGET_CHANGED: Final = "PushTargetChanged"
"""spec.push repository or tags changed: push again."""

# --- ModelImage: where the pipeline rests ----------------------------------------------------

UP_TO_DATE: Final = "UpToDate"
"""Ready: admitted and pushed; nothing to do until a rescan or a change."""
INPUT_MISSING: Final = "InputMissing"
"""A ConfigMap or Secret the spec names is not there (or not readable); waiting for it."""
LINT_PASSED: Final = "LintPassed"
"""Linted=True: no finding fails spec.lint."""
LINT_FAILED: Final = "LintFailed"
"""Linted=False: hadolint findings fail spec.lint; fix the Dockerfile or the policy."""
BUILD_SUCCEEDED: Final = "Built"
"""Built=True."""
BUILD_FAILED: Final = "BuildFailed"
"""Built=False: the message has the end of the build log."""
SMOKE_TEST_PASSED: Final = "Passed"
"""SmokeTested=True: health and one prediction answered."""
SMOKE_TEST_SKIPPED: Final = "Skipped"
"""SmokeTested=True: the spec turned the smoke test off, or every platform is emulated and the
operator's settings leave emulated platforms out."""
START_FAILED: Final = "StartFailed"
"""SmokeTested=False: Docker could not start the container."""
CONTAINER_EXITED: Final = "ContainerExited"
"""SmokeTested=False: the container exited before it was healthy."""
HEALTH_TIMEOUT: Final = "HealthTimeout"
"""SmokeTested=False: the health endpoint did not answer in time."""
PREDICTION_FAILED: Final = "PredictionFailed"
"""SmokeTested=False: the prediction request failed or did not match."""
EMULATION_MISSING: Final = "EmulationMissing"
"""SmokeTested=False: the Docker daemon cannot run a platform it would emulate (exec format
error): register qemu-user-static on its host, or leave emulated platforms out."""
SMOKE_TEST_FAILED: Final = "SmokeTestFailed"
"""Admitted=False after a failed smoke test (and the blocked gauge's reason)."""
SCAN_FAILED: Final = "ScanFailed"
"""Scanned=False: syft or grype failed; the message says which."""
VULNERABILITIES_FOUND: Final = "VulnerabilitiesFound"
"""Admitted=False: findings at or above spec.scan.failOn block the image."""
NO_BLOCKING_VULNERABILITIES: Final = "NoBlockingVulnerabilities"
"""Admitted=True: no finding blocks the image."""
PUSH_FAILED: Final = "PushFailed"
"""Pushed=False: the registry refused or failed the push."""
PUSH_SUCCEEDED: Final = "Pushed"
"""Pushed=True."""
SCAN_SUCCEEDED: Final = "Scanned"
"""Scanned=True."""
BLOCKED_BY_GATE: Final = "Blocked"
"""Where a ModelImage rests when the gate blocked it (and the event that says so)."""
ADMISSION_REVOKED: Final = "AdmissionRevoked"
"""Event: a rescan (a new vulnerability DB, a policy change) blocks an image the gate had
admitted; ModelDeployments of it stop and follow their `onBlocked`."""
ADMITTED_BY_GATE: Final = "Admitted"
"""Event: the gate admitted the image."""
MODEL_DIGEST_MISMATCH: Final = "ModelDigestMismatchError"
"""Stalled: the model's bytes do not hash to spec.model.sha256; the message names both."""

# --- ModelImage: trouble that passes (retried with capped exponential backoff) ---------------

DOCKER_UNAVAILABLE: Final = "DockerUnavailable"
"""The Docker daemon did not answer or dropped the connection; the stage is retried."""
REGISTRY_UNAVAILABLE: Final = "RegistryUnavailable"
"""The registry refused the connection, timed out or failed (5xx, 429); retried."""
RETRY_PUSH: Final = "RetryPush"
"""Reconciling: push again after the registry was unavailable."""
RETRYING: Final = "Retrying"
"""Event: a reconcile hit trouble outside any stage (e.g. Docker down); looked at again soon."""
MODEL_SOURCE_UNAVAILABLE: Final = "ModelSourceUnavailable"
"""The model's registry or HTTP server timed out, refused the connection or failed (5xx, 429),
or the download broke off; the build is retried (nothing partial reaches it)."""
TRANSIENT_FAILURES: Final = frozenset(
    {DOCKER_UNAVAILABLE, REGISTRY_UNAVAILABLE, SCAN_FAILED, MODEL_SOURCE_UNAVAILABLE}
)
"""Stage failures that are retried by themselves, with backoff, without a spec change. A scan
failure is one: syft and grype fail for operational reasons (a crash, a timeout, the daemon
gone), never because of the spec."""

# --- EdgeTarget ------------------------------------------------------------------------------

TARGET_REACHABLE: Final = "TargetReachable"
"""Ready=True: the target's API answers and it has ready, usable nodes."""
NO_READY_NODES: Final = "NoReadyNodes"
"""Ready=False: the target's nodes exist but none is Ready."""
NO_USABLE_NODES: Final = "NoUsableNodes"
"""Ready=False, Stalled: no node matches the selector and tolerations."""
TARGET_ERROR: Final = "TargetError"
"""Ready=False: the target's API could not be reached."""
UNREACHABLE: Final = "Unreachable"
"""Ready=False: the target's API server timed out, refused the connection or failed (5xx);
transient, the target is probed again."""
AGENT_SILENT: Final = "AgentSilent"
"""Ready=False: an Agent target's agent has not renewed its Lease on the hub within its grace
(site offline, agent stopped); rollouts defer the target, the site keeps serving what it has."""
AGENT_NOT_CONNECTED: Final = "AgentNotConnected"
"""Ready=False: no agent has reported for this Agent target yet; fetch its token and start
`edgeferry-agent` at the site (docs/pull-mode.md)."""
UNAUTHORIZED: Final = "Unauthorized"
"""Ready=False, Stalled: the target answered 401 to the kubeconfig's credentials."""
FORBIDDEN: Final = "Forbidden"
"""Ready=False, Stalled: the target answered 403; give the kubeconfig's user the RBAC it needs."""
TLS_ERROR: Final = "TLSError"
"""Ready=False, Stalled: the target's certificate does not verify against the kubeconfig's CA."""
CREDENTIALS_INVALID: Final = "CredentialsInvalid"
"""Ready=False, Stalled: the target refused the credentials."""
REQUEST_REJECTED: Final = "RequestRejected"
"""Ready=False: the target refused a request (RBAC or admission); the message names it."""
KUBECONFIG_MISSING: Final = "KubeconfigMissing"
"""Stalled: the kubeconfig Secret has no such key."""
KUBECONFIG_INVALID: Final = "KubeconfigInvalid"
"""Stalled: the kubeconfig does not parse or names no usable context."""
KUBECONFIG_REFUSED: Final = "KubeconfigRefused"
"""Stalled: the kubeconfig asks for something edgeferry refuses (e.g. exec credentials)."""
INSECURE_TLS_REFUSED: Final = "InsecureTLSRefused"
"""Ready=False, Stalled: the kubeconfig sets insecure-skip-tls-verify and the operator does not
allow it (EDGEFERRY_ALLOW_INSECURE_TARGET_TLS); put the server's CA in the kubeconfig."""
SECRET_NOT_FOUND: Final = "SecretNotFound"
"""Stalled: the kubeconfig Secret does not exist."""
SECRET_FORBIDDEN: Final = "SecretForbidden"
"""Stalled: edgeferry may not read the kubeconfig Secret (grant the namespace)."""
PROBED: Final = "Probed"
"""Reconciling=False: the last probe finished."""
CLEANUP_PENDING: Final = "CleanupPending"
"""Being deleted: edgeferry removes this target's workloads first."""
CLEANUP_INCOMPLETE: Final = "CleanupIncomplete"
"""Event: the cleanup deadline passed; the message names what was left behind."""
TARGET_UP: Final = "TargetUp"
"""Event: the target became reachable."""
TARGET_DOWN: Final = "TargetDown"
"""Event: the target became unreachable."""
WORKLOADS_REMOVED: Final = "WorkloadsRemoved"
"""Event: edgeferry removed its workloads from a target."""
WORKLOADS_KEPT: Final = "WorkloadsKept"
"""Event: workloads another EdgeTarget still serves were left in place."""

# --- ModelDeployment -------------------------------------------------------------------------

IMAGE_NOT_FOUND: Final = "ImageNotFound"
"""Blocked: the ModelImage spec.imageRef names does not exist."""
IMAGE_NOT_PUSHED: Final = "ImageNotPushed"
"""Blocked: the ModelImage is admitted but not pushed yet."""
IMAGE_NOT_ADMITTED: Final = "ImageNotAdmitted"
"""Blocked: the ModelImage is not admitted."""
IMAGE_ADMITTED: Final = "ImageAdmitted"
"""Blocked=False: the ModelImage is admitted and pushed."""
IMAGE_BLOCKED: Final = "ImageBlocked"
"""Ready=False, Stalled: no wave starts while the image is blocked."""
BLOCKED_DIGEST_RUNNING: Final = "BlockedDigestRunning"
"""Event: targets keep running a digest the gate blocked after admission (`onBlocked: Keep`, or
no earlier release to return to)."""
ROLLED_BACK_BLOCKED: Final = "RolledBackBlockedDigest"
"""Event: a target running a digest the gate blocked after admission went back to the release
it ran before (`onBlocked: RollBack`)."""
NO_CLEAN_RELEASE: Final = "NoCleanReleaseToRollBackTo"
"""Event: `onBlocked: RollBack` found the release a target ran before not admitted under the
current vulnerability DB (blocked too, or no ModelImage has it any more), so the target keeps
the blocked digest."""
ROLLOUT_COMPLETE: Final = "RolloutComplete"
"""Every selected target runs the release (or is accounted for)."""
ROLLOUT_PAUSED: Final = "RolloutPaused"
"""spec.rollout.paused: no new wave starts."""
ROLLOUT_HALTED: Final = "RolloutHalted"
"""Degraded, Stalled: a wave failed and was rolled back; fix the release."""
TARGETS_FAILED: Final = "TargetsFailed"
"""Degraded: targets failed outside a halted wave."""
NO_FAILURES: Final = "NoFailures"
"""Degraded=False."""
NO_COMPATIBLE_TARGETS: Final = "NoCompatibleTargets"
"""Stalled: no selected target can run the image (architecture, size budget)."""
NO_TARGETS_SELECTED: Final = "NoTargetsSelected"
"""spec.targets.selector matches no EdgeTarget."""
WAVE_IN_PROGRESS: Final = "WaveInProgress"
"""Progressing: a wave is being written or soaked."""
WAITING_FOR_DEFERRED_TARGETS: Final = "WaitingForDeferredTargets"
"""Progressing: the wave waits for targets that are unreachable."""
WAVE_STARTED: Final = "WaveStarted"
"""Event: a wave's targets were written."""
WAVE_SUCCEEDED: Final = "WaveSucceeded"
"""Event: a wave's targets are healthy and soaked."""
CATCHING_UP: Final = "CatchingUp"
"""Event: a target of an earlier wave was written (it was deferred or drifted)."""
TARGET_FAILED: Final = "TargetFailed"
"""Event: a target did not become healthy in time."""
TARGET_DEFERRED: Final = "TargetDeferred"
"""Event: a target was unreachable; its wave waits for it until the grace ends."""
INCOMPATIBLE_TARGET: Final = "IncompatibleTarget"
"""Event: a selected target cannot run the image; it is never written."""
TARGET_RELEASED: Final = "TargetReleased"
"""Event: a target no longer selected had its workloads removed."""
PLACE_TAKEN: Final = "PlaceTaken"
"""Event: a selected target is the same place (cluster and namespace) as another selected target
that comes first by name; it is never written."""
TARGET_WRITE_FAILED: Final = "TargetWriteFailed"
"""Event: a write to a target failed; it is retried."""
MIRROR_COPY_FAILED: Final = "MirrorCopyFailed"
"""Event: the admitted digest could not be copied to a target's registryMirror; the target is
deferred like an unreachable one and nothing is written there."""
MIRROR_COPIED: Final = "MirrorCopied"
"""Event: the admitted digest was copied to a target's registryMirror before its wave."""
PRE_PULLING: Final = "PrePulling"
"""Event: the new digest is being pulled onto a target's nodes (`rollout.prePull`); its
Deployment is switched once every node has it."""
PRE_PULLED: Final = "PrePulled"
"""Event: every node of a target had the new digest, and its Deployment was switched."""
PRE_PULL_FAILED: Final = "PrePullFailed"
"""Event: the pre-pull at a target failed (pull errors, or its deadline passed); the target is
Failed and its Deployment was not switched."""
NAMESPACE_MISSING: Final = "NamespaceMissing"
"""The target namespace does not exist and edgeferry may not create it."""
