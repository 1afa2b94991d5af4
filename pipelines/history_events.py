"""History rows of the event streams: status changes, the CSMS's sessions, fault events.

* :func:`status_change`, the state of the ``status_change`` step (keyed by asset): a
  retained ``status/1`` becomes a ``status_changes`` row only when the asset's
  ``online``, ``state``, ``faults`` or ``transaction_id`` differ from its last one. The
  broker delivers the retained status again on every subscription and the collectors
  publish a status for events that change none of these (``charging needs received``);
  neither is a change. The memory is in the dataflow's recovery snapshots; a pipeline
  started without it writes the current status once more, which the ``status_changes``
  view drops (it compares each row with the asset's previous one).
* :func:`session_row`: a ``session/1`` as a ``transactions`` row (the view joins an
  ``ended`` with its ``started``).
* :func:`event_row`: an ``event/1`` as an ``events`` row (the view keeps one row per
  ``event_id``, so a redelivery is one event).
"""

from __future__ import annotations

from gridflex.contract import AssetStatus, ChargingSession, DispatchAck, EventReport
from gridflex.history import EVENTS, SCHEMAS, STATUS_CHANGES, TRANSACTIONS
from pipelines.history_sink import Row, fields_row

__all__ = [
    "Event",
    "StatusKey",
    "ack_only",
    "changed_only",
    "event_only",
    "event_row",
    "is_event",
    "session_only",
    "session_row",
    "status_change",
    "status_key",
    "status_only",
    "status_row",
]

#: What makes a status a change: online, state, faults, transaction id.
StatusKey = tuple[bool, str, tuple[str, ...], str | None]

_STATUS_FIELDS = tuple(n for n in SCHEMAS[STATUS_CHANGES].names if n != "faults")
_SESSION_FIELDS = SCHEMAS[TRANSACTIONS].names
_EVENT_FIELDS = SCHEMAS[EVENTS].names


def status_key(status: AssetStatus) -> StatusKey:
    """The part of a status whose change is recorded."""
    return status.online, status.state, tuple(sorted(status.faults)), status.transaction_id


def status_row(status: AssetStatus) -> Row:
    """A ``status_changes`` history row."""
    row = fields_row(status, _STATUS_FIELDS)
    row["faults"] = list(status.faults)
    return row


def status_change(last: StatusKey | None, status: AssetStatus) -> tuple[StatusKey, Row | None]:
    """Step of ``status_change``: the row when ``status`` changes the asset's last one."""
    key = status_key(status)
    return key, (status_row(status) if key != last else None)


def session_row(session: ChargingSession) -> Row:
    """A ``transactions`` history row."""
    return fields_row(session, _SESSION_FIELDS)


def event_row(report: EventReport) -> Row:
    """An ``events`` history row."""
    return fields_row(report, _EVENT_FIELDS)


# --------------------------------------------------------------------------- routing

#: The messages that only go to the history (after validation).
Event = DispatchAck | AssetStatus | ChargingSession | EventReport


def is_event(item: object) -> bool:
    """Whether a validated item is an :data:`Event` (not a reading, heartbeat, refusal)."""
    return isinstance(item, Event)


def ack_only(item: Event) -> DispatchAck | None:
    """The item if it is an ack."""
    return item if isinstance(item, DispatchAck) else None


def status_only(item: Event) -> AssetStatus | None:
    """The item if it is an asset status."""
    return item if isinstance(item, AssetStatus) else None


def session_only(item: Event) -> ChargingSession | None:
    """The item if it is a session."""
    return item if isinstance(item, ChargingSession) else None


def event_only(item: Event) -> EventReport | None:
    """The item if it is a fault event."""
    return item if isinstance(item, EventReport) else None


def changed_only(item: tuple[str, Row | None]) -> tuple[str, Row] | None:
    """A keyed ``status_change`` output that is a change (``None`` rows dropped)."""
    key, row = item
    return None if row is None else (key, row)
