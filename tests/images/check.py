"""``python -m tests.images check``: run each image's entry point from its archive, no cluster needed.

Each archive is unpacked (rootfs.py) and its entry point run by sandbox.py as the image's
user, on a read-only root where the pod has one (operator, inference), with the volumes
the pod mounts (tmpfs /tmp and /dev/shm, /models). What is shown per image:

- base: Python 3.11 with venv and ssl, as uid 65532 on a read-only root.
- operator: ``python -m modelops --version`` (its entry point) as uid 65532, read-only root;
  and that the root really is read-only in the sandbox (a write fails).
- inference: ``modelops-gateway --help`` and ``modelops-storage-initializer --help``.
- ollama: ``ollama --version``; then the engine container the operator renders for a GGUF
  model (its command, a script running ``ollama serve``, ``until ollama list``, ``find``,
  ``ollama create``; its env; the pod's uid 1000), with SmolLM2 at the model directory: the
  model listed in /api/tags and a 4-token generation.
- vllm-standin: the container the operator renders for vLLM (``vllm serve`` and its args,
  env, uid), plus user args it must accept and ignore, with SmolLM2 at the model
  directory: /health 503 -> 200, /v1/models, a chat completion, a streamed one, a probe
  during a stream, vLLM's 404 for another model; ``vllm serve`` without a model and with
  a directory holding no GGUF exit with status 2.
The rendered containers are read from the operator's golden test outputs
(tests/unit/golden/ollama-gguf-gs.yaml, vllm-gs-l4.yaml), so the checks follow the operator.
- inference + vllm-standin together, as in a pod: the gateway (MODELOPS_ENGINE=vllm) probes
  and warms the stand-in up, reports ready on /health, and relays a streamed chat completion.
- pause: PID 1 of its own PID namespace as uid 65535; reaps an orphan that exits; SIGTERM
  ends it with status 0.
Ports are free ones on 127.0.0.1 (the pod's 0.0.0.0:8000 would collide on a shared host).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tests.components.install import ComponentError, smollm2_gguf

from .build import Image
from .plan import IMAGES_DIR
from .rootfs import RunConfig, remove, unpack

CHECKS_DIR = IMAGES_DIR / "check"


def scratch_dir() -> Path:
    """Where the archives are unpacked: a tmpfs (/dev/shm) when it has room, because unpacking
    and deleting ~30,000 files on this machine's disk (ext4 mounted with `discard`) takes
    several times longer; the cache directory otherwise."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 << 30:
            return shm
    except OSError:
        pass
    return CHECKS_DIR


REPO = Path(__file__).resolve().parents[2]  # the sandbox runs as `python -m tests.images.sandbox` from here


class CheckFailed(AssertionError):
    pass


@dataclass
class Unpacked:
    image: Image
    root: Path
    config: RunConfig
    logs: Path

    def argv(self, cmd: Sequence[str], *, readonly: bool = False, user: str | None = None, env: dict[str, str] | None = None,
             binds: Sequence[str] = (), tmpfs: Sequence[str] = ("/tmp",), proc: bool = False, dev: bool = False,
             pidns: bool = False) -> list[str]:
        uid, gid = self.config.uid_gid()
        full_env = {**self.config.env, **(env or {})}
        argv = [sys.executable, "-m", "tests.images.sandbox", "--root", str(self.root),
                "--user", user or f"{uid}:{gid}", "--workdir", self.config.workdir]
        argv += [f"--env={k}={v}" for k, v in full_env.items()]
        argv += ["--readonly"] * readonly + [f"--tmpfs={t}" for t in tmpfs] + [f"--bind={b}" for b in binds]
        argv += ["--proc"] * proc + ["--dev"] * dev + ["--pidns"] * pidns
        return argv + ["--", *cmd]

    def run(self, cmd: Sequence[str], *, expect: int = 0, timeout: float = 60, **kw: object) -> str:
        proc = subprocess.run(self.argv(cmd, **kw), capture_output=True, text=True, timeout=timeout, cwd=REPO)  # type: ignore[arg-type]
        out = proc.stdout + proc.stderr
        if proc.returncode != expect:
            raise CheckFailed(f"{' '.join(cmd)} exited {proc.returncode} (expected {expect}):\n{_tail(out)}")
        return out

    @contextlib.contextmanager
    def serve(self, name: str, cmd: Sequence[str], **kw: object) -> Iterator["Server"]:
        log = self.logs / f"{self.image.name}-{name}.log"
        out = open(log, "wb")
        proc = subprocess.Popen(self.argv(cmd, **kw), stdout=out, stderr=subprocess.STDOUT,  # type: ignore[arg-type]
                                start_new_session=True, cwd=REPO)
        server = Server(proc, log)
        try:
            yield server
        finally:
            server.stop()
            out.close()


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise CheckFailed(f"exited with {self.proc.returncode}:\n{_tail(self.output())}")


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(what: str, ok: Callable[[], bool], server: Server | None = None, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server:
            server.alive()
        try:
            if ok():
                return time.monotonic() - started
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}" +
                      (f":\n{_tail(server.output())}" if server else ""))


def status_of(url: str) -> int:
    return http("GET", url, timeout=5)[0]


def say(name: str, text: str) -> None:
    print(f"[check {name}] {text}", flush=True)


# --- per image ---------------------------------------------------------------------------------
def check_base(u: Unpacked) -> None:
    out = u.run(["python", "-c", "import ssl, sys, venv; print(sys.version.split()[0], ssl.OPENSSL_VERSION)"],
                readonly=True, user="65532:65532")
    say("base", f"python {out.strip()} as uid 65532 on a read-only root")


def check_operator(u: Unpacked) -> None:
    uid, _ = u.config.uid_gid()
    if uid == 0:
        raise CheckFailed("the image runs as root (the Dockerfile says USER 65532)")
    out = u.run([*u.config.entrypoint, "--version"], readonly=True)
    say("operator", f"{' '.join(u.config.entrypoint)} --version -> {out.strip()!r} as uid {uid}, read-only root")
    out = u.run(["python", "-c", "open('/probe', 'w')"], readonly=True, expect=1)
    if "Read-only file system" not in out:
        raise CheckFailed(f"a write to / failed, but not for a read-only root:\n{_tail(out)}")
    say("operator", "a write to / fails with 'Read-only file system' (the sandbox root is read-only)")


def check_inference(u: Unpacked) -> None:
    uid, _ = u.config.uid_gid()
    if uid == 0:
        raise CheckFailed("the image runs as root (the Dockerfile says USER 65532)")
    for cmd in (list(u.config.cmd) + ["--help"], ["modelops-storage-initializer", "--help"]):
        out = u.run(cmd, readonly=True)
        say("inference", f"{' '.join(cmd)} -> {out.strip().splitlines()[0]!r} as uid {uid}, read-only root")


@contextlib.contextmanager
def models_dir() -> Iterator[Path]:
    """A /models volume, writable for the pod's uid like an emptyDir with fsGroup, holding an
    ``empty/`` model directory; the GGUF is bound into it read-only (see _volumes), not copied."""
    d = Path(tempfile.mkdtemp(prefix="models-", dir=CHECKS_DIR))
    try:
        d.chmod(0o777)
        (d / "empty").mkdir()
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _gguf() -> Path:
    try:
        gguf = smollm2_gguf()
    except ComponentError as exc:
        raise CheckFailed(str(exc)) from exc
    if not gguf.exists():
        raise CheckFailed(f"{gguf} is missing: run `python -m tests.components install smollm2`")
    return gguf


GOLDEN = REPO / "tests" / "unit" / "golden"
POD_VOLUMES = {"/models", "/dev/shm", "/tmp"}  # what the sandbox gives an engine (see _volumes)


@dataclass(frozen=True)
class Rendered:
    """The engine container the operator renders, as its golden test records it (so the checks
    follow the operator: command, args, env, the pod's user, the volume mounts)."""
    command: list[str]
    args: list[str]
    env: dict[str, str]
    user: str
    mounts: set[str]


def rendered_engine(golden: str) -> Rendered:
    import yaml

    for doc in yaml.safe_load_all((GOLDEN / golden).read_text()):
        if doc and doc.get("kind") == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            c = next(c for c in pod["containers"] if c["name"] == "engine")
            sc = pod.get("securityContext", {})
            uid = sc.get("runAsUser", 0)
            r = Rendered(list(c["command"]), list(c.get("args", [])),
                         {e["name"]: e["value"] for e in c.get("env", []) if "value" in e},
                         f"{uid}:{sc.get('runAsGroup', uid)}", {m["mountPath"] for m in c.get("volumeMounts", [])})
            if not r.mounts <= POD_VOLUMES:
                raise CheckFailed(f"{golden}: the engine mounts {sorted(r.mounts - POD_VOLUMES)}, "
                                  "which the check does not provide")
            return r
    raise CheckFailed(f"no Deployment in {GOLDEN / golden}")


def _volumes(models: Path, gguf: Path, model_dir: str) -> dict[str, object]:
    """The pod's volumes: /models (an emptyDir; the GGUF at the model directory, bound read-only),
    /tmp and /dev/shm (tmpfs), and /proc."""
    return {"binds": [f"{models}:/models", f"{gguf.parent}:{model_dir}:ro"], "tmpfs": ["/tmp"], "dev": True,
            "proc": True}


def check_ollama(u: Unpacked) -> None:
    uid, _ = u.config.uid_gid()
    out = u.run(["ollama", "--version"])
    say("ollama", f"ollama --version -> {' '.join(out.split())!r} as uid {uid}, HOME={u.config.env.get('HOME')}")
    engine = rendered_engine("ollama-gguf-gs.yaml")
    script = engine.command[2]
    model_dir = re.search(r"find (\S+) -name", script).group(1)  # type: ignore[union-attr]
    name = re.search(r"ollama create (\S+) -f", script).group(1)  # type: ignore[union-attr]
    gguf = _gguf()
    port = free_port()
    with models_dir() as models:
        env = {**engine.env, "OLLAMA_HOST": f"127.0.0.1:{port}"}
        with u.serve("serve", [*engine.command, *engine.args], env=env, user=engine.user,
                     **_volumes(models, gguf, model_dir)) as server:
            base = f"http://127.0.0.1:{port}"

            def created() -> bool:
                body = json.loads(http("GET", f"{base}/api/tags", timeout=5)[1])
                return any(m.get("name", "").split(":")[0] == name for m in body.get("models", []))
            took = wait_until(f"ollama create {name} from the GGUF", created, server, timeout=180)
            say("ollama", f"the operator's script (serve, list, find, create) as {engine.user}: {name} in "
                          f"/api/tags after {took:.1f}s")
            status, body = http("POST", f"{base}/api/generate",
                                {"model": name, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}},
                                timeout=120)
            if status != 200:
                raise CheckFailed(f"/api/generate answered {status}: {body[:300]!r}\n{_tail(server.output())}")
            say("ollama", f"/api/generate -> {json.loads(body).get('response', '')!r}")


IGNORED_FLAGS = ["--gpu-memory-utilization", "0.9", "--enable-prefix-caching"]


def _standin(port: int) -> tuple[Rendered, list[str], str, str]:
    """The operator's vLLM container for a gs:// model (its golden output), on 127.0.0.1:<port>,
    with user args the stand-in must accept and ignore. Returns it, the argv, model dir and name."""
    engine = rendered_engine("vllm-gs-l4.yaml")
    args = list(engine.args)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    name = args[args.index("--served-model-name") + 1]
    return engine, [*engine.command, *args, *IGNORED_FLAGS], args[0], name


def check_vllm_standin(u: Unpacked) -> None:
    gguf = _gguf()
    port = free_port()
    engine, argv, model_dir, name = _standin(port)
    with models_dir() as models:
        vol = {**_volumes(models, gguf, model_dir), "env": engine.env, "user": engine.user}
        out = u.run(["vllm", "serve"], expect=2, **vol)
        say("vllm-standin", f"`vllm serve` without a model -> exit 2: {out.strip().splitlines()[-1]!r}")
        out = u.run(["vllm", "serve", "/models/empty", "--served-model-name", "x"], expect=2, **vol)
        say("vllm-standin", f"a model directory without a GGUF -> exit 2: {out.strip().splitlines()[-1]!r}")
        base = f"http://127.0.0.1:{port}"
        say("vllm-standin", f"as the operator renders it ({engine.user}): {' '.join(argv)}")
        with u.serve("serve", argv, **vol) as server:
            wait_until("the port to answer", lambda: status_of(f"{base}/health") in (200, 503), server)
            first = status_of(f"{base}/health")
            took = wait_until("/health 200", lambda: status_of(f"{base}/health") == 200, server)
            say("vllm-standin", f"/health {first} then 200 after {took:.1f}s more")
            models_listed = json.loads(http("GET", f"{base}/v1/models")[1])
            ids = [m["id"] for m in models_listed["data"]]
            if ids != [name]:
                raise CheckFailed(f"/v1/models lists {ids}, not [{name!r}]")
            chat = {"model": name, "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello"}]}
            status, body = http("POST", f"{base}/v1/chat/completions", chat)
            if status != 200:
                raise CheckFailed(f"chat completion answered {status}: {body[:300]!r}")
            say("vllm-standin", f"/v1/models {ids}; chat -> {json.loads(body)['choices'][0]['message']['content']!r}")
            status, body = http("POST", f"{base}/v1/chat/completions", {**chat, "stream": True})
            chunks = [line for line in body.decode().splitlines() if line.startswith("data: ")]
            if status != 200 or chunks[-1] != "data: [DONE]" or len(chunks) < 3:
                raise CheckFailed(f"streamed chat answered {status}: {body[:300]!r}")
            say("vllm-standin", f"streamed chat: {len(chunks)} SSE events ending in [DONE]")
            _probe_during_stream(base, chat)
            status, body = http("POST", f"{base}/v1/chat/completions", {**chat, "model": "other"})
            if status != 404:
                raise CheckFailed(f"a request for another model answered {status}, not 404")
            output = server.output()
            for flag in ("--gpu-memory-utilization 0.9", "--enable-prefix-caching"):
                if f"ignored vLLM argument (not applicable to the stand-in): {flag}" not in output:
                    raise CheckFailed(f"{flag} was not logged as ignored:\n{_tail(output)}")
            say("vllm-standin", "another model -> 404; --gpu-memory-utilization/--enable-prefix-caching logged as ignored")


def _probe_during_stream(base: str, chat: dict) -> None:
    """A probe while a generation streams (the gateway's /v1/models probe) answers at once and
    leaves the stream whole: llama.cpp's own server would end the stream and wait."""
    result: list[tuple[int, bytes]] = []
    first_event = threading.Event()

    def stream() -> None:
        req = urllib.request.Request(f"{base}/v1/chat/completions", method="POST",
                                     data=json.dumps({**chat, "stream": True, "max_tokens": 48}).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            head = resp.readline()  # the stream is under way: the probe below lands in the middle of it
            first_event.set()
            result.append((resp.status, head + resp.read()))

    streaming = threading.Thread(target=stream)
    streaming.start()
    if not first_event.wait(60):
        raise CheckFailed("the stream sent no event within 60 s")
    started = time.monotonic()
    status = status_of(f"{base}/v1/models")
    probe = time.monotonic() - started
    streaming.join(120)
    status_s, body = result[0]
    chunks = [line for line in body.decode().splitlines() if line.startswith("data: ")]
    if status != 200 or probe > 1.0 or status_s != 200 or chunks[-1] != "data: [DONE]" or len(chunks) < 10:
        raise CheckFailed(f"/v1/models during a stream: {status} in {probe:.2f}s; the stream: {status_s}, "
                          f"{len(chunks)} events ending {chunks[-1:]}")
    say("vllm-standin", f"/v1/models during a stream answered in {probe * 1000:.0f} ms; the stream stayed whole "
                        f"({len(chunks)} events)")


def check_gateway_with_standin(inference: Unpacked, standin: Unpacked) -> None:
    gguf = _gguf()
    port, gw_port = free_port(), free_port()
    rendered, argv, model_dir, name = _standin(port)
    with models_dir() as models:
        with standin.serve("pod-engine", argv, env=rendered.env, user=rendered.user,
                           **_volumes(models, gguf, model_dir)) as engine:
            env = {"MODELOPS_ENGINE": "vllm", "MODELOPS_ENGINE_URL": f"http://127.0.0.1:{port}",
                   "MODELOPS_MODEL": name, "MODELOPS_HOST": "127.0.0.1", "MODELOPS_PORT": str(gw_port),
                   "MODELOPS_REVISION": "check-1", "MODELOPS_NAMESPACE": "check"}
            with inference.serve("pod-gateway", list(inference.config.cmd), env=env, readonly=True) as gateway:
                gw = f"http://127.0.0.1:{gw_port}"
                def ready() -> bool:
                    engine.alive()
                    return status_of(f"{gw}/health") == 200
                took = wait_until("the gateway's /health 200 (engine probed and warmed up)", ready, gateway)
                say("pod", f"gateway (read-only root, uid {inference.config.uid_gid()[0]}) ready in front of the "
                           f"stand-in after {took:.1f}s")
                chat = {"model": name, "max_tokens": 6, "stream": True,
                        "messages": [{"role": "user", "content": "Say hello"}]}
                status, body = http("POST", f"{gw}/v1/chat/completions", chat)
                chunks = [line for line in body.decode().splitlines() if line.startswith("data: ")]
                if status != 200 or not chunks or chunks[-1] != "data: [DONE]":
                    raise CheckFailed(f"streamed chat through the gateway answered {status}, ending "
                                      f"{body[-400:]!r}\n{_tail(gateway.output())}")
                say("pod", f"streamed chat through the gateway: {len(chunks)} SSE events ending in [DONE]")


def _children(pid: int) -> dict[int, str]:
    """The children of ``pid`` and their states ("Z": exited, not reaped yet)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out[int(stat.parent.name)] = fields[0]
    return out


def check_pause(u: Unpacked) -> None:
    uid, _ = u.config.uid_gid()
    with u.serve("pause", list(u.config.entrypoint), tmpfs=(), pidns=True) as server:
        helper = server.proc.pid
        pause_pid = wait_until_child(helper, server)
        uids = next(line.split()[1:] for line in Path(f"/proc/{pause_pid}/status").read_text().splitlines()
                    if line.startswith("Uid:"))
        if set(uids) != {str(uid)}:
            raise CheckFailed(f"pause runs as uids {uids}, not {uid}")
        # An orphan in the pod's PID namespace: sh starts a sleep and exits, the sleep is
        # re-parented to PID 1 (pause) and must be reaped by it when it ends.
        subprocess.run(["nsenter", "--target", str(pause_pid), "--pid", "--", "/bin/sh", "-c", "sleep 0.3 &"],
                       check=True, timeout=10)
        # The orphan ends after 0.3 s; pause must reap it: no child left at all, live or zombie.
        try:
            wait_until("pause to reap the orphan", lambda: not _children(pause_pid), server, timeout=10)
        except CheckFailed:
            raise CheckFailed(f"pause left children: {_children(pause_pid)}") from None
        server.alive()
        os.kill(helper, signal.SIGTERM)  # the sandbox forwards it to pause
        code = server.proc.wait(10)
        if code != 0:
            raise CheckFailed(f"pause exited {code} on SIGTERM:\n{_tail(server.output())}")
        say("pause", f"PID 1 of its namespace as uid {uid}; reaped an orphan; SIGTERM -> exit 0 "
                     f"({server.output().strip().splitlines()[-1]!r})")


def wait_until_child(pid: int, server: Server) -> int:
    found: list[int] = []

    def child() -> bool:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        found[:] = [int(c) for c in text]
        if not found:
            return False
        return Path(f"/proc/{found[0]}/exe").resolve().name == "pause"
    wait_until("pause to start", child, server, timeout=20)
    return found[0]


CHECKS: dict[str, Callable[[Unpacked], None]] = {
    "base": check_base, "operator": check_operator, "inference": check_inference, "ollama": check_ollama,
    "vllm-standin": check_vllm_standin, "pause": check_pause,
}


def check_all(images: list[Image]) -> int:
    CHECKS_DIR.mkdir(parents=True, exist_ok=True)
    logs = CHECKS_DIR / "logs"
    logs.mkdir(exist_ok=True)
    unpacked: dict[str, Unpacked] = {}
    failures: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="modelops-image-check-", dir=scratch_dir()))
    pod = {"inference", "vllm-standin"} <= {i.name for i in images}
    try:
        for image in images:
            started = time.monotonic()
            try:
                dest = work / image.name
                u = Unpacked(image, dest / "rootfs", unpack(image.archive, dest), logs)
                unpacked[image.name] = u
                say(image.name, f"unpacked {image.archive.name} in {time.monotonic() - started:.1f}s")
                CHECKS[image.name](u)
                say(image.name, f"OK in {time.monotonic() - started:.1f}s")
                if not (pod and image.name in ("inference", "vllm-standin")):
                    remove(dest)  # kept only while the pod check below needs it
            except (CheckFailed, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
                failures.append(image.name)
                say(image.name, f"FAILED: {type(exc).__name__}: {exc}")
        if {"inference", "vllm-standin"} <= unpacked.keys() and not {"inference", "vllm-standin"} & set(failures):
            started = time.monotonic()
            try:
                check_gateway_with_standin(unpacked["inference"], unpacked["vllm-standin"])
                say("pod", f"OK in {time.monotonic() - started:.1f}s")
            except (CheckFailed, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
                failures.append("pod")
                say("pod", f"FAILED: {type(exc).__name__}: {exc}")
    finally:
        remove(work)
    print(f"checks: {len(failures)} failed" + (f" ({', '.join(failures)})" if failures else ", all passed"))
    return 1 if failures else 0
