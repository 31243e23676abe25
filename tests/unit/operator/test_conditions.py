import pytest

from modelops.domain.conditions import derive_phase, set_condition
from modelops.domain.spec import Condition


def c(type_: str, status: str, reason: str = "X") -> Condition:
    return Condition(type=type_, status=status, reason=reason)


@pytest.mark.parametrize("conds, phase", [
    ([c("Ready", "True"), c("Available", "True"), c("Progressing", "True", "RevisionAvailable"),
      c("Degraded", "False")], "Healthy"),
    ([c("Ready", "False"), c("Available", "True"), c("Progressing", "True", "RevisionProgressing")], "Progressing"),
    ([c("Ready", "False"), c("Available", "False"), c("Progressing", "True", "RevisionProgressing")], "Pending"),
    ([c("Available", "True"), c("Progressing", "True", "Paused")], "Paused"),
    ([c("Available", "True"), c("Degraded", "True", "RolledBack")], "RolledBack"),
    ([c("Available", "True"), c("Degraded", "True", "ProgressDeadlineExceeded")], "Failed"),
    ([c("Ready", "False"), c("Available", "True"), c("Progressing", "True", "RevisionAvailable")], "Degraded"),
    ([], "Pending"),
])
def test_phase_is_derived_from_conditions(conds, phase) -> None:
    assert derive_phase(conds) == phase


def test_transition_time_changes_only_when_status_flips() -> None:
    conds = set_condition([], c("Ready", "False", "A"), "t1")
    conds = set_condition(conds, c("Ready", "False", "B"), "t2")
    assert conds[0].last_transition_time == "t1" and conds[0].reason == "B"
    conds = set_condition(conds, c("Ready", "True", "C"), "t3")
    assert conds[0].last_transition_time == "t3"
