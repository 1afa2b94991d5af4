"""gridflex analytics app (Streamlit): fleet, grid frequency, dispatch, billing, one asset.

Run with ``gridflex app --data-dir DIR`` (or ``streamlit run app/streamlit_app.py --
--data-dir DIR``). It only reads the Parquet history through the DuckDB views of
``gridflex.history`` and ``gridflex.billing``; the pages are the scripts in ``views/``.
"""

from __future__ import annotations

import streamlit as st

from app import PAGES, ui


def main() -> None:
    """Set up the page, the sidebar and the navigation, and run the chosen page."""
    st.set_page_config(page_title="gridflex", layout="wide")
    pages = [
        st.Page(script, title=title, url_path=url, default=i == 0)
        for i, (script, title, url) in enumerate(PAGES)
    ]
    page = st.navigation(pages)
    ui.sidebar()
    page.run()


main()
