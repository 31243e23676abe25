"""Integration-tier ordering: the benchmark smoke runs start operators of their own, so they run
before the e2e tier starts its session-wide operator (else two operators would reconcile the
benchmarks' objects; the chart tests do the same in chart/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH_SMOKE = "test_bench_smoke.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [i for i in items if Path(str(i.fspath)).name == BENCH_SMOKE]
    if not ours:
        return
    rest = [i for i in items if Path(str(i.fspath)).name != BENCH_SMOKE]
    first_e2e = next((n for n, i in enumerate(rest) if "e2e" in Path(str(i.fspath)).parts), len(rest))
    items[:] = rest[:first_e2e] + ours + rest[first_e2e:]
