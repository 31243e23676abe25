"""``pause``: the kubelet's pod sandbox image, ``registry.k8s.io/pause:3.10.2``, FROM scratch.

The binary is compiled on this machine from ``dockerfiles/pause/pause.c`` with
``gcc -static -Os`` (glibc's static libc from libc6-dev), before the plan is hashed: the
key covers the source, the compiler's version and the flags, and the image build only
copies the result.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.components.versions import CACHE

from . import storage
from .context import files_digest
from .plan import MissingInput, Plan
from .proc import ImageBuildError, run, step

NAME = "pause"
REF = "registry.k8s.io/pause:3.10.2"
HERE = Path(__file__).with_name("dockerfiles") / "pause"
SOURCE = HERE / "pause.c"
CFLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")
OUT = CACHE / "images" / "pause-bin"


def _gcc_version() -> str:
    try:
        return subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (FileNotFoundError, IndexError):
        return "no gcc"


def binary(log: Path, prepare: bool = True) -> Path:
    """Compile pause.c once per (source, compiler, flags)."""
    if prepare:
        storage.ensure_tools({"gcc": "gcc", "/usr/lib/x86_64-linux-gnu/libc.a": "libc6-dev"})
    key = hashlib.sha256("\n".join([SOURCE.read_text(), _gcc_version(), *CFLAGS]).encode()).hexdigest()[:16]
    out = OUT / key / "pause"
    if not out.exists() and not prepare:
        raise MissingInput("the pause binary is not compiled yet")
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name("pause.tmp")
        with step(NAME, f"gcc {' '.join(CFLAGS)} pause.c"):
            run(NAME, ["gcc", *CFLAGS, "-o", str(tmp), str(SOURCE)], log=log)
        # FROM scratch has no dynamic loader: the binary must not ask for one (no INTERP header).
        headers = run(NAME, ["readelf", "--program-headers", str(tmp)], log=log)
        if "INTERP" in headers:
            raise ImageBuildError(NAME, f"{tmp} is not statically linked")
        tmp.rename(out)
    return out


def plan(log: Path, prepare: bool = True) -> Plan:
    files = {"pause": binary(log, prepare)}
    return Plan(name=NAME, ref=REF, dockerfile=(HERE / "Dockerfile").read_text(), files=files,
                digests=files_digest(files))
