"""Unpack an OCI archive into a root filesystem, and read the image's run config.

Used by the smoke checks: they run what was archived (the thing the node imports), not
what happens to be in the build storage. The archives are our own builds, so they are
trusted: owners, modes and device files are extracted as they are. Layers are applied in order with the OCI
whiteouts (``.wh.<name>`` deletes a lower file, ``.wh..wh..opq`` empties a lower directory).
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class RunConfig:
    user: str = ""
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()

    def uid_gid(self) -> tuple[int, int]:
        """Numeric ``user`` only (what the project's Dockerfiles use); empty means root."""
        if not self.user:
            return 0, 0
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


def whiteout_target(member: str) -> tuple[str, str] | None:
    """``("file", path)`` for a whiteout of ``path``, ``("opaque", dir)`` for an opaque directory,
    None for an ordinary entry."""
    p = PurePosixPath(member[2:] if member.startswith("./") else member)
    if p.name == OPAQUE:
        return "opaque", str(p.parent)
    if p.name.startswith(WHITEOUT):
        return "file", str(p.parent / p.name[len(WHITEOUT):])
    return None


def resolve_in_root(root: Path, rel: str) -> Path:
    """``rel``'s path on the host with its parent directories resolved as inside a chroot:
    an absolute symlink in the image (``/usr/bin/x``) points into ``root``, never at the host."""
    parts = [p for p in PurePosixPath("/", rel).parts[1:]]
    if not parts:
        raise ValueError("a whiteout of the root itself")
    current = PurePosixPath("/")
    for part in parts[:-1]:
        candidate = PurePosixPath(posixpath.normpath(current / part))
        for _ in range(40):
            host = root / str(candidate).lstrip("/")
            if not host.is_symlink():
                break
            target = os.readlink(host)
            candidate = PurePosixPath(posixpath.normpath(target if target.startswith("/") else candidate.parent / target))
        else:
            raise ValueError(f"too many levels of symbolic links under {rel}")
        current = candidate
    leaf = PurePosixPath(posixpath.normpath(current / parts[-1]))
    return root / str(leaf).lstrip("/")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def apply_layer(layer: Path, root: Path) -> None:
    """Whiteouts first (they name what lower layers left), then the layer's own entries.
    GNU tar extracts: twice as fast as tarfile here, with owners by number and modes kept."""
    names = subprocess.run(["tar", "-tf", str(layer)], capture_output=True, text=True, check=True).stdout.splitlines()
    for name in names:
        wo = whiteout_target(name)
        if wo is None:
            continue
        kind, rel = wo
        target = resolve_in_root(root, rel)
        if kind == "file":
            _remove(target)
        elif target.is_dir():
            for child in target.iterdir():
                _remove(child)
    subprocess.run(["tar", "-xf", str(layer), "-C", str(root), "--numeric-owner", "--same-permissions",
                    "--exclude=.wh.*"], check=True, capture_output=True)


def _blob(blobs: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    return blobs / algo / hexdigest


def unpack(archive: Path, dest: Path) -> RunConfig:
    """Extract ``archive`` (an OCI archive with one image) into ``dest``/rootfs; returns its run config."""
    layout = dest / "layout"
    root = dest / "rootfs"
    layout.mkdir(parents=True)
    root.mkdir()
    with tarfile.open(archive) as tf:  # the archive itself: a plain tar of blobs
        tf.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout / "blobs", index["manifests"][0]["digest"]).read_text())
    config = json.loads(_blob(layout / "blobs", manifest["config"]["digest"]).read_text()).get("config", {})
    for layer in manifest["layers"]:
        apply_layer(_blob(layout / "blobs", layer["digest"]), root)
    shutil.rmtree(layout)
    env = dict(e.split("=", 1) for e in config.get("Env") or [])
    return RunConfig(user=config.get("User", ""), workdir=config.get("WorkingDir") or "/", env=env,
                     entrypoint=tuple(config.get("Entrypoint") or ()), cmd=tuple(config.get("Cmd") or ()))


def remove(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
