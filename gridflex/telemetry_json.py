"""Telemetry JSON written without a pydantic model, byte for byte the model's (pure).

The collectors publish one ``telemetry/1`` message per reading: 5,000 a second from the
Modbus collector at 1,000 inverters, 1,000 a second from the CSMS at 1,000 stations.
Validating and dumping a ``gridflex.contract.Telemetry`` model costs ~10-30 us per
message on the development VM; ``TelemetryJson`` checks the identifiers once per asset,
keeps the constant parts encoded, and writes a message in a fraction of that.

The bytes are exactly what ``Telemetry(...).to_json()`` writes (same keys in the same
order, None left out; tests compare both over many readings). Whenever a value is outside
what the fast path can vouch for — a number outside the contract's range, not a plain
``float``/``int``, or needing an exponent (pydantic spells ``1e-05`` as ``0.00001``), a
``status`` outside the contract's vocabulary, a string that is not plain printable ASCII —
the model is built instead, so the result, or
the ``pydantic.ValidationError``, is exactly the model's. A number that is not finite
(NaN, infinity) raises ``ValueError``: the model would publish it as ``null``.
"""

from __future__ import annotations

import math
from typing import Final

from gridflex.contract import (
    TELEMETRY_STATUSES,
    AssetKind,
    EvChargingNeeds,
    Telemetry,
    TelemetryStatus,
    telemetry_topic,
)

__all__ = ["NUMBER_FIELDS", "Numbers", "TelemetryJson"]

#: The optional numbers of a reading, in ``Telemetry``'s field (and JSON) order.
NUMBER_FIELDS: Final = (
    "freq_hz",
    "voltage_v",
    "current_a",
    "soc_pct",
    "energy_import_wh",
    "energy_export_wh",
    "temp_c",
    "setpoint_w",
)
#: Values of ``NUMBER_FIELDS``, in that order (None: not measured).
Numbers = tuple[
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
]
_KEYS: Final = tuple(f',"{name}":' for name in NUMBER_FIELDS)


def _plain_ascii(text: str) -> bool:
    """Printable ASCII without quote or backslash: JSON-encoded as itself, by anyone."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _number(value: object) -> str | None:
    """JSON of a finite number as pydantic writes a float field, or None when not sure."""
    if type(value) is int:
        value = float(value)
    if type(value) is not float or not math.isfinite(value):
        return None
    text = repr(value)
    return None if "e" in text else text


def _in_range(numbers: Numbers) -> bool:
    """The contract's bounds: 0 < freq < 100, voltage and energy >= 0, SoC 0-100.

    False for NaN too (comparisons with NaN are false).
    """
    freq, voltage, _current, soc, energy_import, energy_export, _temp, _setpoint = numbers
    return (
        (freq is None or 0.0 < freq < 100.0)
        and (voltage is None or voltage >= 0.0)
        and (soc is None or 0.0 <= soc <= 100.0)
        and (energy_import is None or energy_import >= 0.0)
        and (energy_export is None or energy_export >= 0.0)
    )


class TelemetryJson:
    """Writes one asset's telemetry messages (module docstring).

    Raises ``pydantic.ValidationError`` at construction for an identifier the contract
    refuses, and from ``encode`` for values it refuses.
    """

    def __init__(self, site: str, asset: str, kind: AssetKind, boot: str) -> None:
        Telemetry(site=site, asset=asset, kind=kind, ts_ms=0, seq=0, boot=boot, power_w=0.0)
        self.site, self.asset, self.kind, self.boot = site, asset, kind, boot
        self.topic = telemetry_topic(site, kind, asset)
        # site and asset ids are [A-Za-z0-9_-] (checked above): JSON-encoded as themselves
        self._head = f'{{"schema":"telemetry/1","site":"{site}","asset":"{asset}","kind":"{kind}"'
        self._boot = boot if _plain_ascii(boot) else None
        self._needs: EvChargingNeeds | None = None
        self._needs_json = ""

    def model(
        self,
        *,
        ts_ms: int,
        seq: int,
        power_w: float,
        numbers: Numbers,
        status: TelemetryStatus | None = None,
        device_status: str | None = None,
        transaction_id: str | None = None,
        ev: EvChargingNeeds | None = None,
    ) -> Telemetry:
        """The ``Telemetry`` model of one reading (validated by pydantic)."""
        freq, voltage, current, soc, energy_import, energy_export, temp, setpoint = numbers
        return Telemetry(
            site=self.site,
            asset=self.asset,
            kind=self.kind,
            ts_ms=ts_ms,
            seq=seq,
            boot=self.boot,
            power_w=power_w,
            freq_hz=freq,
            voltage_v=voltage,
            current_a=current,
            soc_pct=soc,
            energy_import_wh=energy_import,
            energy_export_wh=energy_export,
            temp_c=temp,
            setpoint_w=setpoint,
            status=status,
            device_status=device_status,
            transaction_id=transaction_id,
            ev=ev,
        )

    def encode(
        self,
        *,
        ts_ms: int,
        seq: int,
        power_w: float,
        numbers: Numbers,
        status: TelemetryStatus | None = None,
        device_status: str | None = None,
        transaction_id: str | None = None,
        ev: EvChargingNeeds | None = None,
    ) -> bytes:
        """The JSON bytes of ``model(...).to_json()`` for the same arguments."""
        encoded = self._fast(
            ts_ms,
            seq,
            power_w,
            numbers,
            status=status,
            device_status=device_status,
            transaction_id=transaction_id,
            ev=ev,
        )
        if encoded is not None:
            return encoded
        for name, value in zip(("power_w", *NUMBER_FIELDS), (power_w, *numbers), strict=True):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} {value} is not a finite number")
        return self.model(
            ts_ms=ts_ms,
            seq=seq,
            power_w=power_w,
            numbers=numbers,
            status=status,
            device_status=device_status,
            transaction_id=transaction_id,
            ev=ev,
        ).to_json()

    def _ev_json(self, needs: EvChargingNeeds | None) -> str:
        if needs is None:
            return ""
        if needs is not self._needs:
            self._needs = needs
            self._needs_json = ',"ev":' + needs.model_dump_json(exclude_none=True)
        return self._needs_json

    def _fast(
        self,
        ts_ms: int,
        seq: int,
        power_w: float,
        numbers: Numbers,
        *,
        status: str | None,
        device_status: str | None,
        transaction_id: str | None,
        ev: EvChargingNeeds | None,
    ) -> bytes | None:
        if (
            self._boot is None
            or type(ts_ms) is not int
            or ts_ms < 0
            or type(seq) is not int
            or seq < 0
        ):
            return None
        power = _number(power_w)
        if power is None or not _in_range(numbers):
            return None
        parts = [self._head, ',"ts_ms":', str(ts_ms), ',"seq":', str(seq), ',"boot":"']
        parts += [self._boot, '","power_w":', power]
        for key, value in zip(_KEYS, numbers, strict=True):
            if value is not None:
                text = _number(value)
                if text is None:
                    return None
                parts += [key, text]
        if status is not None and status not in TELEMETRY_STATUSES:
            return None
        for name, string in (
            ("status", status),
            ("device_status", device_status),
            ("transaction_id", transaction_id),
        ):
            if string is None:
                continue
            if not _plain_ascii(string):
                return None
            parts += [',"', name, '":"', string, '"']
        parts += [self._ev_json(ev), "}"]
        return "".join(parts).encode()
