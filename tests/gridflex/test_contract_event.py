"""The ``event/1`` payload and its topic: faults published by the component that saw them."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridflex.contract import (
    DETAIL_LIMIT,
    ContractError,
    EventReport,
    event_filter,
    event_topic,
    is_retained_topic,
    parse_payload,
    parse_topic,
)
from gridflex.contract_docs import schemas

_IDS = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
_TEXT = st.text(min_size=1, max_size=64)


def test_event_topic_is_under_the_site_and_names_the_component() -> None:
    topic = event_topic("s1", "collect-ocpp")
    assert topic == "gridflex/v1/s1/event/collect-ocpp"
    assert parse_topic(topic) == {
        "site": "s1",
        "kind": "event",
        "component": "collect-ocpp",
        "leaf": "event",
    }
    assert event_filter("s1") == "gridflex/v1/s1/event/+"
    assert not is_retained_topic(topic)


def test_event_topic_refuses_a_component_outside_the_pattern() -> None:
    with pytest.raises(ContractError, match="component"):
        event_topic("s1", "control/x")
    with pytest.raises(ContractError):
        parse_topic("gridflex/v1/s1/event/a b")


def test_an_event_without_its_id_is_refused() -> None:
    raw = {"schema": "event/1", "site": "s1", "component": "control", "ts_ms": 1, "event": "f"}
    with pytest.raises(ContractError, match="event_id"):
        parse_payload(json.dumps(raw))


def test_a_detail_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="detail"):
        EventReport(
            site="s1", component="control", ts_ms=1, event="fault", event_id="e1",
            detail="x" * (DETAIL_LIMIT + 1),
        )  # fmt: skip


_EVENTS = st.builds(
    EventReport,
    site=_IDS,
    component=_IDS,
    asset=st.none() | _IDS,
    ts_ms=st.integers(min_value=0, max_value=2**53),
    event=_TEXT,
    fault_code=st.none() | st.text(min_size=1, max_size=128),
    detail=st.none() | st.text(max_size=DETAIL_LIMIT),
    event_id=st.text(min_size=1, max_size=128),
)


@settings(max_examples=60, deadline=None)
@given(report=_EVENTS)
def test_an_event_round_trips_and_validates_against_its_published_schema(
    report: EventReport,
) -> None:
    wire = report.to_json()
    assert parse_payload(wire) == report
    jsonschema.validate(json.loads(wire), schemas()["event/1"])
