"""``python -m tests.support.operator_main [--revision-urls FILE] run ...``: the operator for tests.

The same as ``python -m modelops`` (every other argument goes to it unchanged), plus the one
thing only tests need. kwok pods run no containers, so the e2e harness starts stand-in
processes for a revision's pods and writes where they listen to FILE, a JSON object
``{revision: base URL}`` (rewritten atomically as revisions come and go). The operator
asks a revision's golden prompts there, reading the file at each call; a revision that
is not in it is reached at its Service, as in production.

It runs as from the operator's image: without the kubernetes client library (``as_in_image``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__":  # the operator's process (not a test importing the resolver)
    from tests.support.as_in_image import hide

    hide()  # before kopf is imported

from modelops.__main__ import main as operator_main  # noqa: E402
from modelops.adapters.golden import RevisionUrl, service_url  # noqa: E402
from modelops.planning.analysis import GoldenRequest  # noqa: E402


def revision_urls_from(path: Path) -> RevisionUrl:
    """Where a revision answers: as the file maps it when it does, else its Service."""

    def revision_url(request: GoldenRequest) -> str:
        if path.exists():
            mapped = json.loads(path.read_text()).get(request.revision)
            if mapped:
                return str(mapped).rstrip("/")
        return service_url(request)

    return revision_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.operator_main", add_help=False,
                                     allow_abbrev=False)
    parser.add_argument("--revision-urls", type=Path, default=None,
                        help="JSON file {revision: base URL} the e2e harness writes")
    ours, rest = parser.parse_known_args(argv)
    resolver = revision_urls_from(ours.revision_urls) if ours.revision_urls else None
    return operator_main(rest, revision_url=resolver)


if __name__ == "__main__":
    sys.exit(main())
