"""The serving config's source (GCS, or a local file) and the holder that swaps it atomically.

``MetadataSource.fetch()`` returns the raw document and where it came from;
``ServingConfigHolder.reload()`` parses it and swaps the config in one assignment, or
keeps the last good config and records why the new one was refused.

A URI is either one object (``gs://bucket/models/20251201T120000_abc123/best_model_metadata.json``)
or a prefix (``gs://bucket/models/``) meaning "the newest ``{timestamp}_{commit}/`` folder
under it that holds ``best_model_metadata.json``" (folder names sort by time).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from .defaults import MetadataError, ServingConfig, parse_serving_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GsUri:
    bucket: str
    path: str  # no leading slash; "" for the bucket's root

    @property
    def is_prefix(self) -> bool:
        return self.path == "" or self.path.endswith("/")

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.path}"


def parse_gs_uri(uri: str) -> GsUri:
    """
    >>> parse_gs_uri("gs://models/run1/best_model_metadata.json")
    GsUri(bucket='models', path='run1/best_model_metadata.json')
    >>> parse_gs_uri("gs://models")
    GsUri(bucket='models', path='')
    >>> parse_gs_uri("s3://x/y")
    Traceback (most recent call last):
    ...
    ValueError: not a gs:// URI: 's3://x/y'
    """
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    rest = uri[len("gs://"):]
    bucket, _, path = rest.partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI without a bucket: {uri!r}")
    return GsUri(bucket, path)


@dataclass(frozen=True)
class Fetched:
    raw: bytes
    uri: str
    generation: int | None
    folder: str | None  # the {timestamp}_{commit} folder the object sits in


class MetadataSource(Protocol):
    uri: str

    def fetch(self) -> Fetched:
        """Blocking; raises MetadataError with a reason a person can act on."""
        ...


def newest_folder(prefixes: list[str]) -> list[str]:
    """Sub-folders newest first (``{timestamp}_{commit}/`` names sort by time).

    >>> newest_folder(["m/20251201T120000_abc/", "m/20260101T000000_def/", "m/20251115T000000_0a1/"])
    ['m/20260101T000000_def/', 'm/20251201T120000_abc/', 'm/20251115T000000_0a1/']
    """
    return sorted(prefixes, reverse=True)


class GCSMetadataSource:
    """Reads the config with google-cloud-storage (Workload Identity, or the emulator)."""

    def __init__(self, uri: str, filename: str, client_factory: Callable[[], Any]) -> None:
        self.uri = uri
        self.target = parse_gs_uri(uri)
        self.filename = filename
        self._client_factory = client_factory
        self._client: Any = None

    def _bucket(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client.bucket(self.target.bucket)

    def fetch(self) -> Fetched:
        from google.api_core import exceptions as gexc

        try:
            bucket = self._bucket()
            name = self._resolve(bucket) if self.target.is_prefix else self.target.path
            blob = bucket.get_blob(name)
            if blob is None:
                raise MetadataError(f"metadata object gs://{self.target.bucket}/{name} not found", "not_found")
            raw = blob.download_as_bytes(if_generation_match=blob.generation)
        except MetadataError:
            raise
        except gexc.NotFound as exc:
            raise MetadataError(f"{self.uri}: not found ({_short(exc)})", "not_found") from exc
        except (gexc.Forbidden, gexc.Unauthorized) as exc:
            raise MetadataError(f"{self.uri}: permission denied ({_short(exc)})", "forbidden") from exc
        except gexc.PreconditionFailed as exc:
            raise MetadataError(f"{self.uri}: replaced while reading, try again", "unavailable") from exc
        except Exception as exc:  # noqa: BLE001 - network and server errors: report, keep the old config
            raise MetadataError(f"{self.uri}: cannot read: {type(exc).__name__}: {_short(exc)}",
                                "unavailable") from exc
        folder = name.rsplit("/", 2)[-2] if name.count("/") >= 1 else None
        return Fetched(raw=raw, uri=f"gs://{self.target.bucket}/{name}", generation=int(blob.generation),
                       folder=folder)

    def _resolve(self, bucket: Any) -> str:
        prefix = self.target.path
        pages = bucket.list_blobs(prefix=prefix, delimiter="/")
        direct = False
        for blob in pages:  # consuming the iterator fills pages.prefixes
            if blob.name == prefix + self.filename:
                direct = True
        folders = newest_folder(list(pages.prefixes))
        for folder in folders:
            if bucket.get_blob(folder + self.filename) is not None:
                return folder + self.filename
        if direct:
            return prefix + self.filename
        if not folders:
            raise MetadataError(f"no {self.filename} under {self.uri} (the prefix is empty or missing)", "not_found")
        raise MetadataError(f"none of the {len(folders)} folders under {self.uri} holds {self.filename}",
                            "not_found")


class FileMetadataSource:
    """A local file (``file:///etc/modelops/metadata.json``); generation = mtime in ns."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.path = Path(uri[len("file://"):])

    def fetch(self) -> Fetched:
        try:
            raw = self.path.read_bytes()
            generation = self.path.stat().st_mtime_ns
        except FileNotFoundError as exc:
            raise MetadataError(f"{self.uri}: not found", "not_found") from exc
        except OSError as exc:
            raise MetadataError(f"{self.uri}: cannot read: {exc}", "unavailable") from exc
        return Fetched(raw=raw, uri=self.uri, generation=generation, folder=self.path.parent.name or None)


def default_gcs_client() -> Any:
    """A storage client: anonymous against an emulator (STORAGE_EMULATOR_HOST), else ADC."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator"),
                              credentials=AnonymousCredentials())
    return storage.Client()


def make_source(uri: str | None, filename: str, client_factory: Callable[[], Any] = default_gcs_client
                ) -> MetadataSource | None:
    if not uri:
        return None
    if uri.startswith("file://"):
        return FileMetadataSource(uri)
    return GCSMetadataSource(uri, filename, client_factory)


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    changed: bool
    config: ServingConfig
    error: str | None = None
    error_kind: str | None = None


class ServingConfigHolder:
    """The config in use; replaced only by a fully parsed and validated one."""

    def __init__(self, source: MetadataSource | None, on_loaded: Callable[[ServingConfig], None] | None = None,
                 on_failed: Callable[[bool], None] | None = None) -> None:
        self.source = source
        self.config: ServingConfig = ServingConfig()
        self.loaded = source is None  # without a source there is nothing to load
        self.last_error: str | None = None
        self.loaded_at: float | None = None
        self._lock = asyncio.Lock()
        self._on_loaded = on_loaded
        self._on_failed = on_failed

    async def reload(self) -> ReloadResult:
        if self.source is None:
            return ReloadResult(ok=True, changed=False, config=self.config)
        async with self._lock:  # one fetch at a time; concurrent /reload calls queue
            try:
                fetched = await asyncio.to_thread(self.source.fetch)
                new = parse_serving_config(fetched.raw, source_uri=fetched.uri, generation=fetched.generation,
                                           folder=fetched.folder)
            except MetadataError as exc:
                self.last_error = str(exc)
                log.warning("serving config not (re)loaded, %s: %s",
                            "keeping the last good one" if self.loaded else "none loaded yet", exc)
                if self._on_failed:
                    self._on_failed(self.loaded)
                return ReloadResult(ok=False, changed=False, config=self.config, error=str(exc), error_kind=exc.kind)
            changed = (new.source_uri, new.generation) != (self.config.source_uri, self.config.generation)
            self.config = new  # the atomic swap: requests read self.config once
            self.loaded = True
            self.last_error = None
            self.loaded_at = time.time()
            log.info("serving config %s from %s (generation %s)", "loaded" if changed else "unchanged",
                     new.source_uri, new.generation)
            if self._on_loaded:
                self._on_loaded(new)
            return ReloadResult(ok=True, changed=changed, config=new)

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {
            "uri": c.source_uri, "generation": c.generation, "version": c.version, "model": c.model,
            "hyperparameters": dict(c.hyperparameters), "output_format": c.output_format,
            "output_schema": dict(c.output_schema) if c.output_schema is not None else None,
            "stale": self.last_error is not None,
            "last_error": self.last_error,
        }


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
