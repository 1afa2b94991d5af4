"""Fleet page: each asset's power, SoC, status, V2X capability and flexibility, live.

With a site file (``gridflex app --site FILE``) the view shows the broker's newest readings
and forecasts (:mod:`app.live`) and refreshes every :data:`LIVE_REFRESH_S` seconds;
without one it shows the newest history and refreshes every :data:`REFRESH_S` seconds
(the history lags by the pipeline's flush interval). Either is a Streamlit fragment: the
rest of the page does not rerun.
"""

from __future__ import annotations

from typing import Final

import altair as alt
import polars as pl
import streamlit as st

from app import data, ui
from app.live import LiveFleet

REFRESH_S: Final = 5
LIVE_REFRESH_S: Final = 1
#: The per-asset table's columns, in order.
TABLE_COLUMNS: Final = [
    "asset", "kind", "status", "power_w", "setpoint_w", "soc_pct", "v2x", "max_charge_w",
    "max_discharge_w", "discharge_energy_wh", "must_charge_w", "last_reading", "device_status",
]  # fmt: skip


def fleet_view() -> None:
    """The live view when the app has a site file, else the history's."""
    feed = ui.live_feed()
    if feed is None:
        history_view()
    else:
        live_view(feed)


@st.fragment(run_every=LIVE_REFRESH_S)
def live_view(feed: LiveFleet) -> None:
    """The fleet from the broker's newest messages."""
    table = feed.frame()
    where = feed.source.url
    if table.is_empty():
        state = "connected" if feed.connected else "not connected yet"
        st.info(f"Live from {where} ({state}): no asset has reported yet.")
        return
    draw(table, f"live from {where}, refreshes every {LIVE_REFRESH_S} s")


@st.fragment(run_every=REFRESH_S)
def history_view() -> None:
    """The fleet from the newest history."""
    found = ui.history()
    if found is None:
        return
    _, con = found
    table = data.fleet(con)
    if table.is_empty():
        st.info("No telemetry in this history yet: no asset has reported.")
        return
    draw(table, f"from the history, refreshes every {REFRESH_S} s")


def draw(table: pl.DataFrame, source: str) -> None:
    """Metrics, power and SoC charts and the per-asset table (``app.data.fleet``'s columns)."""
    col = st.columns(5)
    col[0].metric("assets", len(table))
    col[1].metric("fleet power", data.fmt(table["power_w"].sum(), "+.1f", " kW", scale=1e-3))
    col[2].metric("mean SoC", data.fmt(table["soc_pct"].mean(), ".1f", " %"))
    col[3].metric("V2X capable", int(table["v2x"].fill_null(False).sum()))
    available = table["max_discharge_w"].fill_null(0).sum()
    col[4].metric("discharge available", data.fmt(available, ".1f", " kW", scale=1e-3))
    newest = table.sort("ts_ms")["last_reading"][-1]
    st.caption(f"newest reading {newest} ({source})")
    left, right = st.columns(2)
    left.subheader("Power (+ charge, - discharge)")
    left.altair_chart(
        alt.Chart(table)
        .mark_bar()
        .encode(
            x=alt.X("asset:N", sort=None),
            y=alt.Y("power_w:Q", title="W"),
            color=alt.Color("status:N"),
            tooltip=["asset", "kind", "power_w", "setpoint_w", "status"],
        ),
        width="stretch",
    )
    right.subheader("State of charge")
    right.altair_chart(
        alt.Chart(table.filter(pl.col("soc_pct").is_not_null()))
        .mark_bar()
        .encode(
            x=alt.X("asset:N", sort=None),
            y=alt.Y("soc_pct:Q", title="%", scale=alt.Scale(domain=[0, 100])),
            tooltip=["asset", "soc_pct"],
        ),
        width="stretch",
    )
    st.subheader("Assets")
    st.dataframe(table.select(TABLE_COLUMNS), hide_index=True)


st.title("Fleet")
fleet_view()
