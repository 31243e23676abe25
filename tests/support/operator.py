"""The operator as a real process, for e2e tests, chart tests and benchmarks.

The operator runs out of cluster (kwok pods run no containers), with free loopback ports
for its metrics and liveness endpoints and a short resync, so tests are quick. It starts
through the test entry point ``python -m tests.support.operator_main``: ``python -m modelops``
with the same arguments, which reaches a revision where ``revision_urls`` says (the e2e
harness writes that file), not at its Service.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.components.procs import free_port
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
RESYNC_SECONDS = 2


class OperatorProcess:
    """The operator (``run`` and ``command()``'s arguments) in a subprocess, with its metrics and liveness ports."""

    ENTRY_POINT = "tests.support.operator_main"

    def __init__(self, kubeconfig: Path, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.extra_env = extra_env or {}
        self.log_path = log
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Where the operator reaches a revision (the stand-ins' gateways): {revision: base URL}, written by
        # the e2e harness, read by the test entry point's resolver (tests/support/operator_main.py).
        self.revision_urls = log.parent / "revision-urls.json"

    def command(self) -> list[str]:
        return ["run", "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"]

    def environment(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig), MODELOPS_RESYNC_SECONDS=str(RESYNC_SECONDS),
                    MODELOPS_METRICS_PORT=str(self.metrics_port), PYTHONUNBUFFERED="1", **self.extra_env)

    def start(self) -> "OperatorProcess":
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", self.ENTRY_POINT, "--revision-urls",
                                          str(self.revision_urls), *self.command()],
                                         env=self.environment(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.starts += 1
        wait_for(self._live, timeout=30, what=f"the operator's liveness endpoint (log: {self.log_path})")
        return self

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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, key: str) -> float:
        return self.metrics().get(key, 0.0)

    def wait_reconciles(self, n: int, what: str = "", timeout: float = 30) -> None:
        """Wait until the operator has finished ``n`` more successful reconciles than now."""
        key = 'modelops_reconciles_total{result="ok"}'
        seen = self.metric(key)
        wait_for(lambda: self.metric(key) >= seen + n, timeout=timeout, what=f"{n} more reconciles {what}".rstrip())
