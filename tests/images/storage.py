"""The project's own containers storage, and the buildah commands that use it.

Images are built in a private storage (graphroot/runroot) under
``~/.cache/modelops/containers/``, never in the machine's default one
(/var/lib/containers), so a build neither sees nor disturbs anyone else's images.
buildah reads it from the file named by ``CONTAINERS_STORAGE_CONF``.

Storage driver: overlay is tried first (as root on ext4 it works on these machines and
shares the base image's layer between images); vfs, which copies every layer in full but
needs no kernel support, is the fallback. The choice is made once, written into
storage.conf and kept (a graphroot cannot switch drivers).

Isolation: ``--isolation chroot``. buildah's default OCI-runtime isolation fails here
("cgroups in hybrid mode not supported"); chroot isolation needs no cgroups, and
``--network host`` lets RUN steps reach PyPI and deb.debian.org.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Mapping

from tests.components.install import ComponentError, apt_install
from tests.components.versions import CACHE

from .plan import KEY_LABEL
from .proc import ImageBuildError, run

ROOT = CACHE / "containers"
CONF = ROOT / "storage.conf"
GRAPHROOT = ROOT / "storage"
RUNROOT = ROOT / "run"
DRIVERS = ("overlay", "vfs")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def ensure_tools(commands: Mapping[str, str]) -> None:
    """apt-install what is missing: {command: Debian package}."""
    missing = sorted({pkg for cmd, pkg in commands.items() if not shutil.which(cmd) and not Path(cmd).exists()})
    if missing:
        try:
            apt_install(missing)
        except ComponentError as exc:
            raise ImageBuildError("tools", str(exc)) from exc


def _conf_text(driver: str) -> str:
    return (f'# Written by tests/images/storage.py: the project\'s own image storage.\n'
            f'[storage]\ndriver = "{driver}"\ngraphroot = "{GRAPHROOT}"\nrunroot = "{RUNROOT}"\n')


def configured_driver() -> str | None:
    if not CONF.exists():
        return None
    for line in CONF.read_text().splitlines():
        if line.strip().startswith("driver"):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def env() -> dict[str, str]:
    return dict(os.environ, CONTAINERS_STORAGE_CONF=str(CONF), BUILDAH_ISOLATION="chroot",
                BUILDAH_LAYERS="false")


def _works(log: Path) -> bool:
    """Can this storage create, mount and remove a container?  (What a build does first.)"""
    try:
        ctr = run("storage", ["buildah", "from", "--quiet", "scratch"], log=log, env=env()).split()[-1]
        run("storage", ["buildah", "mount", ctr], log=log, env=env())
        run("storage", ["buildah", "rm", ctr], log=log, env=env())
        return True
    except ImageBuildError:
        return False


def ensure(log: Path) -> str:
    """Set up the storage once; returns the driver in use."""
    ensure_tools({"buildah": "buildah"})
    driver = configured_driver()
    if driver:
        return driver
    ROOT.mkdir(parents=True, exist_ok=True)
    for driver in DRIVERS:
        shutil.rmtree(GRAPHROOT, ignore_errors=True)
        shutil.rmtree(RUNROOT, ignore_errors=True)
        CONF.write_text(_conf_text(driver))
        if _works(log):
            print(f"[storage] containers storage at {ROOT} with the {driver} driver", flush=True)
            return driver
        CONF.unlink()
    raise ImageBuildError("storage", f"neither of the drivers {DRIVERS} works here (log: {log})")


# --- buildah ------------------------------------------------------------------------------
def buildah(image: str, *args: str, log: Path) -> str:
    return run(image, ["buildah", *args], log=log, env=env())


def image_key(ref: str) -> str | None:
    """The content key label of the image tagged ``ref`` in the storage (None: absent)."""
    proc = subprocess.run(["buildah", "inspect", "--type", "image", ref], capture_output=True, text=True, env=env())
    if proc.returncode != 0:
        return None
    try:
        labels = json.loads(proc.stdout).get("OCIv1", {}).get("config", {}).get("Labels") or {}
    except ValueError:
        return None
    return labels.get(KEY_LABEL)


def bud(image: str, *, ref: str, context: Path, dockerfile: Path, build_args: Mapping[str, str], key: str,
        log: Path) -> None:
    args = ["bud", "--isolation", "chroot", "--network", "host",
            "--pull=never",                   # FROM images come from this storage only: no registry
            "--layers=false", "--force-rm",   # no intermediate images; our own cache is the content key
            "--format", "oci", "-f", str(dockerfile), "-t", ref, "--label", f"{KEY_LABEL}={key}"]
    for k, v in build_args.items():
        args += ["--build-arg", f"{k}={v}"]
    if HOST_CA_BUNDLE.exists():
        # RUN steps trust what this machine trusts: its HTTPS egress may go through a proxy whose
        # CA is only in the host's bundle. A bind mount for the build only, never in the image.
        args += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    buildah(image, *args, str(context), log=log)


def export(image: str, ref: str, archive: Path, log: Path) -> None:
    """Write ``ref`` as an OCI archive whose index names it by its full reference
    (``org.opencontainers.image.ref.name``), which ``ctr images import`` takes as the image name."""
    tmp = archive.with_name(archive.name + ".tmp")
    tmp.unlink(missing_ok=True)
    buildah(image, "push", "--quiet", "--format", "oci", ref, f"oci-archive:{tmp}:{ref}", log=log)
    tmp.rename(archive)  # atomic: a half-written archive is never found


def load(image: str, ref: str, archive: Path, log: Path) -> None:
    """Put an archived image back into the storage under ``ref`` (the storage was wiped, or holds an
    older build), so that the images built FROM it use exactly the archived one."""
    out = buildah(image, "pull", "--quiet", f"oci-archive:{archive}", log=log)
    image_id = out.strip().splitlines()[-1].strip()
    buildah(image, "tag", image_id, ref, log=log)


def prune() -> None:
    """Drop untagged images left behind by rebuilds (the storage only grows otherwise)."""
    subprocess.run(["buildah", "rmi", "--prune"], capture_output=True, env=env())
