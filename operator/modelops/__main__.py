"""`python -m modelops run`: the operator (kopf, standalone or with peering) and its metrics."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import socket
import sys
from typing import TYPE_CHECKING

from modelops import __version__

if TYPE_CHECKING:
    from modelops.adapters.golden import RevisionUrl
    from modelops.config import OperatorConfig


def main(argv: list[str] | None = None, *, revision_url: "RevisionUrl | None" = None) -> int:
    """Run the operator. ``revision_url`` (where a revision's gateway answers, default its Service)
    is for tests only: ``tests/support/operator_main.py`` passes one that finds the stand-ins."""
    args = parser().parse_args(argv)

    import kopf

    from modelops.handlers import modeldeployment  # noqa: F401 - registers the handlers

    config = operator_config(args)
    kopf.configure(verbose=args.verbose, log_prefix=True,
                   log_format={"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL,
                               "json": kopf.LogFormat.JSON}[args.log_format])
    if not args.verbose:  # every watch event's "handler succeeded" is noise at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # kopf and the handlers get the same settings: the workers follow kopf's own peering decision
    # with this identity and priority (see handlers/modeldeployment.py, adapters/peering.py).
    memo = kopf.Memo(config=config)
    if revision_url is not None:
        memo.revision_url = revision_url
    asyncio.run(kopf.operator(
        clusterwide=not config.namespaces, namespaces=config.namespaces,
        standalone=not config.peering, peering_name=config.peering, priority=config.peer_priority,
        identity=config.peer_id, liveness_endpoint=args.liveness, memo=memo,
    ))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m modelops", description=__doc__)
    top.add_argument("--version", action="version", version=f"modelops {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster config")
    run.add_argument("-n", "--namespace", action="append", default=[],
                     help="watch only this namespace (repeatable); default: all (also MODELOPS_NAMESPACES)")
    run.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="kopf liveness endpoint")
    run.add_argument("--peering", default=None,
                     help="kopf peering name for several replicas (needs kopf's peering CRDs); default standalone "
                          "(also MODELOPS_PEERING)")
    run.add_argument("--priority", type=int, default=None,
                     help="kopf peering priority; with --peering the default is random per process, so that "
                          "exactly one replica is active and the others stand by (equal priorities all pause; "
                          "also MODELOPS_PEER_PRIORITY)")
    run.add_argument("--log-format", choices=["plain", "full", "json"], default="full",
                     help="json: one JSON object per line, with the object's namespace and name")
    run.add_argument("--verbose", action="store_true")
    return top


def operator_config(args: argparse.Namespace) -> "OperatorConfig":
    """The settings, read once: the environment, overridden by the command line; the peer identity
    and priority resolved, so kopf and the handlers use the same ones."""
    from modelops.config import OperatorConfig

    cli = {k: v for k, v in (("namespaces", args.namespace), ("peering", args.peering),
                              ("peer_priority", args.priority)) if v not in (None, [])}
    config = OperatorConfig(**cli)
    priority = config.peer_priority
    if priority is None:  # with peering, random per process, so exactly one replica is the highest
        priority = random.SystemRandom().randint(1, 2**31 - 1) if config.peering else 0
    return config.model_copy(update={"peering": config.peering or None, "peer_priority": priority,
                                     "peer_id": config.peer_id or f"{socket.gethostname()}-{os.getpid()}"})


if __name__ == "__main__":
    sys.exit(main())
