"""What happens to the data: ``[history]``, ``[pipeline]`` and ``[billing]``.

Where the Parquet history lives and how long it is kept, the stream analytics that write it,
and the settlement that reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from gridflex.config.base import _FilePath, _Section
from gridflex.config.errors import FieldError

__all__ = ["HISTORY_STREAMS", "BillingConfig", "HistoryConfig", "PipelineConfig"]

#: The history streams (``gridflex.history.STREAMS``; listed here so that reading a site
#: file does not import DuckDB).
HISTORY_STREAMS: tuple[str, ...] = (
    "telemetry",
    "grid_frequency",
    "forecasts",
    "commands",
    "acks",
    "status_changes",
    "transactions",
    "events",
)
_MAX_RETENTION_DAYS = 36_500


def _retention_days(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        raise FieldError(key, f"expected a whole number of days, got {shown}")
    if not 1 <= value <= _MAX_RETENTION_DAYS:
        raise FieldError(key, f"expected 1 to {_MAX_RETENTION_DAYS} days, got {value}")
    return value


class HistoryConfig(_Section):
    """Where the Parquet history lives and how long it is kept.

    ``retention_days``: unset keeps everything; one number applies to every stream; a
    table (``[history.retention_days]``, ``telemetry = 400``) sets it per stream and keeps
    the streams it does not name. ``gridflex history prune`` removes the days older.
    Stored per stream (a number becomes the same number for each).
    """

    dir: _FilePath = Path("data")
    retention_days: dict[str, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _retention_per_stream(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("retention_days") is None:
            return data
        value = data["retention_days"]
        if isinstance(value, dict):
            per_stream = {}
            for stream, days in value.items():
                if stream not in HISTORY_STREAMS:
                    raise FieldError(
                        f"retention_days.{stream}",
                        f"expected one of the streams {', '.join(HISTORY_STREAMS)}",
                    )
                per_stream[stream] = _retention_days(f"retention_days.{stream}", days)
        else:
            days = _retention_days("retention_days", value)
            per_stream = dict.fromkeys(HISTORY_STREAMS, days)
        return {**data, "retention_days": per_stream}

    def retention_for(self, stream: str) -> int | None:
        """Days ``stream`` is kept, None for ever."""
        return None if self.retention_days is None else self.retention_days.get(stream)


class PipelineConfig(_Section):
    """Stream analytics."""

    window_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 1000
    allowed_lateness_ms: Annotated[int, Field(ge=0, le=60_000)] = 500
    recovery: bool = True
    recovery_dir: _FilePath | None = Field(
        default=None, description="Bytewax recovery database; default {history.dir}/recovery"
    )
    snapshot_interval_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    durable_ack: bool = Field(
        default=True,
        description="PUBACK telemetry and acks only once in the write-ahead log (fsynced)",
    )
    wal_dir: _FilePath | None = Field(
        default=None, description="Write-ahead log of received messages; default {history.dir}/wal"
    )
    receive_queue: Annotated[int, Field(ge=100, le=1_000_000)] = Field(
        default=10_000,
        description="Messages held between the MQTT socket and the dataflow, per receiver; "
        "when full the receiver stops reading (TCP back-pressure, the broker holds the rest)",
    )


class BillingConfig(_Section):
    """Settlement of the history (``gridflex billing``, the ``settlements`` view).

    ``interval_min``: settlement interval, minutes, aligned to UTC midnight (so it divides
    the day). ``max_gap_s``: two register readings of an asset further apart than this make
    a gap, flagged in the intervals it touches.
    """

    interval_min: Annotated[int, Field(ge=1, le=1440)] = 15
    max_gap_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0

    @field_validator("interval_min")
    @classmethod
    def _divides_the_day(cls, value: int) -> int:
        if 1440 % value:
            raise ValueError("expected a divisor of 1440 (the minutes in a day)")
        return value
