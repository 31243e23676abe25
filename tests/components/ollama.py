"""Ollama built from its Go module (``github.com/ollama/ollama``), CPU only, cached.

What it takes, found out on Debian 12 with Go 1.26:
- cgo (``CGO_ENABLED=1``): Ollama compiles llama.cpp/ggml in its Go packages. The CPU
  backend is compiled without ``-march=native``, so the binary runs on any x86-64
  (unlike llama.cpp's default native build here).
- Go module archives drop every ``vendor/`` directory, so llama.cpp's vendored
  single-header libraries are missing from the module: nlohmann/json and stb_image
  come from Debian (``nlohmann-json3-dev``, ``libstb-dev``); miniaudio, used only to
  decode audio for multimodal models, is replaced by a stand-in header that refuses
  audio (``ollama_shim/miniaudio/miniaudio.h``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from . import versions
from .install import DONE, ComponentError, apt_install

SHIM = Path(__file__).with_name("ollama_shim")
APT_HEADERS = {"/usr/include/nlohmann/json_fwd.hpp": "nlohmann-json3-dev",
               "/usr/include/stb/stb_image.h": "libstb-dev"}


def binary() -> Path | None:
    d = versions.ollama_dir()
    path = d / "ollama"
    return path if (d / DONE).exists() and path.exists() else None


def build() -> Path:
    found = binary()
    if found:
        print(f"ollama {versions.OLLAMA} already built: {found}")
        return found
    go = shutil.which("go")
    if not go:
        raise ComponentError("Go is required to build Ollama from its module")
    missing = sorted({pkg for header, pkg in APT_HEADERS.items() if not Path(header).exists()})
    if missing:
        apt_install(missing)
    out = versions.ollama_dir()
    work = out.with_name(out.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, CGO_ENABLED="1", GOBIN=str(work), GOFLAGS="-buildvcs=false",
               CGO_CPPFLAGS=f"-I{SHIM}")
    env.setdefault("GOTOOLCHAIN", "auto")
    cmd = [go, "install", "-trimpath", "-ldflags=-s -w", f"github.com/ollama/ollama@{versions.OLLAMA}"]
    print(f"building ollama {versions.OLLAMA} from its Go module with cgo (once; ~10-20 min on 2 cores)",
          flush=True)
    print(f"  $ {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise ComponentError(f"building ollama failed (exit {proc.returncode}):\n{tail}")
    (work / DONE).write_text(f"built in {time.monotonic() - started:.0f}s\n")
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    print(f"built ollama {versions.OLLAMA} in {time.monotonic() - started:.0f}s -> {out}", flush=True)
    return out / "ollama"
