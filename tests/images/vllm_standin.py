"""``vllm-standin``: ``vllm serve`` answered by llama.cpp, FROM the base (see standin/vllm_serve.py).

Inputs: the portable llama-cpp-python wheel that ``tests.components.install`` builds once
(built here if missing, ~7-15 min), the stand-in program, the pinned versions of the
wheel's ``[server]`` dependencies, and the Debian packages of the libraries the wheel's
shared objects link against (ldd on this machine).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from tests.components import install

from . import base, sharedlibs
from .context import files_digest
from .plan import MissingInput, Plan
from .proc import ImageBuildError

NAME = "vllm-standin"
REF = "localhost/modelops/vllm-standin:0.1.0"
HERE = Path(__file__).with_name("dockerfiles") / "vllm-standin"
PROGRAM = Path(__file__).with_name("standin") / "vllm_serve.py"


def _wheel_packages(wheel: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="llama-libs-") as tmp, zipfile.ZipFile(wheel) as zf:
        libs = [n for n in zf.namelist() if n.startswith("llama_cpp/lib/") and ".so" in n]
        zf.extractall(tmp, members=libs)
        paths = [Path(tmp) / n for n in libs if not (Path(tmp) / n).is_symlink()]
        return sharedlibs.packages_for(paths, bundled=Path(tmp))


def plan(prepare: bool = True) -> Plan:
    """``prepare``: build the wheel if it is missing (else raise MissingInput)."""
    wheel = install.llama_wheel()
    if wheel is None and not prepare:
        raise MissingInput("the portable llama-cpp-python wheel is not built yet")
    try:
        wheel = wheel or install.build_llama_wheel()
        packages = _wheel_packages(wheel)
    except Exception as exc:  # a ComponentError from the build, or a library ldd cannot place
        raise ImageBuildError(NAME, f"the llama-cpp-python wheel is not available: {exc}") from exc
    files = {"constraints.txt": HERE / "constraints.txt", wheel.name: wheel, "vllm_serve.py": PROGRAM}
    return Plan(name=NAME, ref=REF, dockerfile=(HERE / "Dockerfile").read_text(), files=files,
                digests=files_digest(files),
                build_args={"PYTHON_IMAGE": base.REF, "LLAMA_WHEEL": wheel.name,
                            "RUNTIME_PACKAGES": " ".join(packages)},
                deps=(base.NAME,))
