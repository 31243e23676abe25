"""ldd output -> library paths (tests/images/sharedlibs.py)."""

from __future__ import annotations

import pytest

from tests.images.sharedlibs import ldd_paths

LDD = """\tlinux-vdso.so.1 (0x00007ffd3b5f2000)
\tlibgomp.so.1 => /lib/x86_64-linux-gnu/libgomp.so.1 (0x00007f62e6c8b000)
\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f62e6a00000)
\tlibggml-base.so => /tmp/x/llama_cpp/lib/libggml-base.so (0x00007f62e6900000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f62e6db3000)
"""


def test_resolved_libraries() -> None:
    assert ldd_paths(LDD) == ["/lib/x86_64-linux-gnu/libgomp.so.1", "/lib/x86_64-linux-gnu/libstdc++.so.6",
                              "/tmp/x/llama_cpp/lib/libggml-base.so"]


def test_a_library_missing_here_is_an_error() -> None:
    with pytest.raises(LookupError, match="libfoo.so.1"):
        ldd_paths(LDD + "\tlibfoo.so.1 => not found\n")
