"""A hosted engine: an OpenAI-compatible API outside the cluster (a provider's, or another team's),
served through gateway-only pods.

The pod has one container, the gateway, pointed at the API's base URL with the provider's model
name and the API key mounted from the user's Secret (the operator renders the reference; it never
reads the Secret). No engine container, no GPU, no storage initializer, no model cache: the same
gateway as in front of vLLM or Ollama, so traffic splits, sticky A/B, golden prompts, metrics,
analysis and rollback work the same, and the cost comes from the provider's per-token prices.
"""

from __future__ import annotations

from typing import Any

from modelops.domain.source import hosted_source
from modelops.domain.spec import HostedEngine

from .common import PlanError, PodContext, gateway_container, gateway_volumes, secret_volume

API_KEY_DIR = "/etc/modelops/hosted"
API_KEY_FILE = "api-key"
# The gateway alone: it relays, it does not generate. Enough for hundreds of concurrent streams
# (see the README's gateway overhead); spec.resources.cpu / memory raise it.
CPU = "250m"
MEMORY = "256Mi"
MEMORY_LIMIT = "512Mi"
PROBE_SECONDS = 30


def hosted_spec(ctx: PodContext) -> HostedEngine:
    hosted = ctx.spec.engine.hosted
    if hosted is None:
        raise PlanError("spec.engine.hosted", "required with spec.engine.type hosted (url and model)")
    engine = ctx.spec.engine
    if ctx.spec.model.source is not None:
        raise PlanError("spec.model.source", "has no meaning with spec.engine.type hosted: the provider's model "
                                             "is spec.engine.hosted.model")
    if engine.image or engine.args or engine.env:
        raise PlanError("spec.engine", "image, args and env configure an engine container; a hosted engine "
                                       "has none")
    if ctx.spec.resources.gpu.type is not None:
        raise PlanError("spec.resources.gpu.type", "has no meaning with spec.engine.type hosted: its pods have no GPU")
    return hosted


def describe(hosted: HostedEngine) -> str:
    """Where a hosted revision's answers come from, in the words status and history show.

    >>> describe(HostedEngine(url="https://api.example.com/v1", model="gpt-4o-mini"))
    'gpt-4o-mini at https://api.example.com/v1'
    """
    return hosted_source(hosted.model, hosted.url)  # shared with the kubectl plugin, which reads raw objects


def gateway(ctx: PodContext) -> dict[str, Any]:
    hosted = hosted_spec(ctx)
    container = gateway_container(ctx, 0, engine_url=hosted.url.rstrip("/"))
    env = [{"name": "MODELOPS_ENGINE_MODEL", "value": hosted.model},
           # the API is probed (GET <url>/models) this often while ready, not every 5 s: it is
           # someone else's, metered and rate-limited; a failing request re-probes at once
           {"name": "MODELOPS_HEALTH_INTERVAL", "value": str(PROBE_SECONDS)}]
    if hosted.api_key_secret_ref is not None:
        env.append({"name": "MODELOPS_ENGINE_API_KEY_FILE", "value": f"{API_KEY_DIR}/{API_KEY_FILE}"})
        container["volumeMounts"].append({"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True})
    at = next(i for i, e in enumerate(container["env"]) if e["name"] == "MODELOPS_MODEL") + 1
    container["env"][at:at] = env
    res = ctx.spec.resources
    memory = res.memory or MEMORY
    container["resources"] = {"requests": {"cpu": res.cpu or CPU, "memory": memory},
                              "limits": {"memory": res.memory or MEMORY_LIMIT}}
    return container


def volumes(ctx: PodContext) -> list[dict[str, Any]]:
    hosted = hosted_spec(ctx)
    vols = gateway_volumes(ctx)
    ref = hosted.api_key_secret_ref
    if ref is not None:  # not optional: without its key the revision cannot serve, and the pod says why
        vols.append(secret_volume("api-key", ref.name, ref.key, API_KEY_FILE))
    return vols
