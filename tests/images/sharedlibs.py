"""Which Debian packages a native binary needs at run time: ``ldd`` on this (Debian 12) machine,
then ``dpkg -S`` for the package that ships each library.

The images are Debian 12 too, so the same package names apply inside them; the
Dockerfiles install whatever of these the minimal base lacks (libgomp1 for llama.cpp)
and check with ``ldd`` that nothing is left unresolved.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Iterable

# The dynamic loader and the kernel's vDSO are no package's business.
_SKIP = re.compile(r"linux-vdso\.so|ld-linux")


def ldd_paths(output: str) -> list[str]:
    """The resolved library paths in ``ldd`` output (``libx.so => /path (0x..)`` lines)."""
    paths, missing = [], []
    for line in output.splitlines():
        line = line.strip()
        if _SKIP.search(line):
            continue
        m = re.match(r"(\S+) => (not found|(\S+) \(0x[0-9a-f]+\))", line)
        if not m:
            continue
        if m.group(2) == "not found":
            missing.append(m.group(1))
        else:
            paths.append(m.group(3))
    if missing:
        raise LookupError(f"not found on this machine either: {', '.join(missing)}")
    return sorted(set(paths))


def _spellings(lib: str) -> list[str]:
    # /lib is a symlink to /usr/lib on merged-/usr systems, and dpkg knows one spelling only.
    out = [lib, os.path.realpath(lib)]
    out += [c.replace("/usr/lib/", "/lib/", 1) for c in list(out) if c.startswith("/usr/lib/")]
    out += [c.replace("/lib/", "/usr/lib/", 1) for c in list(out) if c.startswith("/lib/")]
    return list(dict.fromkeys(out))


def packages_of(libs: Iterable[str]) -> dict[str, str]:
    """library path -> the Debian package that ships it (one ``dpkg -S`` for all of them)."""
    libs = sorted(set(libs))
    spellings = {lib: _spellings(lib) for lib in libs}
    everything = sorted({s for group in spellings.values() for s in group})
    if not everything:
        return {}
    proc = subprocess.run(["dpkg", "-S", *everything], capture_output=True, text=True)
    owner: dict[str, str] = {}
    for line in proc.stdout.splitlines():  # "libgomp1:amd64: /usr/lib/x86_64-linux-gnu/libgomp.so.1"
        if line.startswith("diversion "):
            continue
        pkgs, _, path = line.partition(": ")
        owner[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    found = {}
    for lib, group in spellings.items():
        pkg = next((owner[s] for s in group if s in owner), None)
        if pkg is None:
            raise LookupError(f"no Debian package ships {lib}")
        found[lib] = pkg
    return found


def packages_for(binaries: Iterable[Path], bundled: Path | None = None) -> list[str]:
    """Debian packages (without architecture) of every library the binaries link against,
    apart from the libraries they bring themselves (under ``bundled``)."""
    libs: set[str] = set()
    for b in binaries:
        proc = subprocess.run(["ldd", str(b)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise LookupError(f"ldd {b}: {proc.stdout.strip()} {proc.stderr.strip()}")
        libs.update(p for p in ldd_paths(proc.stdout)
                    if bundled is None or not Path(p).resolve().is_relative_to(bundled.resolve()))
    return sorted(set(packages_of(libs).values()))
