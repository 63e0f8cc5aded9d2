"""Is Kafka there? One log line when a worker loses the broker and one when it is back.

Kafka clients hide an unreachable broker from a consumer (librdkafka and kafka-python
alike): ``poll()`` just returns nothing while the client reconnects in the background, so a
worker waiting for a dead broker looked exactly like a worker on a quiet topic (no
log line, nothing in its status). The loop asks :class:`BrokerWatch` after polls
that returned nothing and after failed iterations; at most every ``every_s`` it
tries one TCP connect to the bootstrap addresses, so a busy stream never pays for it.
While the broker is away the loop touches no Kafka client (each would block up to
30 s bootstrapping, and every failure would log again): it waits in :meth:`waiting`.
"""

from __future__ import annotations

import logging
import time

from ingest.broker import BrokerError, wait_reachable

log = logging.getLogger(__name__)


class BrokerWatch:
    """Tracks whether the bootstrap servers accept connections, logging each change once."""

    def __init__(self, bootstrap_servers: str, worker_id: str, every_s: float = 1.0,
                 connect_timeout_s: float = 1.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.worker_id = worker_id
        self.every_s = every_s
        self.connect_timeout_s = connect_timeout_s
        self.unreachable_since: float | None = None  # time.monotonic() of the first failed check
        self.cause: str | None = None
        self._next_check = 0.0

    def unreachable_for(self, mono: float | None = None) -> float | None:
        """Seconds since the broker was first found unreachable; None while it is reachable."""
        if self.unreachable_since is None:
            return None
        return (time.monotonic() if mono is None else mono) - self.unreachable_since

    def waiting(self, mono: float) -> bool:
        """True while the broker is known to be away, after a short pause (a waiting loop must not spin)."""
        if self.unreachable_since is None or self.check(mono):
            return False
        time.sleep(min(self.every_s, 0.2))
        return True

    def check(self, mono: float, force: bool = False) -> bool:
        """True if the broker is (as far as the last check knows) reachable; checks when one is due."""
        if mono < self._next_check and not force:
            return self.unreachable_since is None
        self._next_check = mono + self.every_s
        try:
            wait_reachable(self.bootstrap_servers, attempts=1, connect_timeout_s=self.connect_timeout_s)
        except BrokerError as err:
            if self.unreachable_since is None:
                self.unreachable_since, self.cause = mono, str(err)
                log.warning("%s: %s; waiting for it (checked every %.0f s), nothing is skipped",
                            self.worker_id, err, self.every_s)
            return False
        if self.unreachable_since is not None:
            log.warning("%s: Kafka at %s is reachable again after %.0f s", self.worker_id, self.bootstrap_servers,
                        mono - self.unreachable_since)
            self.unreachable_since, self.cause = None, None
        return True
