"""Every benchmark under tests/bench runs end to end: its ``--smoke`` run (a handful of objects,
one round) exits 0 and prints its ratio line, so ``make bench`` cannot rot unseen.

Nothing here looks at a figure: speed and memory are measured by the benchmarks themselves
(``make bench``), never asserted in tests. The cluster benchmarks find the local cluster the
``cluster`` fixture started (or a developer's own ``up``) and leave it running; each starts
its own operator, as ``make bench`` does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds for one smoke run; they take well under a minute each

# module, whether it needs the local cluster, the lines it must print (its ratios; for the scale
# benchmark also the side-by-side table's Argo Rollouts column, filled)
BENCHMARKS = [
    ("tests.bench.operator_scale", True, (
        r"^ratio operator / bare client: \d+\.\d\d$",
        r"^ratio operator / Argo Rollouts: \d+\.\d\d$",
        r"^\s+bare client\s+ModelOps operator\s+Argo Rollouts\s+ours/bare\s+Argo/bare\s+ours/Argo$",
        r"^time to all Available/Healthy \(s\)\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d\s",
        r"^controller RSS \(MiB\)\s+–\s+\d+\s+\d+\s",
    )),
    ("tests.bench.fairness", True, (r"^ratio beside stuck / alone: \d+\.\d\d$",)),
    ("tests.bench.rollback_latency", True, (r"^ratio median / budget \d+\.\d\d, max / budget \d+\.\d\d ",)),
    ("tests.bench.gateway", False,
     (r"^ratio gateway / direct throughput \(pinned\): 1 streams \d+\.\d\d, 16 streams \d+\.\d\d$",)),
    ("tests.bench.shadow", False,
     (r"^ratio mirror / no mirror TTFT p50: fast shadow \d+\.\d\d, hanging shadow \d+\.\d\d$",)),
    ("tests.bench.cache", False,
     (r"^ratio hit / engine, streamed: TTFT memory \d+\.\d{4}, Redis \d+\.\d{4}; "
      r"total memory \d+\.\d{4}, Redis \d+\.\d{4}$",
      r"^ratio hit / engine, JSON: total memory \d+\.\d{4}, Redis \d+\.\d{4}$")),
]


@pytest.mark.parametrize(("module", "needs_cluster", "lines"), BENCHMARKS,
                         ids=[m.rsplit(".", 1)[1] for m, _, _ in BENCHMARKS])
def test_benchmark_smoke_run_exits_0_and_prints_its_ratio(module: str, needs_cluster: bool, lines: tuple[str, ...],
                                                          request: pytest.FixtureRequest) -> None:
    if needs_cluster:
        cluster = request.getfixturevalue("cluster")  # started here when not up; the benchmark reuses it
        if not cluster.local:
            pytest.skip("the cluster benchmarks run on the local cluster (operator identity, audit log), "
                        "not on MODELOPS_E2E_KUBECONFIG")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "operator"), str(ROOT / "inference-image"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", module, "--smoke"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # KeyboardInterrupt: the benchmark's clean-up runs (operator, namespaces)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        raise AssertionError(f"{module} --smoke did not finish in {TIMEOUT}s\n"
                             f"stdout:\n{stdout[-4000:]}\nstderr:\n{stderr[-4000:]}") from None
    output = f"stdout:\n{stdout[-4000:]}\nstderr:\n{stderr[-4000:]}"
    assert proc.returncode == 0, f"{module} --smoke exited {proc.returncode}\n{output}"
    for line in lines:
        assert re.search(line, stdout, re.MULTILINE), f"no line matching {line!r}\n{output}"
