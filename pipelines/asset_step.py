"""The dataflow's one keyed step per asset, ``asset_state``, and its telemetry history rows.

For each valid reading, on the worker that holds the asset:

1. its energy registers are compared with the asset's previous reading of the boot
   (:func:`~pipelines.validate.check_registers`): a register that went back is flagged
   in the history row, and the reading kept;
2. its ``telemetry`` history row is built (a plain tuple in the history's column order,
   :data:`ROW_FIELDS`; :class:`TelemetryRows` makes the row at the sink's partition);
3. :func:`~pipelines.assets.track` derives the asset's update for the dispatcher and, at
   most every ``forecast_interval_ms``, a forecast.

One step and one state per asset (:class:`~pipelines.assets.AssetTracker`, which holds
the registers too): in a Bytewax cluster, each reading crosses between processes once
to reach its asset, as a plain tuple (:meth:`~pipelines.reading.Reading.to_wire`), and
its row and update leave as plain tuples too. Anything raised by ``track`` refuses the
reading (``unprocessable``, to the dead letters) and the stream goes on; its history row
is written all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from gridflex.contract import Forecast, telemetry_topic
from pipelines.assets import AssetProfile, AssetTracker, CarDefaults, track
from pipelines.fleet import WireUpdate
from pipelines.history_sink import HistorySink
from pipelines.reading import EV_FIELDS, TELEMETRY_FIELDS, Reading, WireReading
from pipelines.validate import REGISTER_FIELDS, RawMessage, Rejected, check_registers

__all__ = [
    "ROW_FIELDS",
    "AssetStep",
    "TelemetryRows",
    "Tracked",
    "history_row",
]

log = logging.getLogger(__name__)

#: The columns of a ``telemetry`` history row, in the order of :func:`history_row`.
ROW_FIELDS: Final = (
    *TELEMETRY_FIELDS[:-1],
    *(f"ev_{name}" for name in EV_FIELDS),
    "register_decreased",
)
_EV: Final = len(TELEMETRY_FIELDS) - 1
_NO_NEEDS: Final = (None,) * len(EV_FIELDS)


def history_row(reading: Reading, register_decreased: bool | None) -> tuple[Any, ...]:
    """A reading's ``telemetry`` history row as a tuple of :data:`ROW_FIELDS`."""
    ev = reading.ev
    needs = _NO_NEEDS if ev is None else tuple(ev.__dict__[name] for name in EV_FIELDS)
    return (*reading[:_EV], *needs, register_decreased)


class Tracked(NamedTuple):
    """What ``asset_state`` makes of one reading.

    Attributes:
        row: Its history row (:func:`history_row`); always there.
        update: Its :class:`~pipelines.fleet.AssetUpdate` as a wire tuple, or None when
            refused.
        forecast: A forecast when one was due.
        rejected: The refusal when the asset's state could not take the reading.

    """

    row: tuple[Any, ...]
    update: WireUpdate | None
    forecast: Forecast | None
    rejected: Rejected | None


@dataclass(frozen=True)
class AssetStep:
    """The mapper of ``asset_state``: ``(state, wire reading) -> (state, Tracked)``.

    Attributes:
        profiles: The site file's assets by id (an asset not in it is not dispatchable).
        defaults: The site's assumptions for a car without stated needs.
        forecast_interval_ms: Least time between two forecasts of one asset, ms.

    """

    profiles: Mapping[str, AssetProfile]
    defaults: CarDefaults
    forecast_interval_ms: int

    def __call__(
        self, state: AssetTracker | None, wire: WireReading
    ) -> tuple[AssetTracker, Tracked]:
        """Fold one reading into its asset's state."""
        reading = Reading.from_wire(wire)
        state = state or AssetTracker()
        row = history_row(reading, _check_registers(state, reading))
        try:
            _, update, fc = track(
                state,
                reading,
                received_ms=reading.received_ms,
                profile=self.profiles.get(reading.asset),
                defaults=self.defaults,
                forecast_interval_ms=self.forecast_interval_ms,
            )
        except Exception as exc:  # one message never stops the stream
            return state, Tracked(row, None, None, _unprocessable(reading, exc))
        return state, Tracked(row, update.to_wire(), fc, None)


def _check_registers(state: AssetTracker, reading: Reading) -> bool:
    """Compare the reading's energy registers with the asset's; True when one went back.

    The first flag of each asset and boot is a warning, the others are logged at debug
    level.
    """
    before = state.registers
    state.registers, went_back = check_registers(before, reading)
    if went_back and before is not None:
        values = dict(zip(REGISTER_FIELDS, before.registers, strict=True))
        (log.warning if state.registers.decreases == 1 else log.debug)(
            "%s (boot %s) seq %d: %s went back (%s); the reading is kept, flagged "
            "register_decreased in the history; further ones of this boot at debug level",
            reading.asset,
            reading.boot,
            reading.seq,
            ", ".join(went_back),
            ", ".join(f"{values[n]:g} -> {getattr(reading, n):g} Wh" for n in went_back),
        )
    return bool(went_back)


def _unprocessable(reading: Reading, exc: Exception) -> Rejected:
    topic = telemetry_topic(reading.site, reading.kind, reading.asset)
    raw = RawMessage(topic, reading.telemetry().to_json(), reading.received_ms)
    return Rejected("unprocessable", f"{type(exc).__name__}: {str(exc)[:200]}", raw)


# --------------------------------------------------------------------------- history sink


class _RowsPartition(StatefulSinkPartition[tuple[Any, ...], None]):
    """A :class:`HistorySink` partition fed row tuples: each becomes its row here."""

    def __init__(self, inner: StatefulSinkPartition[dict[str, Any], None]) -> None:
        self._inner = inner

    def write_batch(self, values: list[tuple[Any, ...]]) -> None:
        """Make the rows and hand them to the history partition."""
        self._inner.write_batch([dict(zip(ROW_FIELDS, v, strict=True)) for v in values])

    def snapshot(self) -> None:
        """No resume state (as the history partition)."""
        return self._inner.snapshot()

    def close(self) -> None:
        """Close the history partition (writes what it holds)."""
        self._inner.close()


class TelemetryRows(FixedPartitionedSink[tuple[Any, ...], None]):
    """The ``telemetry`` :class:`HistorySink`, taking ``(asset, row tuple)`` items.

    A row reaches the sink's partition from another process of a cluster about half of
    the time; as a tuple it pickles and unpickles in about a quarter of a dict's time and
    bytes (0.8 µs and 115 bytes against 3.0 µs and 490 bytes).
    """

    def __init__(self, history: HistorySink) -> None:
        self.history = history

    def list_parts(self) -> list[str]:
        """The history sink's partitions."""
        return self.history.list_parts()

    def part_fn(self, item_key: str) -> int:
        """The history sink's routing (by asset)."""
        return self.history.part_fn(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _RowsPartition:
        """The history sink's partition, fed rows made from the tuples."""
        return _RowsPartition(self.history.build_part(step_id, for_part, resume_state))
