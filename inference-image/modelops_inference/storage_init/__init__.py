"""Storage initializer: copy a ``gs://`` prefix into the model cache, verified, resumable.

``python -m modelops_inference.storage_init gs://bucket/prefix/ /models/<name>``

Exit codes (retryable ones are worth running again as they are; permanent ones need
a fix first):

====  ==========  ===========================================================
code  kind        meaning
====  ==========  ===========================================================
0     ok          every file is present and verified; the marker is written
2     permanent   usage: bad arguments or a URI that is not gs://bucket/...
3     permanent   source not found: no such bucket, or nothing under the prefix
4     permanent   permission denied (401/403) reading the bucket
5     permanent   a file failed checksum verification after every re-fetch
6     permanent   the destination cannot be written (permissions, not a directory, disk full)
75    retryable   network or server trouble (timeouts, 429, 5xx), the source changed
                  during the copy, or the copy was interrupted (SIGTERM); rerun to resume
====  ==========  ===========================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_PERMISSION = 4
EXIT_CHECKSUM = 5
EXIT_LOCAL_IO = 6
EXIT_RETRYABLE = 75  # EX_TEMPFAIL

MARKER = ".modelops-complete"
TMP_DIR = ".modelops-tmp"


class InitError(Exception):
    exit_code = 1
    retryable = False


class UsageError(InitError):
    exit_code = EXIT_USAGE


class SourceNotFound(InitError):
    exit_code = EXIT_NOT_FOUND


class PermissionDenied(InitError):
    exit_code = EXIT_PERMISSION


class ChecksumFailed(InitError):
    exit_code = EXIT_CHECKSUM


class LocalIOError(InitError):
    exit_code = EXIT_LOCAL_IO


class Retryable(InitError):
    exit_code = EXIT_RETRYABLE
    retryable = True
