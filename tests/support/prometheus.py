"""A real Prometheus (Debian's package) started on loopback for a test session.

Targets come from a file (file_sd), so a harness can add a scrape target when a new
revision's stand-in starts and remove it when it stops; Prometheus picks the change up
within a second.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.components.procs import free_port
from tests.support.wait import wait_for


class PrometheusServer:
    def __init__(self, scrape_interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        if not binary:
            raise RuntimeError("prometheus is not installed: `apt-get install -y --no-install-recommends prometheus` "
                               "(.ci/run does this)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="modelops-prom-"))
        self.port = free_port()
        self.targets_file = self.dir / "targets.json"
        self.targets: dict[str, dict[str, str]] = {}
        self._write_targets()
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": "gateways", "scrape_timeout": "900ms",
                                "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}]}],
        }))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "PrometheusServer":
        log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen([
            self.binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1h"], stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=30, what=f"Prometheus on {self.address} (log {self.dir / 'prometheus.log'})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, (self.dir / "prometheus.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(self.address + "/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def add_target(self, address: str, **labels: str) -> None:
        self.targets[address] = labels
        self._write_targets()

    def remove_target(self, address: str) -> None:
        """Stop scraping ``address`` (its pod is gone): its series go stale, as in a cluster."""
        if self.targets.pop(address, None) is not None:
            self._write_targets()

    def _write_targets(self) -> None:
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [a], "labels": l} for a, l in self.targets.items()]))
        tmp.replace(self.targets_file)

    def query(self, promql: str) -> list[dict]:
        url = self.address + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())["data"]["result"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
