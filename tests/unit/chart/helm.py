"""Run the real helm binary (built from its Go module and cached by tests.cluster) on the chart."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import build

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "modelops"
# Pinned so `helm template` output does not depend on the helm build's default.
KUBE_VERSION = "1.36.0"
GOLDEN = Path(__file__).resolve().parent / "golden"
VALUES = {  # the values files the golden tests render, by name
    "default": {},
    "namespaced": {"watchNamespaces": ["ml", "ml-staging"]},
    # The default is already highly available (two leader-elected replicas); this one adds a
    # replica, other Lease timings and the monitoring extras.
    "ha": {"replicaCount": 3, "leaderElection": {"leaseDuration": 30, "renewDeadline": 20, "retryPeriod": 4},
           "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
           "grafana": {"dashboard": {"enabled": True}}},
    # One replica without leader election: the Recreate strategy, no Lease and no Lease Role.
    "single": {"replicaCount": 1, "leaderElection": {"enabled": False}},
    # Notification receivers, their URLs and secret headers from an existing Secret, mounted.
    "notifications": {"notifications": {"existingSecret": "modelops-notify", "receivers": {
        "ml-oncall": {"type": "slack", "urlKey": "ml-oncall"},
        "retrain": {"type": "webhook", "urlKey": "retrain-url", "headersKey": "retrain-headers",
                    "headers": {"X-Source": "modelops"}, "events": ["degraded", "rolledback"]}}}},
}


@functools.cache
def _home() -> Path:
    return Path(tempfile.mkdtemp(prefix="modelops-helm-home-"))


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """helm with a private home (no user repositories or plugins), optionally against a cluster."""
    home = _home()
    env = dict(os.environ, HELM_CONFIG_HOME=str(home / "config"), HELM_CACHE_HOME=str(home / "cache"),
               HELM_DATA_HOME=str(home / "data"))
    env.pop("KUBECONFIG", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.run([str(build.binary("helm")), *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def values_file(values: dict[str, Any], directory: Path) -> Path:
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def template(values: dict[str, Any], release: str = "modelops", namespace: str = "modelops-system",
             *extra: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        f = values_file(values, Path(d))
        return helm("template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                    "-f", str(f), *extra).stdout


def objects(manifest: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifest) if d]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def operator_env(values: dict[str, Any]) -> dict[str, str]:
    """The literal env (``value``, not ``valueFrom``) of the operator container the chart renders."""
    pod = find(objects(template(values)), "Deployment")[0]["spec"]["template"]["spec"]
    return {e["name"]: e["value"] for e in pod["containers"][0]["env"] if "value" in e}


def only_env(monkeypatch: Any, env: dict[str, str], clear: tuple[str, ...] = ("MODELOPS_",)) -> None:
    """This process's environment as the operator pod would have it: no other MODELOPS_ variable."""
    for k in list(os.environ):
        if k.startswith(clear):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
