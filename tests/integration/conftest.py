"""Integration-tier ordering: tests that start operators of their own (the chart's, the benchmark
smoke runs') run before the e2e tier starts its session-wide, cluster-wide operator; otherwise two
operators would reconcile the same objects."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
OWN_OPERATORS = (HERE / "chart", HERE / "test_bench_smoke.py")


def _own_operator(item: pytest.Item) -> bool:
    path = Path(str(item.fspath))
    return any(path == p or p in path.parents for p in OWN_OPERATORS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [i for i in items if _own_operator(i)]
    if not ours:
        return
    rest = [i for i in items if not _own_operator(i)]
    first_e2e = next((n for n, i in enumerate(rest) if "e2e" in Path(str(i.fspath)).parts), len(rest))
    items[:] = rest[:first_e2e] + ours + rest[first_e2e:]
