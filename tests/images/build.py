"""Build the images that are missing or whose inputs changed; reuse the archives of the rest.

For every image, in dependency order: compute its plan and content key (cheap), and if
``~/.cache/modelops/images/<ref>-<key>.oci.tar`` exists, that is the image. Otherwise:
make sure the images it is built FROM are in the storage at their current key (loaded
back from their archives if the storage lost them), build it, write the archive, and
delete the archives of its older keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import base, ollama, pause, repo, storage, vllm_standin
from .context import stage
from .plan import IMAGES_DIR, Plan, archive_path, content_key, is_archive_of
from .proc import ImageBuildError, step

LOGS = IMAGES_DIR / "logs"
STAGING = IMAGES_DIR / "staging"


@dataclass(frozen=True)
class Image:
    name: str
    ref: str        # fully qualified name:tag, as the pods ask for it
    key: str        # content key of its inputs
    archive: Path   # OCI archive: `ctr -n k8s.io images import <archive>`
    built: bool     # False: the archive was already there
    seconds: float  # time spent on it in this run (planning included)


def log_path(name: str) -> Path:
    return LOGS / f"{name}.log"


# name -> plan(prepare): prepare=False never starts a long build of an input (for `list`).
PLANNERS: dict[str, Callable[[bool], Plan]] = {
    "base": lambda prepare: base.plan(),
    "operator": lambda prepare: repo.operator_plan(),
    "inference": lambda prepare: repo.inference_plan(),
    "ollama": ollama.plan,
    "vllm-standin": vllm_standin.plan,
    "pause": lambda prepare: pause.plan(log_path("pause"), prepare),
}
NAMES = tuple(PLANNERS)
DEPS = {"operator": ("base",), "inference": ("base",), "ollama": ("base",), "vllm-standin": ("base",)}


def with_deps(names: Iterable[str]) -> list[str]:
    """The images to look at for ``names``, the ones they are built FROM first, in NAMES order."""
    wanted = set(names)
    unknown = sorted(wanted - set(NAMES))
    if unknown:
        raise ValueError(f"unknown image(s) {', '.join(unknown)}: choose from {', '.join(NAMES)}")
    for name in list(wanted):
        wanted.update(DEPS.get(name, ()))
    return [n for n in NAMES if n in wanted]


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build at a time per cache (two would race on the storage and the archives)."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with open(IMAGES_DIR / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("[images] another build holds the lock; waiting", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _ensure_in_storage(p: Plan, key: str, archive: Path, log: Path) -> None:
    found = storage.image_key(p.ref)
    if found == key:
        return
    with step(p.name, f"load {archive.name} into the storage (it has {'key ' + found[:12] if found else 'none'})"):
        storage.load(p.name, p.ref, archive, log)


def _build(p: Plan, key: str, log: Path) -> None:
    if p.dockerfile is None:
        base.build(p, key, log)
        return
    ctx = STAGING / f"{p.name}-{key[:16]}"
    shutil.rmtree(ctx, ignore_errors=True)
    try:
        with step(p.name, f"stage the context ({len(p.files)} files)"):
            (ctx / "context").mkdir(parents=True)
            stage(p.files, ctx / "context")
            (ctx / "Dockerfile").write_text(p.dockerfile)
        args = " ".join(f"{k}={v}" for k, v in p.build_args.items())
        with step(p.name, f"buildah bud -t {p.ref}" + (f" ({args})" if args else "")):
            storage.bud(p.name, ref=p.ref, context=ctx / "context", dockerfile=ctx / "Dockerfile",
                        build_args=p.build_args, key=key, log=log)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def build_all(names: Iterable[str] | None = None) -> list[Image]:
    """Build (or find in the cache) the images ``names`` (default: all); returns them in order.

    The images they are built FROM are built too when needed, but not returned unless asked for.
    Raises ImageBuildError naming the image and the end of the failing command's output.
    """
    requested = list(names) if names else list(NAMES)
    order = with_deps(requested)
    results: dict[str, Image] = {}
    keys: dict[str, str] = {}
    plans: dict[str, Plan] = {}
    with _lock():
        for name in order:
            started = time.monotonic()
            p = PLANNERS[name](True)
            assert p.deps == DEPS.get(name, ()), f"{name}: DEPS says {DEPS.get(name)}, its plan {p.deps}"
            key = content_key(p, keys)
            keys[name], plans[name] = key, p
            archive = archive_path(p.ref, key)
            if archive.exists():
                print(f"[{name}] {p.ref}: cached ({key[:12]}) {archive}", flush=True)
                results[name] = Image(name, p.ref, key, archive, False, time.monotonic() - started)
                continue
            log = log_path(name)
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"# build of {p.ref}, key {key}\n")
            print(f"[{name}] {p.ref}: building (key {key[:12]}; log {log})", flush=True)
            driver = storage.ensure(log)
            for dep in p.deps:
                _ensure_in_storage(plans[dep], keys[dep], results[dep].archive, log)
            _build(p, key, log)
            with step(name, f"write the OCI archive ({driver} storage)"):
                storage.export(name, p.ref, archive, log)
            for old in archive.parent.glob("*.oci.tar"):
                if old != archive and is_archive_of(old, p.ref):
                    old.unlink()
            storage.prune()
            seconds = time.monotonic() - started
            print(f"[{name}] {p.ref}: built in {seconds:.1f}s -> {archive} "
                  f"({archive.stat().st_size / 1e6:.0f} MB)", flush=True)
            results[name] = Image(name, p.ref, key, archive, True, seconds)
    return [results[n] for n in order if n in requested]


__all__ = ["Image", "ImageBuildError", "NAMES", "build_all", "with_deps"]
