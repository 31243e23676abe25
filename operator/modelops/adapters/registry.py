"""The model registry on GCS: resolve a metadata prefix to its newest serving config.

The model-selection pipeline writes ``gs://bucket/models/{timestamp}_{commit}/best_model_metadata.json``;
folder names sort by time, so the newest is the last one that holds the file. Lookups go
through google-cloud-storage (to an emulator, with anonymous credentials, when given its
address) and are cached per prefix for ``poll_seconds``: a new generation is noticed within
that time and rolled out like a spec change. The settings come from ``OperatorConfig``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from modelops.domain.spec import ResolvedMetadata

log = logging.getLogger(__name__)
FILENAME = "best_model_metadata.json"
# Each GCS request times out, and its retries stop after RETRY_SECONDS: a hung registry holds one
# reconcile slot for that long at most, and the last known config stays in force meanwhile.
TIMEOUT_SECONDS = 10.0
RETRY_SECONDS = 30.0


class RegistryError(Exception):
    pass


class Registry:
    def __init__(self, poll_seconds: float = 60.0, client: Any = None, emulator_host: str | None = None,
                 project: str | None = None) -> None:
        self.poll_seconds = poll_seconds
        self.emulator_host = emulator_host
        self.project = project
        self._client = client
        self._cache: dict[str, tuple[float, ResolvedMetadata | None]] = {}
        self._lock = threading.Lock()

    def client(self) -> Any:
        if self._client is None:
            from google.cloud import storage

            if self.emulator_host:
                from google.auth.credentials import AnonymousCredentials

                endpoint = self.emulator_host if "://" in self.emulator_host else f"http://{self.emulator_host}"
                self._client = storage.Client(project=self.project or "test", credentials=AnonymousCredentials(),
                                              client_options={"api_endpoint": endpoint})
            else:
                # project=None would mean "no project" to the client; unset, it discovers the project itself
                self._client = storage.Client(**({"project": self.project} if self.project else {}))
        return self._client

    def newest(self, prefix_uri: str) -> ResolvedMetadata | None:
        """The newest serving config under the prefix (cached for the poll interval); None if there is none
        or GCS could not be read (the last known one, recorded in status, stays in force)."""
        with self._lock:
            cached = self._cache.get(prefix_uri)
            if cached and time.monotonic() - cached[0] < self.poll_seconds:
                return cached[1]
        try:
            found = self._lookup(prefix_uri)
        except Exception as exc:  # noqa: BLE001 - any GCS failure keeps the last known config
            log.warning("cannot resolve %s: %s", prefix_uri, exc)
            found = None
        with self._lock:
            self._cache[prefix_uri] = (time.monotonic(), found)
        return found

    def _lookup(self, prefix_uri: str) -> ResolvedMetadata | None:
        m = re.fullmatch(r"gs://([^/]+)/(.*)", prefix_uri)
        if not m:
            raise RegistryError(f"not a gs:// prefix: {prefix_uri}")
        bucket_name, prefix = m.groups()
        from google.cloud.storage.retry import DEFAULT_RETRY

        retry = DEFAULT_RETRY.with_timeout(RETRY_SECONDS)
        bucket = self.client().bucket(bucket_name)
        pages = self.client().list_blobs(bucket_name, prefix=prefix, delimiter="/", timeout=TIMEOUT_SECONDS,
                                         retry=retry)
        for _ in pages:  # consuming the iterator fills pages.prefixes
            pass
        for folder in sorted(pages.prefixes, reverse=True):
            blob = bucket.get_blob(folder + FILENAME, timeout=TIMEOUT_SECONDS, retry=retry)
            if blob is not None:
                return ResolvedMetadata(source=prefix_uri, uri=f"gs://{bucket_name}/{blob.name}",
                                        generation=int(blob.generation))
        return None
