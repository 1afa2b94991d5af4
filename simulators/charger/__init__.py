"""Simulated OCPP 2.0.1 / 2.1 charging stations, each with one or more EVSEs and cars.

``gridflex sim chargers --count M --csms-url URL [--ocpp 2.0.1|2.1|mix]
[--evses-per-station N] [--frequency-profile CSV]`` starts M stations built on the ``ocpp``
package's client over ``websockets``. Each station (per EVSE where OCPP keeps it per EVSE):

- connects to ``{csms-url}/{station_id}`` with the ``ocpp2.1`` or ``ocpp2.0.1`` subprotocol
  and HTTP Basic auth (security profile 1; ``wss://`` plus ``--ca-file`` for profile 2),
  reconnecting with the ``websockets`` client's own backoff;
- sends BootNotification, StatusNotification, Heartbeat; when its car arrives,
  StatusNotification Occupied, TransactionEvent Started and NotifyEVChargingNeeds (departure
  time, energy, V2X limits from an ISO 15118-20 car on an OCPP 2.1 station, AC parameters
  from a charge-only ISO 15118-2 car); then TransactionEvent Updated with meter values every
  ``SampledDataCtrlr.TxUpdatedInterval`` (set by the CSMS with SetVariables), MeterValues
  when idle, TransactionEvent Ended when the car leaves;
- applies SetChargingProfile to the car (``simulators.ev``): a TxProfile (CentralSetpoint
  ``setpoint`` within ``limit``/``dischargeLimit``, LocalFrequency curve at the station's own
  grid frequency, or a charging ``limit``), a TxDefaultProfile (with or without a
  transaction), a ChargingStationMaxProfile (the EVSEs together); power follows within the
  car's limits and the SoC integrates.

Fault injection: ``--overtemp`` (connector heats up, power is derated, temperature reported
with NotifyEvent), ``--ground-fault-after-s`` (StatusNotification Faulted, NotifyEvent
``techCode`` GroundFault, transaction Ended with ``stoppedReason`` GroundFault),
``--drop-rate`` (periodic meter-value messages are lost; their ``seqNo`` is still used, so
the CSMS sees the gap) and ``--hang-after-s`` (the station stops answering the CSMS's calls,
tripping its response timeout).

For the demo, ``build_fleet(count, seed=..., v21_fraction=..., v2x_fraction=...)`` (or
``fleet_from_site``) makes a seeded mix and ``run_fleet(specs, url, stop)`` runs it.

The package, in layers (each module imports only the ones above it):

- ``fleet``: ``Faults``, ``EvseSpec``, ``StationSpec``, ``OcppVersion``, ``build_fleet``,
  ``fleet_from_site``, ``site_assets`` (seeded version and car mix); pure;
- ``control``: ``Control``, ``control_from_profile``, ``requested_power_w`` (the car's
  answer to the charging profile in force), ``curve_power_w``, ``share_station_max``; pure;
- ``wire``: the hot-path messages in wire format (``sampled_values``,
  ``charging_needs_payload``, ``ocpp_time``), the meter-value schedule (``next_meter_s``)
  and the answer matching of ``call_wire`` (``answer_frame``); pure;
- ``evse``: ``SimEvse`` (one EVSE: car, transaction, profiles, its messages), ``Profile``;
- ``handlers``: the ``ChargePoint`` handler classes;
- ``station``: ``StationCounters``, ``SimStation`` (one station on its connection) and
  ``run_fleet``;
- ``cli``: ``add_arguments``/``main`` of ``gridflex sim chargers``.

This module re-exports the names code imported from ``simulators.charger`` before it was a
package; new code imports from the submodules.
"""

from simulators.charger.cli import add_arguments, main
from simulators.charger.control import Control, control_from_profile, requested_power_w
from simulators.charger.fleet import (
    EvseSpec,
    Faults,
    StationSpec,
    build_fleet,
    fleet_from_site,
    site_assets,
)
from simulators.charger.station import SimStation, run_fleet
from simulators.charger.wire import charging_needs_payload, next_meter_s, sampled_values

__all__ = [
    "Control",
    "EvseSpec",
    "Faults",
    "SimStation",
    "StationSpec",
    "add_arguments",
    "build_fleet",
    "charging_needs_payload",
    "control_from_profile",
    "fleet_from_site",
    "main",
    "next_meter_s",
    "requested_power_w",
    "run_fleet",
    "sampled_values",
    "site_assets",
]
