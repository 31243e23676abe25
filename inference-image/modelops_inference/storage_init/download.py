"""Parallel, resumable, verified copy of a GCS prefix into a local directory.

How a copy stays honest:
- every file is downloaded in slices (ranged reads of one pinned object generation)
  into ``<dest>/.modelops-tmp/<digest of its path>.part`` (``part_name``); the slices
  done so far are recorded next to it, so an interrupted copy resumes where it stopped,
  even inside a large file;
- a finished part is verified against the object's CRC32C (or MD5) and only then
  renamed to its final name; a mismatch discards it and fetches it again;
- files already in place with the right size and checksum are not downloaded again;
- the marker ``<dest>/.modelops-complete`` (a manifest of what was copied) is removed
  before any change and written last, so a partial copy is never presented as complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from . import MARKER, TMP_DIR, ChecksumFailed, InitError, LocalIOError, PermissionDenied, Retryable, SourceNotFound
from .verify import matches

log = logging.getLogger("modelops_inference.storage_init")
MiB = 1024 * 1024


@dataclass(frozen=True)
class Source:
    bucket: str
    path: str  # "" or ends with "/" for a prefix; else maybe one object

    @classmethod
    def parse(cls, uri: str) -> "Source":
        from . import UsageError

        if not uri.startswith("gs://"):
            raise UsageError(f"source must be gs://bucket/prefix/, got {uri!r}")
        bucket, _, path = uri[5:].partition("/")
        if not bucket:
            raise UsageError(f"source has no bucket: {uri!r}")
        return cls(bucket, path)

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.path}"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    rel: str
    size: int
    generation: int
    crc32c: str | None
    md5: str | None


@dataclass
class Options:
    workers: int = 8
    slice_size: int = 32 * MiB
    attempts: int = 3  # per slice for transient errors; per file for checksum mismatches
    backoff: float = 0.5
    max_bytes_per_second: float | None = None
    verify_existing: bool = False
    progress_interval: float = 5.0
    timeout: tuple[float, float] = (10.0, 60.0)  # connect, read


@dataclass
class Summary:
    files: int = 0
    bytes_total: int = 0
    downloaded_files: int = 0
    skipped_files: int = 0
    resumed_files: int = 0
    refetched_files: int = 0
    bytes_downloaded: int = 0
    seconds: float = 0.0
    already_complete: bool = False
    skipped: list[str] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_downloaded / 1e6 / self.seconds if self.seconds > 0 else 0.0


def safe_rel(name: str, prefix: str) -> str:
    """The object's path under the destination; refuses names that would escape it.

    >>> safe_rel("models/m/config.json", "models/m/")
    'config.json'
    >>> safe_rel("models/m/../../etc/passwd", "models/m/")
    Traceback (most recent call last):
    ...
    modelops_inference.storage_init.SourceNotFound: unsafe object name 'models/m/../../etc/passwd'
    """
    rel = name[len(prefix):]
    parts = PurePosixPath(rel).parts
    if (not rel or rel.startswith("/") or any(p in ("..", ".", "") for p in rel.split("/"))
            or parts[0] in (MARKER, TMP_DIR)):
        raise SourceNotFound(f"unsafe object name {name!r}")
    return rel


def part_name(rel: str) -> str:
    """The staging file of the object at REL: a digest of the path, one flat directory.

    A digest, not the path with its slashes replaced: "a/b" and "a__b" must not share a
    file, and a deep path must not make a name longer than the file system allows. It is
    the same on every run, so an interrupted copy finds its parts again; the state file
    beside each part records which object it holds.

    >>> part_name("a/b") != part_name("a__b"), len(part_name("/".join(["d" * 200] * 9)))
    (True, 69)
    """
    return hashlib.sha256(rel.encode()).hexdigest() + ".part"


def classify(exc: BaseException, what: str) -> InitError:
    """Map a google-cloud-storage / network exception to our error kinds."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, InitError):
        return exc
    if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)):
        return PermissionDenied(f"permission denied {what}: {_short(exc)}")
    if isinstance(exc, gexc.NotFound):
        return SourceNotFound(f"not found {what}: {_short(exc)}")
    if isinstance(exc, gexc.PreconditionFailed):
        return Retryable(f"the source changed {what}: {_short(exc)}")
    if isinstance(exc, OSError) and not _is_network(exc):
        return LocalIOError(f"local I/O error {what}: {exc}")
    return Retryable(f"temporary failure {what}: {type(exc).__name__}: {_short(exc)}")


def _is_network(exc: BaseException) -> bool:
    import requests

    return isinstance(exc, (requests.RequestException, ConnectionError, TimeoutError))


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


class _Throttle:
    """A shared bytes-per-second budget (token bucket), for --max-mbps."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._allowance = 0.0
        self._last = time.monotonic()

    def spend(self, n: int, stop: threading.Event) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate)
            self._last = now
            self._allowance -= n
            debt = -self._allowance / self.rate if self._allowance < 0 else 0.0
        if debt > 0:
            stop.wait(debt)


class _Stopped(Exception):
    pass


class _SliceWriter:
    """File-like sink for one slice: counts bytes, honours the throttle and stop requests."""

    def __init__(self, f: Any, on_bytes: Callable[[int], None], throttle: _Throttle, stop: threading.Event) -> None:
        self.f = f
        self.on_bytes = on_bytes
        self.throttle = throttle
        self.stop = stop
        self.written = 0

    def write(self, data: bytes) -> int:
        if self.stop.is_set():
            raise _Stopped()
        n = self.f.write(data)
        self.written += len(data)
        self.on_bytes(len(data))
        self.throttle.spend(len(data), self.stop)
        return n

    def flush(self) -> None:
        self.f.flush()


class _PartState:
    """Which slices of a part file are done; persisted beside it (``<part>.json``) for resumption."""

    def __init__(self, part: Path, remote: RemoteFile, slice_size: int) -> None:
        self.part = part
        self.path = part.with_name(part.name + ".json")
        self.remote = remote
        self.slice_size = slice_size
        self.slices = max(1, -(-remote.size // slice_size))
        self.done: set[int] = set()
        self.lock = threading.Lock()

    def key(self) -> dict[str, Any]:
        return {"name": self.remote.name, "generation": self.remote.generation, "size": self.remote.size,
                "slice_size": self.slice_size}

    def load(self) -> bool:
        try:
            doc = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return False
        if {k: doc.get(k) for k in self.key()} != self.key():
            return False
        self.done = {int(i) for i in doc.get("done", []) if 0 <= int(i) < self.slices}
        return True

    def mark(self, index: int) -> bool:
        """Record a finished slice; True when it was the last one."""
        with self.lock:
            self.done.add(index)
            _atomic_write(self.path, json.dumps({**self.key(), "done": sorted(self.done)}).encode())
            return len(self.done) == self.slices

    def reset(self) -> None:
        with self.lock:
            self.done.clear()
            self.path.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes, *, fsync: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Copier:
    def __init__(self, source: Source, dest: Path, client_factory: Callable[[], Any], options: Options) -> None:
        self.source = source
        self.dest = dest
        self.client_factory = client_factory
        self.opt = options
        self.stop = threading.Event()
        self.summary = Summary()
        self._local = threading.local()
        self._bytes_lock = threading.Lock()
        self._throttle = _Throttle(options.max_bytes_per_second)
        self._files_done = 0

    # --- clients -----------------------------------------------------------------------
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.client_factory()
        return client

    def _with_retries(self, what: str, fn: Callable[[], Any]) -> Any:
        last: InitError | None = None
        for attempt in range(self.opt.attempts):
            if self.stop.is_set():
                raise Retryable("interrupted")
            try:
                return fn()
            except _Stopped:
                raise Retryable("interrupted") from None
            except Exception as exc:  # noqa: BLE001 - classified below
                err = classify(exc, what)
                if not err.retryable:
                    raise err from exc
                last = err
                log.warning("attempt %d/%d %s failed: %s", attempt + 1, self.opt.attempts, what, err)
                self.stop.wait(self.opt.backoff * (2 ** attempt))
        assert last is not None
        raise last

    # --- listing -------------------------------------------------------------------------
    def list_remote(self) -> list[RemoteFile]:
        """The objects to copy: everything under the prefix, or the one object the path names."""
        src = self.source

        def listing() -> tuple[list[Any], str]:
            client = self._client()
            if src.path and not src.path.endswith("/"):
                blob = client.bucket(src.bucket).get_blob(src.path, retry=None, timeout=self.opt.timeout)
                if blob is not None:  # one object: copied under its own base name
                    return [blob], src.path.rsplit("/", 1)[0] + "/" if "/" in src.path else ""
            prefix = src.path if (not src.path or src.path.endswith("/")) else src.path + "/"
            blobs = list(client.list_blobs(src.bucket, prefix=prefix, retry=None, timeout=self.opt.timeout))
            return blobs, prefix

        try:
            blobs, prefix = self._with_retries(f"listing {src}", listing)
        except SourceNotFound as exc:
            raise SourceNotFound(f"bucket gs://{src.bucket} does not exist ({exc})") from exc
        files = []
        for blob in blobs:
            if blob.name.endswith("/"):
                continue  # a "folder" placeholder object
            files.append(RemoteFile(name=blob.name, rel=safe_rel(blob.name, prefix), size=int(blob.size or 0),
                                    generation=int(blob.generation), crc32c=blob.crc32c, md5=blob.md5_hash))
        if not files:
            raise SourceNotFound(f"no objects under {src} (is the prefix right?)")
        return sorted(files, key=lambda f: f.rel)

    # --- the copy ----------------------------------------------------------------------------
    def run(self) -> Summary:
        started = time.monotonic()
        files = self.list_remote()
        s = self.summary
        s.files, s.bytes_total = len(files), sum(f.size for f in files)
        log.info("source %s: %d files, %.1f MiB -> %s", self.source, s.files, s.bytes_total / MiB, self.dest)
        try:
            self.dest.mkdir(parents=True, exist_ok=True)
            if self._complete_already(files):
                s.already_complete = True
                s.seconds = time.monotonic() - started
                log.info("already complete (marker matches the source): nothing to do")
                return s
            (self.dest / MARKER).unlink(missing_ok=True)  # about to change the directory
            _fsync_dir(self.dest)
            tmp = self.dest / TMP_DIR
            tmp.mkdir(exist_ok=True)
        except OSError as exc:
            raise LocalIOError(f"cannot write to {self.dest}: {exc}") from exc

        todo = []
        for f in files:
            final = self.dest / f.rel
            if final.exists() and matches(final, f.size, f.crc32c, f.md5):
                s.skipped_files += 1
                s.skipped.append(f.rel)
            else:
                todo.append(f)
        if s.skipped_files:
            log.info("%d files already present and verified: not downloaded again", s.skipped_files)

        reporter = threading.Thread(target=self._report, args=(started,), daemon=True)
        reporter.start()
        try:
            self._download_all(todo)
        finally:
            self.stop.set()  # ends the reporter (and any worker still running)
            reporter.join(timeout=2)
        try:
            manifest = {"source": str(self.source), "completed_at": time.time(),
                        "files": {f.rel: {"size": f.size, "generation": f.generation, "crc32c": f.crc32c,
                                          "md5": f.md5} for f in files}}
            shutil.rmtree(self.dest / TMP_DIR, ignore_errors=True)
            _fsync_dir(self.dest)
            _atomic_write(self.dest / MARKER, json.dumps(manifest, indent=1).encode(), fsync=True)
            _fsync_dir(self.dest)
        except OSError as exc:
            raise LocalIOError(f"cannot write the completion marker in {self.dest}: {exc}") from exc
        s.seconds = time.monotonic() - started
        log.info("done: %d files (%d downloaded, %d already present, %d resumed, %d re-fetched after a checksum "
                 "mismatch), %.1f MiB downloaded in %.1fs (%.1f MB/s), all verified", s.files, s.downloaded_files,
                 s.skipped_files, s.resumed_files, s.refetched_files, s.bytes_downloaded / MiB, s.seconds,
                 s.mb_per_s)
        return s

    def _complete_already(self, files: list[RemoteFile]) -> bool:
        marker = self.dest / MARKER
        try:
            manifest = json.loads(marker.read_text())
        except (FileNotFoundError, ValueError):
            return False
        recorded = manifest.get("files", {})
        if manifest.get("source") != str(self.source) or set(recorded) != {f.rel for f in files}:
            return False
        for f in files:
            r = recorded[f.rel]
            if r.get("generation") != f.generation or r.get("size") != f.size:
                return False
            path = self.dest / f.rel
            if self.opt.verify_existing:
                if not matches(path, f.size, f.crc32c, f.md5):
                    return False
            elif not path.is_file() or path.stat().st_size != f.size:
                return False
        return True

    def _report(self, started: float) -> None:
        s = self.summary
        while not self.stop.wait(self.opt.progress_interval):
            took = time.monotonic() - started
            log.info("progress: %d/%d files, %.1f/%.1f MiB, %.1f MB/s", s.skipped_files + self._files_done, s.files,
                     s.bytes_downloaded / MiB, (s.bytes_total) / MiB, s.bytes_downloaded / 1e6 / max(took, 1e-6))

    def _count(self, n: int) -> None:
        with self._bytes_lock:
            self.summary.bytes_downloaded += n

    def _download_all(self, files: list[RemoteFile]) -> None:
        if not files:
            return
        tmp = self.dest / TMP_DIR
        states: dict[str, _PartState] = {}
        checksum_tries: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=self.opt.workers, thread_name_prefix="download") as pool:
            pending: set[Future[None]] = set()

            def submit_file(f: RemoteFile) -> None:
                state = states[f.rel]
                for index in range(state.slices):
                    if index not in state.done:
                        pending.add(pool.submit(self._slice, f, state, index))

            for f in files:
                part = tmp / part_name(f.rel)
                state = _PartState(part, f, self.opt.slice_size)
                states[f.rel] = state
                try:
                    resumed = state.load() and part.exists() and part.stat().st_size == f.size
                    if resumed and state.done:
                        self.summary.resumed_files += 1
                        log.info("resuming %s: %d/%d slices already downloaded", f.rel, len(state.done),
                                 state.slices)
                    else:
                        state.reset()
                        with open(part, "wb") as fh:
                            fh.truncate(f.size)
                except OSError as exc:
                    raise LocalIOError(f"cannot prepare {part}: {exc}") from exc
                if len(state.done) == state.slices:
                    pending.add(pool.submit(self._finish, f, state))
                else:
                    submit_file(f)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        result = fut.result()  # raises the first failure
                        if isinstance(result, RemoteFile):  # checksum mismatch: fetch it again
                            tries = checksum_tries[result.rel] = checksum_tries.get(result.rel, 0) + 1
                            if tries >= self.opt.attempts:
                                raise ChecksumFailed(f"{result.rel}: checksum mismatch after {tries} downloads "
                                                     f"(expected crc32c={result.crc32c} md5={result.md5})")
                            self.summary.refetched_files += 1
                            states[result.rel].reset()
                            submit_file(result)
            except BaseException:
                self.stop.set()
                for fut in pending:
                    fut.cancel()
                raise

    def _slice(self, f: RemoteFile, state: _PartState, index: int) -> RemoteFile | None:
        start = index * state.slice_size
        end = min(f.size, start + state.slice_size) - 1  # inclusive
        part = state.part

        def fetch() -> None:
            if f.size == 0:
                return
            blob = self._client().bucket(self.source.bucket).blob(f.name, generation=f.generation)
            with open(part, "r+b") as fh:
                fh.seek(start)
                writer = _SliceWriter(fh, self._count, self._throttle, self.stop)
                try:
                    blob.download_to_file(writer, start=start, end=end, raw_download=True, checksum=None,
                                          retry=None, timeout=self.opt.timeout)
                except BaseException:
                    self._count(-writer.written)  # those bytes will be fetched again
                    raise
                if writer.written != end - start + 1:
                    raise Retryable(f"{f.rel}: short read ({writer.written} of {end - start + 1} bytes)")

        self._with_retries(f"downloading {f.rel} [{start}-{end}]", fetch)
        if state.mark(index):
            return self._finish(f, state)
        return None

    def _finish(self, f: RemoteFile, state: _PartState) -> RemoteFile | None:
        part = state.part
        if not matches(part, f.size, f.crc32c, f.md5):
            log.warning("%s: checksum mismatch, discarding the download and fetching it again", f.rel)
            part.unlink(missing_ok=True)
            with open(part, "wb") as fh:
                fh.truncate(f.size)
            return f
        final = self.dest / f.rel
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(part, final)
            state.path.unlink(missing_ok=True)
        except OSError as exc:
            raise LocalIOError(f"cannot move {f.rel} into place: {exc}") from exc
        with self._bytes_lock:
            self._files_done += 1
            self.summary.downloaded_files += 1
        return None


def summary_dict(s: Summary) -> dict[str, Any]:
    d = asdict(s)
    d["mb_per_s"] = round(s.mb_per_s, 2)
    d.pop("skipped", None)
    return d
