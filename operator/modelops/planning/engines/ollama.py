"""The Ollama engine: ``ollama serve`` with the model pulled (or created from a GGUF)
before the gateway reports the pod ready."""

from __future__ import annotations

import shlex
from typing import Any

from .common import PodContext, container_security, engine_mounts, engine_resources, user_env

PORT = 11434
MODELS = "/models/.ollama"

_SERVE = """set -eu
ollama serve "$@" &
server=$!
until ollama list >/dev/null 2>&1; do
  kill -0 "$server" 2>/dev/null || { echo "ollama serve exited" >&2; exit 1; }
  sleep 1
done
"""


def _load_script(ctx: PodContext) -> str:
    name = shlex.quote(ctx.spec.model.name)
    src = ctx.source
    if src.scheme in ("ollama", "hf"):
        upstream = src.location if src.scheme == "ollama" else f"hf.co/{src.location}"
        up = shlex.quote(upstream)
        lines = [f"ollama pull {up}"]
        if upstream != ctx.spec.model.name:
            lines.append(f"ollama cp {up} {name}")
        return "\n".join(lines) + "\n"
    # gs:// (copied by the storage initializer) or pvc://: create the model from its GGUF file.
    model_dir = shlex.quote(ctx.model_dir)
    return (
        f"gguf=$(find {model_dir} -name '*.gguf' | sort | head -n 1)\n"
        f'[ -n "$gguf" ] || {{ echo "no .gguf file under "{model_dir} >&2; exit 1; }}\n'
        'printf "FROM %s\\n" "$gguf" > /tmp/Modelfile\n'
        f"ollama create {name} -f /tmp/Modelfile\n"
    )


def engine_container(ctx: PodContext) -> dict[str, Any]:
    opts = ctx.spec.engine.ollama
    env = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "OLLAMA_HOST", "value": f"0.0.0.0:{PORT}"},
        {"name": "OLLAMA_MODELS", "value": MODELS},
        {"name": "OLLAMA_KEEP_ALIVE", "value": opts.keep_alive if opts else "-1"},
    ]
    if opts and opts.num_ctx:
        env.append({"name": "OLLAMA_CONTEXT_LENGTH", "value": str(opts.num_ctx)})
    env += user_env(ctx)
    script = _SERVE + _load_script(ctx) + 'wait "$server"\n'
    def health() -> dict[str, Any]:
        return {"httpGet": {"path": "/api/version", "port": "engine"}}
    return {
        "name": "engine",
        "image": ctx.spec.engine.image or ctx.config.ollama_image,
        "command": ["/bin/sh", "-c", script, "ollama-engine"],  # args become "$@" of ollama serve
        "args": list(ctx.spec.engine.args),
        "ports": [{"name": "engine", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "resources": engine_resources(ctx),
        "startupProbe": {**health(), "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 60},
        "livenessProbe": {**health(), "periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 4},
        "securityContext": container_security(read_only_root=False),
        "volumeMounts": engine_mounts(ctx),
    }
