"""The local cluster's real worker node: containerd + runc run real pods, a kubelet
registers the node, kube-proxy makes Services work, CoreDNS answers ``*.svc`` names.

It lives next to the kwok nodes (those stay for scale and GPU shapes). What is real and
what is not:

- real: the kubelet admitting and running pods (probes, volumes, security contexts,
  ConfigMap refresh), containerd and runc, a CNI bridge, kube-proxy's iptables rules,
  DNS for Services and pods;
- simulated: GPUs. The node's ``nvidia.com/gpu`` capacity is patched into its status
  (Kubernetes' documented way to advertise an extended resource), so GPU pods schedule
  and are admitted, but no device is injected: engines run on the CPU.

The pod network is a bridge with a subnet that exists only on this machine and no route
out: pods reach each other, Services, and the host's address on the bridge (where the
apiserver, Prometheus and the GCS emulator listen); a FORWARD rule drops anything that
would leave through another interface.

Which pods run for real is decided per namespace, as a cluster admin pins a namespace
to a node pool: the node is tainted ``modelops.dev/node=real:NoSchedule`` (so the tests
whose pods kwok simulates never land on it), and a namespace carrying
``namespace_annotations()`` gets the node selector (PodNodeSelector) and the toleration
(PodTolerationRestriction) on every pod, so its pods land only on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from . import build, versions
from .errors import ClusterError
from .pki import PKI

if TYPE_CHECKING:
    from .controlplane import Cluster

NODE_NAME = "modelops-worker"
BRIDGE = "modelops0"
BRIDGE_IP = "10.89.0.1"  # the node's InternalIP, the apiserver's advertised address, cluster DNS
POD_SUBNET = "10.89.0.0/24"  # apart from 10.244.0.0/16, where kwok hands out its simulated pod IPs
CLUSTER_DOMAIN = "cluster.local"
NODE_LABEL = "modelops.dev/node"
REAL_NODE_SELECTOR = f"{NODE_LABEL}=real"
NAMESPACE_NODE_SELECTOR = "scheduler.alpha.kubernetes.io/node-selector"
NAMESPACE_TOLERATIONS = "scheduler.alpha.kubernetes.io/defaultTolerations"
TAINT = f"{NODE_LABEL}=real:NoSchedule"
# Simulated GPUs of the real node: advertised only, no device behind them.
GPUS = 4
GPU_LABELS = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": str(GPUS),
              "nvidia.com/gpu.product": "NVIDIA-L4", "cloud.google.com/gke-accelerator": "nvidia-l4"}
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"  # the kubelet's default sandbox image, built locally
RUN_DIR = Path("/run/modelops")  # sockets (a unix socket path must stay under 108 bytes)
KUBELET_ROOT = Path("/var/lib/modelops/kubelet")
COMPONENTS = ("containerd", "kubelet", "kube-proxy", "coredns")
FORWARD_CHAIN = "MODELOPS-NO-EGRESS"


@dataclass(frozen=True)
class NodePorts:
    base: int

    @property
    def kubelet(self) -> int:
        return self.base + 7

    @property
    def kubelet_healthz(self) -> int:
        return self.base + 8

    @property
    def proxy_healthz(self) -> int:
        return self.base + 9

    @property
    def proxy_metrics(self) -> int:
        return self.base + 10

    @property
    def coredns_health(self) -> int:
        return self.base + 11

    def by_component(self) -> dict[str, int]:
        return {"kubelet": self.kubelet, "kubelet-healthz": self.kubelet_healthz,
                "kube-proxy-healthz": self.proxy_healthz, "kube-proxy-metrics": self.proxy_metrics,
                "coredns-health": self.coredns_health}


def namespace_annotations() -> dict[str, str]:
    """Annotations that put every pod of a namespace on the real node (and only there)."""
    toleration = {"key": NODE_LABEL, "operator": "Equal", "value": "real", "effect": "NoSchedule"}
    return {NAMESPACE_NODE_SELECTOR: REAL_NODE_SELECTOR, NAMESPACE_TOLERATIONS: json.dumps([toleration])}


def containerd_root() -> Path:
    """Kept across ``down``/``up`` (keyed by version): imported images survive a restart."""
    return versions.CACHE / "node" / f"containerd-{versions.CONTAINERD}"


def containerd_socket() -> Path:
    return RUN_DIR / "containerd" / "containerd.sock"


def _sh(*cmd: str, check: bool = True, what: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ClusterError(f"{what or ' '.join(cmd)} failed (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def preflight() -> None:
    """What the node needs from this machine, with the fix for each gap."""
    if os.geteuid() != 0:
        raise ClusterError("the real node needs root (network namespaces, cgroups, mounts): run as root")
    missing = [tool for tool in ("ip", "iptables", "mount", "umount") if not shutil.which(tool)]
    cni = Path("/usr/lib/cni")
    packages = []
    if missing:
        packages += ["iproute2", "iptables"]
    if not (cni / "bridge").exists():
        packages.append("containernetworking-plugins")
    if not shutil.which("conntrack"):
        packages.append("conntrack")
    if packages:
        from tests.components.install import apt_install

        apt_install(sorted(set(packages)))


# -- the pod network --------------------------------------------------------------

def network_up(state: Path) -> None:
    """The bridge and its address exist before the apiserver advertises it and the kubelet uses it."""
    if _sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        _sh("ip", "link", "add", BRIDGE, "type", "bridge", what=f"creating the bridge {BRIDGE}")
    addrs = _sh("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
    if f" {BRIDGE_IP}/" not in addrs:
        _sh("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
    _sh("ip", "link", "set", BRIDGE, "up")
    # Service traffic between pods on one bridge crosses iptables only with br_netfilter;
    # forwarding lets a pod reach another pod through a Service's DNAT.
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    saved = state / "ip_forward.saved"
    if not saved.exists():
        saved.write_text(forward.read_text())
    forward.write_text("1\n")
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if bridge_nf.exists():
        bridge_nf.write_text("1\n")
    # No route out: whatever comes from the bridge may go back to the bridge, nowhere else.
    if _sh("iptables", "-w", "-L", FORWARD_CHAIN, "-n", check=False).returncode != 0:
        _sh("iptables", "-w", "-N", FORWARD_CHAIN)
    _sh("iptables", "-w", "-F", FORWARD_CHAIN)
    _sh("iptables", "-w", "-A", FORWARD_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
    if _sh("iptables", "-w", "-C", "FORWARD", "-j", FORWARD_CHAIN, check=False).returncode != 0:
        _sh("iptables", "-w", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)


def network_down(state: Path) -> None:
    _sh("ip", "link", "del", BRIDGE, check=False)
    _sh("iptables", "-w", "-D", "FORWARD", "-j", FORWARD_CHAIN, check=False)
    _sh("iptables", "-w", "-F", FORWARD_CHAIN, check=False)
    _sh("iptables", "-w", "-X", FORWARD_CHAIN, check=False)
    saved = state / "ip_forward.saved"
    if saved.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(saved.read_text())
        saved.unlink()


def cni_config() -> dict:
    return {
        "cniVersion": "1.0.0", "name": "modelops",
        "plugins": [
            # ipMasq off: pods get no NAT to the outside (and the FORWARD rule drops it anyway).
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": BRIDGE_IP}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(RUN_DIR / "cni-ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


# -- configuration files ------------------------------------------------------------

def containerd_config(state: Path) -> str:
    runc = build.binary("runc")
    root = containerd_root()
    cni_dir = state / "cni"
    return f"""version = 3
root = "{root}"
state = "{RUN_DIR / 'containerd-state'}"

[grpc]
  address = "{containerd_socket()}"

[plugins."io.containerd.cri.v1.runtime"]
  # This machine refuses a negative oom_score_adj even to root, and the kubelet asks
  # -998 for every sandbox: runc would fail "failed to update /proc/self/oom_score_adj".
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni_dir}"
    max_conf_num = 1

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
"""


def kubelet_config(state: Path, ports: NodePorts, pki_dir: Path) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # This machine runs cgroup v1 (hybrid); Kubernetes >= 1.35 refuses it unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{containerd_socket()}",
        "address": BRIDGE_IP, "port": ports.kubelet, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": ports.kubelet_healthz,
        "tlsCertFile": str(pki_dir / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(pki_dir / "kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki_dir / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [BRIDGE_IP], "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(state / "resolv.conf"),
        "podCIDR": POD_SUBNET,
        "maxPods": 110,
        "failSwapOn": False,
        "serializeImagePulls": False,
        # Images are imported, never pulled: garbage-collecting them would break the next pod.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        # A shared test machine's disk and memory are not the node's own: evict only in extremis.
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        # The ConfigMap refresh (the A/B split) is what a real kubelet does; a short sync makes it quick.
        "syncFrequency": "10s",
        "staticPodPath": "",
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(state: Path, ports: NodePorts) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(state / "kube-proxy.kubeconfig")},
        "mode": "iptables",
        "clusterCIDR": POD_SUBNET,
        "hostnameOverride": NODE_NAME,
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        # Masquerade every Service connection: a pod's reply to another pod on the same bridge
        # then returns through the host, so the DNAT is undone even where conntrack sees no bridge.
        "iptables": {"masqueradeAll": True},
        # Leave the host's conntrack table size alone.
        "conntrack": {"maxPerCore": 0},
        "nodePortAddresses": [f"{BRIDGE_IP}/32"],
    }


def corefile(state: Path, ports: NodePorts) -> str:
    return f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {BRIDGE_IP}
    errors
    health 127.0.0.1:{ports.coredns_health}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {state / 'coredns.kubeconfig'} modelops-local
        pods insecure
        fallthrough in-addr.arpa
    }}
    cache 5
}}
.:53 {{
    bind {BRIDGE_IP}
    errors
    # No upstream: the pod network has no route out, so nothing outside the cluster resolves.
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


# CoreDNS's read-only view of the cluster, as kubeadm grants it (system:coredns).
COREDNS_RBAC = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
     "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"]},
               {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "system:coredns"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
     "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:coredns"}]},
]


def write_credentials(cluster: "Cluster", pki: PKI) -> None:
    """Node, kube-proxy and CoreDNS identities from the cluster CA; the kubelet's serving certificate."""
    pki.serving("kubelet-serving", [BRIDGE_IP], [NODE_NAME])
    identities = {"kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
                  "kube-proxy": ("system:kube-proxy", None),
                  "coredns": ("system:coredns", None)}
    for stem, (user, group) in identities.items():
        pair = pki.client(stem, user, group)
        cluster._write_kubeconfig(cluster.state_dir / f"{stem}.kubeconfig", pki.ca.cert, pair.cert, pair.key, user)


# -- lifecycle ----------------------------------------------------------------

class RealNode:
    """Started and stopped by ``Cluster.up``/``down``; processes are tracked by PID like the rest."""

    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster
        self.ports = NodePorts(cluster.ports.base)
        self.state = cluster.state_dir / "node"

    def prepare(self) -> None:
        """Before the apiserver starts: tools, the bridge, a clean kubelet root."""
        preflight()
        self.state.mkdir(parents=True, exist_ok=True)
        _cleanup_pods(KUBELET_ROOT)
        network_up(self.state)

    def start(self, pki: PKI, timeout: float) -> None:
        c = self.cluster
        write_credentials(c, pki)
        c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": COREDNS_RBAC}))
        (self.state / "cni").mkdir(exist_ok=True)
        (self.state / "cni" / "10-modelops.conflist").write_text(json.dumps(cni_config(), indent=2))
        (self.state / "resolv.conf").write_text(f"nameserver {BRIDGE_IP}\n")
        self._start_containerd(timeout)
        load_images()  # before the kubelet: its first sandbox needs the pause image
        self._start_kubelet(pki.dir, timeout)
        self._start_kube_proxy(timeout)
        self._start_coredns(timeout)

    def _start_containerd(self, timeout: float) -> None:
        config = self.state / "containerd.toml"
        config.write_text(containerd_config(self.state))
        containerd_root().mkdir(parents=True, exist_ok=True)
        containerd_socket().parent.mkdir(parents=True, exist_ok=True)
        binary = build.binary("containerd")
        # containerd finds its shim on PATH.
        env_path = f"{binary.parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        self.cluster._spawn("containerd", ["env", f"PATH={env_path}", str(binary), f"--config={config}",
                                           "--log-level=warn"])
        self.cluster._wait("containerd's socket", "containerd",
                           lambda: _ctr("version", check=False).returncode == 0, timeout)

    def _start_kubelet(self, pki_dir: Path, timeout: float) -> None:
        config = self.state / "kubelet.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(self.state, self.ports, pki_dir)))
        KUBELET_ROOT.mkdir(parents=True, exist_ok=True)
        labels = {NODE_LABEL: "real", "modelops.dev/pool": "real", **GPU_LABELS}
        self.cluster._spawn("kubelet", [
            str(build.binary("kubelet")), f"--config={config}",
            f"--kubeconfig={self.cluster.state_dir / 'kubelet.kubeconfig'}",
            f"--root-dir={KUBELET_ROOT}", f"--node-ip={BRIDGE_IP}", f"--hostname-override={NODE_NAME}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            f"--register-with-taints={TAINT}",
            "--v=1",
        ])

        def ready() -> bool:
            out = self.cluster.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if out.returncode != 0:
                return False
            node = json.loads(out.stdout)
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in node.get("status", {}).get("conditions", []))

        self.cluster._wait(f"the real node {NODE_NAME} to be Ready", "kubelet", ready, timeout)
        self.advertise_gpus()

    def advertise_gpus(self) -> None:
        """Simulated GPUs: capacity patched into the node's status; the kubelet keeps it."""
        patch = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(GPUS)}]
        self.cluster.kubectl("patch", "node", NODE_NAME, "--subresource=status", "--type=json",
                             "-p", json.dumps(patch))

        def allocatable() -> bool:
            out = self.cluster.kubectl("get", "node", NODE_NAME, "-o",
                                       "jsonpath={.status.allocatable.nvidia\\.com/gpu}", check=False)
            return out.stdout.strip() == str(GPUS)

        self.cluster._wait(f"{GPUS} simulated GPUs allocatable on {NODE_NAME}", "kubelet", allocatable, 30)

    def _start_kube_proxy(self, timeout: float) -> None:
        config = self.state / "kube-proxy.yaml"
        config.write_text(yaml.safe_dump(kube_proxy_config(self.cluster.state_dir, self.ports)))
        self.cluster._spawn("kube-proxy", [str(build.binary("kube-proxy")), f"--config={config}", "--v=1"])
        self.cluster._wait("kube-proxy /healthz", "kube-proxy",
                           lambda: self.cluster._http_ok(f"http://127.0.0.1:{self.ports.proxy_healthz}/healthz"),
                           timeout)

    def _start_coredns(self, timeout: float) -> None:
        config = self.state / "Corefile"
        config.write_text(corefile(self.cluster.state_dir, self.ports))
        self.cluster._spawn("coredns", [str(build.binary("coredns")), "-conf", str(config)])
        self.cluster._wait("CoreDNS /health", "coredns",
                           lambda: self.cluster._http_ok(f"http://127.0.0.1:{self.ports.coredns_health}/health"),
                           timeout)

    def stop(self) -> None:
        """After the processes are gone: containers, mounts, the network. Safe to run twice."""
        if not self.state.exists():
            # This state directory never prepared a node: the bridge, the iptables chain and the
            # kubelet's pods on this host belong to another cluster (or to none), leave them be.
            return
        _kill_shims()
        _cleanup_pods(KUBELET_ROOT)
        kube_proxy = build.binaries()["kube-proxy"]
        if build.is_built(kube_proxy.component, kube_proxy.version):
            subprocess.run([str(kube_proxy.path), "--cleanup"], capture_output=True)
        network_down(self.state)


def _ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _sh(str(build.binary("ctr")), f"--address={containerd_socket()}", "-n", "k8s.io", *args, check=check)


def load_images() -> list[str]:
    """Build the project's images (cached by content: seconds when nothing changed) and import
    into the node's containerd each one it lacks. Images are never pulled: no registry here."""
    from tests.images import build_all

    loaded = []
    marker_dir = containerd_root() / "modelops-imported"
    marker_dir.mkdir(parents=True, exist_ok=True)
    for image in build_all():
        marker = marker_dir / image.archive.name
        present = _ctr("images", "ls", "-q", f"name=={image.ref}", check=False).stdout.split()
        if marker.exists() and image.ref in present:
            continue
        started = time.monotonic()
        _ctr("images", "import", str(image.archive))
        marker.write_text(image.ref)
        loaded.append(image.ref)
        print(f"loaded {image.ref} into the node in {time.monotonic() - started:.0f}s", flush=True)
    if PAUSE_IMAGE not in _ctr("images", "ls", "-q", check=False).stdout.split():
        raise ClusterError(f"the pod sandbox image {PAUSE_IMAGE} is not in the node's containerd: "
                           "run `python -m tests.images build` first")
    return loaded


def _kill_shims() -> None:
    """Containers outlive containerd (their shims are daemons): stop them by their socket's address."""
    address = str(containerd_socket()).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if cmdline[0].endswith(b"containerd-shim-runc-v2") and address in b" ".join(cmdline):
                os.kill(int(proc.name), signal.SIGKILL)
    # The containers' processes were the shims' children: kill what is left in the pods' cgroups
    # (whichever controllers this machine mounts; cgroup v1 has one tree per controller).
    for procs in Path("/sys/fs/cgroup").glob("*/kubepods/**/cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def _cleanup_pods(root: Path) -> None:
    """Unmount what the kubelet mounted (tmpfs for secrets, the containers' rootfs) and forget the pods."""
    for base in (root, RUN_DIR / "containerd-state"):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(base))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
    for netns in Path("/run/netns").glob("cni-*") if Path("/run/netns").exists() else []:
        subprocess.run(["ip", "netns", "delete", netns.name], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(RUN_DIR / "containerd-state", ignore_errors=True)
    shutil.rmtree(RUN_DIR / "cni-ipam", ignore_errors=True)
