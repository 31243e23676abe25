"""Optional bearer-token auth and per-client rate limit; both off by default.

The token comes from a mounted Secret file (``MODELOPS_AUTH_TOKEN_FILE``) and is
re-read when the file changes, so a rotated Secret needs no restart. The rate limit
is a token bucket per client (the bearer token when there is one, else the first
``X-Forwarded-For`` hop, else the peer address), kept for a bounded number of clients.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable


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


def client_key(authorization: str | None, forwarded_for: str | None, peer: str | None) -> str:
    """
    >>> client_key("Bearer abc", "1.2.3.4", "10.0.0.1")[:4], client_key(None, "1.2.3.4, 10.0.0.9", "x")
    ('tok:', 'ip:1.2.3.4')
    """
    if authorization:
        import hashlib

        return "tok:" + hashlib.sha256(authorization.encode()).hexdigest()[:16]
    if forwarded_for:
        return "ip:" + forwarded_for.split(",")[0].strip()
    return "ip:" + (peer or "unknown")
