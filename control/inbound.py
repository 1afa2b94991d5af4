"""What ``gridflex control`` reads besides commands, checked before use (pure, no I/O).

Control reads the site's asset statuses (for faults), the CSMS's results and presence (for
the EVSEs' writes) and the readings (SoC, headroom, faults). Each message it cannot parse,
or that is outside the contract, goes to ``gridflex/v1/deadletter/control`` with its reason
and is counted by kind (``control.metrics.DEAD_LETTER_KINDS``), as a bad command does; the
message changes nothing else. The checks here return the parsed payload, a
:class:`Refused` (kind and one-line reason) for the dead letter, or None for what is
nobody's mistake and is left alone:

- an empty payload: how MQTT clears a retained message (a status or a presence removed);
- on ``…/+/+/status``, a collector's presence (``…/collector/{component}/status``): the
  CSMS client reads those (:func:`check_presence`).

=================  ==========================================================================
kind               meaning
=================  ==========================================================================
``bad_topic``      the topic is not in the contract's tree (``gridflex.contract.parse_topic``)
``malformed``      the payload is not JSON or does not validate (the contract's reason)
``wrong_schema``   a valid payload of another schema (a ``command/1`` on a status topic)
``wrong_site``     the payload's ``site`` is not this site
``topic_mismatch`` the payload's asset (kind, component) is not the one its topic names
``unknown_asset``  an asset this site does not have (for a CSMS result: not one of its EVSEs)
=================  ==========================================================================

Readings are the pipeline's to validate and dead-letter (it reads every one); control keeps
them as they come and parses one only when it needs it (``control.live.LiveState``), so it
dead-letters the readings it could not use when it tried (:func:`reading_refusal`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeVar

from gridflex.contract import (
    AssetStatus,
    CollectorStatus,
    ContractError,
    CsmsResult,
    Payload,
    Telemetry,
    parse_payload,
    parse_topic,
)

__all__ = [
    "Refused",
    "check_csms_result",
    "check_presence",
    "check_status",
    "reading_refusal",
]

_P = TypeVar("_P", AssetStatus, CsmsResult, CollectorStatus)


@dataclass(frozen=True, slots=True)
class Refused:
    """Why control refused a message: the dead letter's kind and reason."""

    kind: str
    reason: str


def _parse(payload: bytes, model: type[_P], schema: str) -> _P | Refused:
    try:
        message = parse_payload(payload)
    except ContractError as exc:
        return Refused("malformed", str(exc))
    except Exception as exc:  # RecursionError and the like: one message never stops control
        return Refused("malformed", f"{type(exc).__name__}: {str(exc)[:200]}")
    if not isinstance(message, model):
        return Refused("wrong_schema", f"expected {schema}, got {_schema_of(message)}")
    return message


def _schema_of(message: Payload) -> str:
    return str(getattr(message, "schema_", type(message).__name__))


def _topic(topic: str, leaf: str) -> dict[str, str] | Refused:
    try:
        parts = parse_topic(topic)
    except ContractError as exc:
        return Refused("bad_topic", str(exc))
    if parts.get("leaf") != leaf or "site" not in parts:
        return Refused("bad_topic", f"topic {topic!r:.200} is not a {leaf} topic")
    return parts


def _site_and_topic(
    site_id: str, payload_site: str, pairs: list[tuple[str, str, str]]
) -> Refused | None:
    if payload_site != site_id:
        return Refused("wrong_site", f"site {payload_site!r} is not this one ({site_id!r})")
    mismatches = [
        f"{name} {in_topic!r:.80} in topic, {in_payload!r:.80} in payload"
        for name, in_topic, in_payload in pairs
        if in_topic != in_payload
    ]
    return Refused("topic_mismatch", "; ".join(mismatches)) if mismatches else None


def check_status(
    topic: str, payload: bytes, *, site_id: str, assets: Collection[str]
) -> AssetStatus | Refused | None:
    """An asset status (``…/{kind}/{asset}/status``) of one of ``assets``, or why not.

    None for an empty payload (a retained status cleared) and for a collector's presence,
    which shares the topic filter (see the module docstring).
    """
    if not payload:
        return None
    parts = _topic(topic, "status")
    if isinstance(parts, Refused):
        return parts
    if parts["kind"] == "collector":
        return None
    status = _parse(payload, AssetStatus, "status/1")
    if isinstance(status, Refused):
        return status
    pairs = [("asset", parts["asset"], status.asset), ("kind", parts["kind"], status.kind)]
    refused = _site_and_topic(site_id, status.site, pairs)
    if refused is not None:
        return refused
    if status.asset not in assets:
        return Refused("unknown_asset", f"asset {status.asset!r} is not an asset of this site")
    return status


def check_csms_result(
    topic: str, payload: bytes, *, site_id: str, evses: Collection[str] | None
) -> CsmsResult | Refused:
    """A ``csms-result/1`` on ``…/csms/{asset}/result`` for one of ``evses``, or why not.

    ``evses`` None: any asset (a client that does not know the site's EVSEs).
    """
    parts = _topic(topic, "result")
    if isinstance(parts, Refused):
        return parts
    result = _parse(payload, CsmsResult, "csms-result/1")
    if isinstance(result, Refused):
        return result
    refused = _site_and_topic(site_id, result.site, [("asset", parts["asset"], result.asset)])
    if refused is not None:
        return refused
    if evses is not None and result.asset not in evses:
        return Refused("unknown_asset", f"asset {result.asset!r} is not an EVSE of this site")
    return result


def check_presence(topic: str, payload: bytes, *, site_id: str) -> CollectorStatus | Refused | None:
    """A collector's presence (``…/collector/{component}/status``), or why not.

    None for an empty payload (a retained presence cleared).
    """
    if not payload:
        return None
    parts = _topic(topic, "status")
    if isinstance(parts, Refused):
        return parts
    if parts["kind"] != "collector":
        return Refused("bad_topic", f"topic {topic!r:.200} is not a collector's presence")
    presence = _parse(payload, CollectorStatus, "collector/1")
    if isinstance(presence, Refused):
        return presence
    pairs = [("component", parts["asset"], presence.component)]
    return _site_and_topic(site_id, presence.site, pairs) or presence


def reading_refusal(topic_asset: str, payload: bytes) -> Refused:
    """Why a reading held for ``topic_asset`` could not be used (``control.live``).

    Called only for a payload ``control.live.parse_reading`` could not read (or that names
    another asset): the contract's reason when it has one, else what control needs.
    """
    try:
        message = parse_payload(payload)
    except ContractError as exc:
        return Refused("malformed", str(exc))
    except Exception as exc:
        return Refused("malformed", f"{type(exc).__name__}: {str(exc)[:200]}")
    if not isinstance(message, Telemetry):
        return Refused("wrong_schema", f"expected telemetry/1, got {_schema_of(message)}")
    if message.asset != topic_asset:
        reason = f"asset {topic_asset!r:.80} in topic, {message.asset!r:.80} in payload"
        return Refused("topic_mismatch", reason)
    return Refused("malformed", "not a reading control can use (asset, ts_ms, power_w)")
