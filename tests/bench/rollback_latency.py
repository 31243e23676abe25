"""Benchmark: from degradation visible in Prometheus to the canary's weight at 0.

    python -m tests.bench.rollback_latency [--runs 5] [--interval 2] [--failure-limit 1]
    python -m tests.bench.rollback_latency --smoke     # one run: checks that it runs (CI)

Each run: a canary holds at 50 % (a pause without duration) with real gateway stand-ins,
real Prometheus and the operator; then the canary's engine starts answering 500. The clock
starts when Prometheus first returns an error rate above the threshold for the canary
(degradation visible) and stops when the HTTPRoute gives the canary weight 0. Printed as a
ratio to interval x (failureLimit + 1), the time the analysis needs by construction; the
target is <= 1.1. Not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client, config

from tests.cluster import build
from tests.cluster.controlplane import Cluster
from tests.support.operator import OperatorProcess
from tests.e2e.rollout_harness import Harness
from tests.e2e.steps import apply, manifest, with_changes
from tests.support.prometheus import PrometheusServer
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]


def one_run(api, cluster: Cluster, prom: PrometheusServer, interval: float, failure_limit: int) -> float:
    core = client.CoreV1Api(api)
    ns = f"bench-rb-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    m = manifest("chat", replicas=2, traffic={
        "router": "gateway-api", "gateway": {"parentRefs": [{"name": "inference", "namespace": "gateways"}]}})
    m["spec"]["rollout"] = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]},
                            "analysis": {"interval": f"{interval:g}s", "window": "5s", "failureLimit": failure_limit,
                                         "provider": {"prometheus": {"address": prom.address}},
                                         "metrics": [{"name": "error-rate", "template": "errorRate", "max": 0.05}]}}
    v2m = with_changes(m, "spec.model.source", f"gs://models/gemma-{uuid.uuid4().hex[:6]}/")
    handle = type("H", (), {"kubectl": cluster.kubectl})
    custom = client.CustomObjectsApi(api)

    def weights() -> dict[str, int]:
        r = custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, "httproutes", "chat")
        return {b["name"]: b["weight"] for b in r["spec"]["rules"][-1]["backendRefs"]}

    def phase() -> str:
        return custom.get_namespaced_custom_object("modelops.dev", "v1alpha1", ns, "modeldeployments",
                                                   "chat").get("status", {}).get("phase", "")

    try:
        with Harness(api, ns, "chat", prom, Path(tempfile.mkdtemp(prefix="modelops-bench-"))) as h:
            apply(handle, ns, m)
            wait_for(lambda: phase() == "Healthy", timeout=60, what="v1 Healthy")
            apply(handle, ns, v2m)
            wait_for(lambda: phase() == "Paused", timeout=120, what="the canary at 50 %")
            canary = custom.get_namespaced_custom_object("modelops.dev", "v1alpha1", ns, "modeldeployments",
                                                         "chat")["status"]["canaryRevision"]
            wait_for(lambda: weights().get(canary) == 50, timeout=30, what="50 % on the canary's route")
            wait_for(lambda: h.requests_to(canary) > 20, timeout=30, what="traffic on the canary")
            h.fail(canary)
            query = (f'(sum(rate(modelops_gateway_requests_total{{revision="{canary}",code=~"5.."}}[5s])) '
                     f'or vector(0)) / sum(rate(modelops_gateway_requests_total{{revision="{canary}"}}[5s]))')

            def visible() -> bool:
                result = prom.query(query)
                return bool(result) and float(result[0]["value"][1]) > 0.05

            wait_for(visible, timeout=60, interval=0.05, what="the degradation in Prometheus")
            t0 = time.monotonic()
            wait_for(lambda: weights().get(canary, 0) == 0, timeout=120, interval=0.05,
                     what="the canary's weight at 0")
            took = time.monotonic() - t0
    finally:
        core.delete_namespace(ns)
    return took


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--failure-limit", type=int, default=1)
    parser.add_argument("--smoke", action="store_true",
                        help="one run (--runs 1): checks that the benchmark works; its figures mean little")
    args = parser.parse_args(argv)
    runs = 1 if args.smoke else args.runs
    build.build_all()
    cluster = Cluster()
    was_up = cluster.is_up()
    cluster.up()
    prom = PrometheusServer().start()
    op = OperatorProcess(cluster.state_dir / "operator.kubeconfig",
                         Path(tempfile.mkdtemp(prefix="modelops-bench-")) / "operator.log")
    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.modelops.dev")
        op.start()
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        times = [one_run(api, cluster, prom, args.interval, args.failure_limit) for _ in range(runs)]
    finally:
        op.stop()
        prom.stop()
        if not was_up:  # a cluster someone else started is left running
            cluster.down()
    budget = args.interval * (args.failure_limit + 1)
    print(f"degradation visible in Prometheus -> canary weight 0, {runs} run{'s' if runs != 1 else ''} "
          f"(interval {args.interval:g}s, failureLimit {args.failure_limit}){' (smoke run)' if args.smoke else ''}")
    print("runs: " + ", ".join(f"{t:.2f}s" for t in times))
    print(f"median {statistics.median(times):.2f}s, max {max(times):.2f}s; budget interval x (failureLimit + 1) = "
          f"{budget:.1f}s")
    print(f"ratio median / budget {statistics.median(times) / budget:.2f}, max / budget {max(times) / budget:.2f} "
          f"(target <= 1.1)")


if __name__ == "__main__":
    main()
