"""The operator's Kubernetes API client: lightkube's (httpx2), configured as the kubernetes client was.

Why lightkube: it loads only the resource modules that are imported (a few MiB), where the
kubernetes client imports every model and API class (46 MiB, a quarter of the operator's RSS).

- Where to connect: the pod's ServiceAccount when there is one (the token, re-read when the
  kubelet rotates it, the CA, the apiserver's address from the environment), else the
  kubeconfig (``KUBECONFIG``, else ``~/.kube/config``); lightkube reads those, as the
  kubernetes client did. kopf's own login makes the same choice (handlers/modeldeployment.py).
- A timeout on each request (one hung connection must not hold a reconcile slot for ever), and
  the replica's identity in the User-Agent (the audit log tells the replicas apart).
- Errors: lightkube raises ``ApiError`` (a subclass of httpx2's ``HTTPStatusError``) when the
  apiserver answers with a JSON Status, and the plain ``HTTPStatusError`` otherwise, e.g. the
  text "404 page not found" for an API group that is not served (no Gateway API). The code
  here catches ``ApiFailure`` (both) and asks ``status_of`` for the HTTP status.

One sync ``Client`` is shared by the reconcile threads (httpx2's client may be shared between
threads; lightkube keeps no per-request state on it).
"""

from __future__ import annotations

import httpx2
from lightkube import Client, ConfigError, KubeConfig

ApiFailure = httpx2.HTTPStatusError  # lightkube's ApiError, or an error answer that is not a JSON Status
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"  # token, ca.crt, namespace
_NO_SERVICE_ACCOUNT = "/nonexistent/serviceaccount"  # the kubeconfig only, the ServiceAccount tried already


def status_of(exc: ApiFailure) -> int:
    """The HTTP status of a failed request (``ApiException.status`` of the kubernetes client)."""
    return exc.response.status_code


def in_cluster_config() -> KubeConfig | None:
    """The pod's ServiceAccount, or None outside a pod (no token, or no apiserver address in the
    environment: what makes the kubernetes client's ``load_incluster_config`` fail too)."""
    try:
        return KubeConfig.from_service_account(SERVICE_ACCOUNT)
    except (ConfigError, KeyError):
        return None


def load_config() -> KubeConfig:
    """In-cluster, else the kubeconfig: the kubernetes client's order (``load_incluster_config``,
    then ``load_kube_config``)."""
    return in_cluster_config() or KubeConfig.from_env(service_account=_NO_SERVICE_ACCOUNT)


def connect(config: KubeConfig | None = None, *, timeout: float, user_agent: str | None = None,
            transport: httpx2.BaseTransport | None = None) -> Client:
    """A client for ``config`` (default: ``load_config()``) whose every request times out after
    ``timeout`` seconds (connecting, and each read or write), sent as ``user_agent``. ``transport``:
    tests only (httpx2.MockTransport)."""
    client = Client(config or load_config(), timeout=httpx2.Timeout(timeout), transport=transport)
    # lightkube has no setting for the headers every request carries: set them on its httpx2 client.
    # Accept as the kubernetes client sent it (the apiserver answers JSON either way).
    headers = client._client._client.headers
    headers["Accept"] = "application/json"
    if user_agent:
        headers["User-Agent"] = user_agent
    return client
