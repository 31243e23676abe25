"""What one image is built from (a ``Plan``), its content key, and where its archive goes.

A plan is computed cheaply on every run (hash the inputs, build nothing). The key covers
every input of the build: the Dockerfile, each context file with its mode, the build
arguments, anything else the recipe says matters (the debootstrap command line, the
packages a binary links against) and the keys of the images it is built FROM. Equal key,
equal inputs: the archive on disk is reused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from tests.components.versions import CACHE

# Bump when the way images are built changes in a way the inputs do not show.
RECIPE_VERSION = "1"
IMAGES_DIR = CACHE / "images"
KEY_LABEL = "dev.modelops.images.content-key"


class MissingInput(Exception):
    """An input that only a (long) build makes is not there yet, and the caller asked not to make it."""


@dataclass(frozen=True)
class Plan:
    name: str                              # "operator", as on the command line
    ref: str                               # fully qualified name:tag
    dockerfile: str | None = None          # its text; None: the recipe builds the image itself (base)
    files: Mapping[str, Path] = field(default_factory=dict)   # context: relative path -> source file
    digests: Mapping[str, str] = field(default_factory=dict)  # relative path -> content hash
    build_args: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)    # other inputs that are part of the key
    deps: tuple[str, ...] = ()             # names of the images this one is built FROM


def content_key(plan: Plan, dep_keys: Mapping[str, str]) -> str:
    """sha256 over every input of the build, the images it builds FROM included."""
    doc = {
        "recipe": RECIPE_VERSION,
        "name": plan.name,
        "ref": plan.ref,
        "dockerfile": plan.dockerfile,
        "files": dict(sorted(plan.digests.items())),
        "build_args": dict(sorted(plan.build_args.items())),
        "extra": dict(sorted(plan.extra.items())),
        "deps": {d: dep_keys[d] for d in plan.deps},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def ref_slug(ref: str) -> str:
    """``ghcr.io/modelops-dev/modelops-operator:0.1.0`` -> ``ghcr.io_modelops-dev_modelops-operator_0.1.0``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ref)


def archive_path(ref: str, key: str, root: Path = IMAGES_DIR) -> Path:
    """The OCI archive of one build: named by ref and content key, so that a changed input
    never reuses an old file and two refs never share one."""
    return root / f"{ref_slug(ref)}-{key[:16]}.oci.tar"


def is_archive_of(path: Path, ref: str) -> bool:
    """Whether ``path`` is an archive of ``ref`` (of any key): the old ones are pruned."""
    return re.fullmatch(re.escape(ref_slug(ref)) + r"-[0-9a-f]{16}\.oci\.tar", path.name) is not None
