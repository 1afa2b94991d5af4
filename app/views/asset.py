"""Asset page: one asset's history (power, setpoint, SoC) and its forecast against the SoC."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from app import data, ui


def main() -> None:
    """Render the page."""
    st.title("Asset")
    found = ui.history()
    if found is None:
        return
    _, con = found
    names = data.assets(con)
    if not names:
        st.info("No telemetry in this history yet: no asset to show.")
        return
    asset = st.selectbox("asset", names, key="asset")
    if asset is None:
        return
    since = data.since(data.newest_ms(con, "telemetry", "ts_ms"), ui.time_window("asset_window"))
    readings = data.asset_history(con, asset, since)
    if readings.is_empty():
        st.info(f"No readings of {asset} in this time window.")
        return
    last = readings.row(-1, named=True)
    imported, exported = data.register_energy(readings)
    col = st.columns(5)
    col[0].metric("power", data.fmt(last["power_w"], "+.0f", " W"))
    col[1].metric("SoC", data.fmt(last["soc_pct"], ".1f", " %"))
    col[2].metric("status", last["status"] or "n/a")
    col[3].metric("readings", len(readings))
    col[4].metric("register energy", f"+{imported:.0f} / -{exported:.0f} Wh")
    x = alt.X("ts:T", title="time (UTC)")
    st.subheader("Power and setpoint")
    power = readings.select("ts", "power_w", "setpoint_w").unpivot(
        index="ts", variable_name="series", value_name="w"
    )
    st.altair_chart(
        alt.Chart(power.drop_nulls())
        .mark_line()
        .encode(x=x, y=alt.Y("w:Q", title="W (+ charge)"), color="series:N"),
        width="stretch",
    )
    st.subheader("State of charge: measured and forecast")
    forecast = data.asset_forecast(con, asset, since)
    soc = readings.select("ts", pl.col("soc_pct").alias("pct"), pl.lit("measured").alias("series"))
    layers = [soc]
    if forecast.is_empty():
        st.caption("No forecasts for this asset.")
    else:
        layers += [
            forecast.select(
                "ts",
                pl.col("soc_at_departure_pct").alias("pct"),
                pl.lit("forecast at departure").alias("series"),
            ),
            forecast.select(
                "ts", pl.col("target_soc_pct").alias("pct"), pl.lit("target").alias("series")
            ),
        ]
        newest = forecast.row(-1, named=True)
        st.caption(
            f"newest forecast: {newest['soc_at_departure_pct']} % at departure "
            f"{newest['departure']} (target {newest['target_soc_pct']} %)"
        )
    st.altair_chart(
        alt.Chart(pl.concat(layers).drop_nulls())
        .mark_line()
        .encode(
            x=x,
            y=alt.Y("pct:Q", title="%", scale=alt.Scale(domain=[0, 100])),
            color="series:N",
        ),
        width="stretch",
    )
    st.subheader("Readings")
    st.dataframe(readings.sort("ts_ms", descending=True).head(500), hide_index=True)


main()
