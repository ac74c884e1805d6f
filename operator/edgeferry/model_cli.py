"""`python -m edgeferry model push FILE REPOSITORY`: put a model file where a ModelImage can use it.

A model too large for a ConfigMap goes to a registry as an OCI artifact
(`adapters.model_artifact`); this prints the manifest digest and the `spec.model` snippet to
paste, so nobody computes a sha256 by hand. Registry credentials come from
`~/.docker/config.json` (`docker login`), as for `oras`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeferry.adapters import model_artifact, registry_api


def snippet(pushed: model_artifact.Pushed, *, file_name: str, model_format: str) -> str:
    """The `spec.model` section of a ModelImage that builds from this artifact."""
    return "\n".join(
        [
            "model:",
            f"  format: {model_format}",
            f"  sha256: {pushed.sha256}",
            "  source:",
            "    oci:",
            f"      repository: {pushed.repository}",
            f"      digest: {pushed.digest}",
            f"      fileName: {file_name}",
        ]
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeferry model")
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="push a model file as an OCI artifact")
    push.add_argument("file", type=Path, help="the model file")
    push.add_argument("repository", help="host[:port]/path, e.g. 127.0.0.1:5000/models/iris")
    push.add_argument("--tag", default="latest", help="tag to push (default: latest)")
    push.add_argument("--format", default="custom", choices=["sklearn", "onnx", "custom"])
    push.add_argument(
        "--plain-http", action="store_true", help="plain HTTP (loopback registries always are)"
    )
    args = parser.parse_args(argv)
    if not args.file.is_file():
        parser.error(f"{args.file} is not a file")
    try:
        pushed = model_artifact.push(
            args.file, args.repository, tag=args.tag, plain_http=args.plain_http or None
        )
    except (registry_api.RegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = "uploaded" if pushed.uploaded else "already in the registry"
    print(f"pushed {args.file} ({pushed.size} bytes, {state}) to {pushed.repository}:{pushed.tag}")
    print(f"digest: {pushed.digest}")
    print()
    print(snippet(pushed, file_name=args.file.name, model_format=args.format))
    return 0
