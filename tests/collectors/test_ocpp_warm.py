"""The CSMS compiles its payload validators before it listens, for every action it handles."""

from __future__ import annotations

from collectors.ocpp.csms import SUBPROTOCOLS, WARM_ACTIONS
from collectors.ocpp.schema import ValidatorCache
from collectors.ocpp.session import StationSession


def _handled_actions() -> set[str]:
    """The actions ``StationSession`` has ``@on`` handlers for (the ``ocpp`` routing mark)."""
    return {
        member._on_action
        for member in vars(StationSession).values()
        if callable(member) and hasattr(member, "_on_action")
    }


def test_every_action_a_station_sends_the_csms_is_warmed() -> None:
    handled = _handled_actions()
    assert handled, "no @on handlers found: has the ocpp routing mark changed?"
    assert handled <= set(WARM_ACTIONS)


def test_warm_compiles_both_directions_of_each_action_in_each_version() -> None:
    cache = ValidatorCache()
    compiled = cache.warm(SUBPROTOCOLS.values(), WARM_ACTIONS)
    assert compiled == len(SUBPROTOCOLS) * len(WARM_ACTIONS) * 2
    for version in SUBPROTOCOLS.values():
        for action in WARM_ACTIONS:
            assert cache.get(version, action, request=True) is not None
            assert cache.get(version, action, request=False) is not None
