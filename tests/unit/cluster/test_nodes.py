from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.cluster import nodes


def test_default_pools_are_l4_h100_and_cpu() -> None:
    ms = nodes.manifests(nodes.load_pools(None))
    gpus = {m["metadata"]["name"]: m["status"]["capacity"].get("nvidia.com/gpu") for m in ms}
    assert gpus == {"kwok-l4-0": "8", "kwok-l4-1": "8", "kwok-h100-0": "4", "kwok-h100-1": "4",
                    "kwok-cpu-0": None}


def test_gpu_nodes_are_labelled_and_tainted_like_gke_and_gfd() -> None:
    l4 = nodes.node_manifest(nodes.DEFAULT_POOLS[0], 0)
    assert l4["metadata"]["labels"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert l4["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert l4["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert l4["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"


def test_cpu_node_has_no_gpu_and_no_taint() -> None:
    cpu = nodes.node_manifest(nodes.DEFAULT_POOLS[2], 0)
    assert "nvidia.com/gpu" not in cpu["status"]["capacity"]
    assert cpu["spec"] == {}
    assert "nvidia.com/gpu.product" not in cpu["metadata"]["labels"]


def test_node_set_from_yaml(tmp_path: Path) -> None:
    f = tmp_path / "nodes.yaml"
    f.write_text("- {pool: a100, count: 3, gpus: 8, gpuProduct: NVIDIA-A100-SXM4-80GB}\n")
    ms = nodes.manifests(nodes.load_pools(f))
    assert [m["metadata"]["name"] for m in ms] == ["kwok-a100-0", "kwok-a100-1", "kwok-a100-2"]
    assert ms[0]["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"


def test_node_set_rejects_unknown_fields(tmp_path: Path) -> None:
    f = tmp_path / "nodes.yaml"
    f.write_text("- {pool: a100, gpu: 8}\n")
    with pytest.raises(ValidationError, match="gpu"):
        nodes.load_pools(f)
