"""Setpoints to OCPP charging stations, through the CSMS process, over MQTT.

The CSMS (``gridflex collect ocpp``) owns the stations' WebSocket connections, so control
asks it: one ``csms-setpoint/1`` request per write on ``gridflex/v1/{site}/csms/{asset}/
setpoint`` (QoS 1, the dispatch command's ``command_id`` as correlation id), answered on
``…/csms/{asset}/result`` by the station's answer and then the read-back (the station's
next meter value). The CSMS's side is ``collectors.ocpp.requests``; which charging profile
carries the setpoint is decided in ``control.ocpp_plan``.

- :class:`CsmsClient`, one per control process: multiplexes the requests and results of
  every EVSE over the service's MQTT client (one subscription to ``…/csms/+/result``),
  follows the CSMS's presence (its retained ``collector/ocpp/status``, or with CSMS
  shards each ``collector/ocpp-{i}of{n}/status`` and the EVSEs it lists: a request to a
  CSMS known to be offline fails at once). The EVSEs' SoC comes from the service's telemetry
  (``control.live``), not from here. A result or a presence it cannot parse, or that is
  outside the contract (another site, an asset that is not one of the site's EVSEs, a
  topic that names another asset), is handed to ``on_refused`` (the service dead-letters
  it, ``control.inbound``) and changes nothing; a valid result nobody waits for any more
  (a repeat, or the answer to a request given up on) is dropped quietly.
- :class:`OcppDevice`, one per EVSE asset: a ``control.writer.SetpointDevice``.
  ``write`` sends the request and waits for the station's answer (raises
  :class:`CsmsError` with the reason unless it accepted, ``TimeoutError`` without an
  answer); ``read_back`` waits for the read-back and returns the setpoint the station
  confirmed (``sent_w``), keeping the measured meter power in ``measured_w`` and the time
  of the station's answer in ``confirmed_ms``. ``program_droop`` sends an OCPP 2.1
  LocalFrequency profile (the curve from ``control.ocpp_plan.freq_watt_curve``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass

from control.inbound import Refused, check_csms_result, check_presence
from control.ocpp_plan import DroopLike, freq_watt_curve
from gridflex.config import EvseAsset, SiteConfig
from gridflex.contract import (
    PREFIX,
    CsmsRequest,
    CsmsRequestKind,
    CsmsResult,
    FreqWattPoint,
    collector_topic,
    csms_request_topic,
)
from gridflex.mqtt_asyncio import AsyncMqttClient

__all__ = [
    "CsmsClient",
    "CsmsError",
    "OcppDevice",
    "result_filter",
]

log = logging.getLogger(__name__)

#: Added to the CSMS's own bounds (response timeout, read-back wait) for the MQTT hops.
_MARGIN_S = 2.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def result_filter(site_id: str) -> str:
    """``gridflex/v1/{site}/csms/+/result``: the CSMS's answers for every EVSE."""
    return f"{PREFIX}/{site_id}/csms/+/result"


class CsmsError(Exception):
    """The CSMS or the station did not apply a request; the text is the reason."""


@dataclass
class _Pending:
    answer: asyncio.Future[CsmsResult]
    readback: asyncio.Future[CsmsResult]


class CsmsClient:
    """Requests to the CSMS and their results, for every EVSE of a site (module docstring).

    ``answer_timeout_s`` bounds the wait for the station's answer, ``readback_timeout_s``
    the wait for the read-back after it. :meth:`from_site` derives both from ``[ocpp]``.
    ``evses``: the site's EVSE ids (a result for any other asset is refused; None: not
    checked); ``on_refused(topic, payload, refused)`` gets what is refused (default: a
    warning in the log).
    """

    def __init__(
        self,
        mqtt: AsyncMqttClient,
        site_id: str,
        *,
        answer_timeout_s: float = 12.0,
        readback_timeout_s: float = 4.0,
        now_ms: Callable[[], int] = _now_ms,
        evses: Collection[str] | None = None,
        on_refused: Callable[[str, bytes, Refused], None] | None = None,
    ) -> None:
        self.mqtt = mqtt
        self.site_id = site_id
        self.evses = None if evses is None else frozenset(evses)
        self.on_refused = on_refused
        self.answer_timeout_s = answer_timeout_s
        self.readback_timeout_s = readback_timeout_s
        self.now_ms = now_ms
        #: The CSMS's presence from its retained collector status; None until known.
        self.csms_online: bool | None = None
        #: CSMS shards (``ocpp-{i}of{n}``): whether online, and the EVSEs they last listed.
        self._shards: dict[str, tuple[bool, frozenset[str]]] = {}
        self._pending: dict[tuple[str, str], _Pending] = {}

    @classmethod
    def from_site(
        cls,
        mqtt: AsyncMqttClient,
        site: SiteConfig,
        *,
        now_ms: Callable[[], int] = _now_ms,
        on_refused: Callable[[str, bytes, Refused], None] | None = None,
    ) -> CsmsClient:
        """A client with timeouts after the site's ``[ocpp]`` settings.

        The answer may take two station round trips (``clear``): ``2 x response_timeout_s``
        plus a margin; the read-back twice the meter interval in force (whole seconds while
        idle) plus a margin.
        """
        ocpp = site.ocpp
        interval_s = max(ocpp.meter_interval_s, float(max(1, round(ocpp.meter_interval_s))))
        return cls(
            mqtt,
            site.id,
            answer_timeout_s=2 * ocpp.response_timeout_s + _MARGIN_S,
            readback_timeout_s=2 * interval_s + _MARGIN_S,
            now_ms=now_ms,
            evses=[evse.id for evse in site.evses],
            on_refused=on_refused,
        )

    def start(self) -> None:
        """Subscribe to the results and the CSMS's presence."""
        self.mqtt.subscribe(result_filter(self.site_id), self._on_result, qos=1)
        head, _component, tail = collector_topic(self.site_id, "ocpp").rsplit("/", 2)
        shards = f"{head}/+/{tail}"  # ocpp, or every CSMS shard's ocpp-{i}of{n}
        self.mqtt.subscribe(shards, self._on_collector, qos=1)

    # -- input

    def _refuse(self, topic: str, payload: bytes, refused: Refused) -> None:
        if self.on_refused is not None:
            self.on_refused(topic, payload, refused)
        else:
            log.warning("control: refused a message on %.200s: %s", topic, refused.reason)

    def _on_result(self, topic: str, payload: bytes) -> None:
        result = check_csms_result(topic, payload, site_id=self.site_id, evses=self.evses)
        if isinstance(result, Refused):
            self._refuse(topic, payload, result)
            return
        pending = self._pending.get((result.asset, result.request_id))
        if pending is None:
            return  # a repeat, or the answer to a request given up on
        future = pending.answer if result.phase == "answer" else pending.readback
        if not future.done():
            future.set_result(result)
        if result.phase == "answer" and result.status != "accepted" and not pending.readback.done():
            pending.readback.set_result(result)  # no read-back follows

    def _on_collector(self, topic: str, payload: bytes) -> None:
        status = check_presence(topic, payload, site_id=self.site_id)
        if isinstance(status, Refused):
            self._refuse(topic, payload, status)
            return
        if status is None:  # a retained presence cleared
            return
        component, online = status.component, status.online
        if component == "ocpp":
            self.csms_online = online
        elif component.startswith("ocpp-"):
            known = self._shards.get(component, (False, frozenset()))[1]
            # the last will lists no assets: keep the ones listed before
            self._shards[component] = (online, frozenset(status.assets) or known)

    def csms_offline(self, asset: str) -> bool:
        """Whether the CSMS (or the CSMS shard) that owns ``asset`` is known to be offline."""
        if self.csms_online is False:
            return True
        return any(not online and asset in owned for online, owned in self._shards.values())

    # -- requests

    async def request(self, request: CsmsRequest) -> CsmsResult:
        """Publish ``request`` and return the CSMS's answer (any status).

        Raises ``CsmsError`` when the CSMS is known to be offline and ``TimeoutError``
        when no answer comes within ``answer_timeout_s``.
        """
        if self.csms_offline(request.asset):
            raise CsmsError("the CSMS (gridflex collect ocpp) is offline")
        key = (request.asset, request.request_id)
        for other in [k for k in self._pending if k[0] == request.asset and k != key]:
            del self._pending[other]  # one request at a time per asset
        loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), loop.create_future())
        self._pending[key] = pending
        topic = csms_request_topic(self.site_id, request.asset)
        self.mqtt.publish(topic, request.to_json(), qos=1)
        try:
            async with asyncio.timeout(self.answer_timeout_s):
                return await pending.answer
        except TimeoutError:
            self._pending.pop(key, None)
            raise TimeoutError(
                f"no answer from the CSMS within {self.answer_timeout_s:g} s"
            ) from None

    async def readback(self, asset_id: str, request_id: str) -> CsmsResult | None:
        """The read-back of an accepted request; None when none came in time."""
        pending = self._pending.get((asset_id, request_id))
        if pending is None:
            return None
        try:
            async with asyncio.timeout(self.readback_timeout_s):
                return await pending.readback
        except TimeoutError:
            return None
        finally:
            self._pending.pop((asset_id, request_id), None)


class OcppDevice:
    """One EVSE asset as a ``SetpointDevice``, written through the CSMS (module docstring).

    ``hold_s`` is how long the station keeps a profile (its ``validTo``) before it falls
    back to its default: the OCPP counterpart of SunSpec's reversion timer.
    """

    def __init__(
        self,
        asset: EvseAsset,
        client: CsmsClient,
        *,
        hold_s: float,
        nominal_hz: float = 50.0,
    ) -> None:
        self.asset = asset
        self.client = client
        self.hold_s = hold_s
        self.nominal_hz = nominal_hz
        #: The power of the station's next meter value after the last write, W; None if none.
        self.measured_w: float | None = None
        #: When the station answered the last write (the CSMS's clock), UTC epoch ms.
        self.confirmed_ms: int | None = None
        #: The last answer of the CSMS.
        self.last: CsmsResult | None = None
        self._next_id: tuple[str, int] | None = None
        self._request_id: str | None = None
        #: With ``[dispatch] local_droop``: the curve every setpoint goes with, as a
        #: LocalFrequency profile whose baseline is the setpoint (None: CentralSetpoint).
        self.local_droop: DroopLike | None = None

    # -- what the service calls around a command

    def prepare(self, command_id: str, valid_until_ms: int) -> None:
        """Use ``command_id`` and ``valid_until_ms`` for the next write (idempotency key).

        A write without it (the watchdog's) gets an id of its own.
        """
        self._next_id = (command_id, valid_until_ms)

    async def connect(self) -> OcppDevice:
        """Nothing to connect: the CSMS holds the stations' connections."""
        return self

    def drop(self) -> None:
        """Nothing to drop."""

    # -- SetpointDevice

    def _request(
        self,
        kind: CsmsRequestKind,
        power_w: float | None,
        curve: list[FreqWattPoint] | None = None,
    ) -> CsmsRequest:
        now = self.client.now_ms()
        if self._next_id is not None:
            request_id, valid_until_ms = self._next_id
            self._next_id = None
        else:
            request_id = f"{kind}-{uuid.uuid4().hex[:16]}"
            valid_until_ms = now + round(self.client.answer_timeout_s * 1000)
        return CsmsRequest(
            site=self.client.site_id,
            asset=self.asset.id,
            ts_ms=now,
            request_id=request_id,
            kind=kind,
            power_w=power_w,
            valid_until_ms=valid_until_ms,
            hold_until_ms=now + round(self.hold_s * 1000),
            curve=curve,
        )

    async def _send(self, request: CsmsRequest) -> CsmsResult:
        self.measured_w = None
        self.confirmed_ms = None
        self._request_id = request.request_id
        result = await self.client.request(request)
        self.last = result
        if result.status != "accepted":
            raise CsmsError(f"{result.status}: {result.reason or 'no reason given'}")
        self.confirmed_ms = result.answered_ms or result.ts_ms
        return result

    async def write(self, setpoint_w: float) -> None:
        """Ask the CSMS for ``setpoint_w`` (+ charge) and wait for the station's answer.

        Raises ``CsmsError`` (text: status and reason) unless the station accepted, and
        ``TimeoutError`` without an answer.
        """
        if self.local_droop is not None:
            await self._send(self._local_frequency(self.local_droop, setpoint_w, None, None))
            return
        await self._send(self._request("setpoint", setpoint_w))

    async def read_back(self) -> float:
        """The setpoint the station confirmed (``sent_w``), W; waits for the read-back.

        Sets ``measured_w`` to the power of the station's next meter value (None when none
        came in time). Raises ``CsmsError`` when nothing was confirmed.
        """
        last = self.last
        if last is None or last.status != "accepted" or self._request_id is None:
            raise CsmsError("no setpoint was confirmed by the station")
        readback = await self.client.readback(self.asset.id, self._request_id)
        if readback is not None and readback.phase == "readback":
            self.measured_w = readback.measured_w
        if last.sent_w is None:
            raise CsmsError("the CSMS did not say what it sent")
        return last.sent_w

    # -- beyond setpoints

    async def program_droop(
        self,
        droop: DroopLike,
        *,
        baseline_w: float = 0.0,
        rated_charge_w: float | None = None,
        rated_discharge_w: float | None = None,
    ) -> CsmsResult:
        """Program the droop into the station: an OCPP 2.1 LocalFrequency charging profile.

        The ``v2xFreqWattCurve`` is ``freq_watt_curve`` of ``droop`` (IEEE 1547 dead bands
        and droops, e.g. ``gridflex.config.DroopConfig``) at the site's nominal frequency,
        scaled to the asset's ratings unless given; the station adds it to ``baseline_w``
        and clips it to the car's and the site's caps. Returns the CSMS's answer when the
        station accepted (``sent_w``: the baseline sent); raises ``CsmsError`` otherwise,
        e.g. refused for an OCPP 2.0.1 station or without a transaction.
        """
        return await self._send(
            self._local_frequency(droop, baseline_w, rated_charge_w, rated_discharge_w)
        )

    def _local_frequency(
        self,
        droop: DroopLike,
        baseline_w: float,
        rated_charge_w: float | None,
        rated_discharge_w: float | None,
    ) -> CsmsRequest:
        curve = freq_watt_curve(
            self.nominal_hz,
            droop,
            rated_charge_w=self.asset.max_charge_w if rated_charge_w is None else rated_charge_w,
            rated_discharge_w=(
                self.asset.max_discharge_w if rated_discharge_w is None else rated_discharge_w
            ),
        )
        points = [FreqWattPoint(freq_hz=f, power_w=p) for f, p in curve]
        return self._request("local_frequency", baseline_w, points)

    async def clear(self) -> CsmsResult:
        """Remove gridflex's charging profiles from the EVSE (the station's default again)."""
        return await self._send(self._request("clear", None))
