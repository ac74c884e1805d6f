"""The edge API servers' audit log: what `tests/integration/test_pull_mode.py` reads to show the
hub operator never reaches an agent's site. Only the testbed's own admin identity is left out."""

from __future__ import annotations

from pathlib import Path

import yaml

from edgeferry_testbed import clusters, layout, pki


def _argv(name: str) -> list[str]:
    lay = layout.Layout(
        state_dir=Path("/state"), cache_dir=Path("/cache"), clusters=layout.default_clusters()
    )
    return clusters.apiserver_argv(lay, lay.cluster(name))


def test_edge_api_servers_keep_an_audit_log_and_the_hub_does_not() -> None:
    for edge in ("edge-1", "edge-2"):
        argv = _argv(edge)
        assert f"--audit-log-path=/state/clusters/{edge}/audit.log" in argv
        assert f"--audit-policy-file=/state/clusters/{edge}/audit-policy.yaml" in argv
    assert not [a for a in _argv("hub") if a.startswith("--audit")]


def test_the_policy_leaves_out_only_the_testbed_admin_and_the_api_server_itself() -> None:
    policy = yaml.safe_load(clusters.AUDIT_POLICY)
    *silenced, last = policy["rules"]
    assert silenced == [{"level": "None", "users": [pki.ADMIN_USER, "system:apiserver"]}]
    assert last == {"level": "Metadata"}, "everyone else is logged, without request bodies"
