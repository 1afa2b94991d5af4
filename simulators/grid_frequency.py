"""Grid frequency for the simulators: a seeded stochastic model or a replayed CSV profile.

Both are pure objects queried with the time in seconds since the simulator started
(``source.freq_hz(t_s)``); no clock and no I/O apart from reading the CSV once.

The stochastic model is an Ornstein-Uhlenbeck process around the nominal frequency (the
slow load/generation imbalance that primary control keeps near nominal), plus occasional
disturbances, each a sudden drop (loss of a large unit) that recovers exponentially as
reserves act. Typical continental-European statistics: standard deviation ~20 mHz,
correlation time tens of seconds, a few 100-300 mHz events per hour in a stressed grid.
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = [
    "FrequencyProfile",
    "FrequencySource",
    "ProfileError",
    "StochasticFrequency",
    "disturbance_hz",
    "ou_step",
]


class FrequencySource(Protocol):
    """Anything that gives the grid frequency at a time (seconds since start)."""

    def freq_hz(self, t_s: float) -> float:
        """Grid frequency in Hz at ``t_s`` seconds after the start."""
        ...


class ProfileError(ValueError):
    """A frequency profile file that cannot be used (names file, line and reason)."""


def ou_step(x: float, dt_s: float, tau_s: float, sigma: float, z: float) -> float:
    """Advance an Ornstein-Uhlenbeck deviation ``x`` by ``dt_s`` (exact discretisation).

    ``x`` relaxes toward 0 with time constant ``tau_s``; ``sigma`` is the stationary
    standard deviation and ``z`` a standard normal draw.
    """
    decay = math.exp(-dt_s / tau_s)
    return x * decay + sigma * math.sqrt(1.0 - decay * decay) * z


def disturbance_hz(age_s: float, step_hz: float, recovery_tau_s: float) -> float:
    """Deviation of one disturbance ``age_s`` after it happened (0 before it).

    A step of ``step_hz`` (negative for a loss of generation) that decays exponentially
    with ``recovery_tau_s``.
    """
    if age_s < 0:
        return 0.0
    return step_hz * math.exp(-age_s / recovery_tau_s)


@dataclass
class StochasticFrequency:
    """Seeded stochastic grid frequency; query with non-decreasing ``t_s``.

    Parameters
    ----------
    nominal_hz : float
        50 or 60.
    sigma_hz : float
        Stationary standard deviation of the OU part (default 20 mHz).
    tau_s : float
        OU correlation time (default 30 s).
    events_per_hour : float
        Mean rate of disturbances (Poisson); 0 turns them off.
    step_min_hz, step_max_hz : float
        Size range of a disturbance's drop (drawn uniformly, applied as negative).
    recovery_tau_s : float
        Time constant of the recovery after a disturbance.
    seed : int or None
        Seed of the random generator: the same seed gives the same series.
    """

    nominal_hz: float = 50.0
    sigma_hz: float = 0.020
    tau_s: float = 30.0
    events_per_hour: float = 3.0
    step_min_hz: float = 0.100
    step_max_hz: float = 0.300
    recovery_tau_s: float = 20.0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)
    _t_s: float = field(init=False, default=0.0)
    _ou_hz: float = field(init=False, default=0.0)
    _events: list[tuple[float, float]] = field(init=False, default_factory=list)
    _next_event_s: float = field(init=False, default=math.inf)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._ou_hz = self._rng.gauss(0.0, self.sigma_hz)
        self._next_event_s = self._draw_gap_s()

    def _draw_gap_s(self) -> float:
        if self.events_per_hour <= 0:
            return math.inf
        return self._rng.expovariate(self.events_per_hour / 3600.0)

    def freq_hz(self, t_s: float) -> float:
        """Grid frequency at ``t_s``; an earlier ``t_s`` than the last one repeats it."""
        if t_s > self._t_s:
            while self._next_event_s <= t_s:
                step = -self._rng.uniform(self.step_min_hz, self.step_max_hz)
                self._events.append((self._next_event_s, step))
                self._next_event_s += self._draw_gap_s()
            self._ou_hz = ou_step(
                self._ou_hz, t_s - self._t_s, self.tau_s, self.sigma_hz, self._rng.gauss(0, 1)
            )
            self._t_s = t_s
            horizon_s = 10 * self.recovery_tau_s
            self._events = [e for e in self._events if t_s - e[0] < horizon_s]
        dist = sum(
            disturbance_hz(self._t_s - t0, step, self.recovery_tau_s) for t0, step in self._events
        )
        return self.nominal_hz + self._ou_hz + dist


@dataclass(frozen=True)
class FrequencyProfile:
    """A frequency series replayed with linear interpolation; the last value holds.

    Before the first point the first value holds. Two points at the same time make a step.
    """

    times_s: tuple[float, ...]
    freqs_hz: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.times_s or len(self.times_s) != len(self.freqs_hz):
            raise ProfileError("a profile needs at least one (t_s, freq_hz) point")
        if any(b < a for a, b in zip(self.times_s, self.times_s[1:], strict=False)):
            raise ProfileError("t_s must not decrease")

    @classmethod
    def from_csv(cls, path: str | Path) -> FrequencyProfile:
        """Read a CSV with header ``t_s,freq_hz``; ``ProfileError`` names file and line."""
        path = Path(path)
        times: list[float] = []
        freqs: list[float] = []
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames is None or {"t_s", "freq_hz"} - set(reader.fieldnames):
                    raise ProfileError(f"{path}: expected the header t_s,freq_hz")
                for row in reader:
                    line = reader.line_num
                    try:
                        t_s, freq = float(row["t_s"]), float(row["freq_hz"])
                    except (TypeError, ValueError):
                        raise ProfileError(f"{path}:{line}: expected numbers, got {row}") from None
                    if t_s < 0 or not 0 < freq < 100:
                        raise ProfileError(f"{path}:{line}: need t_s >= 0 and 0 < freq_hz < 100")
                    if times and t_s < times[-1]:
                        raise ProfileError(f"{path}:{line}: t_s goes backwards")
                    times.append(t_s)
                    freqs.append(freq)
        except OSError as exc:
            raise ProfileError(f"{path}: cannot read ({exc.strerror})") from None
        if not times:
            raise ProfileError(f"{path}: no data rows")
        return cls(tuple(times), tuple(freqs))

    def freq_hz(self, t_s: float) -> float:
        """Interpolated frequency at ``t_s``."""
        i = bisect.bisect_right(self.times_s, t_s)
        if i == 0:
            return self.freqs_hz[0]
        if i == len(self.times_s):
            return self.freqs_hz[-1]
        t0, t1 = self.times_s[i - 1], self.times_s[i]
        f0, f1 = self.freqs_hz[i - 1], self.freqs_hz[i]
        return f0 + (f1 - f0) * (t_s - t0) / (t1 - t0)
