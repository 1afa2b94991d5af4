"""Faults and other notable events: logged with their fault code and published on MQTT.

The standard fault codes of an EV/V2G gateway (:data:`STANDARD_FAULT_CODES`):
``ISO_V2G_MSG_TIMEOUT`` (ISO 15118 message timeout), ``Grid_Sync_Error`` (the inverter
lost grid synchronisation), ``0x04`` (ground fault, OCPP ``techCode`` "Error 0x04" or stop
reason ``GroundFault``) and ``Max Capacity Reached`` (the site's import/export limit
refused a command). :func:`fault_code` maps a device's own spelling onto them; any other
code is kept as the device wrote it.

:func:`report` is what a detection point calls: it logs one line carrying ``asset``,
``event`` and ``fault_code`` (``extra=``, shown by ``--log-format json``) and, when the
process has an :class:`EventPublisher` (:func:`configure`, once at start-up, with the
process's MQTT client), publishes an ``event/1`` on ``gridflex/v1/{site}/event/{component}``
(QoS 1, not retained). The pipeline writes it to the ``events`` history stream
(:data:`gridflex.history.EVENTS`), wherever the detecting process runs, so ``gridflex
query "select * from events"`` on the pipeline's history finds it. Publishing only queues
the message in the client's bounded queue (never blocks); each event carries a fresh
``event_id``, so the history keeps one row per event however often the broker delivers it.
A process without a publisher (a library caller) only logs. A repeat of the same
``(asset, event, fault_code)`` within ``repeat_s`` is neither logged at the event's level
nor published again (a refused command is refused at every refresh).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Final

from gridflex.contract import DETAIL_LIMIT, EventReport, event_topic
from gridflex.mqtt_factory import MqttPublisher

__all__ = [
    "GRID_SYNC_ERROR",
    "GROUND_FAULT",
    "ISO_V2G_MSG_TIMEOUT",
    "MAX_CAPACITY_REACHED",
    "STANDARD_FAULT_CODES",
    "EventPublisher",
    "configure",
    "fault_code",
    "report",
]

log = logging.getLogger(__name__)

ISO_V2G_MSG_TIMEOUT: Final = "ISO_V2G_MSG_TIMEOUT"
GRID_SYNC_ERROR: Final = "Grid_Sync_Error"
GROUND_FAULT: Final = "0x04"
MAX_CAPACITY_REACHED: Final = "Max Capacity Reached"
STANDARD_FAULT_CODES: Final = (
    ISO_V2G_MSG_TIMEOUT,
    GRID_SYNC_ERROR,
    GROUND_FAULT,
    MAX_CAPACITY_REACHED,
)

#: Spellings (lower case, without spaces, underscores and dashes) of the standard codes.
_ALIASES: Final = {
    "isov2gmsgtimeout": ISO_V2G_MSG_TIMEOUT,
    "v2gmsgtimeout": ISO_V2G_MSG_TIMEOUT,
    "gridsyncerror": GRID_SYNC_ERROR,
    "0x04": GROUND_FAULT,
    "error0x04": GROUND_FAULT,
    "groundfault": GROUND_FAULT,
    "maxcapacityreached": MAX_CAPACITY_REACHED,
}


def fault_code(code: str) -> str:
    """The standard name of ``code`` when it is one of them, else ``code`` as written."""
    key = "".join(c for c in code.lower() if c not in " _-")
    return _ALIASES.get(key, code)


class EventPublisher:
    """Publishes the events of one process as ``event/1`` through its MQTT client.

    Args:
        publisher: The process's MQTT client (its ``publish`` queues, bounded, never blocks).
        site: The site id of every event.
        component: Who reports (``control``, ``collect-ocpp``): the payload's ``component``
            and the topic's last level.
        repeat_s: A repeat of the same ``(asset, event, fault_code)`` within this is dropped.
        loop: The event loop that owns ``publisher`` (an asyncio client must be called from
            it); a report from another thread is handed to it. None: called directly.

    """

    def __init__(
        self,
        publisher: MqttPublisher,
        site: str,
        component: str,
        *,
        repeat_s: float = 60.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.publisher = publisher
        self.site = site
        self.component = component
        self.topic = event_topic(site, component)
        self.repeat_ms = round(repeat_s * 1000)
        self.loop = loop
        self._last: dict[tuple[str | None, str, str | None], int] = {}
        self._lock = threading.Lock()
        #: Events handed to the client, and those its full queue refused.
        self.published = 0
        self.dropped = 0

    def fresh(self, asset: str | None, event: str, code: str | None, ts_ms: int) -> bool:
        """Whether this event is new (not a repeat within ``repeat_s``); remembers it."""
        key = (asset, event, code)
        with self._lock:
            last = self._last.get(key)
            if last is not None and 0 <= ts_ms - last < self.repeat_ms:
                return False
            self._last[key] = ts_ms
            return True

    def record(
        self,
        asset: str | None,
        event: str,
        *,
        code: str | None = None,
        detail: str | None = None,
        ts_ms: int | None = None,
    ) -> EventReport | None:
        """Publish one event (queued in the client); the payload sent, None if none could be.

        Texts longer than the contract allows are cut; an asset id outside the contract's
        pattern leaves the event unpublished (logged), never raised to the caller.
        """
        try:
            report = EventReport(
                site=self.site,
                component=self.component,
                asset=asset,
                ts_ms=ts_ms if ts_ms is not None else time.time_ns() // 1_000_000,
                event=event[:64],
                fault_code=code[:128] if code else None,
                detail=detail[:DETAIL_LIMIT] if detail is not None else None,
                event_id=uuid.uuid4().hex,
            )
        except ValueError as exc:  # pydantic's ValidationError
            log.warning("events: %r of %r not published: %s", event, asset, exc)
            return None
        payload = report.to_json()
        if self.loop is None or _running_loop() is self.loop:
            self._publish(payload)
        else:
            try:
                self.loop.call_soon_threadsafe(self._publish, payload)
            except RuntimeError:  # the loop is closed: the process is on its way out
                log.warning("events: %s not published, the event loop is closed", report.event_id)
        return report

    def _publish(self, payload: bytes) -> None:
        if self.publisher.publish(self.topic, payload, qos=1, retain=False):
            self.published += 1
        else:
            self.dropped += 1


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_current: EventPublisher | None = None


def configure(
    publisher: MqttPublisher | None, site: str, component: str, *, repeat_s: float = 60.0
) -> EventPublisher | None:
    """Give this process an :class:`EventPublisher` (None ``publisher``: log only); returns it.

    Called from a running event loop, that loop is the publisher's (an asyncio client is
    only called from it).
    """
    global _current
    _current = (
        None
        if publisher is None
        else EventPublisher(publisher, site, component, repeat_s=repeat_s, loop=_running_loop())
    )
    return _current


def report(
    logger: logging.Logger,
    asset: str | None,
    code: str,
    message: str,
    *args: object,
    event: str = "fault",
    level: int = logging.ERROR,
    detail: str | None = None,
    ts_ms: int | None = None,
) -> str:
    """Log ``message % (*args, fault_code)`` with ``asset``/``event``/``fault_code``; publish it.

    ``code`` is mapped by :func:`fault_code` and is the message's last argument
    (``report(log, "inv1", "Error 0x04", "%s: fault latched: %s", "inv1")``). A repeat
    within the publisher's ``repeat_s`` is logged at DEBUG only and not published.

    Returns:
        The fault code as published.

    """
    standard = fault_code(code)
    when = ts_ms if ts_ms is not None else time.time_ns() // 1_000_000
    events = _current
    if events is not None and not events.fresh(asset, event, standard, when):
        level = logging.DEBUG
    elif events is not None:
        events.record(asset, event, code=standard, detail=detail or code, ts_ms=when)
    extra = {"asset": asset, "event": event, "fault_code": standard}
    logger.log(level, message, *args, standard, extra=extra)
    return standard
