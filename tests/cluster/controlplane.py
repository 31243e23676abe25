"""Start, inspect and stop the local control plane: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, as plain processes on loopback.

kwokctl's binary runtime was evaluated: it wants to download its components, its
own PKI and kubeconfig conventions, and hides the component flags behind its own;
starting the five processes ourselves is about as much code, has no download step,
and lets us read every flag here. kwok itself (the node and pod simulator) is the
real upstream binary, fed the same stage definitions kwokctl uses by default.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from . import build, nodes, realnode, services, versions
from .errors import ClusterError
from .pki import PKI

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"


@dataclass(frozen=True)
class Ports:
    base: int = int(os.environ.get("MODELOPS_CLUSTER_PORT_BASE", "16440"))

    @property
    def apiserver(self) -> int:
        return self.base + 3

    @property
    def etcd(self) -> int:
        return self.base + 0

    @property
    def etcd_peer(self) -> int:
        return self.base + 1

    @property
    def controller_manager(self) -> int:
        return self.base + 4

    @property
    def scheduler(self) -> int:
        return self.base + 5

    @property
    def kwok(self) -> int:
        return self.base + 6

    def by_component(self) -> dict[str, int]:
        return {"etcd": self.etcd, "etcd-peer": self.etcd_peer, "kube-apiserver": self.apiserver,
                "kube-controller-manager": self.controller_manager,
                "kube-scheduler": self.scheduler, "kwok": self.kwok}


# Every write request, and every request of the operators, at Metadata level: who did what.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [
        # every request of an out-of-cluster operator, ours and Argo Rollouts' (the side-by-side benchmark)
        {"level": "Metadata", "users": ["modelops-operator", "argo-rollouts-controller"]},
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
COMPONENTS = CONTROL_PLANE + realnode.COMPONENTS + services.COMPONENTS


def default_state_dir() -> Path:
    return Path(os.environ.get("MODELOPS_CLUSTER_DIR", versions.CACHE / "cluster"))


@dataclass
class Cluster:
    state_dir: Path = field(default_factory=default_state_dir)
    ports: Ports = field(default_factory=Ports)
    node_file: Path | None = None

    # -- paths -------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def _pid_file(self, component: str) -> Path:
        return self.state_dir / "pids" / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"

    # -- process bookkeeping -------------------------------------------------
    def pid(self, component: str) -> int | None:
        try:
            pid = int(self._pid_file(component).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running(self) -> dict[str, int | None]:
        return {c: self.pid(c) for c in COMPONENTS}

    def is_up(self) -> bool:
        return all(self.running().values()) and self._ready("/readyz")

    def _spawn(self, component: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.log_file(component)
        log.parent.mkdir(parents=True, exist_ok=True)
        self._pid_file(component).parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._pid_file(component).write_text(str(proc.pid))
        self._procs[component] = proc
        return proc

    def _check_alive(self, component: str) -> None:
        proc = self._procs.get(component)
        if proc is not None and proc.poll() is not None:
            raise ClusterError(f"{component} exited with code {proc.returncode} while starting; "
                               f"last lines of {self.log_file(component)}:\n{self.tail(component)}")

    def tail(self, component: str, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_file(component).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _wait(self, what: str, component: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            self._check_alive(component)
            if check():
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; last lines of "
                           f"{self.log_file(component)}:\n{self.tail(component)}")

    # -- HTTP checks ---------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        pki_dir = self.state_dir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
        return ctx

    def _ready(self, path: str, url: str | None = None, verify: bool = True) -> bool:
        url = url or self.server + path
        try:
            ctx = self._ssl_context() if verify else ssl._create_unverified_context()
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _http_ok(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(build.kubectl()), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    # -- lifecycle -----------------------------------------------------------
    def up(self, timeout: float = 60) -> float:
        """Start every component; returns the seconds it took. Idempotent when already up."""
        started = time.monotonic()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        if self.is_up():
            return 0.0
        if any(self.running().values()):
            self.down()  # half-started leftovers from a crash: start clean
        bins = {c: build.binary(c) for c in CONTROL_PLANE}
        self._check_ports()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("logs", "pids"):
            (self.state_dir / sub).mkdir(exist_ok=True)
        for old in (self.state_dir / "logs").glob("*.log"):
            old.unlink()
        pki_dir = self.state_dir / "pki"
        pki = self._write_pki(pki_dir)
        node = realnode.RealNode(self)
        data_dir = Path(tempfile.mkdtemp(prefix="modelops-etcd-"))
        (self.state_dir / "etcd-data-dir").write_text(str(data_dir))
        try:
            node.prepare()
            self._start_etcd(bins["etcd"], data_dir, timeout)
            self._start_apiserver(bins["kube-apiserver"], pki_dir, timeout)
            self._start_controller_manager(bins["kube-controller-manager"], pki_dir)
            self._start_scheduler(bins["kube-scheduler"])
            self._start_kwok(bins["kwok"])
            self._wait("kube-controller-manager /healthz", "kube-controller-manager",
                       lambda: self._ready("", f"https://127.0.0.1:{self.ports.controller_manager}/healthz", False),
                       timeout)
            self._wait("kube-scheduler /healthz", "kube-scheduler",
                       lambda: self._ready("", f"https://127.0.0.1:{self.ports.scheduler}/healthz", False),
                       timeout)
            self._create_nodes(timeout)
            node.start(pki, max(timeout, 120))
            services.start(self, pki, timeout)
            self.kubectl("apply", "--server-side", "-f", str(build.gateway_api_crds()))
            self._wait("the default ServiceAccount (controller-manager's serviceaccount controller)",
                       "kube-controller-manager",
                       lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default",
                                            check=False).returncode == 0, timeout)
        except BaseException:
            self.down()
            raise
        return time.monotonic() - started

    def _check_ports(self) -> None:
        ports = (self.ports.by_component() | realnode.NodePorts(self.ports.base).by_component()
                 | services.ServicePorts(self.ports.base).by_component())
        for component, port in ports.items():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise ClusterError(
                        f"port {port} (for {component}) is in use by another process: stop it, "
                        f"run `python -m tests.cluster down`, or choose other ports with "
                        f"MODELOPS_CLUSTER_PORT_BASE (now {self.ports.base})") from None

    def _write_pki(self, pki_dir: Path) -> PKI:
        pki = PKI(pki_dir)
        pki.serving("apiserver", ["127.0.0.1", "10.96.0.1", realnode.BRIDGE_IP],
                    ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                     "kubernetes.default.svc.cluster.local"])
        pki.signing_key("sa")
        users = {"admin": ("kubernetes-admin", "system:masters"),
                 # A separate identity for an operator run out of cluster, so the audit log tells its writes apart.
                 "operator": ("modelops-operator", "system:masters"),
                 # Argo Rollouts' controller beside the cluster (tests/bench/operator_scale.py), audited alike.
                 "argo-rollouts": ("argo-rollouts-controller", "system:masters"),
                 "controller-manager": ("system:kube-controller-manager", None),
                 "scheduler": ("system:kube-scheduler", None)}
        for stem, (user, group) in users.items():
            pair = pki.client(stem, user, group)
            self._write_kubeconfig(self.state_dir / f"{stem}.kubeconfig", pki.ca.cert, pair.cert, pair.key, user)
        # The apiserver's identity towards the kubelet (logs, exec, port-forward).
        pki.client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        return pki

    def _write_kubeconfig(self, path: Path, ca: Path, cert: Path, key: Path, user: str) -> None:
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "modelops-local",
            "clusters": [{"name": "modelops-local", "cluster": {"server": self.server,
                                                                "certificate-authority": str(ca)}}],
            "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
            "contexts": [{"name": "modelops-local", "context": {"cluster": "modelops-local", "user": user}}],
        }
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)

    def _start_etcd(self, binary: Path, data_dir: Path, timeout: float) -> None:
        client = f"http://127.0.0.1:{self.ports.etcd}"
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        self._spawn("etcd", [
            str(binary), "--name=modelops", f"--data-dir={data_dir}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=modelops={peer}", "--initial-cluster-state=new",
            "--unsafe-no-fsync", "--quota-backend-bytes=2147483648", "--log-level=warn",
        ])
        self._wait("etcd /health", "etcd", lambda: self._http_ok(client + "/health"), timeout)

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "logs" / "audit.log"

    def _start_apiserver(self, binary: Path, pki: Path, timeout: float) -> None:
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        self._spawn("kube-apiserver", [
            str(binary),
            f"--etcd-servers=http://127.0.0.1:{self.ports.etcd}",
            # Pods reach the apiserver through the `kubernetes` Service, whose endpoint is the
            # advertised address: the host's address on the pod bridge (a loopback one is not
            # reachable from a pod). Every client still needs a certificate or token.
            "--bind-address=0.0.0.0", f"--advertise-address={realnode.BRIDGE_IP}",
            f"--secure-port={self.ports.apiserver}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            # Namespaces can be pinned to the real node (PodNodeSelector) and given its
            # toleration (PodTolerationRestriction), as an admin pins a namespace to a pool.
            "--enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={pki}",
            "--enable-priority-and-fairness=false",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
            "--audit-log-maxsize=200", "--audit-log-maxbackup=1", "--audit-log-format=json",
            "--v=1",
        ])
        self._wait("kube-apiserver /readyz", "kube-apiserver", lambda: self._ready("/readyz"), timeout)

    def _start_controller_manager(self, binary: Path, pki: Path) -> None:
        kubeconfig = self.state_dir / "controller-manager.kubeconfig"
        self._spawn("kube-controller-manager", [
            str(binary), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports.controller_manager}",
            "--leader-elect=false", "--controllers=*,-nodeipam,-cloud-node-lifecycle",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--use-service-account-credentials=true",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--concurrent-gc-syncs=20",
            "--v=1",
        ])

    def _start_scheduler(self, binary: Path) -> None:
        kubeconfig = self.state_dir / "scheduler.kubeconfig"
        self._spawn("kube-scheduler", [
            str(binary), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports.scheduler}",
            "--leader-elect=false", "--v=1",
        ])

    def _start_kwok(self, binary: Path) -> None:
        stages = binary.parent / build.KWOK_STAGES
        self._spawn("kwok", [
            str(binary), f"--kubeconfig={self.kubeconfig}", f"--config={stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={nodes.KWOK_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}", "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{self.ports.kwok}",
        ])
        self._wait("kwok /healthz", "kwok", lambda: self._http_ok(f"http://127.0.0.1:{self.ports.kwok}/healthz"),
                   30)

    def _create_nodes(self, timeout: float) -> None:
        env_file = os.environ.get("MODELOPS_CLUSTER_NODES")
        node_file = self.node_file or (Path(env_file) if env_file else None)
        manifests = nodes.manifests(nodes.load_pools(node_file))
        if not manifests:
            return
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                           "items": manifests}))
        names = [m["metadata"]["name"] for m in manifests]

        def all_ready() -> bool:
            out = self.kubectl("get", "nodes", "-o", "json", check=False)
            if out.returncode != 0:
                return False
            ready = {
                n["metadata"]["name"]
                for n in json.loads(out.stdout)["items"]
                if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
            }
            return set(names) <= ready

        self._wait(f"{len(names)} kwok nodes to be Ready", "kwok", all_ready, timeout)

    def down(self) -> list[str]:
        """Stop every process we started (by PID, whole process group) and free the ports."""
        stopped = []
        for component in reversed(COMPONENTS):
            pid_file = self._pid_file(component)
            pid = self.pid(component)
            if pid is not None:
                _terminate(pid)
                stopped.append(component)
            pid_file.unlink(missing_ok=True)
        realnode.RealNode(self).stop()
        data_marker = self.state_dir / "etcd-data-dir"
        if data_marker.exists():
            import shutil

            shutil.rmtree(data_marker.read_text().strip(), ignore_errors=True)
            data_marker.unlink()
        return stopped

    def status(self) -> str:
        lines = []
        for component, pid in self.running().items():
            lines.append(f"{component:<25} {'running pid ' + str(pid) if pid else 'stopped'}")
        if self.is_up():
            lines.append(f"\nKUBECONFIG={self.kubeconfig}  server {self.server}\n")
            out = self.kubectl(
                "get", "nodes", "-o",
                "custom-columns=NAME:.metadata.name,STATUS:.status.conditions[?(@.type=='Ready')].type,"
                "GPUS:.status.capacity.nvidia\\.com/gpu,PRODUCT:.metadata.labels.nvidia\\.com/gpu\\.product,"
                "CPU:.status.capacity.cpu,MEMORY:.status.capacity.memory",
                check=False)
            lines.append(out.stdout or out.stderr)
        return "\n".join(lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _terminate(pid: int, grace: float = 10) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        _reap(pid)
        time.sleep(0.05)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
