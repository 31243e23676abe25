"""``ollama``: the Ollama binary built by ``tests.components.ollama.build()``, FROM the base.

The binary is cgo-linked (libstdc++, libgcc_s); the packages of its libraries are found
with ldd on this machine and become a build argument (and so part of the key).
"""

from __future__ import annotations

from pathlib import Path

from tests.components import ollama as ollama_component
from tests.components.versions import OLLAMA

from . import base, sharedlibs
from .context import files_digest
from .plan import MissingInput, Plan
from .proc import ImageBuildError

NAME = "ollama"
REF = f"localhost/modelops/ollama:{OLLAMA}"
DOCKERFILE = Path(__file__).with_name("dockerfiles") / "ollama" / "Dockerfile"


def plan(prepare: bool = True) -> Plan:
    """``prepare``: build the Ollama binary if it is missing (else raise MissingInput)."""
    binary = ollama_component.binary()
    if binary is None and not prepare:
        raise MissingInput(f"the Ollama {OLLAMA} binary is not built yet")
    try:
        binary = binary or ollama_component.build()
        packages = sharedlibs.packages_for([binary])
    except Exception as exc:  # a ComponentError from the build, or a library ldd cannot place
        raise ImageBuildError(NAME, f"the Ollama binary is not available: {exc}") from exc
    files = {"ollama": binary}
    return Plan(name=NAME, ref=REF, dockerfile=DOCKERFILE.read_text(), files=files, digests=files_digest(files),
                build_args={"PYTHON_IMAGE": base.REF, "RUNTIME_PACKAGES": " ".join(packages)},
                deps=(base.NAME,))
