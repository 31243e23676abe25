"""`python -m modelops run`: the operator (kopf, alone or leader-elected through a Lease) and its metrics."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
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
        # and so is every API request lightkube's HTTP client logs ("HTTP Request: PATCH ..."); errors
        # still reach the log through the adapters that handle them
        logging.getLogger("httpx2").setLevel(logging.WARNING)
    # kopf itself always runs standalone: every replica watches (its caches stay warm); only the
    # Lease's holder reconciles and writes (handlers/modeldeployment.py, adapters/leader.py).
    memo = kopf.Memo(config=config)
    if revision_url is not None:
        memo.revision_url = revision_url
    asyncio.run(kopf.operator(
        clusterwide=not config.namespaces, namespaces=config.namespaces,
        # kopf derives an identity from the user name when none is given, and uid 65532 has no
        # passwd entry in the image (getpwuid fails): give it ours.
        standalone=True, identity=config.identity, liveness_endpoint=args.liveness, memo=memo,
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
    run.add_argument("--leader-elect", action="store_true", default=None,
                     help="several replicas: the holder of a Lease reconciles, the others watch and stand by "
                          "(also MODELOPS_LEADER_ELECTION)")
    run.add_argument("--log-format", choices=["plain", "full", "json"], default="full",
                     help="json: one JSON object per line, with the object's namespace and name")
    run.add_argument("--verbose", action="store_true")
    return top


def operator_config(args: argparse.Namespace) -> "OperatorConfig":
    """The settings, read once: the environment, overridden by the command line; the identity
    resolved once (the Lease's holder, and the user agent of every request)."""
    from modelops.config import OperatorConfig

    cli = {k: v for k, v in (("namespaces", args.namespace), ("leader_election", args.leader_elect))
           if v not in (None, [])}
    config = OperatorConfig(**cli)
    return config.model_copy(update={"identity": config.identity or f"{socket.gethostname()}-{os.getpid()}"})


if __name__ == "__main__":
    sys.exit(main())
