"""What a K3s kubeconfig Secret may ask of the operator: TLS verification and proxies."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from edgeferry import settings
from edgeferry.adapters import clusters
from edgeferry.handlers import runtime

SOURCE = "Secret ml/site-kubeconfig key 'kubeconfig'"


def kubeconfig(**cluster: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "site", "cluster": {"server": "https://site.example:6443", **cluster}}
            ],
            "users": [{"name": "edgeferry", "user": {"token": "t0ken"}}],
            "contexts": [{"name": "site", "context": {"cluster": "site", "user": "edgeferry"}}],
            "current-context": "site",
        }
    )


def test_skipping_tls_verification_is_refused_by_default() -> None:
    with pytest.raises(clusters.CredentialsError) as refused:
        clusters.client_from_kubeconfig(
            kubeconfig(**{"insecure-skip-tls-verify": True}), source=SOURCE
        )
    assert refused.value.reason == "InsecureTLSRefused"
    assert "certificate-authority-data" in refused.value.message
    assert "EDGEFERRY_ALLOW_INSECURE_TARGET_TLS=true" in refused.value.message


def test_skipping_tls_verification_is_accepted_when_the_operator_allows_it() -> None:
    api = clusters.client_from_kubeconfig(
        kubeconfig(**{"insecure-skip-tls-verify": True}), source=SOURCE, allow_insecure_tls=True
    )
    assert api.configuration.verify_ssl is False


def test_an_explicit_false_keeps_verification_on() -> None:
    api = clusters.client_from_kubeconfig(
        kubeconfig(**{"insecure-skip-tls-verify": False}), source=SOURCE
    )
    assert api.configuration.verify_ssl is True


def test_a_quoted_false_is_refused_because_the_client_would_read_it_as_true() -> None:
    with pytest.raises(clusters.CredentialsError) as refused:
        clusters.client_from_kubeconfig(
            kubeconfig(**{"insecure-skip-tls-verify": "false"}),
            source=SOURCE,
            allow_insecure_tls=True,
        )
    assert refused.value.reason == "KubeconfigInvalid"
    assert "YAML boolean" in refused.value.message


def test_an_http_proxy_url_is_used_for_the_target() -> None:
    api = clusters.client_from_kubeconfig(
        kubeconfig(**{"proxy-url": "http://proxy.site.example:3128"}), source=SOURCE
    )
    assert api.configuration.proxy == "http://proxy.site.example:3128"


def test_a_socks_proxy_url_is_refused_with_what_works() -> None:
    with pytest.raises(clusters.CredentialsError) as refused:
        clusters.client_from_kubeconfig(
            kubeconfig(**{"proxy-url": "socks5://proxy.site.example:1080"}), source=SOURCE
        )
    assert refused.value.reason == "KubeconfigRefused"
    assert "HTTP(S) proxies only" in refused.value.message


def test_the_operator_setting_reaches_the_target_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clusters, "hub_client", lambda: None)
    monkeypatch.setattr(clusters, "_SHARED", {})
    strict = runtime.access_for(settings.from_env({}))
    lenient = runtime.access_for(settings.from_env({"EDGEFERRY_ALLOW_INSECURE_TARGET_TLS": "true"}))
    assert strict.clients.allow_insecure_tls is False
    assert lenient.clients.allow_insecure_tls is True
