"""Per-key rate limiting with a token bucket.

Each key owns a bucket of ``burst`` tokens refilled at ``per_minute / 60`` tokens
per second; a request takes one token or is refused with the seconds until the
next token (the ``Retry-After`` of the 429).

The buckets live in the replica: with N replicas a key can get up to N times
the limit. That is the price of not putting a shared counter (an actor call,
about 1 ms here) in front of every prediction; docs/serving.md says so.

>>> clock = iter([0.0, 0.0, 0.0, 30.0]).__next__
>>> limiter = RateLimiter(per_minute=2, clock=clock)
>>> limiter.acquire("k"), limiter.acquire("k")
((True, 0.0), (True, 0.0))
>>> limiter.acquire("k")
(False, 30.0)
>>> limiter.acquire("k")
(True, 0.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets keyed by API key (or client address when auth is off)."""

    MAX_KEYS = 100_000  # forget idle buckets beyond this many keys

    def __init__(self, per_minute: int, burst: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = float(burst or per_minute)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)

    def acquire(self, key: str) -> tuple[bool, float]:
        """Take one token: (allowed, seconds to wait before retrying)."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return True, 0.0
        self._store(key, tokens, now)
        return False, (1.0 - tokens) / self.rate

    def _store(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self.MAX_KEYS:
            # Full buckets carry no information: dropping them costs nothing.
            full = [k for k, (t, _) in self._buckets.items() if t >= self.capacity]
            for k in full[: max(1, len(full))]:
                del self._buckets[k]
        self._buckets[key] = (tokens, now)
