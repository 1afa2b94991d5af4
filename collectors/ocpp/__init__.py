"""OCPP 2.0.1/2.1 CSMS: charging stations connect here; their meter values go to MQTT.

``gridflex collect ocpp --site FILE`` runs it (``add_arguments``/``main``). Each EVSE of a
station is one asset. Setpoints are decided in ``control.ocpp_plan`` and asked for by
``gridflex control`` over MQTT (``collectors.ocpp.requests``); the CSMS sends them as
charging profiles (``Csms.set_power``, ``set_local_frequency``, ``clear_profiles``). See
docs/ocpp.md.
"""

from collectors.ocpp.cli import add_arguments, main
from collectors.ocpp.csms import Csms, SetpointResult
from collectors.ocpp.settings import CsmsSettings, EvseConfig, StationConfig

__all__ = [
    "Csms",
    "CsmsSettings",
    "EvseConfig",
    "SetpointResult",
    "StationConfig",
    "add_arguments",
    "main",
]
