"""The rollout analysis' Prometheus adapter against the testbed's real Prometheus.

What Prometheus answers decides a wave, so each kind of answer the adapter reads is asked of a
real server: a vector of one sample, a scalar, no sample, NaN, several series, a query it
refuses, and no server at all.
"""

from __future__ import annotations

import pytest

from edgeferry.adapters import prometheus
from edgeferry_testbed import handles

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(testbed_handle: handles.Testbed) -> prometheus.Connection:
    return prometheus.Connection(url=testbed_handle.env.prometheus_url, timeout_seconds=10)


def test_a_vector_of_one_sample_is_its_value(conn: prometheus.Connection) -> None:
    assert prometheus.query(conn, "sum(vector(0.25) + vector(0.5))") == 0.75


def test_a_scalar_is_its_value(conn: prometheus.Connection) -> None:
    assert prometheus.query(conn, "scalar(vector(3))") == 3.0


def test_no_sample_is_no_value(conn: prometheus.Connection) -> None:
    assert prometheus.query(conn, 'up{job="no-such-job"}') is None


def test_nan_is_no_value(conn: prometheus.Connection) -> None:
    assert prometheus.query(conn, "vector(0) / 0") is None


def test_several_series_are_refused_with_a_hint_to_aggregate(conn: prometheus.Connection) -> None:
    with pytest.raises(prometheus.QueryError, match=r"returned 2 series.*sum\(\)"):
        prometheus.query(
            conn,
            'label_replace(vector(1), "a", "x", "", "")'
            ' or label_replace(vector(2), "a", "y", "", "")',
        )


def test_a_query_prometheus_refuses_says_why(conn: prometheus.Connection) -> None:
    with pytest.raises(prometheus.QueryError, match=r"Prometheus answered 400: .*parse error"):
        prometheus.query(conn, "sum(")


def test_no_server_is_an_error_naming_the_address() -> None:
    conn = prometheus.Connection(url="http://127.0.0.1:1", timeout_seconds=2)  # nothing listens
    with pytest.raises(prometheus.QueryError, match=r"127\.0\.0\.1:1 did not answer"):
        prometheus.query(conn, "vector(1)")
