"""SunSpec Modbus TCP collector: poll every inverter of a site on a fixed schedule, publish MQTT.

``gridflex collect modbus --site FILE``. For each inverter asset one asyncio task:

1. connect (one TCP connection per device), discover the SunSpec map (``SunS`` at 40000,
   else 0, else 50000; walk the model chain), read the scale factors (static points, read
   once per discovery) and the capabilities;
2. poll every ``site.modbus.poll_interval_ms``: the n-th poll is due at ``start + n *
   interval`` (no drift; device ``i`` of ``N`` starts ``i/N`` of an interval later, so the
   fleet's requests spread over the interval). A poll that starts so late that the next
   slot has already come is counted *missed* and the schedule skips ahead;
3. each poll reads only the registers it needs, merged into as few reads as fit 125
   registers, decodes them with the cached scale factors and publishes one ``Telemetry``
   (QoS 1) with ``ts_ms`` taken when the answer arrived and a ``seq`` strictly increasing
   per asset for this ``boot``. On a 1/701/702/704/713 device that is one read of 701
   ``InvSt..TmpCab`` per poll, plus one read of 704 ``WSetEna..WSet`` with 713 every
   ``LOW_PRIORITY_EVERY`` (5) polls: SoC and the setpoint in force are slow points (OpenEMS'
   low priority), so ``soc_pct``/``setpoint_w`` are at most one second old. Where all the
   points fit one read, every poll reads them all;
4. a device that refuses the connection, times out, drops it or answers garbage is marked
   in its retained ``AssetStatus`` (``online: false``, ``offline``/``error``, reason,
   consecutive failures, ``retry_in_ms``) and retried with exponential backoff
   (``backoff_initial_s`` doubling up to ``backoff_max_s``); on its return it is
   discovered again and marked online.

The retry loop is the collector's own, not the client's reconnect: a returning device must
be re-discovered (its map or firmware may have changed) and the backoff must be visible in
its status (pymodbus' client runs with ``retries=0`` and ``reconnect_delay=0`` for that).

The package, in layers (each module imports only the ones above it):

- ``fast``: the lean Modbus TCP client (function 3 over an ``asyncio.Protocol``), its
  ``Ticker`` and ``DeviceError``;
- ``plan``: what a poll reads and how it decodes (``PollPlan``, ``build_plan``,
  ``decode_reading``, ``decode_data``, ``InverterReading``); pure;
- ``telemetry``: ``to_telemetry`` and ``TelemetryEncoder``; pure;
- ``schedule``: ``PollSchedule``, ``LatenessStats``, ``backoff_s``; pure;
- ``connection``: what a poller needs of a Modbus connection (``ModbusConnection``,
  ``ConnectionFactory``), ``register_reader`` and ``discover_plan``;
- ``poller``: ``DevicePoller`` (one device) and ``run`` (the site's fleet);
- ``cli``: ``add_arguments``/``main`` of ``gridflex collect modbus``.

The collector only reads: device writes (the 704 setpoint, ``write_setpoint``) live in
``control.sunspec``, and nothing here imports ``control``.

**The hot path** (issue 2: 1,000 inverters every 200 ms, 5,000 polls/s, from one process
on a 2-core machine). Profiled with py-spy at N = 1,000, the collector as first written
(pymodbus' async client, a coroutine step per read, a pydantic model per message, paho on
its own thread) spent ~450 us of CPU per poll and topped out near 1,900 polls/s: ~30 % of
its samples in pymodbus' request round trip, ~40 % in MQTT (paho's thread, the socketpair
wake-up per ``publish()`` and GIL hand-offs between the two threads), ~7 % in pydantic.
What the default path does instead, each measured in ``bench/poll.py`` and
``bench/README.md``:

- Modbus: ``collectors.modbus.fast.LeanModbusClient``, function 3 over an
  ``asyncio.Protocol``, the collector's only client (pymodbus' is the benchmarks'
  baseline, ``bench/baselines.py``, and the tests' oracle);
- the poll loop of a lean connection is a chain of callbacks
  (``DevicePoller._poll_chained``: slot -> request -> reply -> publish -> next slot)
  instead of a coroutine that sleeps and awaits a future per read; slots and request
  deadlines wait in one ``Ticker`` for the fleet, which also lets the polls due in the
  same 2 ms go out together (fewer wake-ups of the collector, the devices and the broker;
  a poll starts at most one tick late);
- decoding unpacks each read's integer points in one ``struct`` call (``decode_data``,
  tested equal to the reference ``decode_reading``), and ``TelemetryEncoder`` writes the
  contract JSON without building a pydantic model (tested byte-equal to it);
- MQTT: ``gridflex.mqtt_asyncio.AsyncMqttClient``, a native asyncio MQTT 3.1.1 client on
  the collector's loop (no network thread; one socket write per loop pass; paho cost ~35 %
  of the collector's CPU at 1,000 inverters), with an unbounded in-flight window
  (``MQTT_MAX_INFLIGHT``); paho (``gridflex.mqtt``) is the benchmarks' baseline;
- the garbage collector: once every device has been tried, the start-up objects are
  frozen (``gc.freeze``): full collections walked ~200,000 of them and paused the loop
  for up to ~190 ms.

This module re-exports the names code imported from ``collectors.modbus`` before it was a
package; new code imports from the submodules.
"""

from collectors.modbus.cli import add_arguments, main
from collectors.modbus.connection import (
    ConnectionFactory,
    ModbusConnection,
    discover_plan,
    register_reader,
)
from collectors.modbus.fast import DeviceError
from collectors.modbus.plan import (
    InverterReading,
    PlannedPoint,
    PollPlan,
    build_plan,
    decode_data,
    decode_reading,
)
from collectors.modbus.poller import CollectorStats, DevicePoller, run
from collectors.modbus.schedule import LatenessStats, PollSchedule, backoff_s
from collectors.modbus.telemetry import TelemetryEncoder, to_telemetry

__all__ = [
    "CollectorStats",
    "ConnectionFactory",
    "DeviceError",
    "DevicePoller",
    "InverterReading",
    "LatenessStats",
    "ModbusConnection",
    "PlannedPoint",
    "PollPlan",
    "PollSchedule",
    "TelemetryEncoder",
    "add_arguments",
    "backoff_s",
    "build_plan",
    "decode_data",
    "decode_reading",
    "discover_plan",
    "main",
    "register_reader",
    "run",
    "to_telemetry",
]
