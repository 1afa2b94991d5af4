"""Charge profiles: limits an operator sets on one asset for a time window, in SQLite.

A :class:`ChargeProfile` is the body of ``POST /api/v1/charge-profile`` (the field manual's
call): from ``valid_from`` to ``valid_to`` (RFC 3339, half-open ``[from, to)``) the asset
may charge at most ``max_charge_kw`` and discharge at most ``max_discharge_kw`` (both
positive numbers, kW on the wire as in the manual; W everywhere inside), and its SoC stop
points are ``soc_min_pct`` / ``soc_max_pct``. An optional ``periods`` schedule tightens the
power limits from each period's ``start`` (RFC 3339, or seconds after ``valid_from``) until
the next period's start or ``valid_to``; a period never loosens the profile's own limits
(the limit in force is the smaller of the two).

Several profiles may be valid for one asset at once; the limits in force are the most
restrictive of them (:func:`active_limits`): the smallest charge and discharge limits, the
highest SoC floor and the lowest SoC ceiling. Two profiles whose SoC windows do not overlap
give a floor above the ceiling: no discharge at or below the floor and no charge at or
above the ceiling, i.e. between the two the asset may neither charge nor discharge. That is
what "never looser than any valid profile" means, so it is kept as is.

:class:`ProfileStore` keeps the profiles in one SQLite file in WAL mode (the style of
:mod:`control.ledger`) beside the ledger, by default
``{history.dir}/control/profiles.sqlite3``. Writes (``put``/``delete``/``prune``) are
transactions; reads (``active``, called for every command by the control writer) come from
an in-memory copy loaded at open and kept in step by the writes, so the hot path does no
I/O. One process (``gridflex control``) owns the file.

Idempotency: the same ``profile_id`` posted again with the same body (compared after
normalisation: instants in UTC, numbers as floats) is ``unchanged``; with another body it
is a ``conflict`` (HTTP 409) and the stored profile stays.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from control.store import open_durable
from gridflex.contract import ASSET_ID_PATTERN

__all__ = [
    "PROFILES_FILE",
    "PROFILE_ID_PATTERN",
    "ActiveLimits",
    "ChargeProfile",
    "ProfilePeriod",
    "ProfileStore",
    "PutResult",
    "Segment",
    "active_limits",
    "default_profiles_path",
    "next_change_ms",
    "to_ms",
]

PROFILE_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"
"""A profile id: 1 to 128 visible ASCII characters (no spaces)."""

PutResult = Literal["created", "unchanged", "conflict"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_Kw = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Pct = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
_Offset = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def to_ms(instant: datetime) -> int:
    """An aware datetime as UTC epoch milliseconds (exact, no float rounding)."""
    return (instant - _EPOCH) // timedelta(milliseconds=1)


PROFILES_FILE = "profiles.sqlite3"
"""The store's file name; ``gridflex control`` keeps it in the ledger's folder."""


def default_profiles_path(history_dir: Path) -> Path:
    """``{history.dir}/control/profiles.sqlite3``, beside the default ledger."""
    return history_dir / "control" / PROFILES_FILE


class ProfilePeriod(BaseModel):
    """One step of a profile's schedule: power limits from ``start`` on, kW, positive.

    ``start`` is an RFC 3339 instant or a number of seconds after the profile's
    ``valid_from``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: Annotated[_Offset | AwareDatetime, Field(union_mode="left_to_right")]
    max_charge_kw: _Kw
    max_discharge_kw: _Kw

    @field_validator("start")
    @classmethod
    def _utc(cls, value: float | datetime) -> float | datetime:
        return value.astimezone(UTC) if isinstance(value, datetime) else value

    def start_ms(self, valid_from: datetime) -> int:
        """The period's start as epoch ms (an offset counts from ``valid_from``)."""
        if isinstance(self.start, datetime):
            return to_ms(self.start)
        return to_ms(valid_from) + round(self.start * 1000)


class ChargeProfile(BaseModel):
    """Limits for one asset while the profile is valid (see the module docstring).

    Field checks (each error names its field): ``valid_to`` after ``valid_from``;
    ``0 <= soc_min_pct < soc_max_pct <= 100``; non-negative kW; every period starts inside
    ``[valid_from, valid_to)`` and after the one before it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    asset: Annotated[str, Field(pattern=ASSET_ID_PATTERN)]
    profile_id: Annotated[str, Field(pattern=PROFILE_ID_PATTERN)]
    valid_from: AwareDatetime
    valid_to: AwareDatetime
    max_charge_kw: _Kw = Field(description="largest charging power while valid, kW")
    max_discharge_kw: _Kw = Field(description="largest discharging power while valid, kW")
    soc_min_pct: _Pct = Field(description="SoC floor: no discharge at or below it")
    soc_max_pct: _Pct = Field(description="SoC ceiling: no charge at or above it")
    periods: Annotated[list[ProfilePeriod], Field(max_length=1000)] = Field(
        default_factory=list, description="optional schedule tightening the power limits"
    )

    @field_validator("valid_from", "valid_to")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("valid_to")
    @classmethod
    def _after_valid_from(cls, value: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("valid_from")
        if start is not None and value <= start:
            raise ValueError("must be after valid_from")
        return value

    @field_validator("soc_max_pct")
    @classmethod
    def _above_soc_min(cls, value: float, info: ValidationInfo) -> float:
        floor = info.data.get("soc_min_pct")
        if floor is not None and value <= floor:
            raise ValueError("must be above soc_min_pct")
        return value

    @field_validator("periods")
    @classmethod
    def _inside_and_ordered(
        cls, value: list[ProfilePeriod], info: ValidationInfo
    ) -> list[ProfilePeriod]:
        start, end = info.data.get("valid_from"), info.data.get("valid_to")
        if start is None or end is None:
            return value  # the validity is already refused; nothing to check against
        previous: int | None = None
        for i, period in enumerate(value):
            at_ms = period.start_ms(start)
            if not to_ms(start) <= at_ms < to_ms(end):
                raise ValueError(f"periods[{i}].start must lie in [valid_from, valid_to)")
            if previous is not None and at_ms <= previous:
                raise ValueError(f"periods[{i}].start must be after periods[{i - 1}].start")
            previous = at_ms
        return value

    @property
    def valid_from_ms(self) -> int:
        """``valid_from`` as epoch ms."""
        return to_ms(self.valid_from)

    @property
    def valid_to_ms(self) -> int:
        """``valid_to`` as epoch ms (the first instant the profile is no longer valid)."""
        return to_ms(self.valid_to)

    def canonical_json(self) -> str:
        """The normalised body that idempotency compares (UTC instants, float numbers)."""
        return self.model_dump_json()

    def segments(self) -> list[Segment]:
        """The validity cut at each period start, with the power limits in force, W."""
        charge_w, discharge_w = self.max_charge_kw * 1000, self.max_discharge_kw * 1000
        starts = [p.start_ms(self.valid_from) for p in self.periods]
        out: list[Segment] = []
        if not starts or starts[0] > self.valid_from_ms:
            first_end = starts[0] if starts else self.valid_to_ms
            out.append(Segment(self.valid_from_ms, first_end, charge_w, discharge_w))
        for i, period in enumerate(self.periods):
            end = starts[i + 1] if i + 1 < len(starts) else self.valid_to_ms
            out.append(
                Segment(
                    starts[i],
                    end,
                    min(charge_w, period.max_charge_kw * 1000),
                    min(discharge_w, period.max_discharge_kw * 1000),
                )
            )
        return out


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch ``[start_ms, end_ms)`` of one profile with its power limits, W, positive."""

    start_ms: int
    end_ms: int
    max_charge_w: float
    max_discharge_w: float


@dataclass(frozen=True, slots=True)
class ActiveLimits:
    """The limits of the profiles in force at one instant, the most restrictive of each.

    Powers in W, positive. ``soc_min_pct`` may exceed ``soc_max_pct`` when two profiles'
    SoC windows do not overlap (see the module docstring). ``profile_ids`` are the profiles
    in force, sorted; ``until_ms`` is the next instant any of the asset's profiles starts,
    ends or changes period (None: nothing changes any more).
    """

    max_charge_w: float
    max_discharge_w: float
    soc_min_pct: float
    soc_max_pct: float
    profile_ids: tuple[str, ...]
    until_ms: int | None


def active_limits(profiles: Iterable[ChargeProfile], now_ms: int) -> ActiveLimits | None:
    """The most restrictive limits of the profiles valid at ``now_ms``; None when none is.

    ``profiles`` are one asset's. Pure: the store and the tests call it the same way.
    """
    profiles = list(profiles)
    in_force: list[tuple[ChargeProfile, Segment]] = []
    for profile in profiles:
        for segment in profile.segments():
            if segment.start_ms <= now_ms < segment.end_ms:
                in_force.append((profile, segment))
                break
    if not in_force:
        return None
    return ActiveLimits(
        max_charge_w=min(s.max_charge_w for _, s in in_force),
        max_discharge_w=min(s.max_discharge_w for _, s in in_force),
        soc_min_pct=max(p.soc_min_pct for p, _ in in_force),
        soc_max_pct=min(p.soc_max_pct for p, _ in in_force),
        profile_ids=tuple(sorted(p.profile_id for p, _ in in_force)),
        until_ms=next_change_ms(profiles, now_ms),
    )


def next_change_ms(profiles: Iterable[ChargeProfile], now_ms: int) -> int | None:
    """The first instant after ``now_ms`` at which the limits in force may change, or None.

    The control writer re-applies an asset's limits then (a profile starting or ending, a
    period beginning), as it does after a ``put`` or ``delete``.
    """
    later = [
        edge
        for profile in profiles
        for segment in profile.segments()
        for edge in (segment.start_ms, segment.end_ms)
        if edge > now_ms
    ]
    return min(later, default=None)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS profile (
    profile_id    TEXT PRIMARY KEY,
    asset         TEXT NOT NULL,
    valid_from_ms INTEGER NOT NULL,
    valid_to_ms   INTEGER NOT NULL,
    body          TEXT NOT NULL,
    stored_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS profile_asset ON profile (asset);
"""

_Profiles = list[ChargeProfile]


class ProfileStore:
    """Charge profiles in one SQLite file (WAL), read from memory; safe to share between threads.

    A new ``ProfileStore`` on the same file sees every profile stored before.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._conn = open_durable(self._path, _SCHEMA)
        self._by_id: dict[str, ChargeProfile] = {}
        self._by_asset: dict[str, dict[str, ChargeProfile]] = {}
        for (body,) in self._conn.execute("SELECT body FROM profile ORDER BY profile_id"):
            self._remember(ChargeProfile.model_validate_json(body))

    def _remember(self, profile: ChargeProfile) -> None:
        self._by_id[profile.profile_id] = profile
        self._by_asset.setdefault(profile.asset, {})[profile.profile_id] = profile

    def _forget(self, profile: ChargeProfile) -> None:
        del self._by_id[profile.profile_id]
        of_asset = self._by_asset[profile.asset]
        del of_asset[profile.profile_id]
        if not of_asset:
            del self._by_asset[profile.asset]

    def put(self, profile: ChargeProfile, now_ms: int) -> PutResult:
        """Store a profile: ``created``; the same id and body again: ``unchanged``.

        The same id with another body is a ``conflict`` and changes nothing. ``now_ms`` is
        recorded with a new profile (epoch ms).
        """
        body = profile.canonical_json()
        with self._lock:
            known = self._by_id.get(profile.profile_id)
            if known is not None:
                return "unchanged" if known.canonical_json() == body else "conflict"
            self._conn.execute(
                "INSERT INTO profile (profile_id, asset, valid_from_ms, valid_to_ms, body, "
                "stored_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    profile.profile_id,
                    profile.asset,
                    profile.valid_from_ms,
                    profile.valid_to_ms,
                    body,
                    now_ms,
                ),
            )
            self._remember(profile)
        return "created"

    def get(self, profile_id: str) -> ChargeProfile | None:
        """The profile stored under ``profile_id``, or None."""
        with self._lock:
            return self._by_id.get(profile_id)

    def list(self, asset: str | None = None) -> _Profiles:
        """The profiles of ``asset`` (all assets when None), by ``valid_from`` then id."""
        with self._lock:
            if asset is None:
                chosen: Iterable[ChargeProfile] = self._by_id.values()
            else:
                chosen = self._by_asset.get(asset, {}).values()
            return sorted(chosen, key=lambda p: (p.valid_from_ms, p.profile_id))

    def delete(self, profile_id: str) -> ChargeProfile | None:
        """Remove a profile; returns it (its asset's limits change), or None if unknown."""
        with self._lock:
            profile = self._by_id.get(profile_id)
            if profile is None:
                return None
            self._conn.execute("DELETE FROM profile WHERE profile_id = ?", (profile_id,))
            self._forget(profile)
            return profile

    def active(self, asset: str, now_ms: int) -> ActiveLimits | None:
        """The limits in force for ``asset`` at ``now_ms`` (see :func:`active_limits`)."""
        with self._lock:
            profiles = [*self._by_asset.get(asset, {}).values()]
        return active_limits(profiles, now_ms)

    def next_change_ms(self, asset: str, now_ms: int) -> int | None:
        """See :func:`next_change_ms`, over ``asset``'s profiles."""
        with self._lock:
            profiles = [*self._by_asset.get(asset, {}).values()]
        return next_change_ms(profiles, now_ms)

    def prune(self, now_ms: int, retention_ms: int) -> int:
        """Delete profiles that ended before ``now_ms - retention_ms``; returns how many."""
        cutoff = now_ms - retention_ms
        with self._lock:
            gone = [p for p in self._by_id.values() if p.valid_to_ms < cutoff]
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM profile WHERE valid_to_ms < ?", (cutoff,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            for profile in gone:
                self._forget(profile)
        return len(gone)

    def close(self) -> None:
        """Close the connection; the file keeps every profile."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
