"""Render the objects of a ModelDeployment: per-revision Deployments and the Service.

Pure: (name, spec, config, revision) in, manifest dicts out. The revision's name is
``<name>-<hash of the pod template rendered without it>``, so anything that changes
what is served makes a new revision and nothing else does.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from modelops.config import OperatorConfig
from modelops.domain.revision import revision_name, template_hash
from modelops.domain.spec import GROUP, KIND, VERSION, EngineType, ModelDeploymentSpec

from .contract import ANNOTATION_APPLIED
from .engines import hosted, ollama, vllm
from .engines.common import (
    GATEWAY_PORT,
    LABEL_ENGINE,
    LABEL_REVISION,
    PodContext,
    common_labels,
    gateway_container,
    pod_security,
    revision_labels,
    scheduling,
    selector_labels,
    storage_initializer,
    volumes,
)

ENGINES = {EngineType.vllm.value: vllm, EngineType.ollama.value: ollama}
ANNOTATION_MODEL = "modelops.dev/model"
ANNOTATION_SOURCE = "modelops.dev/source"


def pod_template(ctx: PodContext) -> dict[str, Any]:
    if ctx.hosted:  # gateway-only: the API outside serves; no engine, GPU, weights or init container
        containers, init, vols = [hosted.gateway(ctx)], [], hosted.volumes(ctx)
    else:
        engine = ENGINES[ctx.spec.engine.type]
        containers = [engine.engine_container(ctx), gateway_container(ctx, engine.PORT)]
        init, vols = storage_initializer(ctx), volumes(ctx)
    pod_spec: dict[str, Any] = {
        "initContainers": init,
        "containers": containers,
        "volumes": vols,
        "securityContext": pod_security(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        **scheduling(ctx),
    }
    if not pod_spec["initContainers"]:
        del pod_spec["initContainers"]
    if ctx.spec.service_account_name:
        pod_spec["serviceAccountName"] = ctx.spec.service_account_name
    return {
        "metadata": {
            "labels": {**(revision_labels(ctx.name, ctx.revision) if ctx.revision else common_labels(ctx.name)),
                       LABEL_ENGINE: ctx.spec.engine.type},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(GATEWAY_PORT),
                            "prometheus.io/path": "/metrics"},
        },
        "spec": pod_spec,
    }


def served_from(spec: ModelDeploymentSpec) -> str:
    """What a revision serves from, for status and history: the model source, or the hosted API."""
    if spec.engine.hosted is not None and spec.engine.type == EngineType.hosted.value:
        return hosted.describe(spec.engine.hosted)
    return spec.model.source or ""


def revision_for(name: str, spec: ModelDeploymentSpec, config: OperatorConfig,
                 metadata: tuple[str, int] | None = None) -> str:
    """The revision name the spec asks for (raises PlanError on specs that cannot be rendered).
    ``metadata``: the (uri, generation) a metadata prefix resolved to; a new generation is a new revision."""
    ctx = PodContext(name, spec, config, revision="", metadata_uri=metadata[0] if metadata else None,
                     metadata_generation=metadata[1] if metadata else None)
    return revision_name(name, template_hash(pod_template(ctx)))


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": owner["name"], "uid": owner["uid"],
            "controller": True, "blockOwnerDeletion": True}


def finish(obj: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    """Set owner and the applied-hash annotation that lets the executor skip no-op writes.
    A Deployment's hash leaves out ``spec.replicas``: replicas are converged on their own
    (planning/contract.py ``writes``), whoever changed them last."""
    obj["metadata"]["ownerReferences"] = [owner_reference(owner)]
    hashed = obj
    if obj["kind"] == "Deployment":
        hashed = {**obj, "spec": {k: v for k, v in obj["spec"].items() if k != "replicas"}}
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]
    obj["metadata"].setdefault("annotations", {})[ANNOTATION_APPLIED] = digest
    return obj


def revision_deployment(owner: dict[str, Any], spec: ModelDeploymentSpec, config: OperatorConfig,
                        revision: str, replicas: int, metadata: tuple[str, int] | None = None) -> dict[str, Any]:
    name = owner["name"]
    template = pod_template(PodContext(name, spec, config, revision=revision,
                                       metadata_uri=metadata[0] if metadata else None,
                                       metadata_generation=metadata[1] if metadata else None))
    return finish({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": revision,
            "namespace": owner["namespace"],
            "labels": revision_labels(name, revision),
            "annotations": {ANNOTATION_MODEL: spec.model.name, ANNOTATION_SOURCE: served_from(spec)},
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            # GPU pods: never surge beyond the replicas asked for within one revision.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "selector": {"matchLabels": {**selector_labels(name), LABEL_REVISION: revision}},
            "template": template,
        },
    }, owner)
