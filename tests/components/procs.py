"""Start, wait for and stop the local processes tests need (never a fixed sleep).

Every process gets its own process group and a log file; ``stop()`` ends the group
(SIGTERM, then SIGKILL after a grace period), so nothing outlives the test session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Callable, Mapping, Sequence

import httpx

from tests.support.wait import wait_for


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ManagedProcess:
    def __init__(self, name: str, argv: Sequence[str], *, log_dir: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                     start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-tail:])

    def wait_ready(self, check: Callable[[], object], *, timeout: float, what: str | None = None) -> None:
        def probe() -> object:
            if not self.running():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode if self.proc else '?'}:\n"
                                   f"{self.log()}")
            return check()

        try:
            wait_for(probe, timeout=timeout, what=what or f"{self.name} to be ready", interval=0.05)
        except Exception:
            self.stop()
            raise

    def wait_http(self, url: str, *, timeout: float, status: int | None = 200) -> None:
        def check() -> bool:
            try:
                r = httpx.get(url, timeout=2.0)
            except httpx.HTTPError:
                return False
            return status is None or r.status_code == status

        self.wait_ready(check, timeout=timeout, what=f"{self.name} to answer {url}")

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, for fault tests)."""
        if self.running():
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)  # type: ignore[union-attr]

    def stop(self, grace: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        # The group may hold children that outlived the leader.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.returncode

    def __enter__(self) -> "ManagedProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_port(port: int, *, timeout: float, host: str = "127.0.0.1") -> None:
    def check() -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex((host, port)) == 0

    wait_for(check, timeout=timeout, what=f"{host}:{port} to accept connections", interval=0.05)

