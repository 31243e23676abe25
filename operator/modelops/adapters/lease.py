"""Leader election with a coordination.k8s.io Lease, as controller-runtime and client-go do it.

Several operator replicas share one Lease; the holder renews it every few seconds and is the
only one whose workers reconcile. When the holder stops renewing (killed, partitioned), another
replica takes the Lease once it has expired. Writes are conditional on resourceVersion, so two
replicas can never both believe they won the same term.
"""

from __future__ import annotations

import datetime as dt
import logging

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)


class LeaseLock:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str,
                 duration_seconds: int = 15) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration = duration_seconds

    def try_acquire_or_renew(self) -> bool:
        now = dt.datetime.now(dt.timezone.utc)
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create(now)
        spec = lease.spec
        if spec.holder_identity == self.identity:
            return self._update(lease, now, transitions=spec.lease_transitions or 0)
        renewed = spec.renew_time or spec.acquire_time
        duration = spec.lease_duration_seconds or self.duration
        if renewed is None or (now - renewed).total_seconds() > duration:
            log.info("lease %s/%s held by %s expired; taking over", self.namespace, self.name, spec.holder_identity)
            return self._update(lease, now, transitions=(spec.lease_transitions or 0) + 1, acquire=True)
        return False

    def _create(self, now: dt.datetime) -> bool:
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                              spec=client.V1LeaseSpec(holder_identity=self.identity, acquire_time=now,
                                                      renew_time=now, lease_duration_seconds=self.duration,
                                                      lease_transitions=0))
        try:
            self.coordination.create_namespaced_lease(self.namespace, body)
            return True
        except ApiException as exc:
            if exc.status == 409:  # another replica created it first
                return False
            raise

    def _update(self, lease: client.V1Lease, now: dt.datetime, transitions: int, acquire: bool = False) -> bool:
        lease.spec.holder_identity = self.identity
        lease.spec.renew_time = now
        lease.spec.lease_duration_seconds = self.duration
        lease.spec.lease_transitions = transitions
        if acquire:
            lease.spec.acquire_time = now
        try:  # replace carries resourceVersion: a concurrent writer makes this fail with 409
            self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over at once."""
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.renew_time = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
                self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException:
            pass
