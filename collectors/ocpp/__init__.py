"""OCPP 2.0.1/2.1 CSMS: charging stations connect here; their meter values go to MQTT.

``gridflex collect ocpp --site FILE`` runs it (``add_arguments``/``main``); the control
part uses ``Csms.set_power`` for setpoints. See docs/ocpp.md.
"""

from collectors.ocpp.cli import add_arguments, main
from collectors.ocpp.csms import Csms, CsmsSettings, SetpointResult, StationConfig

__all__ = ["Csms", "CsmsSettings", "SetpointResult", "StationConfig", "add_arguments", "main"]
