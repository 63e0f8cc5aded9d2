"""Routing: which channels a notification goes to (pure; rules from the settings model)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from alerting.notification import Location, Notification
from alerting.routing import Routing, RoutingError
from ingest.settings import RouteRule, SettingsError, load_settings

FIRE = Notification(alert_id="a" * 32, state="raised", kind="fire", severity="critical", sensor_id="s1",
                    event_time=1.0, detected_at=1.0, location=Location(site="north", zone="kitchen"))
CHANNELS = ["pager", "mail", "log"]


def test_no_rules_send_every_notification_to_every_channel():
    assert Routing([], CHANNELS).channels_for(FIRE) == CHANNELS


def test_every_matcher_of_a_rule_must_match_and_an_empty_one_matches_all():
    routing = Routing([RouteRule(severity=["critical"], kind=["fire"], zone=["kitchen"], site=["north"],
                                 state=["raised"], channels=["pager"])], CHANNELS)
    assert routing.channels_for(FIRE) == ["pager"]
    assert routing.channels_for(replace(FIRE, severity="warning")) == []
    assert routing.channels_for(replace(FIRE, kind="sensor_stuck")) == []
    assert routing.channels_for(replace(FIRE, state="cleared")) == []
    assert routing.channels_for(replace(FIRE, location=Location(site="north", zone="hall"))) == []
    assert routing.channels_for(replace(FIRE, location=Location(site="south", zone="kitchen"))) == []


def test_matching_rules_add_their_channels_once_each_in_order_until_a_stop():
    rules = [RouteRule(kind=["sensor_stuck"], channels=["log"], stop=True),
             RouteRule(severity=["critical"], channels=["pager", "log"]),
             RouteRule(channels=["mail", "pager"]),
             RouteRule(channels=["log"], stop=True),
             RouteRule(channels=["pager"])]
    routing = Routing(rules, CHANNELS)
    assert routing.channels_for(FIRE) == ["pager", "log", "mail"]
    assert routing.channels_for(replace(FIRE, kind="sensor_stuck")) == ["log"]


def test_test_alarms_route_by_the_test_flag():
    routing = Routing([RouteRule(test=False, channels=["pager"]), RouteRule(test=True, channels=["log"]),
                       RouteRule(channels=["mail"])], CHANNELS)
    assert routing.channels_for(FIRE) == ["pager", "mail"]
    assert routing.channels_for(replace(FIRE, test=True)) == ["log", "mail"]


def test_a_route_naming_an_unknown_channel_is_an_error_naming_it():
    with pytest.raises(RoutingError, match=r"routes\[1\] names unknown channel 'pagr'"):
        Routing([RouteRule(channels=["log"]), RouteRule(channels=["pagr"])], CHANNELS)
    with pytest.raises(RoutingError, match="none configured"):
        Routing([RouteRule(channels=["log"])], [])


def test_routing_from_settings_and_the_settings_validate_channels_and_rules():
    settings = load_settings(environ={
        "SMOKE_ALERTING__CHANNELS": '[{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:1/"}]',
        "SMOKE_ALERTING__ROUTES": '[{"severity": ["critical"], "channels": ["hook"]}]'})
    assert Routing.from_settings(settings.alerting).channels_for(FIRE) == ["hook"]
    with pytest.raises(RoutingError, match="'mail'"):
        Routing.from_settings(load_settings(environ={
            "SMOKE_ALERTING__ROUTES": '[{"channels": ["mail"]}]'}).alerting)
    with pytest.raises(SettingsError, match=r"alerting.routes.0.severity: .*unknown severity \['urgent'\]"):
        load_settings(environ={"SMOKE_ALERTING__ROUTES": '[{"severity": ["urgent"], "channels": ["x"]}]'})
    with pytest.raises(SettingsError, match=r"channel names must be unique, repeated: \['a'\]"):
        load_settings(environ={"SMOKE_ALERTING__CHANNELS": '[{"type": "webhook", "name": "a", "url": "http://x/"},'
                                                             '{"type": "webhook", "name": "a", "url": "http://y/"}]'})
    with pytest.raises(SettingsError, match=r"alerting\.channels\.0"):
        load_settings(environ={"SMOKE_ALERTING__CHANNELS": '[{"type": "pigeon", "name": "a"}]'})
