"""Unpacking image layers with OCI whiteouts (tests/images/rootfs.py)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.images.rootfs import RunConfig, apply_layer, resolve_in_root, whiteout_target


@pytest.mark.parametrize("member, expected", [
    ("usr/bin/x", None),
    ("./usr/bin/.wh.x", ("file", "usr/bin/x")),
    (".wh.top", ("file", "top")),
    ("./.wh.top", ("file", "top")),
    ("etc/apt/.wh..wh..opq", ("opaque", "etc/apt")),
])
def test_whiteout_names(member: str, expected: tuple[str, str] | None) -> None:
    assert whiteout_target(member) == expected


def test_paths_resolve_inside_the_root_through_absolute_symlinks(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    os.symlink("/usr/lib", tmp_path / "lib")        # absolute: must mean <root>/usr/lib, not the host's
    os.symlink("../../usr/lib", tmp_path / "usr/x")  # relative, climbing above the root
    assert resolve_in_root(tmp_path, "lib/libc.so") == tmp_path / "usr/lib/libc.so"
    assert resolve_in_root(tmp_path, "usr/x/libc.so") == tmp_path / "usr/lib/libc.so"
    assert resolve_in_root(tmp_path, "../../etc/passwd") == tmp_path / "etc/passwd"


def _layer(path: Path, entries: dict[str, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_layers_apply_in_order_with_whiteouts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    apply_layer(_layer(tmp_path / "1.tgz", {"etc": None, "etc/a": b"1", "etc/b": b"1", "opt": None,
                                            "opt/old": b"1"}), root)
    apply_layer(_layer(tmp_path / "2.tgz", {"etc/.wh.a": b"", "opt/.wh..wh..opq": b"", "opt/new": b"2"}), root)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["etc", "etc/b", "opt", "opt/new"]


def test_run_config_users() -> None:
    assert RunConfig(user="65532:65532").uid_gid() == (65532, 65532)
    assert RunConfig(user="1000").uid_gid() == (1000, 1000)
    assert RunConfig().uid_gid() == (0, 0)
