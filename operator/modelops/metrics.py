"""The operator's own Prometheus metrics, defined once."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter("modelops_reconciles_total", "Reconciles by result (ok, error, invalid).",
                     ["result"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram("modelops_reconcile_duration_seconds", "Time to observe, plan and execute once.",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                              registry=REGISTRY)
WRITES = Counter("modelops_api_writes_total", "Write requests the operator sent, by kind of write.",
                 ["kind"], registry=REGISTRY)
API_ERRORS = Counter("modelops_api_errors_total", "Kubernetes API errors by HTTP status.", ["status"],
                     registry=REGISTRY)
MANAGED = Gauge("modelops_modeldeployments", "ModelDeployments managed, by phase.", ["phase"], registry=REGISTRY)
ROLLBACKS = Counter("modelops_rollbacks_total", "Automatic and manual rollbacks.", ["namespace", "name"],
                    registry=REGISTRY)
ANALYSIS_SECONDS = Histogram("modelops_analysis_query_duration_seconds", "Time to run one analysis measurement.",
                             buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30), registry=REGISTRY)
