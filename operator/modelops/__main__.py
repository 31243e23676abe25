"""`python -m modelops run`: the operator (kopf, standalone or with peering) and its metrics."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys

from modelops import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelops", description=__doc__)
    parser.add_argument("--version", action="version", version=f"modelops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster config")
    run.add_argument("-n", "--namespace", action="append", default=[],
                     help="watch only this namespace (repeatable); default: all (also MODELOPS_NAMESPACES)")
    run.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="kopf liveness endpoint")
    run.add_argument("--peering", default=None,
                     help="kopf peering name for several replicas (needs kopf's peering CRDs); default standalone")
    run.add_argument("--priority", type=int, default=None,
                     help="kopf peering priority; with --peering the default is random per process, so that "
                          "exactly one replica is active and the others stand by (equal priorities all pause)")
    run.add_argument("--log-format", choices=["plain", "full", "json"], default="full",
                     help="json: one JSON object per line, with the object's namespace and name")
    run.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    import kopf

    from modelops.config import OperatorConfig
    from modelops.handlers import modeldeployment  # noqa: F401 - registers the handlers

    namespaces = args.namespace or OperatorConfig().namespaces
    import os
    import socket

    identity = os.environ.get("POD_ID") or f"{socket.gethostname()}-{os.getpid()}"
    kopf.configure(verbose=args.verbose, log_prefix=True,
                   log_format={"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL,
                               "json": kopf.LogFormat.JSON}[args.log_format])
    if not args.verbose:  # every watch event's "handler succeeded" is noise at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    priority = args.priority
    if priority is None:
        priority = random.SystemRandom().randint(1, 2**31 - 1) if args.peering else 0
    if args.peering:  # the workers follow kopf's own peering decision (see adapters/peering.py)
        os.environ.update(MODELOPS_PEERING=args.peering, MODELOPS_PEER_ID=identity,
                          MODELOPS_PEER_PRIORITY=str(priority),
                          MODELOPS_PEERING_NAMESPACE="" if not namespaces else namespaces[0])
    asyncio.run(kopf.operator(
        clusterwide=not namespaces, namespaces=namespaces,
        standalone=args.peering is None, peering_name=args.peering, priority=priority, identity=identity,
        liveness_endpoint=args.liveness,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
