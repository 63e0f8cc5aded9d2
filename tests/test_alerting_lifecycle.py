"""Lifecycle rules: every allowed and refused transition, and when escalation is due."""

import pytest

from alerting.lifecycle import (
    ACKNOWLEDGED,
    CLEARED,
    INCIDENT_STATES,
    RAISED,
    RESOLVED,
    InvalidTransition,
    due_for_escalation,
    is_open,
    next_state,
)

ALLOWED = [
    # (state, acknowledged, change) -> new state
    ((RAISED, False, ACKNOWLEDGED), ACKNOWLEDGED),
    ((RAISED, False, CLEARED), CLEARED),
    ((ACKNOWLEDGED, True, CLEARED), CLEARED),
    ((CLEARED, False, ACKNOWLEDGED), CLEARED),
    ((ACKNOWLEDGED, True, RESOLVED), RESOLVED),
    ((CLEARED, True, RESOLVED), RESOLVED),
    ((RESOLVED, True, CLEARED), RESOLVED),  # a late cleared event does not reopen it
    ((RAISED, False, RAISED), RAISED),
]
REFUSED = [
    ((RAISED, False, RESOLVED), "before resolving"),
    ((CLEARED, False, RESOLVED), "before resolving"),
    ((ACKNOWLEDGED, True, ACKNOWLEDGED), "acknowledged already"),
    ((CLEARED, True, ACKNOWLEDGED), "acknowledged already"),
    ((RESOLVED, True, ACKNOWLEDGED), "resolved already"),
    ((RESOLVED, True, RESOLVED), "resolved already"),
    ((RAISED, False, "escalated"), "unknown state change"),
    (("open", False, CLEARED), "unknown incident state"),
]


@pytest.mark.parametrize(("args", "expected"), ALLOWED)
def test_allowed_transitions(args, expected):
    state, acknowledged, change = args
    assert next_state(state, acknowledged=acknowledged, change=change) == expected


@pytest.mark.parametrize(("args", "message"), REFUSED)
def test_refused_transitions_say_why(args, message):
    state, acknowledged, change = args
    with pytest.raises(InvalidTransition, match=message):
        next_state(state, acknowledged=acknowledged, change=change)


def test_only_cleared_and_acknowledged_or_resolved_incidents_are_closed():
    closed = {(s, a) for s in INCIDENT_STATES for a in (False, True) if not is_open(s, acknowledged=a)}
    assert closed == {(CLEARED, True), (RESOLVED, False), (RESOLVED, True)}


@pytest.mark.parametrize(("kwargs", "due"), [
    ({"now": 299.9}, False),
    ({"now": 300.0}, True),
    ({"now": 1e6, "acknowledged": True}, False),
    ({"now": 1e6, "escalated_at": 300.0}, False),
    ({"now": 1e6, "state": RESOLVED}, False),
    ({"now": 1e6, "state": CLEARED}, True),  # cleared but nobody looked: still escalates
    ({"now": 1e6, "severity": "info"}, False),
])
def test_escalation_is_due_once_past_the_severity_delay_while_unacknowledged(kwargs, due):
    args = {"severity": "critical", "opened_at": 0.0, "acknowledged": False, "state": RAISED, "escalated_at": None,
            "after_s": {"critical": 300.0}, **kwargs}
    assert due_for_escalation(**args) is due
