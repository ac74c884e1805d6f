"""`model_fetch.http` against a real HTTP server on 127.0.0.1 (in a thread, stopped after)."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
from collections.abc import Iterator

import pytest

from edgeferry.adapters import model_fetch

BODY = bytes(range(256)) * 8192  # 2 MiB: more than one chunk


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/model.bin":
            if self.headers.get("Authorization") not in (None, "Bearer s3cret"):
                self.send_error(401)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/busy":
            self.send_error(503)
        else:
            self.send_error(404)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_a_download_streams_into_the_file_and_reports_its_sha256(server: str) -> None:
    into = io.BytesIO()
    got = model_fetch.http(f"{server}/model.bin", into, timeout_s=30)
    assert into.getvalue() == BODY
    assert got == model_fetch.Downloaded(hashlib.sha256(BODY).hexdigest(), len(BODY))


def test_a_bearer_token_is_sent(server: str) -> None:
    auth = model_fetch.HttpAuth(token="s3cret")
    got = model_fetch.http(f"{server}/model.bin", io.BytesIO(), timeout_s=30, auth=auth)
    assert got.size == len(BODY)
    with pytest.raises(model_fetch.FetchError, match="401") as refused:
        model_fetch.http(
            f"{server}/model.bin",
            io.BytesIO(),
            timeout_s=30,
            auth=model_fetch.HttpAuth(token="wrong"),
        )
    assert not refused.value.transient


def test_not_found_is_a_refusal_that_waits_for_a_spec_edit(server: str) -> None:
    with pytest.raises(model_fetch.FetchError, match="404") as raised:
        model_fetch.http(f"{server}/missing", io.BytesIO(), timeout_s=30)
    assert not raised.value.transient


def test_a_busy_server_is_transient(server: str) -> None:
    with pytest.raises(model_fetch.FetchError, match="503") as raised:
        model_fetch.http(f"{server}/busy", io.BytesIO(), timeout_s=30)
    assert raised.value.transient


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(model_fetch.FetchError, match="cannot reach") as raised:
        model_fetch.http(f"http://127.0.0.1:{port}/model.bin", io.BytesIO(), timeout_s=30)
    assert raised.value.transient


def test_a_download_past_its_deadline_is_dropped_as_transient(server: str) -> None:
    with pytest.raises(model_fetch.FetchError, match="deadline") as raised:
        model_fetch.http(f"{server}/model.bin", io.BytesIO(), timeout_s=1e-9)
    assert raised.value.transient
