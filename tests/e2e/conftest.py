"""End-to-end fixtures: the CRD installed and the operator running as a real process.

The operator runs out of cluster (kwok pods run no containers) with its own identity
on the local cluster (``modelops-operator``, so the audit log tells its writes apart),
or with the given kubeconfig on any other cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.kube import ClusterHandle
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
RESYNC_SECONDS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """``python -m modelops run`` in a subprocess, with its metrics and liveness ports."""

    def __init__(self, kubeconfig: Path, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.extra_env = extra_env or {}
        self.log_path = log
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # The documented test seam: where the operator reaches a revision (the stand-ins' gateways).
        self.revision_urls = log.parent / "revision-urls.json"

    def start(self) -> None:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), MODELOPS_RESYNC_SECONDS=str(RESYNC_SECONDS),
                   MODELOPS_METRICS_PORT=str(self.metrics_port), PYTHONUNBUFFERED="1",
                   MODELOPS_REVISION_URLS=str(self.revision_urls), **self.extra_env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelops", "run", "--liveness",
                 f"http://127.0.0.1:{self.liveness_port}/healthz"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.starts += 1
        wait_for(self._live, timeout=30, what=f"the operator's liveness endpoint (log: {self.log_path})")

    def _live(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, \
            f"the operator exited: {self.log_path.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a node failure or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metrics(self) -> dict[str, float]:
        """The operator's Prometheus metrics as {'name{labels}': value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric(self, key: str) -> float:
        return self.metrics().get(key, 0.0)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator["FakeGCS"]:
    """fake-gcs-server: the model registry the operator polls for new serving configs."""
    from tests.components.servers import FakeGCS

    server = FakeGCS(tmp_path_factory.mktemp("gcs")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def operator(cluster: ClusterHandle, crd: str, gcs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(cluster.operator_kubeconfig or cluster.kubeconfig, log,
                         extra_env={**gcs.env(), "MODELOPS_METADATA_POLL_SECONDS": "1"})
    op.start()
    try:
        yield op
    finally:
        op.stop()
