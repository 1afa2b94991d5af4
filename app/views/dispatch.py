"""Dispatch page: commands and their acks on a timeline, the clamps, the latency histogram."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from app import data, ui


def main() -> None:
    """Render the page."""
    st.title("Dispatch")
    found = ui.history()
    if found is None:
        return
    _, con = found
    since = data.since(
        data.newest_ms(con, "commands", "issued_ms"), ui.time_window("dispatch_window")
    )
    timeline = data.dispatch_timeline(con, since)
    if timeline.is_empty():
        st.info("No dispatch commands in this history (dispatch off, or nothing decided yet).")
        return
    results = dict(data.acks_by_result(con, since).iter_rows())
    lat = data.latencies(con, since)
    col = st.columns(5)
    col[0].metric("commands", len(timeline))
    col[1].metric("applied", results.get("applied", 0))
    col[2].metric("clamped", results.get("clamped", 0))
    col[3].metric("rejected or failed", results.get("rejected", 0) + results.get("failed", 0))
    median = lat["latency_from_issued_ms"].median()
    col[4].metric("median latency", data.fmt(median, ".0f", " ms"))

    st.subheader("Commands and acks")
    st.altair_chart(
        alt.Chart(timeline)
        .mark_point(filled=True, size=60)
        .encode(
            x=alt.X("issued:T", title="issued (UTC)"),
            y=alt.Y("asset:N"),
            color=alt.Color("result:N"),
            shape=alt.Shape("mode:N"),
            tooltip=["asset", "command_id", "setpoint_w", "applied_w", "result", "reason"],
        ),
        width="stretch",
    )
    st.subheader("Setpoints: requested and applied")
    setpoints = timeline.select(
        "issued", "asset", pl.col("setpoint_w").alias("requested_w"), "applied_w"
    ).unpivot(index=["issued", "asset"], variable_name="series", value_name="w")
    st.altair_chart(
        alt.Chart(setpoints.drop_nulls())
        .mark_line(interpolate="step-after", point=True)
        .encode(
            x=alt.X("issued:T", title="issued (UTC)"),
            y=alt.Y("w:Q", title="W (+ charge)"),
            color="asset:N",
            strokeDash="series:N",
            tooltip=["asset", "series", "w", "issued"],
        ),
        width="stretch",
    )
    left, right = st.columns(2)
    left.subheader("Clamps")
    rules = data.clamp_rules(con, since)
    if rules.is_empty():
        left.write("No command was clamped.")
    else:
        left.altair_chart(
            alt.Chart(rules).mark_bar().encode(x="acks:Q", y=alt.Y("rule:N", sort="-x")),
            width="stretch",
        )
    right.subheader("Latency: command issued to confirmed write")
    if lat.is_empty():
        right.write("No command was written yet.")
    else:
        right.altair_chart(
            alt.Chart(lat)
            .mark_bar()
            .encode(
                x=alt.X("latency_from_issued_ms:Q", bin=alt.Bin(maxbins=30), title="ms"),
                y=alt.Y("count():Q", title="acks"),
            ),
            width="stretch",
        )
    st.subheader("Newest commands")
    st.dataframe(
        timeline.sort("issued_ms", descending=True).head(500).drop("issued_ms"),
        hide_index=True,
    )


main()
