"""The smoke-test probe's output, read back: status, body, latency, or why no answer came."""

from __future__ import annotations

import pytest

from edgeferry.adapters import smoke_probe

MARKS = "1700000000.100000 sent\n1700000000.112500 done 0\n"


def test_a_complete_answer_gives_status_body_and_the_latency_between_the_marks() -> None:
    raw = b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"predictions": [0]}'
    exchange = smoke_probe.parse_exchange(raw, MARKS)
    assert exchange.status_code == 200
    assert exchange.body == '{"predictions": [0]}'
    assert exchange.latency_ms == pytest.approx(12.5)
    assert exchange.answered_at == pytest.approx(1700000000.1125)
    assert exchange.error is None


def test_an_error_answer_keeps_its_body() -> None:
    raw = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 16\r\n\r\nmodel not loaded"
    exchange = smoke_probe.parse_exchange(raw, MARKS)
    assert (exchange.status_code, exchange.body) == (500, "model not loaded")


def test_a_chunked_answer_is_joined() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert smoke_probe.parse_exchange(raw, MARKS).body == "abcde"


def test_a_body_shorter_than_announced_is_reported_as_far_as_it_came() -> None:
    raw = b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    exchange = smoke_probe.parse_exchange(raw, MARKS)
    assert (exchange.status_code, exchange.body) == (200, "partial")


def test_a_long_body_is_cut() -> None:
    raw = b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 5000
    assert len(smoke_probe.parse_exchange(raw, MARKS).body) == smoke_probe.BODY_LIMIT


def test_a_refused_connection_says_so() -> None:
    stderr = (
        "1700000000.100000 sent\n"
        "nc: can't connect to remote host (127.0.0.1): Connection refused\n"
        "1700000000.100400 done 1\n"
    )
    exchange = smoke_probe.parse_exchange(b"", stderr)
    assert exchange.status_code is None
    assert exchange.error == "connection refused"


@pytest.mark.parametrize("code", [124, 143])
def test_a_request_cut_by_the_timeout_says_no_complete_answer_in_time(code: int) -> None:
    stderr = f"1700000000.1 sent\n1700000010.1 done {code}\n"
    exchange = smoke_probe.parse_exchange(b"", stderr)
    assert exchange.status_code is None
    assert exchange.error == "no complete answer in time"
    assert exchange.latency_ms == pytest.approx(10000)


def test_something_that_is_not_http_is_no_status_with_a_reason() -> None:
    exchange = smoke_probe.parse_exchange(b"SSH-2.0-OpenSSH_9.2\r\n", MARKS)
    assert exchange.status_code is None
    assert exchange.error is not None and exchange.error.startswith("not an HTTP answer")


def test_a_probe_without_ts_is_a_probe_error_naming_what_it_needs() -> None:
    with pytest.raises(smoke_probe.ProbeError, match=r"BusyBox 1\.31 or later") as raised:
        smoke_probe.parse_exchange(b"", "sh: ts: not found\n")
    assert "ts: not found" in str(raised.value)
