"""Test helper: write a small, known history with the pipeline's own Parquet writer."""

from __future__ import annotations

from pathlib import Path

from gridflex.contract import DispatchAck, DispatchCommand, Forecast, GridFrequency, Telemetry
from pipelines.history_sink import (
    ParquetStreamWriter,
    ack_row,
    command_row,
    forecast_row,
    frequency_row,
    telemetry_row,
)

#: A 15-minute boundary (2026-11-25T12:00:00Z) in epoch ms.
BOUNDARY_MS = 1_795_608_000_000
STEP_WH = 10.0


def make_history(data_dir: Path, readings: int = 20) -> None:
    """Two inverters, one reading a second from 10 s before ``BOUNDARY_MS``.

    ``inv-a`` imports ``STEP_WH`` per reading from 1000 Wh; ``inv-b`` exports the same from
    500 Wh. Grid frequency windows: 50.00 Hz, then 49.80 Hz from the boundary on.
    """
    tel = ParquetStreamWriter(data_dir, "telemetry", ts_column="ts_ms", name="t")
    freq = ParquetStreamWriter(data_dir, "grid_frequency", ts_column="window_start_ms", name="f")
    start = BOUNDARY_MS - 10_000
    for i in range(readings):
        ts = start + i * 1000
        for asset, power_w, imp, exp, status in (
            ("inv-a", 3600.0, 1000 + i * STEP_WH, 0.0, "charging"),
            ("inv-b", -3600.0, 0.0, 500 + i * STEP_WH, "discharging"),
        ):
            reading = Telemetry(
                site="s1", asset=asset, kind="inverter", ts_ms=ts, seq=i, boot="b1",
                power_w=power_w, freq_hz=50.0, soc_pct=50.0, status=status,
                energy_import_wh=imp, energy_export_wh=exp,
            )  # fmt: skip
            tel.add([telemetry_row(reading)])
        mean_hz = 50.0 if ts < BOUNDARY_MS else 49.8
        window = GridFrequency(
            site="s1", ts_ms=ts + 1000, window_start_ms=ts, window_end_ms=ts + 1000,
            nominal_hz=50.0, mean_hz=mean_hz, min_hz=mean_hz, max_hz=mean_hz,
            deviation_hz=round(mean_hz - 50.0, 6), rocof_hz_per_s=0.0, samples=10, assets=2,
        )  # fmt: skip
        freq.add([frequency_row(window)])
    tel.flush()
    freq.flush()


#: What :func:`add_dispatch` writes: (asset, command id, setpoint W, ack result, applied W,
#: clamp rules, latency from issue in ms); a result of None is a command without an ack.
DISPATCH = (
    ("inv-a", "cmd-a1", -2000.0, "applied", -2000.0, [], 120),
    ("inv-b", "cmd-b1", -6000.0, "clamped", -5000.0, ["max_discharge_w"], 340),
    ("inv-b", "cmd-b2", -1000.0, None, None, [], None),
)
#: The forecast :func:`add_dispatch` writes for ``inv-a``: SoC expected at departure.
SOC_AT_DEPARTURE_PCT = 72.5


def add_dispatch(data_dir: Path) -> None:
    """Add commands, acks and forecasts at ``BOUNDARY_MS`` to a :func:`make_history` folder.

    The commands of :data:`DISPATCH` are issued 1 s apart from the boundary on (the droop
    answering the 49.80 Hz step); ``inv-a`` gets one forecast a second with V2X and
    :data:`SOC_AT_DEPARTURE_PCT`, ``inv-b`` none.
    """
    cmds = ParquetStreamWriter(data_dir, "commands", ts_column="issued_ms", name="c")
    acks = ParquetStreamWriter(data_dir, "acks", ts_column="ts_ms", name="a")
    fcs = ParquetStreamWriter(data_dir, "forecasts", ts_column="ts_ms", name="fc")
    for i, (asset, cid, setpoint_w, result, applied_w, rules, latency) in enumerate(DISPATCH):
        issued = BOUNDARY_MS + i * 1000
        command = DispatchCommand(
            site="s1", asset=asset, ts_ms=issued - 50, seq=10 + i, boot="b1", command_id=cid,
            issued_ms=issued, setpoint_w=setpoint_w, valid_until_ms=issued + 15_000,
            mode="droop", reason="droop: 49.800 Hz", freq_hz=49.8,
        )  # fmt: skip
        cmds.add([command_row(command)])
        if result is not None:
            ack = DispatchAck(
                site="s1", asset=asset, ts_ms=issued + latency, seq=10 + i, command_id=cid,
                result=result, reason=None if result == "applied" else "clamped",
                requested_w=setpoint_w, applied_w=applied_w, readback_w=applied_w,
                rules=rules, issued_ms=issued, latency_from_issued_ms=latency,
                latency_from_telemetry_ms=latency + 50,
            )  # fmt: skip
            acks.add([ack_row(ack)])
    for i in range(5):
        ts = BOUNDARY_MS + i * 1000
        forecast = Forecast(
            site="s1", asset="inv-a", kind="inverter", ts_ms=ts, seq=10 + i, soc_pct=50.0,
            capacity_wh=10_000.0, power_w=3600.0, setpoint_w=3600.0,
            departure_ms=BOUNDARY_MS + 3_600_000, target_soc_pct=80.0,
            soc_at_departure_pct=SOC_AT_DEPARTURE_PCT, max_charge_w=5000.0,
            max_discharge_w=4000.0, discharge_energy_wh=2500.0, v2x=True, needs_source="ev",
        )  # fmt: skip
        fcs.add([forecast_row(forecast)])
    for writer in (cmds, acks, fcs):
        writer.flush()


# ----------------------------------------------------------------- notebook histories

#: Droop of a 10 kW inverter at 49.80 Hz (50 Hz nominal, IEEE 1547 defaults), W.
DROOP_10KW_AT_49_80_W = -656.0

SITE_TOML = """\
[site]
id = "s1"
nominal_frequency_hz = 50

[history]
dir = "."

[dispatch]
mode = "droop"

[[assets]]
id = "inv-a"
kind = "inverter"
host = "127.0.0.1"
max_charge_w = 10000
max_discharge_w = 10000
capacity_wh = 60000

[[assets]]
id = "inv-b"
kind = "inverter"
host = "127.0.0.1"
port = 1503
max_charge_w = 10000
max_discharge_w = 10000
capacity_wh = 60000

[[assets]]
id = "cs-1"
kind = "evse"
max_charge_w = 11000
max_discharge_w = 11000
"""


def _reading(asset: str, kind: str, ts: int, seq: int, **fields: object) -> Telemetry:
    values: dict[str, object] = {"power_w": 0.0, **fields}
    return Telemetry(site="s1", asset=asset, kind=kind, ts_ms=ts, seq=seq, boot="b1", **values)  # type: ignore[arg-type]


def _window(ts: int, mean_hz: float) -> GridFrequency:
    return GridFrequency(
        site="s1", ts_ms=ts + 1000, window_start_ms=ts, window_end_ms=ts + 1000,
        nominal_hz=50.0, mean_hz=mean_hz, min_hz=mean_hz, max_hz=mean_hz,
        deviation_hz=round(mean_hz - 50.0, 6), rocof_hz_per_s=0.0, samples=5, assets=2,
    )  # fmt: skip


def make_response_history(data_dir: Path, *, event_s: int = 10, site_toml: str = SITE_TOML) -> None:
    """A site file and one under-frequency event: 10 s at 50.00 Hz, ``event_s`` at 49.80 Hz.

    Readings every 200 ms from 10 s before ``BOUNDARY_MS``. The law expects
    ``DROOP_10KW_AT_49_80_W`` of each inverter; ``inv-a`` delivers all of it and ``inv-b``
    half, both from the event's second window on (0 W in its first, and before it).
    ``cs-1`` charges a charge-only car at a constant 5 kW (no response expected or given).
    The event's windows after the first: expected -1312 W, delivered -984 W. ``site_toml``
    replaces the site file (``SITE_TOML``: droop with the standard's defaults).
    """
    (data_dir / "site.toml").write_text(site_toml, encoding="utf-8")
    tel = ParquetStreamWriter(data_dir, "telemetry", ts_column="ts_ms", name="t")
    freq = ParquetStreamWriter(data_dir, "grid_frequency", ts_column="window_start_ms", name="f")
    start = BOUNDARY_MS - 10_000
    for i in range((10 + event_s) * 5):
        ts = start + i * 200
        in_event = ts >= BOUNDARY_MS
        hz = 49.8 if in_event else 50.0
        responding = ts >= BOUNDARY_MS + 1000
        rows = [
            _reading("inv-a", "inverter", ts, i, freq_hz=hz,
                     power_w=DROOP_10KW_AT_49_80_W if responding else 0.0),
            _reading("inv-b", "inverter", ts, i, freq_hz=hz,
                     power_w=DROOP_10KW_AT_49_80_W / 2 if responding else 0.0),
            _reading("cs-1", "evse", ts, i, power_w=5000.0, soc_pct=40.0, transaction_id="tx-1"),
        ]  # fmt: skip
        tel.add([telemetry_row(r) for r in rows])
        if i % 5 == 0:
            freq.add([frequency_row(_window(ts, hz))])
    tel.flush()
    freq.flush()


def make_metered_history(data_dir: Path, readings: int = 20) -> None:
    """Two inverters importing 36 kW, one reading a second from 10 s before ``BOUNDARY_MS``.

    ``inv-a``'s register counts what its power says (10 Wh a second); ``inv-b``'s counts
    5 % more (10.5 Wh a second). With 20 readings, the interval before the boundary holds
    10 one-second segments (the reading on the boundary ends the last of them) and the one
    after it 9: inv-a 100 and 90 Wh on both sides, inv-b 105 and 94.5 Wh by register
    against 100 and 90 Wh of integrated power.
    """
    tel = ParquetStreamWriter(data_dir, "telemetry", ts_column="ts_ms", name="t")
    start = BOUNDARY_MS - 10_000
    for i in range(readings):
        ts = start + i * 1000
        rows = [
            _reading("inv-a", "inverter", ts, i, power_w=36_000.0,
                     energy_import_wh=1000 + i * 10.0, energy_export_wh=0.0),
            _reading("inv-b", "inverter", ts, i, power_w=36_000.0,
                     energy_import_wh=2000 + i * 10.5, energy_export_wh=0.0),
        ]  # fmt: skip
        tel.add([telemetry_row(r) for r in rows])
    tel.flush()


#: Departure of ``cs-1``'s car in :func:`make_forecast_history`.
DEPARTURE_MS = BOUNDARY_MS
#: ``(seconds before departure, SoC forecast at departure)`` of ``cs-1``; it reaches 80 %.
FORECASTS_BEFORE_DEPARTURE = ((7200, 84.0), (1800, 81.0), (300, 80.5), (60, 79.0))
SOC_AT_DEPARTURE_PCT = 80.0


def _forecast(
    asset: str, ts: int, departure_ms: int | None, soc_at_departure: float | None
) -> Forecast:
    return Forecast(
        site="s1", asset=asset, kind="evse" if departure_ms else "inverter", ts_ms=ts, seq=0,
        soc_pct=50.0, capacity_wh=60_000.0, power_w=7000.0, setpoint_w=7000.0,
        departure_ms=departure_ms, target_soc_pct=80.0 if departure_ms else None,
        soc_at_departure_pct=soc_at_departure, max_charge_w=11_000.0, max_discharge_w=0.0,
        discharge_energy_wh=0.0, v2x=False,
        needs_source="ev" if departure_ms else "battery",
    )  # fmt: skip


def make_forecast_history(data_dir: Path) -> None:
    """Forecasts of two cars and a battery; the history covers ``cs-1``'s departure only.

    ``cs-1``: forecasts ``FORECASTS_BEFORE_DEPARTURE`` (errors +4, +1, +0.5, -1 points),
    readings from 10 s before ``DEPARTURE_MS`` to 5 s after it, SoC 80 % up to departure
    and 100 % after it (a reading after departure must not count). ``cs-2``: one forecast
    for a departure after the end of the history (pending). ``inv-a``: a battery forecast
    without departure (not a car: left out).
    """
    fc = ParquetStreamWriter(data_dir, "forecasts", ts_column="ts_ms", name="fc")
    tel = ParquetStreamWriter(data_dir, "telemetry", ts_column="ts_ms", name="t")
    rows = [
        _forecast("cs-1", DEPARTURE_MS - s * 1000, DEPARTURE_MS, soc)
        for s, soc in FORECASTS_BEFORE_DEPARTURE
    ]
    rows.append(_forecast("cs-2", DEPARTURE_MS - 60_000, DEPARTURE_MS + 3_600_000, 75.0))
    rows.append(_forecast("inv-a", DEPARTURE_MS - 60_000, None, None))
    fc.add([forecast_row(f) for f in rows])
    for i in range(16):
        ts = DEPARTURE_MS - 10_000 + i * 1000
        soc = SOC_AT_DEPARTURE_PCT if ts <= DEPARTURE_MS else 100.0
        tel.add([telemetry_row(_reading("cs-1", "evse", ts, i, power_w=7000.0, soc_pct=soc,
                                        transaction_id="tx-1"))])  # fmt: skip
        tel.add([telemetry_row(_reading("cs-2", "evse", ts, i, power_w=7000.0, soc_pct=50.0,
                                        transaction_id="tx-2"))])  # fmt: skip
    fc.flush()
    tel.flush()
