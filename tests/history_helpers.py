"""Test helper: write a small, known history with the pipeline's own Parquet writer."""

from __future__ import annotations

from pathlib import Path

from gridflex.contract import GridFrequency, Telemetry
from pipelines.history_sink import ParquetStreamWriter, frequency_row, telemetry_row

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
        for asset, power_w, imp, exp in (
            ("inv-a", 3600.0, 1000 + i * STEP_WH, 0.0),
            ("inv-b", -3600.0, 0.0, 500 + i * STEP_WH),
        ):
            reading = Telemetry(
                site="s1", asset=asset, kind="inverter", ts_ms=ts, seq=i, boot="b1",
                power_w=power_w, freq_hz=50.0, soc_pct=50.0,
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
