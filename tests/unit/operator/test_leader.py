"""Leader election on a model of the Lease API as strict as the apiserver's: every update carries
the resourceVersion it read and fails with 409 when someone wrote in between; creates of an
existing Lease fail with 409. Time is the test's: each candidate's monotonic clock is set by hand.
The real apiserver and two real processes are in tests/e2e/test_failover.py."""

from __future__ import annotations

import copy

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelops.adapters import leader as leader_module
from modelops.adapters.leader import LeaderElector, NotLeader

pytestmark = pytest.mark.unit


class LeaseStore:
    """One namespace's Leases, with optimistic concurrency."""

    def __init__(self) -> None:
        self.leases: dict[str, client.V1Lease] = {}
        self.version = 0
        self.requests: list[str] = []

    def read_namespaced_lease(self, name: str, namespace: str, **_: object) -> client.V1Lease:
        self.requests.append("get")
        if name not in self.leases:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.leases[name])

    def create_namespaced_lease(self, namespace: str, body: client.V1Lease, **_: object) -> client.V1Lease:
        self.requests.append("create")
        if body.metadata.name in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: client.V1Lease, **_: object) -> client.V1Lease:
        self.requests.append("update")
        current = self.leases.get(name)
        if current is None:
            raise ApiException(status=404, reason="Not Found")
        if body.metadata.resource_version != current.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)

    def _store(self, body: client.V1Lease) -> client.V1Lease:
        self.version += 1
        stored = copy.deepcopy(body)
        stored.metadata.resource_version = str(self.version)
        self.leases[stored.metadata.name] = stored
        return copy.deepcopy(stored)

    def holder(self) -> str | None:
        lease = self.leases.get("modelops")
        return lease.spec.holder_identity if lease else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(leader_module.time, "monotonic", c)
    return c


def candidate(store: LeaseStore, identity: str, changes: list) -> LeaderElector:
    e = LeaderElector(client.ApiClient(), name="modelops", namespace="ops", identity=identity, lease_duration=15,
                      renew_deadline=10, retry_period=2, on_change=lambda on: changes.append((identity, on)))
    e.coordination = store  # the model instead of the apiserver
    return e


def tick(e: LeaderElector, clock: Clock) -> None:
    """One iteration of ``run``'s loop (without its sleep)."""
    e.settle(clock.now, e.attempt(clock.now))


def test_one_candidate_leads_the_other_stands_by(clock: Clock) -> None:
    store, changes = LeaseStore(), []
    a, b = candidate(store, "a", changes), candidate(store, "b", changes)
    tick(a, clock)
    tick(b, clock)
    assert (a.leading, b.leading, store.holder()) == (True, False, "a")
    for _ in range(10):  # a renews every retry period; b keeps standing by
        clock.now += 2
        tick(a, clock)
        tick(b, clock)
    assert (a.leading, b.leading, store.holder()) == (True, False, "a")
    assert changes == [("a", True)]
    a.check()
    with pytest.raises(NotLeader):
        b.check()


def test_the_leader_renews_without_reading_the_lease_first(clock: Clock) -> None:
    store = LeaseStore()
    a = candidate(store, "a", [])
    tick(a, clock)
    store.requests.clear()
    for _ in range(5):
        clock.now += 2
        tick(a, clock)
    assert store.requests == ["update"] * 5  # client-go would GET before each update


def test_a_standby_takes_over_only_a_lease_duration_after_it_last_saw_a_renewal(clock: Clock) -> None:
    store, changes = LeaseStore(), []
    a, b = candidate(store, "a", changes), candidate(store, "b", changes)
    tick(a, clock)
    tick(b, clock)  # b sees a's renewal now (t=1000)
    # a dies: no more renewals. b looks every retry period.
    for _ in range(7):
        clock.now += 2
        tick(b, clock)
        assert not b.leading, f"b took over {clock.now - 1000:.0f}s after a's last renewal"
    clock.now += 2  # 16 s >= the lease duration
    tick(b, clock)
    assert b.leading and store.holder() == "b"
    assert store.leases["modelops"].spec.lease_transitions == 1


def test_a_leader_that_cannot_renew_stops_writing_before_a_standby_may_act(clock: Clock) -> None:
    store, changes = LeaseStore(), []
    a, b = candidate(store, "a", changes), candidate(store, "b", changes)
    tick(a, clock)
    tick(b, clock)
    renewed = clock.now
    failing = LeaseStore()  # a is cut off from the apiserver: every request fails

    def unreachable(*_: object, **__: object) -> None:
        raise ApiException(status=503, reason="Service Unavailable")

    failing.replace_namespaced_lease = failing.read_namespaced_lease = unreachable  # type: ignore[method-assign]
    a.coordination = failing
    stood_down_at = None
    while clock.now < renewed + 20:
        clock.now += 1
        tick(a, clock)
        tick(b, clock)
        if not a.may_write() and stood_down_at is None:
            stood_down_at = clock.now
        assert not (a.may_write() and b.may_write()), "two writers at once"
    assert stood_down_at is not None and stood_down_at - renewed <= 10
    assert b.leading and ("a", False) in changes


def test_a_paused_leader_refuses_writes_the_moment_it_wakes(clock: Clock) -> None:
    """SIGSTOP, a long GC pause, a frozen VM: the clock moved on while the process did not run.
    ``may_write`` reads the clock itself, so no write gets out before the renew loop runs."""
    store = LeaseStore()
    a = candidate(store, "a", [])
    tick(a, clock)
    a.check()
    clock.now += 11  # asleep longer than the renew deadline
    assert a.leading  # the loop has not noticed yet ...
    with pytest.raises(NotLeader):
        a.check()  # ... but every write is refused already


def test_two_candidates_racing_for_a_free_lease_never_both_win(clock: Clock) -> None:
    store = LeaseStore()
    a, b = candidate(store, "a", []), candidate(store, "b", [])
    # Both read the missing Lease, then both create: the apiserver lets one through.
    assert a._create(leader_module._micro_now()) is True
    assert b._create(leader_module._micro_now()) is False
    # Both read the same version; both try to take it over: one conflict.
    clock.now += 100
    lease = store.read_namespaced_lease("modelops", "ops")
    a_view, b_view = copy.deepcopy(lease), copy.deepcopy(lease)
    a_view.spec.holder_identity, b_view.spec.holder_identity = "a", "b"
    store.replace_namespaced_lease("modelops", "ops", a_view)
    with pytest.raises(ApiException) as exc:
        store.replace_namespaced_lease("modelops", "ops", b_view)
    assert exc.value.status == 409


def test_release_on_shutdown_lets_the_standby_take_over_at_once(clock: Clock) -> None:
    store = LeaseStore()
    a, b = candidate(store, "a", []), candidate(store, "b", [])
    tick(a, clock)
    tick(b, clock)
    a.release()
    assert not a.leading and store.holder() == ""
    clock.now += 2
    tick(b, clock)
    assert b.leading


def test_a_leader_frozen_past_its_deadline_reads_before_it_writes_again(clock: Clock) -> None:
    store = LeaseStore()
    a, b = candidate(store, "a", []), candidate(store, "b", [])
    tick(a, clock)
    tick(b, clock)
    for _ in range(9):  # a is frozen; b watches the Lease go stale and takes it over
        clock.now += 2
        tick(b, clock)
    assert b.leading
    store.requests.clear()
    clock.now += 2
    tick(a, clock)  # a wakes up
    assert store.requests == ["get"], "a resumed leader must not renew blindly"
    assert not a.leading and store.holder() == "b"
