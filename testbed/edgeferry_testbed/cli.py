"""`edgeferry-testbed up|base-images|down|status|env`: the testbed CLI (`make testbed-*`)."""

from __future__ import annotations

import argparse
import json
import sys

from edgeferry_testbed import procs, testbed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeferry-testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start (or reuse) clusters, Docker, registry, Prometheus")
    up.add_argument(
        "--no-base-images",
        action="store_true",
        help="skip building and pushing the local base images",
    )
    sub.add_parser(
        "base-images",
        help="start Docker and the registry and make the base images (no Go tools needed)",
    )
    sub.add_parser("down", help="stop every process the testbed started")
    sub.add_parser("status", help="show what runs")
    sub.add_parser("env", help="print .testbed/env.json")
    stop = sub.add_parser("stop-apiserver", help="take one cluster's API offline")
    stop.add_argument("cluster")
    start = sub.add_parser("start-apiserver", help="bring one cluster's API back")
    start.add_argument("cluster")
    args = parser.parse_args(argv)

    bed = testbed.Testbed()
    try:
        if args.command == "up":
            described = bed.up(base_images=not args.no_base_images)
            for c in described.clusters:
                print(
                    f"  {c.name:8} {c.role:4} {c.api_url}  arch={','.join(c.architectures)}"
                    f"  kubeconfig={c.kubeconfig}"
                )
            print(f"  registry   {described.registry}")
            print(f"  docker     {described.docker_host}")
            print(f"  prometheus {described.prometheus_url}")
            for name, ref in described.base_images.items():
                print(f"  base image {name}: {ref}")
        elif args.command == "base-images":
            for name, ref in bed.base_images().items():
                print(f"  base image {name}: {ref}")
        elif args.command == "down":
            stopped = bed.down()
            print(f"testbed: stopped {len(stopped)} processes: {', '.join(stopped) or 'none'}")
        elif args.command == "status":
            for row in bed.status():
                state = "running" if row["running"] else "stopped"
                pid = f" pid {row['pid']}" if row.get("pid") else ""
                print(f"  {row['name']:32} {state}{pid}")
            if bed.layout.env_file.exists():
                print(f"  env: {bed.layout.env_file}")
        elif args.command == "env":
            print(json.dumps(json.loads(bed.layout.env_file.read_text()), indent=2))
        elif args.command == "stop-apiserver":
            bed.stop_apiserver(args.cluster)
        elif args.command == "start-apiserver":
            bed.start_apiserver(args.cluster)
    except procs.TestbedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
