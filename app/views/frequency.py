"""Grid frequency page: the 1 s windows with the deadband, and the fleet's response below.

Both charts share one time axis, so a frequency excursion lines up with the power the
fleet moved in answer.
"""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from app import data, ui


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
    col[3].metric("deadband", f"{band.low_hz:.3f} - {band.high_hz:.3f} Hz")
    st.caption(f"deadband from {band.source}; {len(freq)} windows of 1 s shown")

    response = data.fleet_response(con, since)
    x = alt.X("t:T", title="time (UTC)")
    trace = (
        alt.Chart(freq.rename({"window_start": "t"}))
        .mark_line()
        .encode(x=x, y=alt.Y("mean_hz:Q", title="Hz", scale=alt.Scale(zero=False)))
    )
    lines = pl.DataFrame(
        {"hz": [band.low_hz, nominal, band.high_hz], "line": ["deadband", "nominal", "deadband"]}
    )
    rules = (
        alt.Chart(lines)
        .mark_rule(strokeDash=[4, 4])
        .encode(y="hz:Q", color=alt.Color("line:N", title=None))
    )
    power = (
        alt.Chart(response)
        .mark_line(color="#d62728")
        .encode(x=x, y=alt.Y("power_w:Q", title="fleet power W (+ charge)"))
    )
    st.subheader("Frequency and the fleet's response")
    st.altair_chart(
        alt.vconcat(
            (trace + rules).properties(height=260), power.properties(height=200)
        ).resolve_scale(x="shared"),
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
