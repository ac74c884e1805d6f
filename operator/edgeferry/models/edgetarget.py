"""Typed view of the EdgeTarget resource: a place where models run.

An EdgeTarget is either a node pool of the hub cluster (`Cloud`: chosen by node selector and
tolerations, into a namespace), a remote K3s cluster (`K3s`: reached through a kubeconfig
Secret in the *same* namespace as the EdgeTarget, so a user can never point the operator at a
Secret they could not read themselves; all of its nodes, or those a node selector and
tolerations choose, e.g. a factory's GPU nodes), or a site behind NAT that the hub never
connects to (`Agent`: an `edgeferry-agent` there pulls its releases from a hub namespace of
its own, `models.target_release`). Every kind carries one `Placement`, so the probe, the node
count and the rendered Pods treat them alike. Deployments select targets by the
EdgeTarget's labels (region, tier, arch, hardware), not by anything in the spec, so the spec
only says how to reach the place and what to substitute there.

The CRD (`crds/edgetarget.yaml`) is the validating authority: it rejects bad objects at admission
with CEL rules. The same invariants are repeated here, cheaply, so that code constructing a spec
by hand (tests, the demo) cannot build an object the API server would refuse, and so a handler
that meets an object from an older, looser schema fails with a message instead of guessing.
Defaults here equal the CRD's defaults; a unit test compares the two.
"""

from __future__ import annotations

from typing import Any, Literal, Self

import pydantic

from edgeferry.models import wire

TargetType = Literal["Cloud", "K3s", "Agent"]

DEFAULT_KUBECONFIG_KEY = "kubeconfig"
DEFAULT_PROBE_INTERVAL_SECONDS = 30


class Toleration(wire.Model):
    """A Kubernetes toleration, copied verbatim onto the Pods of the target."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    def to_manifest(self) -> dict[str, Any]:
        """The toleration as the Pod spec wants it (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class Placement(wire.Model):
    """Which nodes of its cluster a target stands for: the hub's for Cloud (`cloud`), the
    site's for K3s (`k3s`). Empty means every node that takes ordinary Pods."""

    node_selector: dict[str, str] = pydantic.Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


class SecretKeyRef(wire.Model):
    """A key of a Secret in the EdgeTarget's own namespace."""

    name: str
    key: str = DEFAULT_KUBECONFIG_KEY


class K3sAccess(Placement):
    """How the operator reaches a remote K3s cluster, and which of its nodes the target
    stands for (`Placement`'s fields, beside the Secret as in the CRD's `k3s` section)."""

    kubeconfig_secret_ref: SecretKeyRef


class EdgeTargetSpec(wire.Model):
    """What the user declares about a target."""

    type: TargetType
    namespace: str
    cloud: Placement | None = None
    k3s: K3sAccess | None = pydantic.Field(default=None, alias="k3s")
    """Spelled out: the camelCase generator would write `k3S`."""
    registry_mirror: str | None = None
    """The site's registry: the admitted digest is copied there before the target's wave and
    rolled out from there (`decisions.mirror_copy`)."""
    registry_mirror_credentials_secret: str | None = None
    """A dockerconfigjson or basic-auth Secret in this namespace for pushing to the mirror."""
    image_size_budget_bytes: int | None = pydantic.Field(default=None, ge=1)
    probe_interval_seconds: int = pydantic.Field(
        default=DEFAULT_PROBE_INTERVAL_SECONDS, ge=5, le=3600
    )

    @pydantic.model_validator(mode="after")
    def _sections_match_type(self) -> Self:
        if self.type == "K3s":
            if self.k3s is None:
                raise ValueError("type K3s requires k3s.kubeconfigSecretRef")
            if self.cloud is not None:
                raise ValueError(
                    "type K3s cannot have a cloud section (it picks hub nodes): "
                    "use k3s.nodeSelector and k3s.tolerations"
                )
        if self.type == "Cloud" and self.k3s is not None:
            raise ValueError("type Cloud cannot have a k3s section (it uses the hub's own nodes)")
        if self.registry_mirror_credentials_secret and not self.registry_mirror:
            raise ValueError("registryMirrorCredentialsSecret needs registryMirror")
        if self.type == "Agent" and (self.k3s is not None or self.cloud is not None):
            raise ValueError(
                "type Agent takes neither k3s nor cloud: its agent reaches the site with the "
                "site's own credentials, and the hub never connects there"
            )
        return self

    @property
    def placement(self) -> Placement:
        """Node selector and tolerations to probe with and render, from `cloud` or `k3s`
        (only the placement: the kubeconfig reference stays out of it)."""
        if self.k3s is not None:
            return Placement(node_selector=self.k3s.node_selector, tolerations=self.k3s.tolerations)
        return self.cloud if self.cloud is not None else Placement()


class EdgeTargetStatus(wire.Model):
    """What the last probe of the target found, as written to `.status`."""

    observed_generation: int | None = None
    reachable: bool | None = None
    kubernetes_version: str | None = None
    cluster_id: str | None = pydantic.Field(default=None, alias="clusterID")
    """UID of the target's `kube-system` namespace: which cluster it is (see
    `decisions.same_place`); kept from the last probe that read it."""
    ready_nodes: int | None = None
    total_nodes: int | None = None
    architectures: tuple[str, ...] = ()
    last_probe_time: str | None = None
    agent_namespace: str | None = None
    """Agent targets: the hub namespace holding the agent's TargetReleases and credential."""
    message: str | None = None
    conditions: tuple[dict[str, Any], ...] = ()

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def nodes(self) -> str | None:
        """`ready/total` for the printer column, like the READY column of `kubectl get deploy`."""
        if self.ready_nodes is None or self.total_nodes is None:
            return None
        return f"{self.ready_nodes}/{self.total_nodes}"

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def arch(self) -> str | None:
        """`architectures` joined by commas for the printer column: kube-apiserver prints a list
        there as JSON (`["amd64","arm64"]`), and `[*]` would show only the first element."""
        if self.reachable is None and not self.architectures:
            return None
        return ",".join(self.architectures)


parse_spec = EdgeTargetSpec.from_wire
"""Load `.spec` of an EdgeTarget body (a mapping from Kopf or the API)."""


parse_status = EdgeTargetStatus.from_wire
"""Load `.status` of an EdgeTarget body; a missing status reads as all-unknown."""
