"""Which delivery channels a notification goes to: route rules by severity, kind, state, zone, site and test.

Rules are checked in order; a notification goes to the channels of every rule
that matches it, up to and including the first matching rule with ``stop``.
A rule's matchers are lists (any listed value matches) and an empty list
matches everything; ``test`` is true (test alarms only), false (real alarms
only) or empty (both). Without any rule, every channel gets every
notification. The rules are validated once, when the routing is built: a route
naming a channel that does not exist is an error naming it.

>>> from alerting.notification import Location, Notification
>>> from ingest.settings import RouteRule
>>> routing = Routing([RouteRule(severity=["critical"], channels=["pager"], test=False),
...                    RouteRule(channels=["log"])], channels=["pager", "log"])
>>> n = Notification(alert_id="a" * 32, state="raised", kind="fire", severity="critical",
...     sensor_id="s1", event_time=0.0, detected_at=0.0, location=Location(zone="kitchen"))
>>> routing.channels_for(n)
['pager', 'log']
>>> from dataclasses import replace
>>> routing.channels_for(replace(n, test=True))
['log']
>>> Routing([RouteRule(channels=["pagr"])], channels=["pager"])
Traceback (most recent call last):
...
alerting.routing.RoutingError: routes[0] names unknown channel 'pagr' (channels: pager)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from alerting.notification import Notification
from ingest.settings import AlertingSettings, RouteRule


class RoutingError(ValueError):
    """A route that cannot be followed (it names a channel that does not exist)."""


class Routing:
    """Route rules over a fixed set of channel names; :meth:`channels_for` is pure."""

    def __init__(self, routes: Sequence[RouteRule], channels: Iterable[str]) -> None:
        self.channels = list(channels)
        known = set(self.channels)
        for i, rule in enumerate(routes):
            for name in rule.channels:
                if name not in known:
                    raise RoutingError(f"routes[{i}] names unknown channel {name!r} "
                                       f"(channels: {', '.join(self.channels) or 'none configured'})")
        self.routes = list(routes)

    @classmethod
    def from_settings(cls, alerting: AlertingSettings) -> Routing:
        return cls(alerting.routes, [c.name for c in alerting.channels])

    def channels_for(self, n: Notification) -> list[str]:
        """The channels ``n`` goes to, each once, in the order the rules name them."""
        if not self.routes:
            return list(self.channels)
        chosen: list[str] = []
        for rule in self.routes:
            if not _matches(rule, n):
                continue
            chosen += [c for c in rule.channels if c not in chosen]
            if rule.stop:
                break
        return chosen


def _matches(rule: RouteRule, n: Notification) -> bool:
    return ((not rule.severity or n.severity in rule.severity)
            and (not rule.kind or n.kind in rule.kind)
            and (not rule.state or n.state in rule.state)
            and (not rule.zone or n.location.zone in rule.zone)
            and (not rule.site or n.location.site in rule.site)
            and (rule.test is None or n.test == rule.test))
