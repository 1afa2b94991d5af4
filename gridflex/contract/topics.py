"""The topics of the contract, version 1: builders and ``parse_topic``."""

from __future__ import annotations

import re

from gridflex.contract.base import ASSET_ID_PATTERN, PREFIX, ContractError

_ASSET_ID_RE = re.compile(ASSET_ID_PATTERN)


def _check_id(value: str, what: str) -> str:
    if not _ASSET_ID_RE.match(value):
        raise ContractError(f"{what} {value!r:.80} does not match {ASSET_ID_PATTERN}")
    return value


def telemetry_topic(site: str, kind: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/{kind}/{asset}/telemetry``."""
    return f"{PREFIX}/{_check_id(site, 'site')}/{kind}/{_check_id(asset, 'asset')}/telemetry"


def status_topic(site: str, kind: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/{kind}/{asset}/status`` (retained)."""
    return f"{PREFIX}/{_check_id(site, 'site')}/{kind}/{_check_id(asset, 'asset')}/status"


def session_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/evse/{asset}/session`` (the CSMS's transactions)."""
    return f"{PREFIX}/{_check_id(site, 'site')}/evse/{_check_id(asset, 'asset')}/session"


def grid_frequency_topic(site: str) -> str:
    """Return ``gridflex/v1/{site}/grid/frequency``."""
    return f"{PREFIX}/{_check_id(site, 'site')}/grid/frequency"


def forecast_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/ev/{asset}/forecast``."""
    return f"{PREFIX}/{_check_id(site, 'site')}/ev/{_check_id(asset, 'asset')}/forecast"


def command_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/dispatch/{asset}/command``."""
    return f"{PREFIX}/{_check_id(site, 'site')}/dispatch/{_check_id(asset, 'asset')}/command"


def ack_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/dispatch/{asset}/ack``."""
    return f"{PREFIX}/{_check_id(site, 'site')}/dispatch/{_check_id(asset, 'asset')}/ack"


def csms_request_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/csms/{asset}/setpoint``: control asks the CSMS (internal)."""
    return f"{PREFIX}/{_check_id(site, 'site')}/csms/{_check_id(asset, 'asset')}/setpoint"


def csms_result_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/csms/{asset}/result``: the CSMS answers control (internal)."""
    return f"{PREFIX}/{_check_id(site, 'site')}/csms/{_check_id(asset, 'asset')}/result"


def summary_topic(site: str) -> str:
    """Return ``gridflex/v1/{site}/summary`` (retained)."""
    return f"{PREFIX}/{_check_id(site, 'site')}/summary"


def target_topic(site: str) -> str:
    """Return ``gridflex/v1/{site}/target`` (retained): the central's target for a site."""
    return f"{PREFIX}/{_check_id(site, 'site')}/target"


def collector_topic(site: str, component: str) -> str:
    """Return ``gridflex/v1/{site}/collector/{component}/status`` (retained, last will).

    MQTT allows one last will per connection, so a collector's death is announced here, once
    for all its assets; a consumer treats the asset statuses of an offline collector as stale.
    """
    component = _check_id(component, "component")
    return f"{PREFIX}/{_check_id(site, 'site')}/collector/{component}/status"


def event_topic(site: str, component: str) -> str:
    """Return ``gridflex/v1/{site}/event/{component}``: its faults and events (QoS 1)."""
    component = _check_id(component, "component")
    return f"{PREFIX}/{_check_id(site, 'site')}/event/{component}"


def event_filter(site: str) -> str:
    """Return the subscription ``gridflex/v1/{site}/event/+`` (every component's events)."""
    return f"{PREFIX}/{_check_id(site, 'site')}/event/+"


def deadletter_topic(component: str) -> str:
    """Return ``gridflex/v1/deadletter/{component}``."""
    return f"{PREFIX}/deadletter/{_check_id(component, 'component')}"


def is_retained_topic(topic: str) -> bool:
    """Whether the contract publishes ``topic`` retained (statuses, summary and target)."""
    return topic.endswith(("/status", "/summary", "/target")) and topic.startswith(PREFIX + "/")


def parse_topic(topic: str) -> dict[str, str]:
    """Split a contract topic into its parts.

    Returns a dict with ``site``, ``kind`` (``inverter``/``evse``/``grid``/``ev``/
    ``dispatch``/``summary``/``target``/``event``/``deadletter``), ``asset`` where the topic
    has one, ``component`` for ``event`` and ``deadletter``, and ``leaf`` (``telemetry``,
    ``status``, ``frequency``, ``event``, ...). Raises ``ContractError`` for a topic outside
    the tree.
    """
    parts = topic.split("/")
    if len(parts) < 3 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise ContractError(f"topic {topic!r:.200} is not under {PREFIX}/")
    rest = parts[2:]
    if rest[0] == "deadletter" and len(rest) == 2:
        return {"kind": "deadletter", "component": rest[1], "leaf": "deadletter"}
    if len(rest) == 2 and rest[1] in ("summary", "target"):
        return {"site": rest[0], "kind": rest[1], "leaf": rest[1]}
    if len(rest) == 3 and rest[1] == "event" and _ASSET_ID_RE.match(rest[2]):
        return {"site": rest[0], "kind": "event", "component": rest[2], "leaf": "event"}
    if len(rest) == 3 and rest[1:] == ["grid", "frequency"]:
        return {"site": rest[0], "kind": "grid", "leaf": "frequency"}
    if len(rest) == 4:
        site, kind, asset, leaf = rest
        known = {
            "inverter": {"telemetry", "status"},
            "evse": {"telemetry", "status", "session"},
            "ev": {"forecast"},
            "dispatch": {"command", "ack"},
            "csms": {"setpoint", "result"},
            "collector": {"status"},
        }
        if leaf in known.get(kind, set()) and _ASSET_ID_RE.match(asset):
            return {"site": site, "kind": kind, "asset": asset, "leaf": leaf}
    raise ContractError(f"topic {topic!r:.200} is not in the gridflex/v1 topic tree")
