"""Read an image that tests.images built from its OCI archive: the config and the files its
layers hold, without unpacking it to disk or running anything.

The archive is a plain tar of an OCI layout: ``index.json`` -> manifest -> config blob, and
the layer blobs (gzipped tars) in order. The layers are merged as a runtime would (OCI
whiteouts applied), so ``files`` is the image's file system as metadata, and ``read`` gives
the contents of the few small files the checks look at (scripts in /opt/modelops/bin, the
venv's pyvenv.cfg, the dist-info metadata). Used by tests/integration/chart/test_dockerfile.py
(the operator image) and tests/inference/integration/test_image.py (the inference image).
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.images.rootfs import whiteout_target

VENV = "/opt/modelops"
KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
         tarfile.LNKTYPE: "hardlink"}
KEEP_MAX = 256 * 1024

# Environment variable names and values that would be credentials baked into the image.
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSW|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE|AUTH", re.I)
SECRET_VALUE = re.compile(r"-----BEGIN|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30}|ya29\.|gh[pousr]_[0-9A-Za-z]{20}|"
                          r"hf_[0-9A-Za-z]{20}|sk-[0-9A-Za-z]{20}|://[^/@\s]+:[^/@\s]+@")
# Files that hold credentials or a repository's history (a leaked build context, a pip config).
CREDENTIAL_FILE = re.compile(r"(^|/)(\.netrc|\.pypirc|\.git-credentials|\.env|\.dockercfg|\.docker/config\.json|"
                             r"\.git|\.ssh|id_(rsa|dsa|ecdsa|ed25519)|application_default_credentials\.json|"
                             r"[^/]*service[-_]?account[^/]*\.json|kubeconfig|pip\.conf)($|/)", re.I)


@dataclass(frozen=True)
class Entry:
    path: str    # absolute and normalised: /opt/modelops/bin/python
    kind: str    # file, dir, symlink, hardlink or other
    mode: int
    uid: int
    gid: int
    target: str  # what a symlink points at (as written) or a hardlink's absolute path


@dataclass(frozen=True)
class Layer:
    digest: str
    entries: tuple[Entry, ...]
    whiteouts: tuple[tuple[str, str], ...]  # ("file", path) or ("opaque", directory)
    contents: dict[str, bytes]              # the kept files' bytes, by path


def _norm(name: str) -> str:
    return posixpath.normpath("/" + name.removeprefix("./")) if name not in (".", "./") else "/"


def _keep(path: str, size: int) -> bool:
    """Small files the checks read: the venv's scripts and config, and the installed distributions' metadata."""
    if size > KEEP_MAX or not path.startswith(VENV + "/"):
        return False
    return (path.startswith(f"{VENV}/bin/") or path == f"{VENV}/pyvenv.cfg"
            or (".dist-info/" in path and not path.endswith("/RECORD")))


def _blob_name(digest: str) -> str:
    algo, _, hexdigest = digest.partition(":")
    return f"blobs/{algo}/{hexdigest}"


_LAYERS: dict[str, Layer] = {}  # by digest: the images share their base layer


def _layer(archive: Path, digest: str) -> Layer:
    """One layer blob, read in a single pass."""
    if digest in _LAYERS:
        return _LAYERS[digest]
    entries: list[Entry] = []
    whiteouts: list[tuple[str, str]] = []
    contents: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        blob = outer.extractfile(_blob_name(digest))
        assert blob is not None, f"{archive}: no blob {digest}"
        with tarfile.open(fileobj=blob, mode="r|*") as tf:
            for m in tf:
                wo = whiteout_target(m.name)
                if wo is not None:
                    whiteouts.append((wo[0], _norm(wo[1])))
                    continue
                path = _norm(m.name)
                kind = KINDS.get(m.type, "other")
                target = _norm(m.linkname) if kind == "hardlink" else m.linkname
                entries.append(Entry(path, kind, m.mode, m.uid, m.gid, target))
                if kind == "file" and _keep(path, m.size):
                    f = tf.extractfile(m)
                    assert f is not None
                    contents[path] = f.read()
    _LAYERS[digest] = Layer(digest, tuple(entries), tuple(whiteouts), contents)
    return _LAYERS[digest]


@dataclass(repr=False)
class ImageArchive:
    archive: Path
    ref: str                 # the ref the archive names (org.opencontainers.image.ref.name)
    manifest: dict
    image: dict              # the config blob: architecture, os, config, rootfs, history
    layers: list[Layer]
    files: dict[str, Entry]  # the merged file system
    origin: dict[str, int]   # path -> index of the layer its entry comes from

    def __repr__(self) -> str:  # not the whole file system in a failing assertion's report
        return f"ImageArchive({self.ref or self.archive.name}, {len(self.layers)} layers, {len(self.files)} files)"

    @property
    def config(self) -> dict:
        """The run config: User, Env, Entrypoint, Cmd, WorkingDir, ExposedPorts, Labels."""
        return self.image.get("config") or {}

    @property
    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.config.get("Env") or [])

    @property
    def labels(self) -> dict[str, str]:
        return self.config.get("Labels") or {}

    @property
    def layer_digests(self) -> list[str]:
        return [layer["digest"] for layer in self.manifest["layers"]]

    def read(self, path: str) -> bytes:
        """A kept file's contents (see _keep), as the merged file system has it."""
        entry = self.files[path]
        if entry.kind == "hardlink":
            return self.read(entry.target)
        return self.layers[self.origin[path]].contents[path]

    def resolve(self, path: str) -> str | None:
        """``path`` with every symlink followed inside the image; None if it (or a link) leads nowhere."""
        current = "/"
        for part in [p for p in path.split("/") if p]:
            candidate = posixpath.normpath(posixpath.join(current, part))
            for _ in range(40):
                entry = self.files.get(candidate)
                if entry is None:
                    return None
                if entry.kind != "symlink":
                    break
                candidate = posixpath.normpath(posixpath.join(posixpath.dirname(candidate), entry.target))
            else:
                return None
            current = candidate
        return current

    def which(self, name: str) -> str | None:
        """What the runtime would execute for ``name``: the first executable file of that name on the
        image's PATH (the path found on PATH, not the file its symlinks lead to)."""
        for directory in self.env.get("PATH", "").split(":"):
            path = posixpath.join(directory, name)
            real = self.resolve(path)
            if real is not None and self.files[real].kind in ("file", "hardlink") and self.files[real].mode & 0o111:
                return path
        return None

    def under(self, prefix: str) -> list[Entry]:
        return [e for p, e in self.files.items() if p == prefix or p.startswith(prefix.rstrip("/") + "/")]

    def site_packages(self) -> str:
        found = sorted({m.group(0) for p in self.files
                        if (m := re.match(rf"{VENV}/lib/python3\.\d+/site-packages", p))})
        assert len(found) == 1, f"expected one site-packages under {VENV}/lib, found {found}"
        return found[0]

    def distributions(self) -> dict[str, str]:
        """Installed distributions in the venv: normalised name -> version (from the .dist-info names)."""
        site = self.site_packages()
        out = {}
        for p, e in self.files.items():
            if e.kind == "dir" and posixpath.dirname(p) == site and p.endswith(".dist-info"):
                name, _, version = posixpath.basename(p).removesuffix(".dist-info").partition("-")
                out[re.sub(r"[-_.]+", "-", name).lower()] = version
        return out

    def console_scripts(self) -> dict[str, str]:
        """Every console script the venv's distributions declare: script name -> "module:function"."""
        site = self.site_packages()
        scripts: dict[str, str] = {}
        for p in self.files:
            if posixpath.dirname(posixpath.dirname(p)) == site and p.endswith(".dist-info/entry_points.txt"):
                section = ""
                for line in self.read(p).decode().splitlines():
                    line = line.strip()
                    if line.startswith("["):
                        section = line.strip("[]")
                    elif section == "console_scripts" and "=" in line:
                        name, _, target = line.partition("=")
                        scripts[name.strip()] = target.strip()
        return scripts

    def has_module(self, dotted: str) -> bool:
        """Whether the venv's site-packages holds the module (a .py, or a package's __init__.py)."""
        base = posixpath.join(self.site_packages(), *dotted.split("."))
        return (f"{base}.py" in self.files or f"{base}/__init__.py" in self.files
                or any(p.startswith(base + ".") and p.endswith(".so") for p in self.files))  # an extension module


def read_archive(archive: Path) -> ImageArchive:
    with tarfile.open(archive) as tf:
        def blob(name: str) -> dict:
            f = tf.extractfile(name)
            assert f is not None, f"{archive}: no {name}"
            return json.load(f)
        index = blob("index.json")
        assert len(index["manifests"]) == 1, f"{archive}: {len(index['manifests'])} manifests, expected one image"
        descriptor = index["manifests"][0]
        manifest = blob(_blob_name(descriptor["digest"]))
        image = blob(_blob_name(manifest["config"]["digest"]))
    layers = [_layer(archive, layer["digest"]) for layer in manifest["layers"]]
    files: dict[str, Entry] = {}
    origin: dict[str, int] = {}
    for n, layer in enumerate(layers):
        for kind, path in layer.whiteouts:
            inside = [p for p in files if p.startswith(path.rstrip("/") + "/")]
            for p in inside + ([path] if kind == "file" and path in files else []):
                del files[p], origin[p]
        for entry in layer.entries:
            files[entry.path] = entry
            origin[entry.path] = n
    ref = (descriptor.get("annotations") or {}).get("org.opencontainers.image.ref.name", "")
    return ImageArchive(archive, ref, manifest, image, layers, files, origin)


def secrets_in_env(env: dict[str, str]) -> list[str]:
    """The variables whose name or value looks like a credential."""
    return sorted(k for k, v in env.items() if SECRET_NAME.search(k) or SECRET_VALUE.search(v))


def credential_files(image: ImageArchive) -> list[str]:
    return sorted(p for p in image.files if CREDENTIAL_FILE.search(p))


def not_root_owned_or_world_writable(entries: list[Entry]) -> list[str]:
    """The entries (symlinks aside) that a non-root user could change: not owned by root, or world-writable."""
    return sorted(e.path for e in entries if e.kind != "symlink" and (e.uid != 0 or e.gid != 0 or e.mode & 0o002))


def broken_console_scripts(image: ImageArchive) -> dict[str, str]:
    """Console scripts declared by an installed distribution whose module the image does not hold."""
    return {name: target for name, target in image.console_scripts().items()
            if not image.has_module(target.split(":")[0].strip())}
