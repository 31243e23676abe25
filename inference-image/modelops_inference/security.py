"""Optional bearer-token auth and per-client rate limit; both off by default.

The token comes from a mounted Secret file (``MODELOPS_AUTH_TOKEN_FILE``) and is
re-read when the file changes, so a rotated Secret needs no restart. The rate limit
is a token bucket per client address (``client_address``: the TCP peer, or the address
a trusted proxy saw), kept for a bounded number of clients.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Callable, Sequence

Network = IPv4Network | IPv6Network


class TokenFile:
    def __init__(self, path: Path, check_every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.check_every = check_every
        self._clock = clock
        self._token = b""
        self._mtime: int | None = None
        self._checked = float("-inf")
        self._load()  # fails at startup when the file is missing: better than serving unprotected

    def _load(self) -> None:
        stat = self.path.stat()
        if stat.st_mtime_ns != self._mtime:
            token = self.path.read_text().strip()
            if not token:
                raise ValueError(f"auth token file {self.path} is empty")
            self._token = token.encode()
            self._mtime = stat.st_mtime_ns

    def allows(self, authorization: str | None) -> bool:
        now = self._clock()
        if now - self._checked >= self.check_every:
            self._checked = now
            try:
                self._load()
            except (OSError, ValueError):
                pass  # keep the last good token
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        return hmac.compare_digest(authorization[7:].strip().encode(), self._token)


class RateLimiter:
    """Token buckets per client key.

    >>> t = [0.0]
    >>> rl = RateLimiter(rate=1.0, burst=2, clock=lambda: t[0])
    >>> [rl.allow("a") for _ in range(3)], rl.allow("b")
    ([True, True, False], True)
    >>> t[0] = 1.0; rl.allow("a"), rl.retry_after("a")
    (True, 1.0)
    """

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last)

    def _refill(self, key: str) -> float:
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return tokens

    def allow(self, key: str) -> bool:
        tokens = self._refill(key)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, self._buckets[key][1])
            return True
        return False

    def retry_after(self, key: str) -> float:
        tokens = self._refill(key)
        return max(0.0, (1.0 - tokens) / self.rate) if tokens < 1.0 else 0.0


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address the rate limit counts a request against.

    Only the TCP peer is known for sure; ``X-Forwarded-For`` is whatever the sender wrote.
    So it is read only when the peer is one of the ``trusted`` proxies, and from the right:
    each trusted proxy appends the address it saw, so the rightmost hop that is not itself
    a trusted proxy is the client, and anything left of it may be made up (the algorithm of
    nginx's ``real_ip_recursive`` and Envoy's ``xff_num_trusted_hops``).

    No request header other than X-Forwarded-For is consulted, and in particular not
    ``Authorization``: unvalidated, it is a new bucket per made-up value; validated, it is
    the gateway's one shared token (``TokenFile``), which names no client and would put all
    of them in one bucket. The address is what tells clients apart either way.

    >>> proxies = [IPv4Network("10.0.0.0/8")]
    >>> client_address("192.0.2.1", "203.0.113.7", proxies)  # not a trusted proxy: its claim is ignored
    '192.0.2.1'
    >>> client_address("10.0.0.9", "198.51.100.66, 203.0.113.7, 10.1.1.1", proxies)
    '203.0.113.7'
    """
    if peer is None:
        return "unknown"  # e.g. a Unix socket: one bucket for all such callers
    address = _parse(peer)
    if address is None:
        return peer
    if not forwarded_for or not _within(address, trusted):
        return str(address)
    for hop in reversed(forwarded_for.split(",")):
        hop_address = _parse(hop.strip())
        if hop_address is None:
            break  # not an address, so no trusted proxy wrote it: keep the last one that one did
        address = hop_address
        if not _within(address, trusted):
            break
    return str(address)


def _parse(text: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the proxies are written as IPv4.
    return (address.ipv4_mapped or address) if isinstance(address, IPv6Address) else address


def _within(address: IPv4Address | IPv6Address, networks: Sequence[Network]) -> bool:
    return any(address in net for net in networks)
