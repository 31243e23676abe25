"""A handle on the cluster under test: the local control plane or any kubeconfig."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config

from tests.cluster import build


@dataclass
class ClusterHandle:
    kubeconfig: Path
    local: bool  # True: the tests' own control plane with kwok GPU nodes
    operator_kubeconfig: Path | None = None  # a distinct identity for the operator (local cluster)
    audit_log: Path | None = None  # the apiserver's audit log of write requests (local cluster)

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(build.kubectl()), f"--kubeconfig={self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc
