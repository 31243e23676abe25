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
QUEUE_DEPTH = Gauge("modelops_workqueue_depth", "ModelDeployments due for a reconcile and waiting for a slot "
                    "(or for this replica to lead).", registry=REGISTRY)
IN_FLIGHT = Gauge("modelops_reconciles_in_flight", "Reconciles running now (at most max_concurrent_reconciles).",
                  registry=REGISTRY)
CACHE_OBJECTS = Gauge("modelops_cache_objects", "Objects in the watch-fed cache, by kind (pods: only those the "
                      "scheduler cannot place).", ["kind"], registry=REGISTRY)
CACHE_AGE = Gauge("modelops_cache_age_seconds", "Seconds since the cache last received a watch event, by kind.",
                  ["kind"], registry=REGISTRY)
CACHE_FALLBACK_READS = Counter("modelops_cache_fallback_reads_total", "Reconciles that read from the API because "
                               "the watch had not shown the operator's own last writes in time.", registry=REGISTRY)
EVENTS_DROPPED = Counter("modelops_events_dropped_total", "Kubernetes Events dropped because too many were "
                         "waiting to be posted.", registry=REGISTRY)
LEADER = Gauge("modelops_leader", "1 while this replica holds the Lease (or runs without leader election).",
               registry=REGISTRY)
NOTIFICATIONS = Counter("modelops_notifications_total", "Notifications by receiver and result: delivered; failed "
                        "(every attempt failed, or the receiver refused it with a 4xx); dropped (the receiver's "
                        "queue was full, or the operator stopped before it was sent).", ["receiver", "result"],
                        registry=REGISTRY)
NOTIFICATION_QUEUE = Gauge("modelops_notification_queue_depth", "Notifications waiting for delivery, by receiver.",
                           ["receiver"], registry=REGISTRY)
