"""The Streamlit analytics app over the history (``gridflex app``).

The package ships in the wheel: :data:`MAIN_SCRIPT` is the file ``streamlit run`` starts,
found beside this module, so an installed gridflex runs it as well as a checkout does.
Pages live in ``app/views/`` (one script each, registered with ``st.navigation``); the
queries they show are in :mod:`app.data`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["MAIN_SCRIPT", "PAGES"]

#: The app's main script (``streamlit run`` it).
MAIN_SCRIPT: Final = Path(__file__).resolve().with_name("streamlit_app.py")

#: The pages: (script relative to :data:`MAIN_SCRIPT`, title, URL path), in menu order.
PAGES: Final = (
    ("views/fleet.py", "Fleet", "fleet"),
    ("views/frequency.py", "Grid frequency", "frequency"),
    ("views/dispatch.py", "Dispatch", "dispatch"),
    ("views/billing.py", "Billing", "billing"),
    ("views/asset.py", "Asset", "asset"),
)
