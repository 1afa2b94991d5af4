"""Grid frequency page: the 1 s windows with the deadband, and the fleet's response.

Frequency (left axis) and the fleet's summed power (right axis) are drawn on one time axis,
so a frequency excursion lines up with the power the fleet moved in answer.
"""

from __future__ import annotations

from typing import Final

import altair as alt
import polars as pl
import streamlit as st

from app import data, ui

FREQ_COLOR: Final = "#1f77b4"
POWER_COLOR: Final = "#d62728"


def main() -> None:
    """Render the page."""
    st.title("Grid frequency")
    found = ui.history()
    if found is None:
        return
    folder, con = found
    since = data.since(
        data.newest_ms(con, "grid_frequency", "window_start_ms"), ui.time_window("frequency_window")
    )
    freq = data.frequency(con, since)
    if freq.is_empty():
        st.info("No grid frequency windows in this history yet.")
        return
    nominal = float(freq["nominal_hz"][-1])
    band = data.deadband(folder, nominal)
    last = freq.row(-1, named=True)
    col = st.columns(4)
    col[0].metric(
        "last window", f"{last['mean_hz']:.3f} Hz", f"{last['deviation_hz'] * 1000:+.1f} mHz"
    )
    col[1].metric("lowest", data.fmt(freq["min_hz"].min(), ".3f", " Hz"))
    col[2].metric("highest", data.fmt(freq["max_hz"].max(), ".3f", " Hz"))
    if band.under_hz == band.over_hz:
        width = f"±{band.over_hz * 1000:.0f} mHz"
    else:
        width = f"-{band.under_hz * 1000:.0f} / +{band.over_hz * 1000:.0f} mHz"
    col[3].metric("deadband", width)
    st.caption(
        f"deadband {band.low_hz:.3f} - {band.high_hz:.3f} Hz ({band.source}); "
        f"{len(freq)} windows of 1 s shown"
    )

    response = data.fleet_response(con, since)
    x = alt.X("t:T", title="time (UTC)")
    hz = alt.Y(
        "mean_hz:Q",
        title="frequency Hz",
        scale=alt.Scale(zero=False),
        axis=alt.Axis(titleColor=FREQ_COLOR),
    )
    trace = (
        alt.Chart(freq.rename({"window_start": "t"}))
        .mark_line(color=FREQ_COLOR)
        .encode(x=x, y=hz, tooltip=["t", "mean_hz", "deviation_hz"])
    )
    lines = pl.DataFrame(
        {
            "mean_hz": [band.low_hz, nominal, band.high_hz],
            "line": ["deadband", "nominal", "deadband"],
        }
    )
    rules = (
        alt.Chart(lines)
        .mark_rule(color="gray", strokeDash=[4, 4])
        .encode(y="mean_hz:Q", tooltip=["line", "mean_hz"])
    )
    power = (
        alt.Chart(response)
        .mark_line(color=POWER_COLOR)
        .encode(
            x=x,
            y=alt.Y(
                "power_w:Q",
                title="fleet power W (+ charge)",
                axis=alt.Axis(titleColor=POWER_COLOR),
            ),
            tooltip=["t", "power_w", "assets"],
        )
    )
    st.subheader("Frequency, deadband and the fleet's response")
    st.altair_chart(
        alt.layer(trace + rules, power).resolve_scale(y="independent").properties(height=360),
        width="stretch",
    )
    st.subheader("Rate of change of frequency")
    st.altair_chart(
        alt.Chart(freq.rename({"window_start": "t"}))
        .mark_line()
        .encode(x=x, y=alt.Y("rocof_hz_per_s:Q", title="Hz/s")),
        width="stretch",
    )


main()
