"""``python -m tests.cluster build|up|down|status|env``: the local test cluster."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import build
from .controlplane import Cluster
from .errors import ClusterError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build and cache etcd, kube-*, kwok and helm (once per version)")
    up = sub.add_parser("up", help="build if needed, then start the control plane and kwok nodes")
    up.add_argument("--nodes", type=Path, help="YAML list of node pools (default: 2x L4, 2x H100, 1 CPU)")
    sub.add_parser("down", help="stop every process `up` started")
    sub.add_parser("status", help="components and nodes")
    sub.add_parser("env", help="print `export KUBECONFIG=...` for eval")
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            build.build_all()
        elif args.command == "up":
            build.build_all()
            cluster = Cluster(node_file=args.nodes)
            took = cluster.up()
            if took:
                print(f"cluster up in {took:.1f}s")
            else:
                print("cluster already up")
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            stopped = Cluster().down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.command == "status":
            print(Cluster().status())
        elif args.command == "env":
            print(f"export KUBECONFIG={Cluster().kubeconfig}")
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    sys.exit(main())
