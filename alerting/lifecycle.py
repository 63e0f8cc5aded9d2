"""An incident's lifecycle: which state change is allowed, where it leads, and when it escalates.

Pure functions over the incident's current state; the store applies them inside
its transactions. The states:

- ``raised``: the stream raised it; nobody has acknowledged it.
- ``acknowledged``: a person took it, with an outcome (the BS 5839-1 categories).
- ``cleared``: the stream cleared it. A cleared incident that nobody acknowledged
  stays *open* (visible, and it still escalates) until someone acknowledges it.
- ``resolved``: a person closed it. Closing needs an acknowledgement first, so
  every closed incident has an outcome for the unwanted-alarm KPIs.

>>> next_state(RAISED, acknowledged=False, change=CLEARED)
'cleared'
>>> next_state(CLEARED, acknowledged=False, change=ACKNOWLEDGED)
'cleared'
>>> next_state(ACKNOWLEDGED, acknowledged=True, change=CLEARED)
'cleared'
>>> next_state(CLEARED, acknowledged=True, change=RESOLVED)
'resolved'
>>> next_state(RAISED, acknowledged=False, change=RESOLVED)
Traceback (most recent call last):
...
alerting.lifecycle.InvalidTransition: acknowledge the incident (with an outcome) before resolving it
>>> is_open(CLEARED, acknowledged=False), is_open(CLEARED, acknowledged=True)
(True, False)
>>> due_for_escalation(severity="critical", opened_at=0.0, now=301.0, acknowledged=False, state=RAISED,
...     escalated_at=None, after_s={"critical": 300.0})
True
>>> due_for_escalation(severity="info", opened_at=0.0, now=1e9, acknowledged=False, state=RAISED,
...     escalated_at=None, after_s={"critical": 300.0})
False
"""

from __future__ import annotations

from collections.abc import Mapping

from alerting.notification import ACKNOWLEDGED, CLEARED, RAISED, RESOLVED

INCIDENT_STATES = (RAISED, ACKNOWLEDGED, CLEARED, RESOLVED)
OPEN = "open"  # not a stored state: a list filter for incidents someone still has to act on

# Outcomes of an acknowledgement, the categories fire-alarm maintenance practice (BS 5839-1) records.
FIRE, NUISANCE, EQUIPMENT_FAULT, TEST, UNKNOWN = "fire", "nuisance", "equipment_fault", "test", "unknown"
OUTCOMES = (FIRE, NUISANCE, EQUIPMENT_FAULT, TEST, UNKNOWN)
# Outcomes that count as unwanted (false) alarms in the KPIs; a test never does, nor a real fire.
UNWANTED_OUTCOMES = (NUISANCE, EQUIPMENT_FAULT)


class InvalidTransition(ValueError):
    """The change is not allowed from the incident's current state; the message says why."""


def next_state(state: str, *, acknowledged: bool, change: str) -> str:
    """The state after ``change`` (raised/cleared from the stream, acknowledged/resolved from a person).

    ``acknowledged`` says whether the incident has been acknowledged already (a cleared
    incident keeps its state when acknowledged: it is over and now also taken).
    """
    if state not in INCIDENT_STATES:
        raise InvalidTransition(f"unknown incident state {state!r}")
    if change == RAISED:
        # A repeated raised event of the same incident is a duplicate; the store drops it before this.
        return state
    if change == CLEARED:
        return state if state == RESOLVED else CLEARED
    if change == ACKNOWLEDGED:
        if state == RESOLVED:
            raise InvalidTransition("the incident is resolved already")
        if acknowledged:
            raise InvalidTransition("the incident is acknowledged already")
        return CLEARED if state == CLEARED else ACKNOWLEDGED
    if change == RESOLVED:
        if state == RESOLVED:
            raise InvalidTransition("the incident is resolved already")
        if not acknowledged:
            raise InvalidTransition("acknowledge the incident (with an outcome) before resolving it")
        return RESOLVED
    raise InvalidTransition(f"unknown state change {change!r}")


def is_open(state: str, *, acknowledged: bool) -> bool:
    """Someone still has to act: not resolved, and not both cleared and acknowledged."""
    return state != RESOLVED and not (state == CLEARED and acknowledged)


def due_for_escalation(*, severity: str, opened_at: float, now: float, acknowledged: bool, state: str,
                       escalated_at: float | None, after_s: Mapping[str, float]) -> bool:
    """An unacknowledged, unresolved incident past its severity's delay escalates, once."""
    delay = after_s.get(severity)
    if delay is None or acknowledged or escalated_at is not None or state == RESOLVED:
        return False
    return now - opened_at >= delay


def check_outcome(outcome: str) -> str:
    """The outcome, or a ValueError naming the allowed ones.

    >>> check_outcome("nuisance")
    'nuisance'
    >>> check_outcome("false")
    Traceback (most recent call last):
    ...
    ValueError: outcome must be one of fire, nuisance, equipment_fault, test, unknown (got 'false')
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)} (got {outcome!r})")
    return outcome
