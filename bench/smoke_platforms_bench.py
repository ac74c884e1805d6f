"""Smoke test time per platform, native and emulated: the iris image, start to healthy to one
prediction, through the real smoke adapter. Prints one JSON document.

Needs the local images the bases name (amd64 and arm64 python-sklearn bases, or with a model
file the python-onnxruntime ones, e.g. the testbed's), a BusyBox probe image (the testbed's
busybox base) and arm64 emulation (`python -m edgeferry_testbed base-images` sets all up):
`.venv/bin/python bench/smoke_platforms_bench.py AMD64_BASE ARM64_BASE PROBE [runs] [MODEL.onnx]`.
Without MODEL.onnx the sklearn-http image serves a model trained in the amd64 base; with it the
onnx-http image serves that file (e.g. the iris model of `samples.iris_onnx_model`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeferry.adapters import docker_build, smoke
from edgeferry.decisions import dockerfile
from edgeferry.models import modelimage
from edgeferry_testbed import images

PINNED = "bench.invalid/base@sha256:" + "0" * 64
"""The spec wants a pinned base; the Dockerfile is then pointed at the local image given."""
BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'


def iris_image(api: object, base: str, platform: str, model: bytes, *, onnx: bool) -> str:
    spec = modelimage.parse_spec(
        {
            "model": {
                "format": "onnx" if onnx else "sklearn",
                "source": {"configMap": {"name": "iris-model", "key": "model"}},
                "sha256": "0" * 64,
            },
            "build": {
                "runtime": {
                    "template": "onnx-http" if onnx else "sklearn-http",
                    "baseImage": PINNED,
                }
            },
            "push": {"repository": "127.0.0.1:5000/bench/iris", "tags": ["v1"]},
        }
    )
    files = {**dockerfile.template_files(spec), dockerfile.model_context_path(spec): model}
    text = dockerfile.render(spec, name="iris-bench").replace(f"FROM {PINNED}", f"FROM {base}")
    return docker_build.build_image(api, text, files=files, platform=platform).image_id


def main(argv: list[str]) -> int:
    amd64_base, arm64_base, probe = argv[0], argv[1], argv[2]
    runs = int(argv[3]) if len(argv) > 3 else 3
    onnx_model = Path(argv[4]) if len(argv) > 4 else None
    api = docker_build.connect()
    if onnx_model is not None:
        model = onnx_model.read_bytes()
    else:
        model = images.make_sklearn_model(api, amd64_base)
    figures: dict[str, list[dict[str, float | str]]] = {}
    for platform, base in (("linux/amd64", amd64_base), ("linux/arm64", arm64_base)):
        image = iris_image(api, base, platform, model, onnx=onnx_model is not None)
        for _ in range(runs):
            result = smoke.smoke_test(
                api,
                image,
                prediction=smoke.PredictionRequest(body=BODY),
                timeout_s=600,
                request_timeout_s=120,
                platform=platform,
                probe_image=probe,
                labels={"edgeferry.io/bench": "smoke-platforms"},
            )
            prediction = result.prediction
            figures.setdefault(platform, []).append(
                {
                    "passed": str(result.passed),
                    "healthy_s": round((result.startup_ms or 0) / 1000, 2),
                    "prediction_s": round((prediction.latency_ms if prediction else 0) / 1000, 2),
                    "answer": prediction.body[:80] if prediction else result.message,
                }
            )
    print(json.dumps({"daemon": docker_build.daemon_platform(api), "runs": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
