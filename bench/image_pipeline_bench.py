"""Time lint, build, scan and push of the sample iris image: through edgeferry's adapters (the
code the operator runs), cold and warm, and the same steps by hand with the CLIs. Prints JSON.

Run on a testbed that is up: `.venv/bin/python bench/image_pipeline_bench.py`.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeferry.adapters import docker_build, grype_env, hadolint, registry, scanner, toolpaths
from edgeferry.decisions import dockerfile
from edgeferry.models import modelimage
from edgeferry_testbed import env, layout, operator_process, samples


class Stopwatch:
    """Seconds of the `with` block, rounded for the report."""

    def __enter__(self) -> Stopwatch:
        self.started = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = round(time.monotonic() - self.started, 2)


def main() -> None:
    lay = layout.default_layout()
    described = env.load(lay.env_file)
    values = samples.placeholders(lay, described)
    doc = samples.render(samples.SAMPLES / "modelimage-iris.yaml", values)[0]
    spec = modelimage.parse_spec(doc["spec"])
    text = dockerfile.resolve(spec, name="iris")
    files = {
        **dockerfile.template_files(spec),
        dockerfile.model_context_path(spec): samples.iris_model(lay, described),
    }
    db_dir = operator_process.ensure_offline_grype_db(lay)
    config = scanner.ScannerConfig(grype=grype_env.GrypeSettings.offline(db_dir))
    api = docker_build.connect(described.docker_host)
    repo = f"{described.registry}/bench/iris"
    out: dict[str, Any] = {"adapters": {}, "cli": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for run, nocache in (("cold", True), ("warm", False)):
            sbom = Path(tmp) / f"{run}.json"
            with Stopwatch() as lint:
                hadolint.lint(text)
            with Stopwatch() as build:
                built = docker_build.build_image(
                    api, text, files=files, tag=f"{repo}:{run}", nocache=nocache
                )
            with Stopwatch() as scan:
                scanner.scan(f"docker:{built.image_id}", config=config, sbom_path=sbom)
            with Stopwatch() as push:
                registry.push_image(api, built.image_id, repo, run)
            out["adapters"][run] = {
                "lint": lint.seconds,
                "build": build.seconds,
                "scan": scan.seconds,
                "push": push.seconds,
                "image_mib": round(built.size_bytes / 2**20),
            }
        ctx = Path(tmp) / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(text)
        for name, data in files.items():
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            (ctx / name).write_bytes(data)
        grype = str(toolpaths.find("grype").path)
        scan_env = {**grype_env.grype_environment(config.grype), "PATH": "/usr/bin:/bin"}
        cli = {
            "lint": ["bash", "-c", f"{hadolint.find_binary()} - < {ctx / 'Dockerfile'}"],
            "build": ["docker", "build", "-q", "-t", f"{repo}:cli", str(ctx)],
            "scan": [
                "bash",
                "-c",
                f"{toolpaths.find('syft').path} scan docker:{repo}:cli -o syft-json={tmp}/cli.json"
                f" -q && {grype} sbom:{tmp}/cli.json -o json > /dev/null",
            ],
            "push": ["docker", "push", "-q", f"{repo}:cli"],
        }
        for step, argv in cli.items():
            with Stopwatch() as watch:
                subprocess.run(
                    argv, check=True, capture_output=True, env=scan_env if step == "scan" else None
                )
            out["cli"][step] = watch.seconds
    api.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
