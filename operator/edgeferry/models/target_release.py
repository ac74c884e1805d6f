"""The desired state of one ModelDeployment at one pull-mode (`Agent`) target, kept on the hub.

Push mode writes a target's Deployment itself; a site behind NAT cannot be reached, so the hub
writes a `TargetRelease` instead and the site's `edgeferry-agent` applies it (Open Cluster
Management's ManifestWork, Rancher Fleet's BundleDeployment). Each Agent EdgeTarget gets a hub
namespace of its own (OCM's cluster namespace) holding one TargetRelease per ModelDeployment; the
agent's credential is bound in that namespace only, so it reads its own releases and writes
their status, nothing else.

The spec is the rendered Deployment and Service exactly as push mode would apply them (the
rollout's record rides in the Deployment's `edgeferry.io/` annotations, as at every target), plus
the rollout's intent (why it was written, which digest). The status is what the agent saw at the
site: the facts `decisions.workload_health` derives and the record the Deployment there
carries, written only when they change (the site's heartbeat is the agent's Lease). The names
below are the contract between the hub's handlers, the agent and the manifests that grant the
agent its rights.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import pydantic

from edgeferry.models import wire

GROUP = "edgeferry.io"
VERSION = "v1alpha1"
PLURAL = "targetreleases"
KIND = "TargetRelease"

NAMESPACE_PREFIX = "edgeferry-agent-"
"""Hub namespaces of Agent targets: `edgeferry-agent-<EdgeTarget namespace>-<name>`."""
SERVICE_ACCOUNT = "edgeferry-agent"
"""The ServiceAccount in each agent namespace whose token the site's agent uses."""
AGENT_ROLE = "edgeferry-agent"
"""The ClusterRole (shipped in `manifests/rbac/`) bound to that ServiceAccount in its namespace
only: read TargetReleases, write their status, renew the agent's Lease."""
LEASE = "edgeferry-agent"
"""The agent's heartbeat for the whole site (coordination.k8s.io Lease in its hub namespace),
with what the agent found at the site's nodes in annotations (see `decisions.agent_release`)."""

AGENT_FIELD_MANAGER = "edgeferry-agent"
"""The server-side apply field manager of what the agent writes at its site."""
PREPULL_FIELD_MANAGER = "edgeferry-prepull"
"""The field manager of the hub's `spec.prePull` writes: apart from the release's own apply, so
writing the Deployment never drops a pre-pull in flight, and clearing it leaves the rest."""

TARGET_LABEL = "edgeferry.io/target"
"""On an agent namespace: the EdgeTarget it serves, as `<namespace>.<name>`."""
DEPLOYMENT_LABEL = "edgeferry.io/deployment"
"""On a TargetRelease: the ModelDeployment it carries, as `<namespace>.<name>`."""

ReleasePhase = Literal["Applied", "Available", "Failing", "Refused", "Unapplied"]
WriteReason = Literal["rollout", "rollback", "maintain"]

_MAX_NAME = 63


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def hub_namespace(namespace: str, name: str) -> str:
    """The hub namespace of Agent EdgeTarget `namespace/name` (a DNS label; hashed when long).

    Both parts are DNS labels, so `-` could join two pairs into one string; the hash of the
    exact pair, added whenever the plain join could be ambiguous or too long, keeps them apart.
    """
    plain = f"{NAMESPACE_PREFIX}{namespace}-{name}"
    if len(plain) <= _MAX_NAME and "-" not in namespace:
        return plain
    return f"{plain[: _MAX_NAME - 11].rstrip('-')}-{_short_hash(f'{namespace}/{name}')}"


def release_name(md_namespace: str, md_name: str) -> str:
    """The TargetRelease of ModelDeployment `md_namespace/md_name` (namespaces have no dots)."""
    return f"{md_namespace}.{md_name}"


class DeploymentRef(wire.Model):
    """The ModelDeployment a TargetRelease belongs to."""

    namespace: str
    name: str


class PrePullIntent(wire.Model):
    """The hub's ask (`rollout.prePull`): put `digest` onto the site's nodes before the
    Deployment moves to it. The hub holds the release's Deployment at the running digest
    until the agent reports every usable node done; the agent picks the nodes (it alone sees
    them) by the same rules the operator uses at a push target (`decisions.prepull`)."""

    digest: str
    """The `repository@sha256:...` to pull."""
    generation: int
    """The ModelDeployment's generation the pre-pull is for (a spec edit retries a failure)."""
    max_concurrent_nodes: int = 10
    requested_at: str
    """When the hub asked (RFC 3339, the hub's clock): the deadline counts from here."""
    daemon_set: dict[str, Any]
    """The pre-pull DaemonSet as `decisions.prepull.render` makes it, not narrowed to nodes."""
    failed: str | None = None
    """Set when the hub marked the pre-pull failed: the DaemonSet is then its failed form."""


class PrePullReport(wire.Model):
    """The pre-pull DaemonSet at the site as the agent read it (`decisions.prepull.Observed`)."""

    digest: str | None = None
    generation: int | None = None
    started_at: str | None = None
    failed: str | None = None
    planned: bool = False
    done: tuple[str, ...] = ()
    pulling: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    holding: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    errors_since: str | None = None


class TargetReleaseSpec(wire.Model):
    """What the hub wants at the site, written by the rollout (never by the agent)."""

    model_deployment: DeploymentRef
    namespace: str
    """The site namespace the workload goes to (the EdgeTarget's `spec.namespace`)."""
    reason: WriteReason = "rollout"
    """Why the hub wrote this release last: a rollout, a rollback or a re-apply."""
    digest: str
    """The image digest the release runs (`repository@sha256:...`)."""
    deployment: dict[str, Any]
    """The Deployment to server-side apply, as rendered by `decisions.workload`."""
    service: dict[str, Any]
    """The Service to server-side apply beside it."""
    pre_pull: PrePullIntent | None = None
    """A pre-pull before the next switch (written apart, by `PREPULL_FIELD_MANAGER`)."""


class TargetReleaseStatus(wire.Model):
    """What the agent saw at the site for this release, written by the agent only."""

    observed_generation: int | None = None
    """The spec generation the agent last applied (or refused)."""
    last_change_time: str | None = None
    """When the agent last wrote a changed report (RFC 3339). Not a heartbeat: the agent writes
    only what changed, so a settled fleet costs the hub no writes; the site's heartbeat is the
    agent's Lease."""
    phase: ReleasePhase | None = None
    digest: str | None = None
    """The digest the site's Deployment carries (its record), not the one asked for."""
    exists: bool = False
    foreign: bool = False
    available: bool = False
    ready_replicas: int = 0
    replicas: int = 0
    failing: bool = False
    failure: str | None = None
    crashing: bool = False
    stuck: bool = False
    image: str | None = None
    record: dict[str, str] = pydantic.Field(default_factory=dict)
    """The `edgeferry.io/` annotations of the Deployment at the site: the rollout's memory."""
    message: str | None = None
    """Why the agent could not apply the release, if so."""
    pre_pull: PrePullReport | None = None
    """The site's pre-pull DaemonSet, while the spec asks for one."""


parse_spec = TargetReleaseSpec.from_wire
parse_status = TargetReleaseStatus.from_wire
