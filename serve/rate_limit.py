"""Rate limiting with token buckets: one per authenticated key (or client address), in bounded memory.

Each key owns a bucket of ``burst`` tokens refilled at ``per_minute / 60`` tokens
per second; a request takes one token or is refused with the seconds until the
next token (the ``Retry-After`` of the 429).

The buckets live in the replica: with N replicas a key can get up to N times
the limit. That is the price of not putting a shared counter (an actor call,
about 1 ms here) in front of every prediction; docs/serving.md says so.

At most ``max_keys`` buckets are kept, the least recently used forgotten first
(a forgotten key starts again with a full bucket, which costs it nothing it had
not earned back by then); see :func:`bucket_key` for what a key is, so that a
client cannot make new ones at will.

>>> clock = iter([0.0, 0.0, 0.0, 30.0]).__next__
>>> limiter = RateLimiter(per_minute=2, clock=clock)
>>> limiter.acquire("k"), limiter.acquire("k")
((True, 0.0), (True, 0.0))
>>> limiter.acquire("k")
(False, 30.0)
>>> limiter.acquire("k")
(True, 0.0)
>>> small = RateLimiter(per_minute=60, max_keys=2)
>>> for key in ("a", "b", "c"):
...     _ = small.acquire(key)
>>> len(small), "a" in small
(2, False)
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable


class RateLimiter:
    """Token buckets by key, least recently used forgotten beyond ``max_keys``."""

    def __init__(self, per_minute: int, burst: int = 0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = float(burst or per_minute)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last refill)

    def acquire(self, key: str) -> tuple[bool, float]:
        """Take one token: (allowed, seconds to wait before retrying)."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return (True, 0.0) if allowed else (False, (1.0 - tokens) / self.rate)

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: str) -> bool:
        return key in self._buckets


def bucket_key(authenticated_key: bytes | None, peer: str | None, forwarded_for: str | None,
               trusted_proxies: Iterable[str] = ()) -> str:
    """Whose bucket a request takes a token from.

    The API key when auth checked one (a client has only the keys it was given).
    Otherwise the client's address. The connection's peer is not always it: the
    servers in front of a replica (Serve's proxy, and uvicorn, which trusts
    ``X-Forwarded-For`` from 127.0.0.1, where Serve's HAProxy connects from) replace the
    peer with the header's last entry, which a client can write itself. So when the
    request carries ``X-Forwarded-For``:

    - with ``trusted_proxies`` (proxies that set the header themselves), the right-most
      entry that is not one of them is the client (entries to its left were written by
      the client and can be anything);
    - without, the address cannot be verified, and every such request shares one bucket.

    Nothing the client sends decides its bucket on its own.

    >>> bucket_key(b"k1", "10.0.0.9", None)
    'key:k1'
    >>> bucket_key(None, "10.0.0.9", None)
    'addr:10.0.0.9'
    >>> bucket_key(None, "1.2.3.4", "1.2.3.4")   # a forwarded address nobody vouches for
    'forwarded:unverified'
    >>> bucket_key(None, "1.2.3.4", "6.6.6.6, 1.2.3.4, 10.0.0.2", ["10.0.0.2"])
    'addr:1.2.3.4'
    """
    if authenticated_key is not None:
        return "key:" + authenticated_key.decode("latin-1")
    if not forwarded_for:
        return "addr:" + (peer or "?")
    trusted = set(trusted_proxies)
    if not trusted:
        return "forwarded:unverified"
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return "forwarded:unverified"  # not an address: the chain cannot be read past it
        if hop not in trusted:
            return "addr:" + hop
    return "addr:" + (peer or "?")
