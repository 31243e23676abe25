"""Pure step and weight math for rollouts (after Argo Rollouts' utils/replicaset/canary.go).

Weights are integer percentages; replica counts follow them with ceiling division, so a
canary that gets any traffic has at least one pod.
"""

from __future__ import annotations

import math

from modelops.domain.spec import CanaryStep


def canary_replicas(total: int, weight: int) -> int:
    """Pods for the canary at ``weight`` percent of ``total``.

    >>> canary_replicas(2, 10), canary_replicas(2, 50), canary_replicas(3, 50), canary_replicas(4, 0)
    (1, 1, 2, 0)
    """
    if total <= 0 or weight <= 0:
        return 0
    return min(total, math.ceil(total * weight / 100))


def stable_replicas_for_split(total: int, canary_available: int) -> int:
    """With no traffic manager the stable revision gives up only what the canary already serves.

    >>> stable_replicas_for_split(4, 0), stable_replicas_for_split(4, 1), stable_replicas_for_split(2, 3)
    (4, 3, 0)
    """
    return max(0, total - canary_available)


def replica_weight(stable_ready: int, canary_ready: int) -> int:
    """The share of ready pods that are canary pods: the real weight when the Service selects both.

    >>> replica_weight(3, 1), replica_weight(0, 0), replica_weight(1, 1)
    (25, 0, 50)
    """
    total = stable_ready + canary_ready
    return 0 if total == 0 else round(100 * canary_ready / total)


def step_kind(step: CanaryStep) -> str:
    if step.set_weight is not None:
        return "setWeight"
    if step.pause is not None:
        return "pause"
    if step.mirror is not None:
        return "mirror"
    return "analysis"


def mirror_replicas(total: int, percent: int) -> int:
    """Pods for a shadow taking ``percent`` of the stable revision's requests (at least one).

    >>> mirror_replicas(4, 20), mirror_replicas(3, 100), mirror_replicas(1, 1), mirror_replicas(0, 50)
    (1, 3, 1, 0)
    """
    return max(1, canary_replicas(total, percent)) if total > 0 else 0


def describe(step: CanaryStep) -> str:
    """A step in words.

    >>> describe(CanaryStep(set_weight=10)), describe(CanaryStep.model_validate({"pause": {}}))
    ('setWeight 10', 'pause until promoted')
    >>> describe(CanaryStep.model_validate({"mirror": {"percent": 20, "duration": "10m"}}))
    'mirror 20% for 10m'
    """
    kind = step_kind(step)
    if kind == "setWeight":
        return f"setWeight {step.set_weight}"
    if kind == "mirror" and step.mirror:
        return f"mirror {step.mirror.percent}% for {step.mirror.duration}"
    if kind == "pause":
        return f"pause {step.pause.duration}" if step.pause and step.pause.duration else "pause until promoted"
    return "analysis"
