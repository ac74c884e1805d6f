"""The sklearn-http template's server, run in-process on loopback with a stand-in model.

The real image runs it with Debian's python3 and scikit-learn; here any object with `predict`
stands in for the estimator, which is all the server relies on.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import pathlib
import pickle
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest

SERVE_PY = (
    pathlib.Path(__file__).resolve().parents[2]
    / "operator"
    / "edgeferry"
    / "templates"
    / "model-http"
    / "serve.py"
)


def _load_serve() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("edgeferry_sklearn_http_serve", SERVE_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serve = _load_serve()


class SumModel:
    """Predicts the sum of each instance's features; picklable, like an estimator."""

    def predict(self, instances: list[list[float]]) -> list[float]:
        if any(len(row) != 2 for row in instances):
            raise ValueError("expects 2 features")
        return [sum(row) for row in instances]


class Server:
    def __init__(self, state: Any) -> None:
        self.state = state
        self.http = serve.make_server("127.0.0.1", 0, state)
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server(serve.State())
    yield running
    running.http.shutdown()
    running.http.server_close()


def test_health_is_unavailable_until_the_model_is_loaded(server: Server) -> None:
    assert server.request("GET", "/healthz") == (503, {"status": "loading"})
    server.state.set_model(SumModel())
    assert server.request("GET", "/healthz") == (200, {"status": "ok"})


def test_predict_answers_the_models_predictions(server: Server) -> None:
    server.state.set_model(SumModel())
    body = json.dumps({"instances": [[1, 2], [3.5, 4]]}).encode()
    assert server.request("POST", "/predict", body) == (200, {"predictions": [3, 7.5]})


def test_predict_waits_for_the_model(server: Server) -> None:
    status, _ = server.request("POST", "/predict", b'{"instances": [[1, 2]]}')
    assert status == 503


@pytest.mark.parametrize(
    "body", [b"not json", b'{"rows": [[1, 2]]}', b'{"instances": []}', b'{"instances": [[1]]}']
)
def test_predict_refuses_requests_the_model_cannot_use(server: Server, body: bytes) -> None:
    server.state.set_model(SumModel())
    status, answer = server.request("POST", "/predict", body)
    assert status == 400 and answer["error"]


def test_unknown_paths_are_not_found(server: Server) -> None:
    assert server.request("GET", "/models")[0] == 404
    assert server.request("POST", "/healthz", b"{}")[0] == 404


def test_model_loads_from_a_pickle(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(SumModel()))
    assert serve.load_model(str(path)).predict([[1, 1]]) == [2]


def test_a_pickle_without_predict_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(TypeError, match="predict"):
        serve.load_model(str(path))


def test_numpy_like_results_become_plain_lists() -> None:
    class Array:
        def tolist(self) -> list[int]:
            return [1, 2]

    assert serve._plain(Array()) == [1, 2]


def test_health_check_mode_fails_without_a_server() -> None:
    assert serve.check(1) == 1


def _metrics(server: Server) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/plain")
        text = response.read().decode()
    finally:
        connection.close()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_count_requests_errors_and_latency_per_endpoint(server: Server) -> None:
    server.state.set_model(SumModel())
    server.request("POST", "/predict", b'{"instances": [[1, 2]]}')
    server.request("POST", "/predict", b'{"instances": [[1, 2]]}')
    server.request("POST", "/predict", b'{"instances": [[1]]}')
    server.request("GET", "/healthz")
    found = _metrics(server)
    assert found['edgeferry_model_requests_total{code="200",endpoint="/predict"}'] == 2
    assert found['edgeferry_model_requests_total{code="400",endpoint="/predict"}'] == 1
    assert found['edgeferry_model_request_errors_total{code="400",endpoint="/predict"}'] == 1
    assert found['edgeferry_model_request_duration_seconds_count{endpoint="/predict"}'] == 3
    assert found['edgeferry_model_requests_total{code="200",endpoint="/healthz"}'] == 1


def test_metrics_exist_before_the_first_request(server: Server) -> None:
    found = _metrics(server)
    assert found['edgeferry_model_requests_total{code="200",endpoint="/predict"}'] == 0
    assert found['edgeferry_model_request_duration_seconds_count{endpoint="/predict"}'] == 0
    # Error series too, so an error ratio's numerator covers the same scrapes as its divisor.
    for code in ("400", "413", "503"):
        assert found[f'edgeferry_model_requests_total{{code="{code}",endpoint="/predict"}}'] == 0
        assert (
            found[f'edgeferry_model_request_errors_total{{code="{code}",endpoint="/predict"}}'] == 0
        )
    assert found['edgeferry_model_request_errors_total{code="503",endpoint="/healthz"}'] == 0
    assert not [k for k in found if "errors_total" in k and 'code="200"' in k]


def test_unknown_paths_are_not_counted(server: Server) -> None:
    server.request("GET", "/nope")
    assert not [k for k in _metrics(server) if "/nope" in k]
