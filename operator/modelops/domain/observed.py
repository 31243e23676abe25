"""What adapters observed in the cluster, handed to the planners as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RevisionState:
    """One revision's Deployment, as the cluster reports it."""

    name: str
    replicas: int
    ready: int = 0
    available: int = 0
    updated: int = 0
    available_condition: bool = False
    created: str | None = None
    applied_hash: str | None = None
    model: str = ""
    source: str = ""
    engine: str = ""
    image: str = ""
    # The scheduler's message when a pod cannot be placed (e.g. "0/5 nodes are available: 3 Insufficient nvidia.com/gpu").
    unschedulable: str | None = None

    def is_available(self, want: int) -> bool:
        """All ``want`` replicas are up to date, ready and available."""
        if want == 0:
            return self.replicas == 0
        return self.replicas == want and self.updated >= want and self.available >= want and self.ready >= want


@dataclass(frozen=True)
class ServiceState:
    name: str
    revision: str | None
    applied_hash: str | None


@dataclass(frozen=True)
class Observed:
    revisions: dict[str, RevisionState] = field(default_factory=dict)
    services: dict[str, ServiceState] = field(default_factory=dict)
    routes: dict[str, str | None] = field(default_factory=dict)  # HTTPRoute name -> applied hash
    # HTTPRoute name -> {backend Service: weight} of its default (last) rule: where users go now
    route_weights: dict[str, dict[str, int]] = field(default_factory=dict)
    split_applied: str | None = None  # the A/B split ConfigMap's applied hash, as the main Service records it
