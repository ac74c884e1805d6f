"""Serve a model over HTTP, the standard library and prometheus_client: a pickled scikit-learn
estimator (the `sklearn-http` runtime template) or an ONNX graph in onnxruntime (`onnx-http`).

This file is copied into images generated from either template and runs there as
`python3 /app/serve.py`: on Debian's python3 with python3-sklearn and python3-prometheus-client
for sklearn-http, plus PyPI's onnxruntime wheel for onnx-http (no pip at run time, so no
third-party web framework). `EDGEFERRY_MODEL_FORMAT` (`sklearn` or `onnx`) says which loader to
use. It binds 0.0.0.0 inside the container and answers:

- `GET /healthz`: 200 `{"status": "ok"}` once the model is loaded, 503 while it is loading;
- `POST /predict` with `{"instances": [[...], ...]}`: 200 `{"predictions": [...]}` (sklearn:
  `model.predict(instances)`; onnx: the instances as the graph's one input tensor, in its element
  type, and the graph's first output), 400 for a request the model cannot use, 413 for bodies
  over 1 MiB;
- `GET /metrics`: Prometheus metrics, so a rollout's analysis can judge a release by its
  traffic: `edgeferry_model_requests_total{endpoint,code}`,
  `edgeferry_model_request_errors_total{endpoint,code}` (every answer of 400 or more) and
  `edgeferry_model_request_duration_seconds{endpoint}` (a histogram), plus the process metrics.
  An error rate is `rate(..._errors_total[1m]) / rate(..._requests_total[1m])`.

The model loads in the background so the port answers at once and the health endpoint, not a
refused connection, says what is going on; a model that cannot be loaded ends the process with
exit code 1, so the container stops and its log says why. `pickle` runs code from the file it
loads: the operator only builds a model whose SHA-256 matches the one pinned in the ModelImage.
An ONNX file is data, not code; onnxruntime checks the graph when it creates the session.

Logs go to stdout, one line per event. SIGTERM stops the server (as PID 1 in a container Python
would otherwise ignore it and `docker stop` would wait for its timeout). `--check` asks the
running server for its health and exits 0 or 1, for Docker's HEALTHCHECK.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import prometheus_client

MAX_BODY = 1024 * 1024
ANSWERS = {"/predict": ("200", "400", "413", "503"), "/healthz": ("200", "503")}
"""The status codes each counted endpoint answers. Their series start at 0: a series that
appears only with its first error makes `rate()` miss the errors before its first scrape and
cover less time than the requests series it is divided by, so a fresh Pod's error ratio reads
low exactly when an analysis first measures it."""
LOG = logging.getLogger("serve")


class State:
    """The model once loaded, or why it could not be."""

    def __init__(self) -> None:
        self.model: Any = None
        self.loaded = threading.Event()
        self.error: str | None = None
        self.registry = prometheus_client.CollectorRegistry()
        for collector in (prometheus_client.ProcessCollector, prometheus_client.PlatformCollector):
            collector(registry=self.registry)
        self.requests = prometheus_client.Counter(
            "edgeferry_model_requests",
            "Requests answered, by endpoint and HTTP status code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.errors = prometheus_client.Counter(
            "edgeferry_model_request_errors",
            "Requests answered with a status code of 400 or more.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.duration = prometheus_client.Histogram(
            "edgeferry_model_request_duration_seconds",
            "Time from reading a request to its answer, by endpoint.",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        for endpoint, codes in ANSWERS.items():  # every series present before its first count
            for code in codes:
                self.requests.labels(endpoint, code)
                if int(code) >= 400:
                    self.errors.labels(endpoint, code)
            self.duration.labels(endpoint)

    def set_model(self, model: Any) -> None:
        """Make `model` the one requests use."""
        self.model = model
        self.loaded.set()


ONNX_TENSOR_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
"""The input element types an `onnx-http` model may have, as numpy dtypes of the request."""
DEFAULT_MODEL_PATHS = {"sklearn": "/models/model.pkl", "onnx": "/models/model.onnx"}


class OnnxModel:
    """An ONNX graph in an onnxruntime session, with the `predict` the handler calls: the
    instances become the graph's one input tensor (in its element type), the answer is the
    first output (for a scikit-learn classifier converted by skl2onnx: the labels)."""

    def __init__(self, path: str) -> None:
        import numpy  # here, not at the top: only onnx-http images have onnxruntime
        import onnxruntime

        self._asarray = numpy.asarray
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise TypeError(f"{path} has {len(inputs)} inputs ({names}); onnx-http feeds one")
        self.input = inputs[0]
        if self.input.type not in ONNX_TENSOR_TYPES:
            known = ", ".join(ONNX_TENSOR_TYPES)
            raise TypeError(f"input {self.input.name} is {self.input.type}, not one of {known}")
        self.dtype = ONNX_TENSOR_TYPES[self.input.type]
        self.shape: list[Any] = list(self.input.shape or [])
        self.output = self.session.get_outputs()[0].name

    def predict(self, instances: list[Any]) -> Any:
        """The first output for `instances`; ValueError when they do not fit the input."""
        try:
            array = self._asarray(instances, dtype=self.dtype)
        except (TypeError, ValueError) as error:
            raise ValueError(f"instances are not a {self.dtype} tensor: {error}") from error
        fixed = [d if isinstance(d, int) else None for d in self.shape]
        if array.ndim != len(fixed) or any(
            want is not None and want != got for want, got in zip(fixed, array.shape, strict=True)
        ):
            wanted = "[" + ", ".join("N" if d is None else str(d) for d in fixed) + "]"
            raise ValueError(
                f"input {self.input.name} has shape {wanted}, the instances {list(array.shape)}"
            )
        return self.session.run([self.output], {self.input.name: array})[0]


def load_model(path: str, model_format: str = "sklearn") -> Any:
    """The model at `path` with a `predict(instances)`: unpickled (sklearn) or an onnxruntime
    session (onnx)."""
    if model_format == "onnx":
        return OnnxModel(path)
    if model_format != "sklearn":
        raise ValueError(f"EDGEFERRY_MODEL_FORMAT {model_format!r} is not sklearn or onnx")
    with open(path, "rb") as handle:
        model = pickle.load(handle)  # trusted: its SHA-256 was verified
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"{type(model).__name__} from {path} has no predict()")
    return model


def _instances(body: bytes) -> list[Any]:
    """The `instances` of a predict request, or ValueError saying what is wrong."""
    try:
        document = json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"body is not JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
        raise ValueError('expected {"instances": [[feature, ...], ...]}')
    instances: list[Any] = document["instances"]
    if not instances:
        raise ValueError("instances is empty")
    return instances


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as JSON-able Python values."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else value


class Handler(http.server.BaseHTTPRequestHandler):
    """GET /healthz and POST /predict; everything else is 404."""

    server_version = "edgeferry-model-http"
    state: State
    started = 0.0

    def do_GET(self) -> None:
        self.started = time.perf_counter()
        route = self.path.split("?", 1)[0]
        if route == "/metrics":
            body = prometheus_client.generate_latest(self.state.registry)
            self.send_response(200)
            self.send_header("Content-Type", prometheus_client.CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif route != "/healthz":
            self._send(404, {"error": f"no route for GET {self.path}"})
        elif self.state.loaded.is_set():
            self._send(200, {"status": "ok"})
        else:
            self._send(503, {"status": "loading"})

    def do_POST(self) -> None:
        self.started = time.perf_counter()
        if self.path.split("?", 1)[0] != "/predict":
            self._send(404, {"error": f"no route for POST {self.path}"})
            return
        if not self.state.loaded.is_set():
            self._send(503, {"error": "model is still loading"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {"error": f"body over {MAX_BODY} bytes"})
            return
        try:
            instances = _instances(self.rfile.read(length))
            started = time.perf_counter()
            predictions = _plain(self.state.model.predict(instances))
        except Exception as error:  # the model's own errors are the caller's bad input
            self._send(400, {"error": f"{type(error).__name__}: {error}"})
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        LOG.info("predicted %d instances in %.1f ms", len(instances), elapsed_ms)
        self._send(200, {"predictions": predictions})

    def _send(self, code: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._count(code)

    def _count(self, code: int) -> None:
        """Requests, errors and latency of the two known endpoints (other paths are not
        counted: a scanner probing URLs must not grow the label set)."""
        endpoint = self.path.split("?", 1)[0]
        if endpoint not in ("/predict", "/healthz"):
            return
        self.state.requests.labels(endpoint, str(code)).inc()
        if code >= 400:
            self.state.errors.labels(endpoint, str(code)).inc()
        self.state.duration.labels(endpoint).observe(time.perf_counter() - self.started)

    def log_message(self, format: str, *args: Any) -> None:
        LOG.info("%s %s", self.address_string(), format % args)


def make_server(host: str, port: int, state: State) -> http.server.ThreadingHTTPServer:
    """A bound server whose handlers answer from `state` (port 0 picks a free one)."""
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def check(port: int) -> int:
    """Exit code for Docker's HEALTHCHECK: 0 when the local server says it is healthy."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (OSError, urllib.error.URLError):
        return 1


def main(argv: list[str]) -> int:
    """Serve until SIGTERM/SIGINT; 1 if the model cannot be loaded."""
    port = int(os.environ.get("EDGEFERRY_PORT", "8080"))
    if "--check" in argv:
        return check(port)
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    host = os.environ.get("EDGEFERRY_HOST", "0.0.0.0")  # all interfaces of the container
    model_format = os.environ.get("EDGEFERRY_MODEL_FORMAT", "sklearn")
    model_path = os.environ.get(
        "EDGEFERRY_MODEL_PATH", DEFAULT_MODEL_PATHS.get(model_format, "/models/model")
    )
    state = State()
    server = make_server(host, port, state)
    LOG.info("listening on %s:%d, loading %s", host, port, model_path)

    def load() -> None:
        try:
            started = time.perf_counter()
            state.set_model(load_model(model_path, model_format))
            elapsed_ms = (time.perf_counter() - started) * 1000
            LOG.info("model %s loaded in %.0f ms", type(state.model).__name__, elapsed_ms)
        except Exception as error:
            state.error = f"{type(error).__name__}: {error}"
            LOG.error("cannot load model %s: %s", model_path, state.error)
            threading.Thread(target=server.shutdown, daemon=True).start()

    def stop(signum: int, _frame: object) -> None:
        LOG.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=load, name="load-model", daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 1 if state.error else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
