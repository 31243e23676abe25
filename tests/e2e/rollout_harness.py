"""Stand-ins for revision pods, real Prometheus scraping them, and traffic by published weights.

kwok pods run no containers, so for each revision Deployment the operator creates, the
harness starts what its pod would run: the real gateway (the inference image's
``modelops_inference.gateway``) in front of a stub OpenAI-compatible engine whose
errors a test can switch on. Prometheus (real) scrapes every gateway each second. A
traffic thread sends chat requests, choosing the revision by the weights in the
HTTPRoute the operator publishes, as a Gateway API implementation would. For A/B tests the
harness also plays the kubelet and cluster DNS: it copies the operator's split ConfigMap
into each stand-in's split file (what the optional ConfigMap volume does in a pod), with
the challenger Service's address mapped to the challenger's stand-in.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx
from kubernetes import client

from tests.components.procs import free_port
from tests.support.prometheus import PrometheusServer
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gemma-2-9b-it"


class StandIn:
    """One revision's pod: stub engine + real gateway, both on loopback."""

    def __init__(self, revision: str, workdir: Path) -> None:
        self.revision = revision
        self.stub_port, self.port = free_port(), free_port()
        self.split_file = workdir / f"{revision}.split.json"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.log = (workdir / f"{revision}.log").open("ab")
        self.stub = subprocess.Popen([sys.executable, "-m", "tests.components.stub_upstream", "--port",
                                      str(self.stub_port), "--tokens", "4"], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        gw_env = dict(env, MODELOPS_ENGINE="openai", MODELOPS_ENGINE_URL=f"http://127.0.0.1:{self.stub_port}",
                      MODELOPS_MODEL=MODEL, MODELOPS_REVISION=revision, MODELOPS_PORT=str(self.port),
                      MODELOPS_HOST="127.0.0.1", MODELOPS_RETRIES="0", MODELOPS_LOG_LEVEL="warning",
                      MODELOPS_SPLIT_FILE=str(self.split_file))
        self.gateway = subprocess.Popen([sys.executable, "-m", "modelops_inference.gateway"], cwd=ROOT, env=gw_env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=30, what=f"the stand-in gateway for {revision}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        assert self.gateway.poll() is None and self.stub.poll() is None, f"stand-in for {self.revision} exited"
        try:
            return httpx.get(self.url + "/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def fail_requests(self, status: int = 500) -> None:
        httpx.post(f"http://127.0.0.1:{self.stub_port}/_stub/fail", json={"status": status, "count": 100_000}, timeout=5)

    def slow_first_token(self, seconds: float) -> None:
        httpx.post(f"http://127.0.0.1:{self.stub_port}/_stub/hang", json={"seconds": seconds, "count": 100_000},
                   timeout=5)

    def stop(self) -> None:
        for p in (self.gateway, self.stub):
            if p.poll() is None:
                p.terminate()
        for p in (self.gateway, self.stub):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.log.close()


class Harness:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, prometheus: PrometheusServer,
                 workdir: Path, failing: set[str] | None = None, urls_file: Path | None = None,
                 preview_traffic: bool = False) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.prometheus = prometheus
        self.workdir = workdir
        self.failing = failing or set()  # revisions whose engine answers 500
        self.standins: dict[str, StandIn] = {}
        self.urls_file = urls_file  # the operator's MODELOPS_REVISION_URLS: revision -> stand-in gateway
        self.sent: Counter[tuple[str, int]] = Counter()  # (revision, status)
        self.weights: dict[str, int] = {}
        self.preview_traffic = preview_traffic  # also test the blue-green preview, as a person would
        self.preview: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._discover, daemon=True),
                         threading.Thread(target=self._traffic, daemon=True)]

    def __enter__(self) -> "Harness":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        for s in self.standins.values():
            s.stop()

    def fail(self, revision: str) -> None:
        self.failing.add(revision)
        if revision in self.standins:
            self.standins[revision].fail_requests()

    def standin(self, revision: str) -> StandIn:
        """The revision's stand-in, once its Deployment exists and the stand-in is up."""
        return wait_for(lambda: self.standins.get(revision), timeout=60, what=f"the stand-in for {revision}")

    def slow(self, revision: str, seconds: float) -> None:
        """The revision's engine starts every answer ``seconds`` late (time to first token)."""
        self.standin(revision).slow_first_token(seconds)

    def url(self, revision: str) -> str:
        return self.standin(revision).url

    def _discover(self) -> None:
        apps, custom, core = client.AppsV1Api(self.api), client.CustomObjectsApi(self.api), client.CoreV1Api(self.api)
        while not self._stop.is_set():
            try:
                deps = apps.list_namespaced_deployment(self.namespace,
                                                       label_selector=f"modelops.dev/deployment={self.name}").items
                for d in deps:
                    rev = d.metadata.name
                    if rev not in self.standins and (d.spec.replicas or 0) > 0:
                        standin = StandIn(rev, self.workdir)
                        if rev in self.failing:
                            standin.fail_requests()
                        self.prometheus.add_target(f"127.0.0.1:{standin.port}", pod_revision=rev)
                        with self._lock:
                            self.standins[rev] = standin
                        if self.urls_file:
                            _write_atomically(self.urls_file, json.dumps({r: s.url for r, s in self.standins.items()}))
                self._mount_split(core)
                if self.preview_traffic:
                    self.preview = self._preview(core)
                route = custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", self.namespace,
                                                            "httproutes", self.name)
                backends = route["spec"]["rules"][-1]["backendRefs"]
                with self._lock:
                    self.weights = {b["name"]: b.get("weight", 1) for b in backends}
            except client.exceptions.ApiException:
                pass
            self._stop.wait(0.3)

    def _preview(self, core: client.CoreV1Api) -> str | None:
        try:
            svc = core.read_namespaced_service(f"{self.name}-preview", self.namespace)
        except client.exceptions.ApiException:
            return None
        return (svc.spec.selector or {}).get("modelops.dev/revision")

    def _mount_split(self, core: client.CoreV1Api) -> None:
        try:
            cm = core.read_namespaced_config_map(f"{self.name}-split", self.namespace)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return
            raise
        doc = json.loads((cm.data or {}).get("split.json") or "{}")
        with self._lock:
            standins = dict(self.standins)
        if doc:
            challenger = standins.get(doc["challenger"])
            if challenger is None:
                return  # its "pod" is not up yet: the Service would have no endpoints either
            doc["url"] = challenger.url  # cluster DNS: the challenger's Service -> its stand-in
        text = json.dumps(doc)
        for standin in standins.values():
            if not standin.split_file.exists() or standin.split_file.read_text() != text:
                _write_atomically(standin.split_file, text)

    def _traffic(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                with self._lock:
                    weights = {r: w for r, w in self.weights.items() if w > 0 and r in self.standins}
                    standins = dict(self.standins)
                if not weights:
                    self._stop.wait(0.05)
                    continue
                rev = random.choices(list(weights), weights=list(weights.values()))[0]
                if self.preview in standins and random.random() < 0.5:
                    rev = self.preview  # type: ignore[assignment]
                try:
                    resp = http.post(standins[rev].url + "/v1/chat/completions", json={
                        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
                    self.sent[(rev, resp.status_code)] += 1
                except httpx.HTTPError:
                    self.sent[(rev, 0)] += 1
                self._stop.wait(0.02)

    def requests_to(self, revision: str) -> int:
        return sum(n for (r, _), n in self.sent.items() if r == revision)


def _write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of it (like the kubelet's ..data swap)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
