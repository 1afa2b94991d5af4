"""gridflex analytics app (Streamlit): grid frequency and per-asset energy from the history.

Run with ``gridflex app --data-dir DIR`` (or ``streamlit run app/streamlit_app.py -- --data-dir
DIR``). It only reads the Parquet history through the DuckDB views of ``gridflex.history``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import streamlit as st

from gridflex.history import connect


def _data_dir() -> Path:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("gridflex-demo"))
    args, _ = parser.parse_known_args(sys.argv[1:])
    return Path(args.data_dir)


def main() -> None:
    """Render the app."""
    st.set_page_config(page_title="gridflex", layout="wide")
    st.title("gridflex: grid frequency and fleet energy")
    data_dir = Path(st.sidebar.text_input("history folder", str(_data_dir())))
    if not data_dir.exists():
        st.warning(f"No history folder at {data_dir}. Run `make demo` first.")
        return
    con = connect(data_dir)
    freq = con.sql(
        "select window_start, mean_hz, min_hz, max_hz, deviation_hz, rocof_hz_per_s "
        "from grid_frequency order by window_start"
    ).pl()
    assets = con.sql(
        "select asset, kind, count(*) as readings, "
        "round(max(energy_import_wh) - min(energy_import_wh), 1) as import_wh, "
        "round(max(energy_export_wh) - min(energy_export_wh), 1) as export_wh, "
        "round(arg_max(soc_pct, ts_ms), 1) as last_soc_pct, "
        "round(arg_max(power_w, ts_ms)) as last_power_w "
        "from telemetry group by asset, kind order by asset"
    ).pl()
    col1, col2, col3 = st.columns(3)
    col1.metric("assets", len(assets))
    col2.metric("telemetry rows", int(assets["readings"].sum()) if len(assets) else 0)
    if len(freq):
        last = freq.row(-1, named=True)
        col3.metric(
            "grid frequency (last window)",
            f"{last['mean_hz']:.3f} Hz",
            f"{last['deviation_hz'] * 1000:+.1f} mHz",
        )
        st.subheader("Grid frequency, 1 s windows")
        st.line_chart(freq, x="window_start", y=["mean_hz", "min_hz", "max_hz"])
        st.subheader("Rate of change of frequency")
        st.line_chart(freq, x="window_start", y="rocof_hz_per_s")
    else:
        col3.metric("grid frequency (last window)", "no data")
    st.subheader("Energy per asset (from the cumulative meter registers)")
    st.dataframe(assets)


main()
