"""The onnx-http template's side of the model server: real ONNX graphs in onnxruntime.

The graphs are made here with the `onnx` package (an ArgMax over each instance's features, the
shape of a classifier's label output), saved to a file and served in-process on loopback, as the
image does with `/models/model.onnx`.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import pathlib
import threading
import types
from collections.abc import Iterator
from typing import Any

import onnx
import pytest
from onnx import helper

SERVE_PY = (
    pathlib.Path(__file__).resolve().parents[2]
    / "operator"
    / "edgeferry"
    / "templates"
    / "model-http"
    / "serve.py"
)


def _load_serve() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("edgeferry_onnx_http_serve", SERVE_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serve = _load_serve()


def argmax_graph(
    path: pathlib.Path,
    *,
    features: int | str = 2,
    element: int = onnx.TensorProto.FLOAT,
    inputs: int = 1,
) -> pathlib.Path:
    """An ONNX file whose output `label` (int64 [N]) is the index of each row's largest
    feature; `inputs` > 1 adds unused inputs."""
    declared = [
        helper.make_tensor_value_info(f"x{i}" if i else "x", element, ["N", features])
        for i in range(inputs)
    ]
    node = helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0)
    label = helper.make_tensor_value_info("label", onnx.TensorProto.INT64, ["N"])
    graph = helper.make_graph([node], "argmax", declared, [label])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class Server:
    def __init__(self, state: Any) -> None:
        self.state = state
        self.http = serve.make_server("127.0.0.1", 0, state)
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def predict(self, document: Any) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("POST", "/predict", body=json.dumps(document).encode())
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[Server]:
    running = Server(serve.State())
    running.state.set_model(serve.load_model(str(argmax_graph(tmp_path / "m.onnx")), "onnx"))
    yield running
    running.http.shutdown()
    running.http.server_close()


def test_predict_answers_the_graphs_first_output(server: Server) -> None:
    assert server.predict({"instances": [[1, 2], [4, 3.5]]}) == (200, {"predictions": [1, 0]})


def test_instances_of_the_wrong_width_are_refused_naming_the_input_shape(server: Server) -> None:
    status, answer = server.predict({"instances": [[1, 2, 3]]})
    assert status == 400
    assert answer["error"] == "ValueError: input x has shape [N, 2], the instances [1, 3]"


def test_a_single_instance_without_its_batch_dimension_is_refused(server: Server) -> None:
    status, answer = server.predict({"instances": [1, 2]})
    assert status == 400 and "shape [N, 2], the instances [2]" in answer["error"]


def test_instances_that_are_not_numbers_are_refused(server: Server) -> None:
    status, answer = server.predict({"instances": [["a", "b"]]})
    assert status == 400 and "float32 tensor" in answer["error"]


def test_the_instances_take_the_inputs_element_type(tmp_path: pathlib.Path) -> None:
    path = argmax_graph(tmp_path / "m.onnx", element=onnx.TensorProto.DOUBLE, features="F")
    model = serve.load_model(str(path), "onnx")
    assert model.dtype == "float64"
    assert model.predict([[0.1, 0.3, 0.2]]).tolist() == [1]


def test_a_graph_with_two_inputs_is_refused_when_it_loads(tmp_path: pathlib.Path) -> None:
    path = argmax_graph(tmp_path / "m.onnx", inputs=2)
    with pytest.raises(TypeError, match=r"has 2 inputs \(x, x1\); onnx-http feeds one"):
        serve.load_model(str(path), "onnx")


def test_a_file_that_is_not_onnx_fails_to_load(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not a graph")
    with pytest.raises(Exception, match="INVALID_PROTOBUF"):
        serve.load_model(str(path), "onnx")


def test_an_unknown_model_format_is_refused() -> None:
    with pytest.raises(ValueError, match="'tflite' is not sklearn or onnx"):
        serve.load_model("/models/model", "tflite")


def test_each_format_has_its_default_model_path() -> None:
    assert serve.DEFAULT_MODEL_PATHS == {
        "sklearn": "/models/model.pkl",
        "onnx": "/models/model.onnx",
    }
