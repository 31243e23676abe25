"""Stand-ins for revision pods, real Prometheus scraping them, and user traffic routed as a
router would route it, with every failed request counted.

kwok pods run no containers, so for each revision Deployment the operator creates, the
harness runs what its pods would run: the real gateway (the inference image's
``modelops_inference.gateway``) in front of a stub OpenAI-compatible engine whose errors a
test can switch on (``fail``) or slow down (``slow``). A stand-in serves only while its
Deployment reports available replicas (``status.availableReplicas > 0``): when that drops to
0 it is stopped (its address refuses connections, Prometheus loses the target, the
revision-URL file the operator's golden-prompt gate reads no longer names it) and when pods
are available again a new one serves. Like a container in a pod that is not ready yet, a new
stand-in starts as soon as the Deployment wants replicas, unseen: nothing learns its address
(no route, no target, no URL, no split) until the Deployment has available pods.

Prometheus (real) scrapes every running gateway each second. A traffic thread sends chat
requests continuously (about 30 a second) the way users reach the model:

- ``gateway-api``: through the HTTPRoute's default (last) rule, a backendRef chosen by weight;
  the backend Service sends to the ready pods it selects. A backend Service that selects no
  available pod has no endpoints: the request FAILS (recorded as 503 "no endpoints"); a
  Gateway does not re-route it to another backend.
- ``service``: through the Service ``<name>``, as kube-proxy does: over the ready endpoints of
  every revision its selector matches (one revision when the selector names
  ``modelops.dev/revision``; every revision of the ModelDeployment during a canary split,
  weighted by their available replicas). No endpoint: the request fails.
- blue-green (``preview_traffic``): half the requests test the ``<name>-preview`` Service
  once it has endpoints, as a person would.
- A/B: the harness plays the kubelet and cluster DNS: it copies the operator's split
  ConfigMap into each stand-in's split file, with the challenger Service's address mapped to
  the challenger's stand-in; the answering revision is read from ``x-modelops-revision``.

The view a request is routed by is a consistent snapshot: the routing objects (Services,
HTTPRoute) are read before and after the Deployments, and a view is used only when both
reads agree, so the availability it pairs with the routing really coexisted with it. A
stand-in is stopped only after every request routed by an older view has finished. Outage
windows shorter than the discovery period (a quarter of a second) can be missed; a revision
whose pods are available while its stand-in is still starting is not sent to (counted in
``deferred``, never as a failure).

Like the kubelet, the harness gives a stand-in its pod's configuration: the gateway
container's environment from the Deployment's pod template (prices, a hosted API's model name,
key files), with every Secret volume the gateway mounts read and written to files the
environment then points at. The addresses are the harness's own (loopback ports, the split file),
and a self-hosted revision's engine is the stub (``openai``: it is no vLLM). A hosted revision's
API is a stub too, standing in for the provider: it requires ``provider_key`` as its bearer token,
so a revision that was given the wrong Secret fails its requests.

Users (``users``): each request carries ``x-user-id`` from a pool of that many users, as the A/B
split's sticky assignment expects. Ratings (``taste``): after an answer, its user rates it
(``POST /v1/feedback`` with the response id, to the gateway the request went to, as a client
only knows the public endpoint) thumbs up with the answering revision's probability in
``taste``; what the gateways answered is counted in ``feedback``. Structured output (``json_answers``): requests ask for JSON
(``response_format``), which the stub engines answer as JSON unless a test garbles one (``garble``).

Every request is recorded with the revision it went to and its status, and classified:
``ok``; ``outage`` (no endpoints, no such Service or route backend, connection refused: the
router selected something that could not serve); ``error`` (an error status, a broken stream
or a timeout from a revision nobody failed on purpose); ``excused`` (an error status from a
revision the test failed with ``fail``). ``assert_no_outage`` fails on any outage or error.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from tests.components.procs import free_port
from tests.support.prometheus import PrometheusServer
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gemma-2-9b-it"
GROUP, VERSION, PLURAL = "modelops.dev", "v1alpha1", "modeldeployments"
LABEL_DEPLOYMENT, LABEL_REVISION = "modelops.dev/deployment", "modelops.dev/revision"
DISCOVERY_PERIOD = 0.25  # seconds between views of the cluster
REQUEST_INTERVAL = 0.03  # pause between requests: about 30 requests a second with the request time


# The pod's settings a stand-in does not take: addresses and files that are the harness's own, and
# the GCS metadata reader's (the stand-ins serve without a serving config).
NOT_FROM_POD = {"MODELOPS_ENGINE_URL", "MODELOPS_PORT", "MODELOPS_HOST", "MODELOPS_SPLIT_FILE", "MODELOPS_NAMESPACE",
                "MODELOPS_METADATA_URI", "MODELOPS_METADATA_GENERATION", "STORAGE_EMULATOR_HOST",
                "GOOGLE_CLOUD_PROJECT"}


@dataclass(frozen=True)
class PodConfig:
    """What the kubelet would give a revision's gateway container: its environment (values only;
    paths under Secret mounts point at the files written for them) and, for a hosted revision,
    the provider's URL path (its OpenAI base URL's path, e.g. ``/v1``)."""

    env: dict[str, str] = field(default_factory=dict)
    hosted_path: str | None = None

    @classmethod
    def of(cls, template: dict[str, Any], secret: Any, files: Path) -> "PodConfig":
        """``template``: the Deployment's pod template (as JSON); ``secret(name, key)``: a Secret's
        value, read as the kubelet reads it."""
        spec = template.get("spec") or {}
        gateway = next((c for c in spec.get("containers") or [] if c["name"] == "gateway"), None)
        if gateway is None:
            return cls()
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounted: dict[str, Path] = {}  # mountPath -> the local directory standing in for it
        for m in gateway.get("volumeMounts") or []:
            source = (volumes.get(m["name"]) or {}).get("secret")
            if source is None:
                continue
            local = files / m["name"]
            local.mkdir(parents=True, exist_ok=True)
            for item in source.get("items") or []:
                (local / item["path"]).write_text(secret(source["secretName"], item["key"]))
            mounted[m["mountPath"]] = local
        env: dict[str, str] = {}
        for e in gateway.get("env") or []:
            if e["name"] in NOT_FROM_POD or "value" not in e:
                continue
            value = e["value"]
            for path, local in mounted.items():
                if value.startswith(path + "/"):
                    value = str(local) + value[len(path):]
            env[e["name"]] = value
        hosted_path = None
        if env.get("MODELOPS_ENGINE") == "hosted":
            url = next(e["value"] for e in gateway["env"] if e["name"] == "MODELOPS_ENGINE_URL")
            hosted_path = "/" + url.split("://", 1)[1].partition("/")[2].rstrip("/")
        else:
            env["MODELOPS_ENGINE"] = "openai"  # the stub beside it is an OpenAI-compatible server, not vLLM
        return cls(env, hosted_path)


class StandIn:
    """One revision's pod: stub engine (or, for a hosted revision, a stub provider) + real gateway,
    both on loopback, the gateway configured as the pod's (``PodConfig``)."""

    def __init__(self, revision: str, workdir: Path, namespace: str = "", pod: PodConfig | None = None,
                 provider_key: str | None = None) -> None:
        self.revision = revision
        pod = pod or PodConfig()
        self.stub_port, self.port = free_port(), free_port()
        self.split_file = workdir / f"{revision}.split.json"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.log = (workdir / f"{revision}.log").open("ab")
        stub = [sys.executable, "-m", "tests.components.stub_upstream", "--port", str(self.stub_port), "--tokens", "4"]
        engine_url = f"http://127.0.0.1:{self.stub_port}"
        if pod.hosted_path is not None:  # the provider: its API under the base URL's path, with a key
            stub += ["--prefix", pod.hosted_path or "/v1"]
            if provider_key:
                stub += ["--api-key", provider_key]
            engine_url += pod.hosted_path
        self.stub = subprocess.Popen(stub, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        gw_env = dict(env, MODELOPS_ENGINE="openai", MODELOPS_MODEL=MODEL, MODELOPS_REVISION=revision)
        gw_env.update(pod.env)
        gw_env.update(MODELOPS_ENGINE_URL=engine_url, MODELOPS_PORT=str(self.port),
                      MODELOPS_NAMESPACE=namespace,  # the downward API in a pod; analysis filters on it
                      MODELOPS_HOST="127.0.0.1", MODELOPS_RETRIES="0", MODELOPS_LOG_LEVEL="warning",
                      MODELOPS_SPLIT_FILE=str(self.split_file), MODELOPS_UNREADY_INTERVAL="0.2")
        self.gateway = subprocess.Popen([sys.executable, "-m", "modelops_inference.gateway"], cwd=ROOT, env=gw_env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._ready, timeout=60, what=f"the stand-in gateway for {revision}")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        assert self.gateway.poll() is None and self.stub.poll() is None, f"stand-in for {self.revision} exited"
        try:
            return httpx.get(self.url + "/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def fail_requests(self, status: int = 500) -> None:
        httpx.post(f"http://127.0.0.1:{self.stub_port}/_stub/fail", json={"status": status, "count": 100_000}, timeout=5)

    def garble_json(self) -> None:
        """Its engine answers plain text even when asked for JSON."""
        httpx.post(f"http://127.0.0.1:{self.stub_port}/_stub/garble", json={"on": True}, timeout=5)

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


@dataclass(frozen=True)
class View:
    """What a router knows at one instant: pods available per revision and the routing objects."""

    at: float
    router: str  # "service" | "gateway-api"
    available: dict[str, int]  # revision -> available replicas
    desired: dict[str, int]  # revision -> spec.replicas
    labels: dict[str, dict[str, str]]  # revision -> its pods' labels
    selectors: dict[str, dict[str, str]]  # Service name -> selector
    backends: tuple[tuple[str, int], ...] | None  # the HTTPRoute's default rule: (Service, weight); None: no route

    def endpoints(self, service: str) -> dict[str, int] | None:
        """Revisions with available pods behind ``service`` (None: no such Service)."""
        selector = self.selectors.get(service)
        if selector is None:
            return None
        if not selector:
            return {}  # a Service without a selector gets no endpoints of its own
        return {r: n for r, n in self.available.items()
                if n > 0 and all(self.labels.get(r, {}).get(k) == v for k, v in selector.items())}

    def selected(self, service: str) -> str | None:
        """The revision a Service pins by label, if it does."""
        return (self.selectors.get(service) or {}).get(LABEL_REVISION)


@dataclass(frozen=True)
class Routed:
    path: str  # "route" | "service" | "preview"
    via: str  # the Service (or route) the request went through
    revision: str | None  # the revision chosen; None when nothing could be chosen
    outage: str | None = None  # why the request cannot be served, if it cannot


@dataclass(frozen=True)
class Sent:
    at: float  # seconds since the harness started
    path: str
    via: str
    revision: str | None  # the revision that answered (x-modelops-revision) or that was chosen
    status: int  # HTTP status; 503 for no endpoints; 0 when no HTTP answer came
    kind: str  # ok | outage | error | excused
    detail: str = ""


@dataclass
class _Routing:
    """The routing objects as read, to compare two reads."""

    router: str
    selectors: dict[str, dict[str, str]] = field(default_factory=dict)
    backends: tuple[tuple[str, int], ...] | None = None


class Harness:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, prometheus: PrometheusServer,
                 workdir: Path, failing: set[str] | None = None, urls_file: Path | None = None,
                 preview_traffic: bool = False, users: int = 0, taste: dict[str, float] | None = None,
                 provider_key: str | None = None, json_answers: bool = False) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.prometheus = prometheus
        self.workdir = workdir
        self.failing = set(failing or ())  # revisions whose engine answers 500, on purpose
        self.slowed: dict[str, float] = {}  # revisions whose engine starts answers late, on purpose
        self.standins: dict[str, StandIn] = {}  # serving: up, and the Deployment has available pods
        self._procs: dict[str, StandIn] = {}  # every running stand-in, serving or not yet
        self.urls_file = urls_file  # OperatorProcess.revision_urls: {revision: base URL} of the serving stand-ins
        self.preview_traffic = preview_traffic  # also test the blue-green preview, as a person would
        self.users = users  # requests carry x-user-id from this many users (0: anonymous)
        self.taste = dict(taste or {})  # revision -> the chance its user rates an answer up (absent: no rating)
        self.provider_key = provider_key  # the API key a hosted revision's stub provider requires
        self.json_answers = json_answers  # requests ask for JSON (response_format json_object)
        self.garbled: set[str] = set()  # revisions whose engine ignores response_format, on purpose
        self.feedback: Counter[tuple[str, str, int]] = Counter()  # (answering revision, rating, HTTP status)
        self.history: list[Sent] = []
        self.timeline: list[tuple[float, str]] = []  # what changed in the cluster, as the harness saw it
        self.harness_errors: list[str] = []  # the harness itself broke (a stand-in did not start, ...)
        self.deferred = 0  # requests not sent: pods available, stand-in still starting
        self.view: View | None = None
        self.model = MODEL  # spec.model.name, once read
        self.started = time.monotonic()
        self._serving = False  # set by the first request that had an endpoint: failures count from then on
        self._starting: set[str] = set()
        self._targets: set[str] = set()  # Prometheus targets of this harness' running stand-ins
        self._starters: list[threading.Thread] = []
        self._record_lock = threading.Lock()
        self._sent: Counter[tuple[str, int]] = Counter()  # (revision, status)
        self._stopping: list[threading.Thread] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the stand-in tables and the view
        self._inflight = threading.Lock()  # held while a request is routed and sent
        self._last_seen: dict[str, Any] = {}
        self.dump_file = workdir / "harness-timeline.txt"  # written when the harness stops
        self._threads = [threading.Thread(target=self._discover, daemon=True, name="harness-discover"),
                         threading.Thread(target=self._traffic, daemon=True, name="harness-traffic")]

    def __enter__(self) -> "Harness":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        for t in self._starters + self._stopping:
            t.join(timeout=90)
        with self._lock:
            running = list(self._procs.values())
            self._procs.clear()
            self.standins.clear()
        for s in running:
            self._retire(s)
        self._dump()
        failed = self.failed_on_stable_path()
        if exc is not None and failed:  # the scenario failed before it could count: say what users saw
            exc.add_note("meanwhile, " + self.report(failed))

    def wait_serving(self, n: int = 20, timeout: float = 60) -> None:
        """Wait until users are being served (``n`` more answered requests): a rollout started
        before the traffic flows would go partly unobserved."""
        served = self.served
        wait_for(lambda: self.served >= served + n, timeout=timeout, what=f"{n} requests served")

    def _dump(self) -> None:
        """Every request and every change seen, in time order, for a person reading a failure."""
        with self._record_lock:
            rows = [(s.at, f"{s.kind:8} {s.path} via {s.via} -> {s.revision}: {s.status} {s.detail}".rstrip())
                    for s in self.history]
        lines = [f"t={t:7.2f}s {text}" for t, text in sorted(rows + list(self.timeline), key=lambda r: r[0])]
        self.dump_file.write_text("\n".join([self.summary(), *lines]) + "\n")

    # ------------------------------------------------------------------ test controls
    def fail(self, revision: str) -> None:
        """The revision's engine answers 500 from now on (also after its stand-in restarts)."""
        with self._lock:
            self.failing.add(revision)
            standin = self._procs.get(revision)
        if standin:
            standin.fail_requests()

    def garble(self, revision: str) -> None:
        """The revision's engine answers plain text when asked for JSON (also after a restart)."""
        with self._lock:
            self.garbled.add(revision)
            standin = self._procs.get(revision)
        if standin:
            standin.garble_json()

    def slow(self, revision: str, seconds: float) -> None:
        """The revision's engine starts every answer ``seconds`` late (time to first token)."""
        self.standin(revision)
        with self._lock:
            self.slowed[revision] = seconds
            standin = self._procs.get(revision)
        if standin:
            standin.slow_first_token(seconds)

    def standin(self, revision: str, timeout: float = 60) -> StandIn:
        """The revision's stand-in, once its Deployment has available pods and the stand-in is up."""
        return wait_for(lambda: self.standins.get(revision), timeout=timeout, what=f"the stand-in for {revision}")

    def url(self, revision: str) -> str:
        return self.standin(revision).url

    # ------------------------------------------------------------------ what users saw
    @property
    def sent(self) -> Counter[tuple[str, int]]:
        """Requests by (revision, status), a copy: 503 = no endpoints, 0 = no HTTP answer."""
        with self._record_lock:
            return Counter(self._sent)

    def requests_to(self, revision: str) -> int:
        return sum(n for (r, _), n in self.sent.items() if r == revision)

    @property
    def served(self) -> int:
        return sum(1 for s in self.history if s.kind == "ok")

    def outages(self) -> list[Sent]:
        """Requests the router sent where nothing could serve them (no endpoints, refused)."""
        return [s for s in self.history if s.kind == "outage"]

    def failed_on_stable_path(self) -> list[Sent]:
        """Outages, plus errors from revisions nobody failed on purpose."""
        return [s for s in self.history if s.kind in ("outage", "error")]

    def assert_no_outage(self, min_served: int = 20) -> None:
        """Users saw no failure but the deliberately failed revisions' errors."""
        assert not self.harness_errors, "the harness broke: " + "; ".join(self.harness_errors)
        failed = self.failed_on_stable_path()
        assert not failed, self.report(failed)
        assert self.served >= min_served, f"only {self.served} requests were served: {self.summary()}"

    def summary(self) -> str:
        kinds = Counter(s.kind for s in self.history)
        by_rev = Counter((s.revision, s.status) for s in self.history)
        return (f"{len(self.history)} requests ({dict(kinds)}), by (revision, status): {dict(by_rev)}, "
                f"deferred while a stand-in started: {self.deferred}")

    def report(self, failed: list[Sent]) -> str:
        """The failed requests, grouped into windows, with what the harness saw change around them."""
        windows: list[list[Sent]] = []
        for s in failed:
            if windows and s.at - windows[-1][-1].at < 1.0:
                windows[-1].append(s)
            else:
                windows.append([s])
        lines = [f"{len(failed)} requests failed for users: {self.summary()}"]
        for w in windows:
            what = Counter(f"{s.kind} {s.path} via {s.via} -> {s.revision}: {s.status} {s.detail}" for s in w)
            lines.append(f"  t={w[0].at:.1f}s..{w[-1].at:.1f}s: " + "; ".join(f"{n} x {k}" for k, n in what.items()))
        first, last = failed[0].at - 5, failed[-1].at + 2
        lines.append("  cluster as the harness saw it:")
        lines += [f"    t={t:.1f}s {text}" for t, text in self.timeline if first <= t <= last][:60]
        lines.append(f"  every request and change: {self.dump_file}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ discovery
    def _now(self) -> float:
        return time.monotonic() - self.started

    def _discover(self) -> None:
        apps, custom, core = client.AppsV1Api(self.api), client.CustomObjectsApi(self.api), client.CoreV1Api(self.api)
        errors = 0
        while not self._stop.is_set():
            try:
                view = self._consistent_view(apps, custom, core)
                if view is not None:
                    self._publish(view)
                    self._reconcile_standins(view)
                self._mount_split(core)
                errors = 0
            except Exception as exc:  # noqa: BLE001 - the apiserver may blip; a persistent error is reported
                errors += 1
                if errors == 40:
                    self.harness_errors.append(f"discovery failing for 10 s: {exc!r}")
            self._stop.wait(DISCOVERY_PERIOD)

    def _consistent_view(self, apps: client.AppsV1Api, custom: client.CustomObjectsApi,
                         core: client.CoreV1Api) -> View | None:
        try:
            md = custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        router = ((md.get("spec") or {}).get("traffic") or {}).get("router") or "service"
        self.model = ((md.get("spec") or {}).get("model") or {}).get("name") or MODEL  # what clients ask for
        for _ in range(5):
            before = self._routing(router, custom, core)
            deps = apps.list_namespaced_deployment(self.namespace,
                                                   label_selector=f"{LABEL_DEPLOYMENT}={self.name}").items
            after = self._routing(router, custom, core)
            if before == after:
                return View(
                    at=self._now(), router=router,
                    available={d.metadata.name: (d.status.available_replicas or 0) for d in deps},
                    desired={d.metadata.name: (d.spec.replicas or 0) for d in deps},
                    labels={d.metadata.name: dict(d.spec.template.metadata.labels or {}) for d in deps},
                    selectors=after.selectors, backends=after.backends)
        return None  # the routing kept changing: keep the last view one more period

    def _routing(self, router: str, custom: client.CustomObjectsApi, core: client.CoreV1Api) -> _Routing:
        services = core.list_namespaced_service(self.namespace, label_selector=f"{LABEL_DEPLOYMENT}={self.name}")
        out = _Routing(router, {s.metadata.name: dict(s.spec.selector or {}) for s in services.items})
        if router == "gateway-api":
            try:
                route = custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", self.namespace,
                                                            "httproutes", self.name)
            except client.exceptions.ApiException as exc:
                if exc.status != 404:
                    raise
            else:
                rules = route["spec"].get("rules") or []
                refs = (rules[-1].get("backendRefs") or []) if rules else []
                out.backends = tuple((b["name"], int(b.get("weight", 1))) for b in refs)
        return out

    def _publish(self, view: View) -> None:
        with self._lock:
            self.view = view
        seen = {"router": view.router,
                "pods (available/desired)": {r: f"{n}/{view.desired.get(r, 0)}" for r, n in view.available.items()},
                "services": {n: (view.selected(n) or ("every revision" if s else "nothing"))
                             for n, s in view.selectors.items()},
                "route": dict(view.backends) if view.backends is not None else None}
        for key, value in seen.items():
            if self._last_seen.get(key) != value:
                self._note(f"{key}: {value}")
                self._last_seen[key] = value

    def _note(self, text: str) -> None:
        self.timeline.append((self._now(), text))

    def _reconcile_standins(self, view: View) -> None:
        with self._lock:
            gone = [r for r in self.standins if view.available.get(r, 0) == 0]
            unwanted = [r for r in self._procs if r not in self.standins
                        and view.available.get(r, 0) == 0 and view.desired.get(r, 0) == 0]
            wanted = [r for r in view.available if (view.available[r] > 0 or view.desired[r] > 0)
                      and r not in self._procs and r not in self._starting]
            self._starting.update(wanted)
            for r in self._procs:
                if r not in self.standins and view.available.get(r, 0) > 0:
                    self._serve(r)
            retired = [self._procs.pop(r) for r in unwanted]
        for rev in wanted:
            t = threading.Thread(target=self._start, args=(rev,), daemon=True, name=f"start-{rev}")
            t.start()
            self._starters.append(t)
        if gone:
            with self._inflight:  # every request routed by an older view has finished
                with self._lock:
                    for r in gone:
                        retired.append(self._procs.pop(r))
                        del self.standins[r]
                    self._published()
            for r in gone:
                self._note(f"stand-in for {r} stopped (no available pods)")
        for standin in retired:
            t = threading.Thread(target=self._retire, args=(standin,), daemon=True, name=f"stop-{standin.revision}")
            t.start()
            self._stopping.append(t)

    def _serve(self, rev: str) -> None:
        """The revision's pods are available: its stand-in's address becomes known (lock held)."""
        self.standins[rev] = self._procs[rev]
        self._published()
        self._note(f"stand-in for {rev} serves at {self.standins[rev].url}")

    def _pod_config(self, rev: str) -> PodConfig:
        """The revision's gateway settings as the kubelet would give them (its pod template, its
        Secrets mounted as files)."""
        core = client.CoreV1Api(self.api)
        dep = client.AppsV1Api(self.api).read_namespaced_deployment(rev, self.namespace)
        template = self.api.sanitize_for_serialization(dep.spec.template)

        def secret(name: str, key: str) -> str:
            data = core.read_namespaced_secret(name, self.namespace).data or {}
            return base64.b64decode(data[key]).decode()

        return PodConfig.of(template, secret, self.workdir / f"{rev}.files")

    def _start(self, rev: str) -> None:
        try:
            standin = StandIn(rev, self.workdir, self.namespace, self._pod_config(rev), self.provider_key)
        except Exception as exc:  # noqa: BLE001 - reported by assert_no_outage
            self.harness_errors.append(f"the stand-in for {rev} did not start: {exc}")
            with self._lock:
                self._starting.discard(rev)
            return
        try:
            with self._lock:
                failing, slow, garbled = rev in self.failing, self.slowed.get(rev), rev in self.garbled
            if failing:
                standin.fail_requests()
            if garbled:
                standin.garble_json()
            if slow:
                standin.slow_first_token(slow)
            with self._lock:
                self._procs[rev] = standin
                self._starting.discard(rev)
                missed_fail = rev in self.failing and not failing
                missed_slow = self.slowed.get(rev) if self.slowed.get(rev) != slow else None
                missed_garble = rev in self.garbled and not garbled
            if missed_fail:  # fail() came while it was starting
                standin.fail_requests()
            if missed_garble:
                standin.garble_json()
            if missed_slow:
                standin.slow_first_token(missed_slow)
            with self._lock:
                if self.view is not None and self.view.available.get(rev, 0) > 0 and rev in self._procs:
                    self._serve(rev)
        except Exception as exc:  # noqa: BLE001
            self.harness_errors.append(f"the stand-in for {rev} could not be set up: {exc}")
            with self._lock:
                self._starting.discard(rev)

    def _retire(self, standin: StandIn) -> None:
        standin.stop()

    def _published(self) -> None:
        """Prometheus targets and the revision-URL file follow the running stand-ins (lock held)."""
        running = {s.address: s.revision for s in self.standins.values()}
        for address in self._targets - running.keys():
            self.prometheus.remove_target(address)
        for address in running.keys() - self._targets:
            self.prometheus.add_target(address, pod_revision=running[address])
        self._targets = set(running)
        if self.urls_file:
            _write_atomically(self.urls_file, json.dumps({r: s.url for r, s in self.standins.items()}))

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
        # cluster DNS: the new revision's Service -> its stand-in (an A/B challenger, or a mirror's shadow)
        target = doc.get("mirror") or doc
        if target:
            standin = standins.get(target.get("revision") or target.get("challenger"))
            if standin is None:
                return  # its "pod" is not up: the Service would have no endpoints either
            target["url"] = standin.url
        text = json.dumps(doc)
        for standin in standins.values():
            if not standin.split_file.exists() or standin.split_file.read_text() != text:
                _write_atomically(standin.split_file, text)

    # ------------------------------------------------------------------ traffic
    def route(self, view: View, rng: random.Random) -> Routed:
        """Where a router sends one request, given ``view``."""
        if self.preview_traffic and rng.random() < 0.5:
            preview = f"{self.name}-preview"
            eps = view.endpoints(preview)
            if eps:  # a person tests the preview once it is up
                return Routed("preview", preview, _pick(eps, rng))
        if view.router == "gateway-api":
            if view.backends is None:
                return Routed("route", f"httproute/{self.name}", None, "no HTTPRoute")
            weighted = {b: w for b, w in view.backends if w > 0}
            if not weighted:
                return Routed("route", f"httproute/{self.name}", None, "no backendRef with a weight")
            backend = _pick(weighted, rng)
            eps = view.endpoints(backend)
            if eps is None:
                # The Service is not there (in this view): by the operator's naming, it is the revision's.
                n = view.available.get(backend, 0)
                eps = {backend: n} if n > 0 else {}
            if not eps:
                return Routed("route", backend, view.selected(backend) or backend,
                              f"no endpoints: Service {backend} selects no available pod")
            return Routed("route", backend, _pick(eps, rng))
        eps = view.endpoints(self.name)
        if eps is None:
            return Routed("service", self.name, None, f"no Service {self.name}")
        if not eps:
            return Routed("service", self.name, view.selected(self.name),
                          f"no endpoints: Service {self.name} selects no available pod")
        return Routed("service", self.name, _pick(eps, rng))

    def _traffic(self) -> None:
        rng = random.Random()
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                with self._inflight:
                    self._one(http, rng)
                self._stop.wait(REQUEST_INTERVAL)

    def _one(self, http: httpx.Client, rng: random.Random) -> None:
        with self._lock:
            view = self.view
        if view is None:
            return
        routed = self.route(view, rng)
        if routed.outage is not None:
            if self._serving:  # before the service first served, nothing was promised
                self._record(routed, routed.revision, 503, "outage", routed.outage)
            return
        assert routed.revision is not None
        with self._lock:
            standin = self.standins.get(routed.revision)
        if standin is None:  # its pods are available, its stand-in is still starting (or serves next period)
            if self._serving:
                self.deferred += 1
            return
        self._serving = True
        headers = {"x-user-id": f"user-{rng.randrange(self.users)}"} if self.users else {}
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        if self.json_answers:
            body["response_format"] = {"type": "json_object"}
        try:
            resp = http.post(standin.url + "/v1/chat/completions", headers=headers, json=body)
        except httpx.ConnectError as exc:
            self._record(routed, routed.revision, 0, "outage", f"connection failed: {exc}")
            return
        except httpx.HTTPError as exc:
            self._record(routed, routed.revision, 0, "error", f"{type(exc).__name__}: {exc}")
            return
        answered = resp.headers.get("x-modelops-revision") or routed.revision
        if resp.status_code == 200 and b"[DONE]" in resp.content:
            self._record(routed, answered, 200, "ok")
            if answered in self.taste:
                self._rate(http, rng, standin.url, answered, resp.content)
        elif resp.status_code >= 400 and answered in self.failing:
            self._record(routed, answered, resp.status_code, "excused", "failed on purpose")
        else:
            detail = resp.text[:120] if resp.status_code != 200 else "stream ended without [DONE]"
            self._record(routed, answered, resp.status_code, "error", detail)

    def _rate(self, http: httpx.Client, rng: random.Random, url: str, answered: str, stream: bytes) -> None:
        """The user rates the answer, through the gateway they sent the request to."""
        line = next((ln for ln in stream.split(b"\n") if ln.startswith(b"data: {")), None)
        if line is None:
            return
        rating = "up" if rng.random() < self.taste[answered] else "down"
        try:
            status = http.post(url + "/v1/feedback", json={"id": json.loads(line[6:])["id"], "rating": rating}).status_code
        except httpx.HTTPError:
            status = 0
        with self._record_lock:
            self.feedback[(answered, rating, status)] += 1

    def _record(self, routed: Routed, revision: str | None, status: int, kind: str, detail: str = "") -> None:
        with self._record_lock:
            self.history.append(Sent(self._now(), routed.path, routed.via, revision, status, kind, detail))
            self._sent[(revision or "", status)] += 1


def _pick(weights: dict[str, int], rng: random.Random) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of it (like the kubelet's ..data swap)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
