#!/opt/vllm/bin/python
# The `vllm` executable of the image localhost/modelops/vllm-standin (copied to /opt/vllm/bin/vllm).
"""A STAND-IN for vLLM's ``vllm serve``: it checks the pod contract, not vLLM's behaviour.

vLLM cannot be installed on the test machines (its CPU build needs GBs of packages), so
this image takes its place in the pods the operator renders for ``engine.type: vllm``.
It accepts exactly what the operator renders (operator/modelops/planning/engines/vllm.py)::

    command: ["vllm", "serve"]
    args:    [<model dir | hf org/repo>, "--served-model-name", NAME, "--host", "0.0.0.0",
              "--port", "8000", ("--tensor-parallel-size", N,) *user args]
    env:     HOME=/tmp, HF_HOME=/models/.hf; volumes /models, /dev/shm, /tmp
    probes:  GET /health on port 8000

and serves the model with llama.cpp's OpenAI server (llama-cpp-python) on CPU:
``GET /health`` (503 while the model loads, 200 once it is loaded, as vLLM's),
``GET /v1/models`` (the served model names), ``POST /v1/chat/completions`` and
``/v1/completions`` (streaming too); a request for another model gets vLLM's 404.

What it resolves: a model directory to its first ``*.gguf`` file (sorted, searched
recursively), a ``.gguf`` path to itself, and an ``org/repo`` name to a ``*.gguf`` already
in the Hugging Face cache under HF_HOME (it never downloads). ``--max-model-len`` becomes
the context size (default 2048, to keep memory small). ``--tensor-parallel-size`` is
accepted and only logged: there are no GPUs. Every other vLLM flag in the user's args
(``--gpu-memory-utilization 0.9``, ``--enable-prefix-caching``...) is accepted and logged
as ignored. A missing or unusable required input (no model, a model with no GGUF, a bad
port, a stray positional argument) is printed as an error and exits with status 2.

Not served: vLLM's /metrics, /tokenize and the rest of its API beyond the OpenAI routes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

EXIT_USAGE = 2
DEFAULT_CONTEXT = 2048
log = logging.getLogger("vllm-standin")


class UsageError(Exception):
    """A required input is missing or unusable: printed, then exit status 2."""


@dataclass(frozen=True)
class ServeConfig:
    model: str
    served_model_names: tuple[str, ...]
    host: str
    port: int
    tensor_parallel_size: int
    max_model_len: int | None
    ignored: tuple[str, ...]  # the unknown flags (with their values), as given


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit; the caller decides
        raise UsageError(message)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError(text)
    return value


_positive.__name__ = "positive integer"
_port.__name__ = "port"


def _parser() -> _Parser:
    p = _Parser(prog="vllm serve", add_help=False, allow_abbrev=False)
    p.add_argument("model_tag", nargs="?", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--tensor-parallel-size", "-tp", type=_positive, default=1)
    p.add_argument("--max-model-len", type=_positive, default=None)
    return p


def split_ignored(extras: list[str]) -> tuple[str, ...]:
    """Unknown flags, each with the value that follows it (``--x 1``, ``--x=1``, ``--flag``).
    A bare word that follows no flag is a second positional argument: vLLM refuses it too."""
    out: list[str] = []
    previous_flag_takes_value = False
    for token in extras:
        if token.startswith("-") and token != "-":
            out.append(token)
            previous_flag_takes_value = "=" not in token
        elif previous_flag_takes_value:
            out[-1] = f"{out[-1]} {token}"
            previous_flag_takes_value = False
        else:
            raise UsageError(f"unexpected argument {token!r} (the model is given once, first)")
    return tuple(out)


def parse_serve_args(argv: list[str]) -> ServeConfig:
    """``argv`` as the container gets it after ``vllm``: ``["serve", model, "--flag", ...]``."""
    if not argv or argv[0] != "serve":
        got = argv[0] if argv else "nothing"
        raise UsageError(f"this stand-in provides only `vllm serve` (got {got!r})")
    ns, extras = _parser().parse_known_args(argv[1:])
    if ns.model_tag and ns.model and ns.model_tag != ns.model:
        raise UsageError(f"the model is given twice: {ns.model_tag!r} and --model {ns.model!r}")
    model = ns.model_tag or ns.model
    if not model:
        raise UsageError("no model given: vllm serve <model directory | .gguf file | org/repo> ...")
    names = tuple(ns.served_model_name or (model,))
    return ServeConfig(model=model, served_model_names=names, host=ns.host, port=ns.port,
                       tensor_parallel_size=ns.tensor_parallel_size, max_model_len=ns.max_model_len,
                       ignored=split_ignored(extras))


def resolve_model(model: str, hf_home: str | None) -> Path:
    """The GGUF file to serve for ``model`` (see the module docstring)."""
    path = Path(model)
    if path.is_file():
        if path.suffix != ".gguf":
            raise UsageError(f"{model} is not a .gguf file: this stand-in serves GGUF models only")
        return path
    if path.is_dir():
        found = sorted(path.rglob("*.gguf"), key=lambda p: p.relative_to(path).as_posix())
        if not found:
            raise UsageError(f"no *.gguf file under {model}: this stand-in serves GGUF models only")
        return found[0]
    if not model.startswith("/") and model.count("/") == 1:
        hub = Path(hf_home or Path.home() / ".cache" / "huggingface") / "hub" / ("models--" + model.replace("/", "--"))
        found = sorted(hub.glob("snapshots/*/**/*.gguf"))
        if found:
            return found[0]
        raise UsageError(f"{model} is not in the Hugging Face cache ({hub}) and this stand-in never downloads: "
                         "give a model directory with a .gguf file")
    raise UsageError(f"model {model} does not exist")


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# --- the server ---------------------------------------------------------------------------------
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MODEL_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


async def _json(send: Send, status: int, body: Any) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class StandinApp:
    """vLLM's outer behaviour around llama.cpp's OpenAI app: /health follows the model load
    (which runs in a thread while the port already answers), /version, and vLLM's 404 for a
    model name it does not serve. Everything else goes to llama.cpp's app."""

    def __init__(self, cfg: ServeConfig, gguf: Path) -> None:
        self.cfg = cfg
        self.gguf = gguf
        self.inner: Any = None
        self.started = int(time.time())

    def load(self) -> None:
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings

        threads = cpu_threads()
        log.info("loading %s as %r (n_ctx=%d, n_threads=%d)", self.gguf, self.cfg.served_model_names[0],
                 self.cfg.max_model_len or DEFAULT_CONTEXT, threads)
        model = ModelSettings(model=str(self.gguf), model_alias=self.cfg.served_model_names[0],
                              n_ctx=self.cfg.max_model_len or DEFAULT_CONTEXT, n_threads=threads,
                              n_threads_batch=threads, verbose=False)
        # interrupt_requests=False: llama.cpp's server otherwise ends a running stream as soon as
        # another request waits for the model (seen: the gateway's probe cut a stream short); vLLM
        # batches concurrent requests, the stand-in at least queues them.
        server = ServerSettings(host=self.cfg.host, port=self.cfg.port, interrupt_requests=False)
        self.inner = create_app(server_settings=server, model_settings=[model])
        log.info("model loaded: /health answers 200")

    def _load_or_exit(self) -> None:
        try:
            self.load()
        except Exception:  # vLLM exits when the model cannot be loaded; so does the stand-in
            log.exception("could not load %s", self.gguf)
            os._exit(1)

    def models(self) -> dict[str, Any]:
        """``GET /v1/models`` in vLLM's shape: every served name, with the context length."""
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": self.started, "owned_by": "vllm", "root": str(self.gguf),
             "parent": None, "max_model_len": self.cfg.max_model_len or DEFAULT_CONTEXT}
            for name in self.cfg.served_model_names]}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    threading.Thread(target=self._load_or_exit, name="load-model", daemon=True).start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return await self.inner(scope, receive, send) if self.inner else None
        path = scope["path"]
        if path == "/health":
            return await _json(send, 200 if self.inner else 503, None)
        if path == "/version":
            return await _json(send, 200, {"version": "0.0.0+modelops-standin"})
        if path == "/v1/models" and self.inner is not None:
            # Answered here: llama.cpp's /v1/models waits for the model lock, i.e. for a running
            # generation to end, and a probe must not (vLLM answers it at once).
            return await _json(send, 200, self.models())
        if self.inner is None:
            return await _json(send, 503, {"object": "error", "message": "the model is still loading",
                                           "type": "ServiceUnavailableError", "code": 503})
        if scope["method"] == "POST" and path in MODEL_ROUTES:
            body = await _read_body(receive)
            try:
                asked = json.loads(body).get("model")
            except (ValueError, AttributeError):
                asked = None  # not JSON: llama.cpp's app answers 422
            if asked is not None and asked not in self.cfg.served_model_names:
                return await _json(send, 404, {"object": "error", "message": f"The model `{asked}` does not exist.",
                                               "type": "NotFoundError", "param": None, "code": 404})
            receive = _replay(body, receive)
        await self.inner(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The request body again for the inner app, then the real channel (disconnects)."""
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return again


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(asctime)s [vllm-standin] %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        cfg = parse_serve_args(argv)
        gguf = resolve_model(cfg.model, os.environ.get("HF_HOME"))
    except UsageError as exc:
        print(f"vllm (stand-in): error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    log.info("stand-in for `vllm serve`: checks the pod contract, not vLLM's behaviour")
    log.info("serving %s as %s on %s:%d", gguf, ", ".join(cfg.served_model_names), cfg.host, cfg.port)
    if cfg.tensor_parallel_size > 1:
        log.info("--tensor-parallel-size %d accepted: no GPUs here, the model runs on CPU", cfg.tensor_parallel_size)
    for flag in cfg.ignored:
        log.warning("ignored vLLM argument (not applicable to the stand-in): %s", flag)

    import uvicorn

    uvicorn.run(StandinApp(cfg, gguf), host=cfg.host, port=cfg.port, log_level="info", lifespan="on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
