"""``python -m modelops_inference.storage_init gs://bucket/prefix/ /models/<name>``

(``modelops-storage-initializer``). Credentials: Application Default Credentials
(Workload Identity on GKE); with ``STORAGE_EMULATOR_HOST`` set, anonymous against the
emulator. Exit codes: see ``modelops_inference.storage_init``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from . import EXIT_OK, EXIT_USAGE, InitError, UsageError, __doc__ as codes_doc
from .download import MiB, Copier, Options, Source, summary_dict


def gcs_client() -> Any:
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator"),
                              credentials=AnonymousCredentials())
    return storage.Client()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modelops-storage-initializer",
        description="Copy a gs:// prefix into a local model directory: parallel, resumable, checksum-verified; "
                    "writes DEST/.modelops-complete last.",
        epilog=codes_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="gs://bucket/prefix/ (or one object gs://bucket/path/file)")
    p.add_argument("dest", type=Path, help="local directory, e.g. /models/<name>")
    p.add_argument("--workers", type=int, default=int(os.environ.get("MODELOPS_INIT_WORKERS", 8)),
                   help="parallel downloads (default 8)")
    p.add_argument("--slice-mib", type=int, default=int(os.environ.get("MODELOPS_INIT_SLICE_MIB", 32)),
                   help="files are fetched in slices of this size, in parallel, resumable per slice (default 32)")
    p.add_argument("--attempts", type=int, default=3, help="tries per slice for temporary errors, and per "
                   "file for checksum mismatches (default 3)")
    p.add_argument("--max-mbps", type=float, default=float(os.environ.get("MODELOPS_INIT_MAX_MBPS", 0)) or None,
                   help="cap the total download rate, in MB/s (default: no cap)")
    p.add_argument("--verify-existing", action="store_true",
                   help="when the marker is present, re-verify every file's checksum instead of its size")
    p.add_argument("--progress-interval", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s storage-initializer: %(message)s")
    log = logging.getLogger("modelops_inference.storage_init")
    try:
        if args.workers < 1 or args.slice_mib < 1 or args.attempts < 1:
            raise UsageError("--workers, --slice-mib and --attempts must be at least 1")
        source = Source.parse(args.source)
        options = Options(workers=args.workers, slice_size=args.slice_mib * MiB, attempts=args.attempts,
                          max_bytes_per_second=args.max_mbps * 1e6 if args.max_mbps else None,
                          verify_existing=args.verify_existing, progress_interval=args.progress_interval)
        copier = Copier(source, args.dest, gcs_client, options)

        def on_signal(signum: int, frame: Any) -> None:
            log.warning("signal %d: stopping; the partial copy is kept for the next run to resume", signum)
            copier.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        summary = copier.run()
    except InitError as exc:
        kind = "retryable" if exc.retryable else "permanent"
        log.error("%s (exit %d, %s)", exc, exc.exit_code, kind)
        if args.json:
            print(json.dumps({"ok": False, "exit_code": exc.exit_code, "retryable": exc.retryable,
                              "error": str(exc)}))
        return exc.exit_code
    if args.json:
        print(json.dumps({"ok": True, **summary_dict(summary)}))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
