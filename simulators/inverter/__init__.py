"""Simulated bidirectional battery inverters speaking SunSpec over Modbus TCP.

``gridflex sim inverters --count N --base-port P`` serves N devices, device ``i`` on port
``P + i`` (unit id 1), all in one process and one asyncio loop. Three layers:

- ``InverterModel``: the physics of one device (pure, ``step(dt_s, freq_hz)``): AC power
  follows the 704 ``WSet`` setpoint plus, when 711 ``Ena`` is set, the frequency-droop
  response to the device's own frequency reading (``simulators.droop``: IEEE 1547 law, a
  first-order lag with ``tau = RspTms / ln 10``), with a ramp limit, clamped to the
  ratings and 704 ``WMaxLimPct``; SoC integrates power against capacity and power stops at
  the SoC stop points; the import/export meters count up; ``WSetRvrtTms`` reverts the
  setpoint to ``WSetRvrt`` and ``WMaxLimPctRvrtTms`` the limit to ``WMaxLimPctRvrt`` when
  no new write arrived in time (fail-safe, DESIGN.md invariant 3). The model uses
  gridflex's sign (+ charging/import); the register edge converts with
  ``gridflex.sunspec.sign`` (SunSpec W and WSet are + for injection).
- ``SimulatedInverter``: the SunSpec register map (``SunS`` at 40000, then models 1, 701,
  702, 704, 711, 713 laid out per the shipped definitions, then ``0xFFFF, 0``) as one
  big-endian byte image, and ``handle_pdu`` for Modbus function codes 3, 6, 16 and 23 (pure:
  bytes in, bytes out). Writes reach only the RW points the simulator implements (704
  power controls; 711 ``Ena``, ``AdptCtlReq`` and the writable control sets); anything
  else is answered with exception 2 (illegal data address), a bad enum value or a droop
  of 0 in the active set with exception 3. 711 has ``droop_controls`` stored sets
  (``NCtl``): with one (the default) ``Ctl[0]`` is writable and active; with more,
  ``Ctl[0]`` is the read-only factory set and a client writes another set and adopts it
  by writing its index to ``AdptCtlReq`` (``AdptCtlRslt`` COMPLETED or FAILED, see
  ``simulators.droop.droop_state``). ``reboot()`` puts the controls back to factory.
- ``InverterFleet``: one lean asyncio Modbus TCP server per device (MBAP framing over an
  ``asyncio.Protocol``) and a 10 Hz update task. A lean server instead of pymodbus's: a
  read is a slice of the byte image, so 1,000 devices polled 5 times a second cost the
  simulator little CPU, leaving the shared cores to the collector being measured.
  ``stop_device(i)`` / ``start_device(i)`` take one device off the network and back,
  ``reboot_device(i)`` power-cycles it (its controls back to factory).
"""

from __future__ import annotations

from simulators.inverter.cli import add_arguments, main
from simulators.inverter.model import InverterModel, InverterRatings
from simulators.inverter.registers import BASE_ADDRESS, SimulatedInverter, writable_points
from simulators.inverter.server import InverterFleet

__all__ = [
    "BASE_ADDRESS",
    "InverterFleet",
    "InverterModel",
    "InverterRatings",
    "SimulatedInverter",
    "add_arguments",
    "main",
    "writable_points",
]
