"""``base``: Debian bookworm with Python 3.11, made by debootstrap (no registry to pull from).

It stands in for ``python:3.11-slim-bookworm`` as the ``PYTHON_IMAGE`` of the project's
Dockerfiles: ``python`` and ``python -m venv`` work (python-is-python3, python3-venv),
PATH is set in the image config (a Dockerfile's ``ENV PATH=...:$PATH`` needs it) and apt
works for RUN steps that install packages.

debootstrap runs straight into a buildah working container's mounted root, so nothing
is copied. Its .deb files are kept in ``~/.cache/modelops/debootstrap/`` (``--cache-dir``):
re-creating the base downloads nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.components.versions import CACHE

from . import storage
from .plan import KEY_LABEL, Plan
from .proc import run, step

NAME = "base"
REF = "localhost/modelops/debian-python:bookworm"
SUITE = "bookworm"
VARIANT = "minbase"
INCLUDE = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEB_CACHE = CACHE / "debootstrap" / "debs"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
# Left empty in the image: the container runtime provides them (and a build host's
# resolv.conf or hostname must not be baked in).
RUNTIME_FILES = ("etc/resolv.conf", "etc/hostname")
# Emptied: device nodes (the runtime mounts /dev), apt's downloaded lists and packages, logs.
EMPTIED_DIRS = ("dev", "var/lib/apt/lists", "var/cache/apt/archives", "var/log", "tmp", "run")


def debian_mirror(source_texts: list[str], suite: str = SUITE) -> str | None:
    """The Debian mirror this machine's apt uses for ``suite`` (main), from the texts of its
    sources files: deb822 ``.sources`` stanzas or one-line ``deb URI suite components`` entries.
    Security and other archives (a suite like ``bookworm-security``) are not the mirror."""
    for text in source_texts:
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                m = re.match(r"([A-Za-z-]+):\s*(.*)", line)
                if m and not line.startswith("#"):
                    fields[m.group(1).lower()] = m.group(2).strip()
            if fields:
                if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split() \
                        and "main" in fields.get("components", "").split():
                    for uri in fields.get("uris", "").split():
                        return uri.rstrip("/")
                continue
            for line in stanza.splitlines():
                line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0])  # drop "[signed-by=...]" options
                words = line.split()
                if len(words) >= 4 and words[0] == "deb" and words[2] == suite and "main" in words[3:]:
                    return words[1].rstrip("/")
    return None


def machine_mirror() -> str:
    paths = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + \
        sorted(Path("/etc/apt/sources.list.d").glob("*.list")) + [Path("/etc/apt/sources.list")]
    texts = [p.read_text(errors="replace") for p in paths if p.is_file()]
    return debian_mirror(texts) or DEFAULT_MIRROR


def debootstrap_args(mirror: str, target: str, cache_dir: Path | None = DEB_CACHE) -> list[str]:
    cache = [f"--cache-dir={cache_dir}"] if cache_dir else []  # where .debs are kept changes no image
    return ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(INCLUDE)}", *cache, SUITE, target, mirror]


def plan() -> Plan:
    mirror = machine_mirror()
    # The key is the recipe, not the packages it happens to fetch today: a base re-made from the
    # same command is treated as the same base (it is rebuilt only when its archive is gone).
    return Plan(name=NAME, ref=REF, extra={
        "mirror": mirror,
        "debootstrap": " ".join(debootstrap_args(mirror, "TARGET", cache_dir=None)),
        "env": " ".join(f"{k}={v}" for k, v in sorted(ENV.items())),
        "emptied": " ".join(EMPTIED_DIRS + RUNTIME_FILES),
    })


def _clean(root: Path) -> None:
    for d in EMPTIED_DIRS:
        for child in (root / d).glob("*") if (root / d).is_dir() else ():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for f in RUNTIME_FILES:
        (root / f).unlink(missing_ok=True)
        (root / f).touch()
    for f in (root / "var/cache/apt").glob("*.bin"):  # apt's package caches, rebuilt on the next update
        f.unlink()


def build(p: Plan, key: str, log: Path) -> None:
    storage.ensure_tools({"debootstrap": "debootstrap"})
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    with step(NAME, "buildah from scratch"):
        ctr = storage.buildah(NAME, "from", "--quiet", "scratch", log=log).split()[-1]
    try:
        root = Path(storage.buildah(NAME, "mount", ctr, log=log).split()[-1])
        with step(NAME, f"debootstrap {SUITE} ({VARIANT} + {', '.join(INCLUDE)})"):
            run(NAME, debootstrap_args(p.extra["mirror"], str(root)), log=log)
        with step(NAME, "clean the root filesystem"):
            _clean(root)
            run(NAME, ["chroot", str(root), "python", "-c", "import venv, ssl, sys; print(sys.version)"], log=log)
        storage.buildah(NAME, "umount", ctr, log=log)
        config = ["config", "--cmd", "python3", "--label", f"{KEY_LABEL}={key}",
                  "--label", "org.opencontainers.image.title=debian-python",
                  "--label", f"org.opencontainers.image.description=Debian {SUITE} {VARIANT} with Python 3 (debootstrap)"]
        for k, v in ENV.items():
            config += ["--env", f"{k}={v}"]
        storage.buildah(NAME, *config, ctr, log=log)
        with step(NAME, f"commit {REF}"):
            storage.buildah(NAME, "commit", "--quiet", "--format", "oci", "--rm", ctr, REF, log=log)
    except BaseException:
        # the half-made working container (already gone if the commit removed it)
        subprocess.run(["buildah", "rm", ctr], capture_output=True, env=storage.env())
        raise
