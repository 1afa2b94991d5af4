"""Validation of raw telemetry, ack, status, session and event messages (pure, no I/O).

``validate_telemetry`` turns one MQTT message into either a :class:`~gridflex.contract.Telemetry`
or a :class:`Rejected` that says why, in one of a few reason kinds; ``validate_ack`` does
the same for the control writer's acks (:class:`~gridflex.contract.DispatchAck` on
``gridflex/v1/{site}/dispatch/{asset}/ack``), ``validate_status`` for the retained
asset statuses (:class:`~gridflex.contract.AssetStatus`), ``validate_session`` for the
CSMS's sessions (:class:`~gridflex.contract.ChargingSession`) and ``validate_event`` for
the components' fault events (:class:`~gridflex.contract.EventReport`), with the same kinds:

=================  =====================================================================
kind               meaning
=================  =====================================================================
``bad_topic``      the topic is not ``gridflex/v1/{site}/{inverter|evse}/{asset}/telemetry``
                   (for an ack: ``gridflex/v1/{site}/dispatch/{asset}/ack``)
``not_json``       the payload is not UTF-8 JSON (``NaN``/``Infinity`` are not JSON)
``wrong_schema``   the JSON is not an object whose ``schema`` is ``"telemetry/1"`` (``"ack/1"``)
``invalid``        the object does not validate against the contract (missing field, type)
``out_of_range``   a value outside its contract bound (``soc_pct`` 0..100, ...), a number
                   too large for a double (``1e400`` reads as infinity) or an integer
                   beyond int64 (the history's columns), or outside a
                   plausible band (``freq_hz`` off nominal by more than 10 %, ``ts_ms`` in
                   the future beyond the allowed clock skew)
``topic_mismatch`` site, kind or asset (an event's component) in the topic differ from
                   the payload, or the site is not the one this pipeline serves
``unknown_asset``  an ack for an asset that is not one of the site's (``validate_ack`` given
                   the site's assets): no writer of this site acknowledges for it
``unprocessable``  anything else raised while handling the message (a few kilobytes of
                   ``[[[[…]]]]`` exhaust the JSON parser's recursion, say): one message never
                   stops the stream
=================  =====================================================================

A future ``ts_ms`` is refused because windows close on event time: one device with a clock
a minute ahead would push the watermark ahead and make every other asset's readings late.

Some readings are suspicious but still true to the device, so they go on, flagged:
:func:`check_registers` follows each asset's cumulative energy registers
(``energy_import_wh``, ``energy_export_wh``) within one boot and names those that went back
(a station whose last ``Energy.Active.Import.Register`` is 0 after 1,510 Wh, a meter
swapped or reset). Billing comes from these registers (invariant 4), so the history keeps
the flag beside the reading (``register_decreased``, docs/history.md).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from gridflex import jsonio
from gridflex.contract import (
    AssetStatus,
    ChargingSession,
    ContractError,
    DeadLetter,
    DispatchAck,
    EventReport,
    SiteTarget,
    Telemetry,
    describe_validation_error,
    parse_topic,
    target_topic,
)
from gridflex.telemetry_json import NUMBER_FIELDS
from pipelines.reading import ReadingLike

__all__ = [
    "DEFAULT_FREQ_BAND",
    "DEFAULT_MAX_FUTURE_MS",
    "REASON_KINDS",
    "REGISTER_FIELDS",
    "Arrived",
    "RawMessage",
    "RegisterState",
    "Rejected",
    "check_registers",
    "to_dead_letter",
    "validate_ack",
    "validate_event",
    "validate_session",
    "validate_status",
    "validate_target",
    "validate_telemetry",
]

REASON_KINDS: Final = (
    "bad_topic",
    "not_json",
    "wrong_schema",
    "invalid",
    "out_of_range",
    "topic_mismatch",
    "unknown_asset",
    "unprocessable",
)

#: A reading more than this far ahead of the pipeline's clock is refused (ms).
DEFAULT_MAX_FUTURE_MS: Final = 60_000
#: ``freq_hz`` must lie within ``nominal * (1 ± band)``; 10 % is far outside any grid's
#: operating range (under-frequency load shedding starts around 2-4 %), so only broken
#: readings are refused.
DEFAULT_FREQ_BAND: Final = 0.10

_FLOAT_FIELDS: Final = ("power_w", *NUMBER_FIELDS)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

_RANGE_ERROR_TYPES: Final = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as it came off the broker.

    Attributes:
        topic: The MQTT topic.
        payload: The raw payload bytes.
        received_ms: When the pipeline received it, UTC epoch ms.

    """

    topic: str
    payload: bytes
    received_ms: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message refused by validation.

    Attributes:
        kind: One of :data:`REASON_KINDS`.
        reason: One line saying what is wrong.
        message: The refused message.

    """

    kind: str
    reason: str
    message: RawMessage


def _parse_fast(message: RawMessage, site_id: str) -> Telemetry | None:
    """The common case in one pass: a finite, valid reading on its own topic, else None.

    pydantic parses the JSON itself (about twice as fast as ``json.loads`` and validating
    the dict) but accepts ``NaN``/``Infinity``, so non-finite numbers fall back to the
    explaining path, which refuses them.
    """
    try:
        telemetry = Telemetry.model_validate_json(message.payload)
    except ValidationError:
        return None
    if "schema_" not in telemetry.model_fields_set:  # defaulted: the payload named none
        return None
    values = telemetry.__dict__
    if not all(math.isfinite(values[name]) for name in _FLOAT_FIELDS if values[name] is not None):
        return None
    if telemetry.seq > _INT64_MAX or (telemetry.ev is not None and _unstorable(telemetry.ev)):
        return None  # ts_ms beyond int64 is refused as ahead of the clock
    parts = message.topic.split("/")
    if (
        len(parts) == 6
        and parts[0] == "gridflex"
        and parts[1] == "v1"
        and parts[5] == "telemetry"
        and parts[2] == telemetry.site == site_id
        and parts[3] == telemetry.kind
        and parts[4] == telemetry.asset
    ):
        return telemetry
    return None


def _parse_explained(message: RawMessage, site_id: str) -> Telemetry | Rejected:
    """Parse step by step so that a refusal names its first reason."""
    try:
        parts = parse_topic(message.topic)
    except ContractError as exc:
        return Rejected("bad_topic", str(exc), message)
    if parts["leaf"] != "telemetry" or parts["kind"] not in ("inverter", "evse"):
        return Rejected(
            "bad_topic", f"topic {message.topic!r:.200} is not a telemetry topic", message
        )

    telemetry = _decode(message, "telemetry/1", Telemetry)
    if isinstance(telemetry, Rejected):
        return telemetry

    mismatches = [
        f"{name} {parts[name]!r:.80} in topic, {value!r:.80} in payload"
        for name, value in (
            ("site", telemetry.site),
            ("kind", telemetry.kind),
            ("asset", telemetry.asset),
        )
        if parts[name] != value
    ]
    if mismatches:
        return Rejected("topic_mismatch", "; ".join(mismatches), message)
    if telemetry.site != site_id:
        return Rejected(
            "topic_mismatch", f"site {telemetry.site!r} is not this pipeline's {site_id!r}", message
        )

    return telemetry


_Model = TypeVar(
    "_Model", Telemetry, DispatchAck, AssetStatus, ChargingSession, SiteTarget, EventReport
)


def _decode(message: RawMessage, schema: str, model: type[_Model]) -> _Model | Rejected:
    """JSON, an object, the ``schema`` expected, the model's checks: the first that fails."""
    try:
        obj = jsonio.loads(message.payload)
    except ValueError as exc:
        return Rejected("not_json", f"not JSON: {exc}", message)
    if not isinstance(obj, dict):
        return Rejected("wrong_schema", "payload is not a JSON object", message)
    if obj.get("schema") != schema:
        return Rejected(
            "wrong_schema", f"schema is {obj.get('schema')!r:.60}, expected {schema!r}", message
        )
    try:
        parsed = model.model_validate(obj)
    except ValidationError as exc:
        errors = exc.errors()
        kind = "out_of_range" if all(e["type"] in _RANGE_ERROR_TYPES for e in errors) else "invalid"
        return Rejected(kind, describe_validation_error(exc), message)
    unstorable = _unstorable(parsed)
    if unstorable is not None:
        return Rejected("out_of_range", unstorable, message)
    return parsed


def _unstorable(model: BaseModel) -> str | None:
    """What makes ``model`` unfit for the history, or None.

    A number that is not finite (``1e400`` is JSON, but no double: it reads as infinity)
    or an integer beyond int64 (the history's integer columns; one such row made the
    history sink fail and the pipeline abort).
    """
    for name, value in model.__dict__.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name}: not a finite number"
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            return f"{name}: beyond a 64-bit integer"
        if isinstance(value, BaseModel):
            inner = _unstorable(value)
            if inner is not None:
                return f"{name}.{inner}"
    return None


def validate_telemetry(
    message: RawMessage,
    *,
    site_id: str,
    nominal_hz: float,
    now_ms: int,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    freq_band: float = DEFAULT_FREQ_BAND,
) -> Telemetry | Rejected:
    """Validate one telemetry message against the contract and plausible ranges.

    Args:
        message: The raw message.
        site_id: The site this pipeline serves.
        nominal_hz: Nominal grid frequency of the site, Hz.
        now_ms: The pipeline's clock, UTC epoch ms (for the future-timestamp check).
        max_future_ms: Largest accepted ``ts_ms - now_ms``, ms.
        freq_band: Accepted relative band of ``freq_hz`` around ``nominal_hz``.

    Returns:
        The parsed telemetry, or a :class:`Rejected` naming the reason. Nothing raised while
        validating one message escapes: it becomes an ``unprocessable`` refusal.

    """
    try:
        return _validate(
            message,
            site_id,
            nominal_hz=nominal_hz,
            now_ms=now_ms,
            max_future_ms=max_future_ms,
            freq_band=freq_band,
        )
    except Exception as exc:  # RecursionError, MemoryError-free surprises: never stop the flow
        return Rejected("unprocessable", f"{type(exc).__name__}: {str(exc)[:200]}", message)


def _validate(
    message: RawMessage,
    site_id: str,
    *,
    nominal_hz: float,
    now_ms: int,
    max_future_ms: int,
    freq_band: float,
) -> Telemetry | Rejected:
    fast = _parse_fast(message, site_id)
    parsed = fast if fast is not None else _parse_explained(message, site_id)
    if isinstance(parsed, Rejected):
        return parsed
    telemetry = parsed

    if telemetry.freq_hz is not None:
        low_hz = nominal_hz * (1.0 - freq_band)
        high_hz = nominal_hz * (1.0 + freq_band)
        if not low_hz <= telemetry.freq_hz <= high_hz:
            return Rejected(
                "out_of_range",
                f"freq_hz {telemetry.freq_hz} outside [{low_hz:g}, {high_hz:g}] Hz",
                message,
            )
    ahead_ms = telemetry.ts_ms - now_ms
    if ahead_ms > max_future_ms:
        return Rejected(
            "out_of_range",
            f"ts_ms {telemetry.ts_ms} is {ahead_ms} ms ahead of the pipeline clock "
            f"(max {max_future_ms} ms)",
            message,
        )
    return telemetry


def validate_ack(
    message: RawMessage, *, site_id: str, assets: Collection[str] | None = None
) -> DispatchAck | Rejected:
    """Validate one ack of the control writer against the contract, its topic and the site.

    An ack is the writer's word that a device of this site did something; the history
    keeps it beside the commands, so one for an asset the site does not have (a stray
    publisher, another site's writer on a shared broker) is refused, not stored.

    Args:
        message: The raw message, from ``gridflex/v1/{site}/dispatch/{asset}/ack``.
        site_id: The site this pipeline serves.
        assets: The site's asset ids; an ack for any other asset is refused as
            ``unknown_asset``. None: not checked.

    Returns:
        The parsed ack, or a :class:`Rejected` naming the first reason (the kinds of
        :data:`REASON_KINDS`): the topic, then the payload, then topic and payload
        against each other and the site, then the asset. Nothing raised while validating
        escapes: it becomes an ``unprocessable`` refusal.

    """
    ack = _validate_event(message, site_id, "ack", "ack/1", DispatchAck)
    if assets is not None and isinstance(ack, DispatchAck) and ack.asset not in assets:
        reason = f"asset {ack.asset!r} is not an asset of site {site_id!r}"
        return Rejected("unknown_asset", reason, message)
    return ack


def validate_status(message: RawMessage, *, site_id: str) -> AssetStatus | Rejected:
    """Validate one retained asset status (``…/{kind}/{asset}/status``), as :func:`validate_ack`."""
    return _validate_event(message, site_id, "status", "status/1", AssetStatus)


def validate_session(message: RawMessage, *, site_id: str) -> ChargingSession | Rejected:
    """Validate one CSMS session (``…/evse/{asset}/session``), as :func:`validate_ack`."""
    return _validate_event(message, site_id, "session", "session/1", ChargingSession)


def validate_event(message: RawMessage, *, site_id: str) -> EventReport | Rejected:
    """Validate one fault event (``…/event/{component}``), as :func:`validate_ack`."""
    return _validate_event(message, site_id, "event", "event/1", EventReport)


_Event = TypeVar("_Event", DispatchAck, AssetStatus, ChargingSession, EventReport)


def _validate_event(
    message: RawMessage, site_id: str, leaf: str, schema: str, model: type[_Event]
) -> _Event | Rejected:
    try:
        return _check_event(message, site_id, leaf, schema, model)
    except Exception as exc:  # one message never stops the stream
        return Rejected("unprocessable", f"{type(exc).__name__}: {str(exc)[:200]}", message)


def _check_event(
    message: RawMessage, site_id: str, leaf: str, schema: str, model: type[_Event]
) -> _Event | Rejected:
    try:
        parts = parse_topic(message.topic)
    except ContractError as exc:
        return Rejected("bad_topic", str(exc), message)
    if parts["leaf"] != leaf:
        return Rejected("bad_topic", f"topic {message.topic!r:.200} is not a {leaf} topic", message)
    event = _decode(message, schema, model)
    if isinstance(event, Rejected):
        return event
    pairs: list[tuple[str, str | None]] = [("site", event.site)]
    if isinstance(event, EventReport):
        pairs.append(("component", event.component))
    else:
        pairs.append(("asset", event.asset))
    if isinstance(event, AssetStatus):
        pairs.append(("kind", event.kind))
    mismatches = [
        f"{name} {parts[name]!r:.80} in topic, {value!r:.80} in payload"
        for name, value in pairs
        if parts[name] != value
    ]
    if mismatches:
        return Rejected("topic_mismatch", "; ".join(mismatches), message)
    if event.site != site_id:
        return Rejected(
            "topic_mismatch", f"site {event.site!r} is not this pipeline's {site_id!r}", message
        )
    return event


#: Cumulative meter registers that never go back within one boot of a device.
REGISTER_FIELDS: Final = ("energy_import_wh", "energy_export_wh")


@dataclass(frozen=True, slots=True)
class RegisterState:
    """The last registers seen of one asset in one boot (the state of :func:`check_registers`).

    Attributes:
        boot: The boot the registers belong to.
        seq: ``seq`` of the latest reading compared.
        registers: Latest value of each of :data:`REGISTER_FIELDS` (None: never reported).
        decreases: Readings flagged so far in this boot.

    """

    boot: str
    seq: int
    registers: tuple[float | None, ...]
    decreases: int = 0


def check_registers(
    state: RegisterState | None, telemetry: ReadingLike
) -> tuple[RegisterState, tuple[str, ...]]:
    """Compare a reading's energy registers with the asset's previous reading of this boot.

    Pure: the caller keeps the state per asset. Only readings in ``seq`` order are compared;
    a new boot starts afresh (a collector restart may reset what it counts from), and a
    redelivered or older reading (``seq`` not above the last) is passed without a check. A
    register the reading leaves out keeps its last value for the next comparison.

    Args:
        state: What the previous call returned for this asset, or None.
        telemetry: The reading (already valid): a ``Telemetry`` or a
            :class:`~pipelines.reading.Reading`.

    Returns:
        The new state and the names of the registers that are lower than before (empty
        when none is).

    """
    values = tuple(getattr(telemetry, name) for name in REGISTER_FIELDS)
    if state is None or state.boot != telemetry.boot:
        return RegisterState(telemetry.boot, telemetry.seq, values), ()
    if telemetry.seq <= state.seq:
        return state, ()
    went_back = tuple(
        name
        for name, before, now in zip(REGISTER_FIELDS, state.registers, values, strict=True)
        if before is not None and now is not None and now < before
    )
    kept = tuple(
        now if now is not None else before
        for before, now in zip(state.registers, values, strict=True)
    )
    decreases = state.decreases + (1 if went_back else 0)
    return RegisterState(telemetry.boot, telemetry.seq, kept, decreases), went_back


def to_dead_letter(rejected: Rejected, *, site: str, component: str = "pipeline") -> DeadLetter:
    """Build the dead-letter payload for a refused message.

    ``site`` is the site of the component that refused it (the pipeline's own, not the
    topic's: a refused topic may name no site, or a wrong one). The reason reads
    ``"{kind}: {reason}"``; the raw payload is kept as UTF-8 text when it decodes, else
    base64.
    """
    return DeadLetter.of(
        rejected.message.payload,
        site=site,
        component=component,
        ts_ms=rejected.message.received_ms,
        reason=f"{rejected.kind}: {rejected.reason}",
        topic=rejected.message.topic,
    )


class Arrived(NamedTuple):
    """The central's target (``gridflex/v1/{site}/target``) and when it came (epoch ms)."""

    target: SiteTarget
    received_ms: int


def validate_target(message: RawMessage, *, site_id: str) -> Arrived | Rejected:
    """Validate the central's target (``gridflex/v1/{site}/target``) for this site.

    Returns the parsed target with its receive time, or a :class:`Rejected` (another
    site's target, a payload that is not ``target/1``, or one naming another site than its
    topic).
    """
    try:
        if message.topic != target_topic(site_id):
            return Rejected(
                "bad_topic", f"topic {message.topic!r} is not this site's target", message
            )
        target = _decode(message, "target/1", SiteTarget)
        if isinstance(target, Rejected):
            return target
        if target.site == site_id:
            return Arrived(target, message.received_ms)
        return Rejected("topic_mismatch", f"site {target.site!r} in payload", message)
    except Exception as exc:  # one message never stops the stream
        return Rejected("unprocessable", f"{type(exc).__name__}: {str(exc)[:200]}", message)
