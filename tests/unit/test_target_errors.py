"""How a target's refusals read: a 403 says, in the API server's words, which right is missing."""

from __future__ import annotations

import json

from kubernetes.client import exceptions as k8s_exceptions

from edgeferry.adapters import clusters

DENIED = (
    'deployments.apps "model" is forbidden: User "system:serviceaccount:edgeferry-system:'
    'edgeferry-edge" cannot patch resource "deployments" in API group "apps" in the namespace '
    '"models"'
)


def forbidden(body: str | None) -> k8s_exceptions.ApiException:
    exc = k8s_exceptions.ApiException(status=403, reason="Forbidden")
    exc.body = body
    return exc


def test_a_403_names_the_user_verb_resource_and_namespace_that_were_denied() -> None:
    body = json.dumps({"kind": "Status", "code": 403, "reason": "Forbidden", "message": DENIED})
    error = clusters.classify(forbidden(body), target="edge-1: apply", server="https://site:6443")
    assert isinstance(error, clusters.CredentialsError)
    assert error.reason == "Forbidden"
    assert error.message.startswith(
        "edge-1: apply: forbidden: system:serviceaccount:edgeferry-system:edgeferry-edge may not "
        "patch deployments.apps in namespace models; grant it (K3s: manifests/edge/"
    )


def test_a_403_at_the_cluster_scope_says_cluster_wide() -> None:
    denied = (
        'nodes is forbidden: User "edge" cannot list resource "nodes" in API group "" at the '
        "cluster scope"
    )
    error = clusters.classify(forbidden(json.dumps({"message": denied})), target="EdgeTarget e")
    assert "forbidden: edge may not list nodes cluster-wide;" in error.message


def test_a_403_in_other_words_is_quoted() -> None:
    error = clusters.classify(forbidden(json.dumps({"message": "no, says a webhook"})), target="t")
    assert "forbidden: no, says a webhook;" in error.message


def test_a_403_without_a_status_body_still_says_forbidden() -> None:
    error = clusters.classify(forbidden("<html>proxy says no</html>"), target="edge-1: observe")
    assert error.reason == "Forbidden"
    assert "forbidden: 403 Forbidden;" in error.message


def test_a_401_is_about_the_credentials_not_the_rights() -> None:
    exc = k8s_exceptions.ApiException(status=401, reason="Unauthorized")
    error = clusters.classify(exc, target="EdgeTarget edge-1")
    assert error.reason == "Unauthorized"
    assert "refused the credentials" in error.message
