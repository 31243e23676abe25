"""Leader election on a model of the Lease API as strict as the apiserver's: every update carries
the resourceVersion it read and fails with 409 when someone wrote in between; creates of an
existing Lease fail with 409. The model speaks lightkube's Client (get, create, replace) and keeps
what went over the wire: each body is encoded as lightkube sends it and decoded as it reads it.
Time is the test's: each candidate's monotonic clock is set by hand. The real apiserver and two
real processes are in tests/e2e/test_failover.py."""

from __future__ import annotations

import copy
import datetime as dt

import httpx2
import msgspec
import pytest
from lightkube import ApiError
from lightkube.resources.coordination_v1 import Lease

from modelops.adapters import leader as leader_module
from modelops.adapters.leader import LeaderElector, NotLeader

pytestmark = pytest.mark.unit
MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # the apiserver's MicroTime: exactly six fractional digits


def api_error(code: int, reason: str) -> ApiError:
    request = httpx2.Request("GET", "https://apiserver/apis/coordination.k8s.io/v1/namespaces/ops/leases/modelops")
    return ApiError(request=request, response=httpx2.Response(code, request=request, json={
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}))


class LeaseStore:
    """One namespace's Leases, with optimistic concurrency."""

    def __init__(self) -> None:
        self.leases: dict[str, bytes] = {}  # as the apiserver would answer
        self.version = 0
        self.requests: list[str] = []

    def get(self, res: type, name: str, *, namespace: str) -> Lease:
        assert res is Lease and namespace == "ops"
        self.requests.append("get")
        if name not in self.leases:
            raise api_error(404, "NotFound")
        return msgspec.json.decode(self.leases[name], type=Lease)

    def create(self, obj: Lease, *, namespace: str) -> Lease:
        self.requests.append("create")
        if obj.metadata.name in self.leases:
            raise api_error(409, "AlreadyExists")
        return self._store(obj)

    def replace(self, obj: Lease, *, namespace: str) -> Lease:
        self.requests.append("update")
        current = self.leases.get(obj.metadata.name)
        if current is None:
            raise api_error(404, "NotFound")
        if obj.metadata.resourceVersion != msgspec.json.decode(current, type=Lease).metadata.resourceVersion:
            raise api_error(409, "Conflict")
        return self._store(obj)

    def _store(self, obj: Lease) -> Lease:
        body = msgspec.json.decode(msgspec.json.encode(obj))  # what the request carried
        for field in ("acquireTime", "renewTime"):  # the apiserver refuses a MicroTime it cannot parse
            if (body.get("spec") or {}).get(field) is not None:
                dt.datetime.strptime(body["spec"][field], MICRO_TIME)
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.leases[body["metadata"]["name"]] = msgspec.json.encode(body)
        return msgspec.json.decode(self.leases[body["metadata"]["name"]], type=Lease)

    def holder(self) -> str | None:
        lease = self.leases.get("modelops")
        return msgspec.json.decode(lease, type=Lease).spec.holderIdentity if lease else None

    def lease(self, name: str = "modelops") -> Lease:
        return msgspec.json.decode(self.leases[name], type=Lease)


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
    return LeaderElector(store, name="modelops", namespace="ops", identity=identity,  # type: ignore[arg-type]
                         lease_duration=15, renew_deadline=10, retry_period=2,
                         on_change=lambda on: changes.append((identity, on)))


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
    assert store.lease().spec.leaseTransitions == 1


def test_a_leader_that_cannot_renew_stops_writing_before_a_standby_may_act(clock: Clock) -> None:
    store, changes = LeaseStore(), []
    a, b = candidate(store, "a", changes), candidate(store, "b", changes)
    tick(a, clock)
    tick(b, clock)
    renewed = clock.now
    failing = LeaseStore()  # a is cut off from the apiserver: every request fails

    def unreachable(*_: object, **__: object) -> None:
        raise api_error(503, "ServiceUnavailable")

    failing.replace = failing.get = unreachable  # type: ignore[method-assign]
    a.api = failing  # type: ignore[assignment]
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
    lease = store.get(Lease, "modelops", namespace="ops")
    a_view, b_view = copy.deepcopy(lease), copy.deepcopy(lease)
    a_view.spec.holderIdentity, b_view.spec.holderIdentity = "a", "b"
    a._replace(a_view)
    with pytest.raises(ApiError) as exc:
        b._replace(b_view)
    assert exc.value.response.status_code == 409


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


def test_micro_times_go_out_with_six_fractional_digits_also_when_they_are_zero(clock: Clock) -> None:
    """msgspec (like isoformat) drops a zero fraction, which the apiserver's MicroTime refuses (400):
    a Lease acquired at a whole second must still renew."""
    store = LeaseStore()
    whole = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    store.leases["modelops"] = msgspec.json.encode({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "modelops", "namespace": "ops", "resourceVersion": "7"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "acquireTime": whole.strftime(MICRO_TIME),
                 "renewTime": whole.strftime(MICRO_TIME), "leaseTransitions": 3}})
    a = candidate(store, "a", [])  # "a" restarted: its Lease, acquired at a whole second
    tick(a, clock)
    assert a.leading and store.requests == ["get", "update"]
    assert store.lease().spec.acquireTime == whole and store.lease().spec.leaseTransitions == 3
    clock.now += 2
    tick(a, clock)  # the fast path re-sends the acquireTime it read back
    assert a.leading and store.requests[-1] == "update"
