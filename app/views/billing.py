"""Billing page: settlements per session and interval, totals, and the CSV to download."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from app import data, ui


def main() -> None:
    """Render the page."""
    st.title("Billing")
    found = ui.history()
    if found is None:
        return
    _, con = found
    table = data.settlements(con)
    if table is None:
        st.warning("No settlements view in this gridflex: billing views are not installed.")
        return
    if table.is_empty():
        st.info("No settlements: no reading with meter registers in this history yet.")
        return
    totals = data.settlement_totals(table)
    flagged = table.filter(pl.col("quality") != "ok")
    col = st.columns(4)
    col[0].metric("energy imported", f"{totals['energy_import_wh'].sum() / 1000:.3f} kWh")
    col[1].metric("energy exported", f"{totals['energy_export_wh'].sum() / 1000:.3f} kWh")
    col[2].metric("intervals", table["interval_start_ms"].n_unique())
    col[3].metric("flagged rows", len(flagged))
    st.caption(
        "Energy from the meters' cumulative registers, apportioned to each interval; rows "
        "with a gap or a register reset are flagged in `quality`, never filled in."
    )
    st.subheader("Energy per interval (+ import, - export)")
    interval = pl.col("interval_start").dt.strftime("%Y-%m-%d %H:%M").alias("interval")
    long = pl.concat(
        [
            table.select(interval, "asset", pl.col("energy_import_wh").alias("wh")),
            table.select(interval, "asset", (-pl.col("energy_export_wh")).alias("wh")),
        ]
    )
    st.altair_chart(
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("interval:O", title="interval start (UTC)"),
            y=alt.Y("sum(wh):Q", title="Wh"),
            color="asset:N",
            tooltip=["asset", "interval", "sum(wh)"],
        ),
        width="stretch",
    )
    st.subheader("Totals per asset")
    st.dataframe(totals, hide_index=True)
    sessions = data.sessions(con)
    if sessions is not None and not sessions.is_empty():
        st.subheader("Charging sessions")
        st.dataframe(sessions, hide_index=True)
    st.subheader("Settlements")
    st.download_button(
        "Download settlements (CSV)",
        table.drop("interval_start").write_csv(),
        file_name="settlements.csv",
        mime="text/csv",
    )
    st.dataframe(table, hide_index=True)


main()
