"""The simulated nodes kwok manages: GPU node pools as GKE and NVIDIA GPU feature
discovery label them, with the taint the NVIDIA device plugin's users put on them.

The node set is configurable with a YAML file (``MODELOPS_CLUSTER_NODES`` or
``--nodes``)::

    - {pool: l4, count: 2, gpus: 8, gpuProduct: NVIDIA-L4, accelerator: nvidia-l4}
    - {pool: cpu, count: 1}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

GPU_RESOURCE = "nvidia.com/gpu"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class NodePool(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    pool: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    count: int = Field(default=1, ge=0)
    gpus: int = Field(default=0, ge=0)
    gpu_product: str | None = Field(default=None, alias="gpuProduct")
    accelerator: str | None = None
    cpu: str = "32"
    memory: str = "256Gi"
    pods: int = 110


DEFAULT_POOLS = [
    NodePool(pool="l4", count=2, gpus=8, gpu_product="NVIDIA-L4", accelerator="nvidia-l4",
             cpu="96", memory="384Gi"),
    NodePool(pool="h100", count=2, gpus=4, gpu_product="NVIDIA-H100-80GB-HBM3",
             accelerator="nvidia-h100-80gb", cpu="104", memory="1024Gi"),
    # Room for the scale benchmark's 1,000 small pods (tests/bench/operator_scale.py: 110m CPU and
    # 192Mi each) on the one untainted node: kwok nodes advertise what they are told, so this is
    # capacity, not another node (tests count the nodes).
    NodePool(pool="cpu", count=1, cpu="160", memory="512Gi", pods=1100),
]


def load_pools(path: Path | None) -> list[NodePool]:
    if path is None:
        return list(DEFAULT_POOLS)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a YAML list of node pools")
    return [NodePool.model_validate(p) for p in data]


def node_manifest(pool: NodePool, index: int) -> dict[str, Any]:
    name = f"kwok-{pool.pool}-{index}"
    labels = {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "type": "kwok",
        "modelops.dev/pool": pool.pool,
    }
    capacity = {"cpu": pool.cpu, "memory": pool.memory, "pods": str(pool.pods),
                "ephemeral-storage": "1Ti"}
    taints = []
    if pool.gpus:
        capacity[GPU_RESOURCE] = str(pool.gpus)
        labels["nvidia.com/gpu.present"] = "true"
        labels["nvidia.com/gpu.count"] = str(pool.gpus)
        if pool.gpu_product:
            labels["nvidia.com/gpu.product"] = pool.gpu_product
        if pool.accelerator:
            labels["cloud.google.com/gke-accelerator"] = pool.accelerator
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def manifests(pools: list[NodePool]) -> list[dict[str, Any]]:
    return [node_manifest(p, i) for p in pools for i in range(p.count)]
