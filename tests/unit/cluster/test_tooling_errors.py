"""The cluster tooling fails with messages that name the cause."""

import socket
import sys
from pathlib import Path

import pytest

from tests.cluster import build, versions
from tests.cluster.controlplane import Cluster, Ports
from tests.cluster.errors import ClusterError


def test_missing_go_is_named(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ClusterError, match="Go is not installed"):
        build._go_env()


def test_unbuilt_binary_says_how_to_build(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(versions, "BIN_CACHE", tmp_path)
    with pytest.raises(ClusterError, match=r"python -m tests.cluster build"):
        build.binary("kube-apiserver")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_port_in_use_is_named(tmp_path: Path) -> None:
    for _ in range(50):  # a busy port whose neighbours (the other components' ports) are free
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            if not all(_free(p) for p in range(port - 3, port + 4) if p != port):
                continue
            cluster = Cluster(state_dir=tmp_path, ports=Ports(base=port - 3))  # apiserver = base + 3
            with pytest.raises(ClusterError, match=rf"port {port} \(for kube-apiserver\) is in use"):
                cluster._check_ports()
            return
    pytest.fail("no free block of ports found on loopback")


def test_component_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    cluster = Cluster(state_dir=tmp_path)
    cluster._procs = {}
    cluster._spawn("etcd", [sys.executable, "-c", "import sys; print('flag provided but not defined: -bogus'); sys.exit(2)"])
    with pytest.raises(ClusterError) as err:
        cluster._wait("etcd /health", "etcd", lambda: False, timeout=30)
    assert "etcd exited with code 2" in str(err.value)
    assert "flag provided but not defined: -bogus" in str(err.value)
    assert cluster.down() == []  # already gone; nothing left to stop
