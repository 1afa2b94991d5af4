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
