"""The gateway's pure modules stay pure: no I/O library, no framework, no operator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "inference-image" / "modelops_inference"
PURE = ["defaults.py", "accounting.py", "protocol.py", "security.py", "responseid.py", "feedback.py",
        "structured.py", "cost.py", "cache.py"]
IO = {"aiohttp", "httpx", "google", "starlette", "fastapi", "uvicorn", "prometheus_client", "requests", "socket"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io(name: str) -> None:
    assert not imported(PACKAGE / name) & IO


def test_no_module_imports_the_operator() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert "modelops" not in imported(path), path
