"""The pure half of ``bench/closed_loop.py``: the plan of a run and what its history says.

No processes, no clock, no broker: everything here takes plain values and returns plain
values, so ``tests/bench/test_closed_loop_analysis.py`` pins it.

Plan:

* :func:`step_levels` / :func:`profile_points` / :func:`profile_csv`: the grid frequency
  the simulated inverters replay (``gridflex sim inverters --frequency-profile``): nominal
  for ``lead_s`` (start-up and warm-up), then a step every ``step_s`` through
  :data:`STEP_LEVELS_HZ`, each step two points at the same time (a jump, no ramp);
* :func:`site_toml`: the one site file every process of the run reads (collector, pipeline,
  writer), optionally with ``[dispatch] local_droop = true``; :func:`config_problem` says
  whether this checkout's config knows every key of it.

Analysis (of the history the pipeline wrote, read back with DuckDB):

* :func:`step_readings`: per asset, the first reading that showed each step (the
  frequency moved to a new level);
* :func:`step_times`: when each step happened, per simulator process: the earliest of its
  assets' first readings of the step (each process replays the profile on its own clock);
* :func:`write_latencies`: for each step reading, the ack of the command it caused (same
  asset and ``seq``): its ``latency_from_telemetry_ms`` and, as a cross-check,
  ``ack.ts_ms - reading.ts_ms``;
* :func:`settle_latencies`: from the step to the first reading whose power lies within
  10 % of the step's change of the droop target (:func:`droop_target_w`);
* :func:`results_count`, :func:`extra_applications`: acks by result, and applications of a
  command that had been applied before (must be 0);
* :func:`quantiles`, :func:`markdown_table`, :func:`pair`: the printed table.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._harness import percentile
from control.ledger import APPLIED_RESULTS  # what the writer counts as written
from gridflex.config import ConfigError, parse_site
from pipelines.dispatch import DroopParams, droop_delta_w

__all__ = [
    "APPLIED_RESULTS",
    "NOMINAL_HZ",
    "RATING_W",
    "STEP_LEVELS_HZ",
    "Ack",
    "Reading",
    "WriteLatencies",
    "config_problem",
    "droop_target_w",
    "extra_applications",
    "markdown_table",
    "pair",
    "profile_csv",
    "profile_points",
    "quantiles",
    "results_count",
    "settle_latencies",
    "site_toml",
    "step_levels",
    "step_readings",
    "step_times",
    "write_latencies",
]

NOMINAL_HZ = 50.0
#: Charge and discharge rating of every simulated inverter (site file and simulator), W.
RATING_W = 10_000.0
CAPACITY_WH = 60_000.0
#: The frequency after each step, in turn: every step leaves the 36 mHz droop dead band or
#: comes back to nominal, so every step moves every droop target (by -656, +656, +456, -456
#: W at 10 kW), beyond the dispatcher's ``min_step_w`` of 100 W.
STEP_LEVELS_HZ = (49.80, 50.00, 50.15, 50.00)
#: Ack results that wrote the device.


@dataclass(frozen=True, slots=True)
class Reading:
    """One telemetry reading as the history has it (``ts_ms``: when the device answered)."""

    asset: str
    ts_ms: int
    seq: int
    freq_hz: float
    power_w: float


@dataclass(frozen=True, slots=True)
class Ack:
    """One ack as the history has it."""

    asset: str
    command_id: str
    result: str
    ts_ms: int
    seq: int
    latency_from_telemetry_ms: int | None
    latency_from_issued_ms: int | None = None


# --------------------------------------------------------------------------- plan


def step_levels(steps: int) -> list[float]:
    """The frequency after each of ``steps`` steps: :data:`STEP_LEVELS_HZ` round and round."""
    return [STEP_LEVELS_HZ[k % len(STEP_LEVELS_HZ)] for k in range(steps)]


def profile_points(
    lead_s: float, step_s: float, steps: int, nominal_hz: float = NOMINAL_HZ
) -> list[tuple[float, float]]:
    """``(t_s, freq_hz)`` points: nominal until ``lead_s``, then a jump every ``step_s``.

    Each jump is two points at the same time (the profile interpolates linearly between
    points and holds the last value).
    """
    points = [(0.0, nominal_hz)]
    level = nominal_hz
    for k, new in enumerate(step_levels(steps)):
        t_s = lead_s + k * step_s
        points += [(t_s, level), (t_s, new)]
        level = new
    return points


def profile_csv(points: Iterable[tuple[float, float]]) -> str:
    """The profile as the simulator reads it: header ``t_s,freq_hz``."""
    return "t_s,freq_hz\n" + "".join(f"{t:.3f},{f:.3f}\n" for t, f in points)


def droop_target_w(
    freq_hz: float, *, nominal_hz: float = NOMINAL_HZ, rating_w: float = RATING_W
) -> float:
    """The droop setpoint of a bench inverter (base 0 W, IEEE 1547 defaults), W, + charge."""
    return droop_delta_w(
        freq_hz, nominal_hz, DroopParams(), rated_charge_w=rating_w, rated_discharge_w=rating_w
    )


def site_toml(
    *,
    site: str,
    mqtt_url: str,
    data_dir: Path,
    ports: Sequence[int],
    poll_ms: int = 200,
    local_droop: bool = False,
) -> str:
    """The site file of a run: broker, history, 200 ms polls, droop dispatch, N inverters.

    Asset ``i`` is ``inv{i:05d}`` on ``127.0.0.1:ports[i]``, 10 kW both ways, 60 kWh.
    ``local_droop`` adds ``[dispatch] local_droop = true`` (the writer programs the droop
    curve into the devices' model 711 and supervises).
    """
    parts = [
        f'[site]\nid = "{site}"\n\n[mqtt]\nurl = "{mqtt_url}"\nqueue_limit = 1000000\n\n',
        f'[history]\ndir = "{data_dir.as_posix()}"\n\n',
        f"[modbus]\npoll_interval_ms = {poll_ms}\ntimeout_s = 1.0\n"
        "backoff_initial_s = 1.0\nbackoff_max_s = 10.0\n\n",
        '[dispatch]\nmode = "droop"\nmin_step_w = 100\nrefresh_s = 5\n',
    ]
    if local_droop:
        parts.append("local_droop = true\n")
    parts.extend(
        f'\n[[assets]]\nid = "inv{i:05d}"\nkind = "inverter"\nhost = "127.0.0.1"\n'
        f"port = {port}\nmax_charge_w = {RATING_W:.0f}\nmax_discharge_w = {RATING_W:.0f}\n"
        f"capacity_wh = {CAPACITY_WH:.0f}\n"
        for i, port in enumerate(ports)
    )
    return "".join(parts)


def config_problem(text: str) -> str | None:
    """Why this checkout's ``gridflex.config`` refuses the site ``text``; None if it is fine."""
    try:
        parse_site(tomllib.loads(text), "bench site")
    except ConfigError as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------- analysis


def step_readings(readings: Iterable[Reading], tol_hz: float = 0.005) -> dict[str, list[Reading]]:
    """Per asset, the first reading at each new frequency level, in time order.

    The first reading of an asset sets its level; each reading whose frequency is more
    than ``tol_hz`` off the current level shows a step (and sets the new level). Entry
    ``k`` of an asset's list is the ``k``-th step it saw.
    """
    by_asset: dict[str, list[Reading]] = {}
    for r in readings:
        by_asset.setdefault(r.asset, []).append(r)
    steps: dict[str, list[Reading]] = {}
    for asset, rows in by_asset.items():
        rows.sort(key=lambda r: r.ts_ms)
        level = rows[0].freq_hz
        seen: list[Reading] = []
        for r in rows[1:]:
            if abs(r.freq_hz - level) > tol_hz:
                seen.append(r)
                level = r.freq_hz
        steps[asset] = seen
    return steps


def step_times(
    steps: Mapping[str, Sequence[Reading]], group_of: Mapping[str, int]
) -> dict[tuple[int, int], int]:
    """``(group, k) -> ts_ms`` of step ``k`` in simulator process ``group``.

    The earliest first reading of the step among the group's assets: the group's devices
    share one clock and poll times are spread over the interval, so that reading comes a
    few ms at most after the simulator's frequency moved.
    """
    times: dict[tuple[int, int], int] = {}
    for asset, seen in steps.items():
        group = group_of[asset]
        for k, r in enumerate(seen):
            key = (group, k)
            times[key] = min(times.get(key, r.ts_ms), r.ts_ms)
    return times


@dataclass
class WriteLatencies:
    """The confirmed writes that the step readings caused, ms.

    Attributes:
        reported: Each ack's ``latency_from_telemetry_ms``.
        measured: ``ack.ts_ms - reading.ts_ms`` of each (the cross-check).
        writer: Each ack's ``latency_from_issued_ms``: the writer's part (the command's
            way from the pipeline to the writer, the queue, the ledger, the Modbus write
            and read-back).
        pipeline: ``reported - writer``: from the reading to the command's issue (the
            collector's publish, Mosquitto, the pipeline's input and dataflow).
        missing: Step readings without such an ack.

    """

    reported: list[float]
    measured: list[float]
    writer: list[float]
    pipeline: list[float]
    missing: int


def write_latencies(steps: Mapping[str, Sequence[Reading]], acks: Iterable[Ack]) -> WriteLatencies:
    """The confirmed writes that the step readings caused (see :class:`WriteLatencies`).

    An ack belongs to a reading by asset and ``seq`` (a command carries its reading's
    ``seq``, an ack its command's); only acks that wrote the device
    (:data:`APPLIED_RESULTS`) count, the earliest when there are several.
    """
    written: dict[tuple[str, int], Ack] = {}
    for a in acks:
        if a.result not in APPLIED_RESULTS:
            continue
        key = (a.asset, a.seq)
        if key not in written or a.ts_ms < written[key].ts_ms:
            written[key] = a
    out = WriteLatencies([], [], [], [], 0)
    for asset, seen in steps.items():
        for r in seen:
            ack = written.get((asset, r.seq))
            if ack is None:
                out.missing += 1
                continue
            out.measured.append(float(ack.ts_ms - r.ts_ms))
            if ack.latency_from_telemetry_ms is not None:
                out.reported.append(float(ack.latency_from_telemetry_ms))
            if ack.latency_from_issued_ms is not None:
                out.writer.append(float(ack.latency_from_issued_ms))
                if ack.latency_from_telemetry_ms is not None:
                    out.pipeline.append(
                        float(ack.latency_from_telemetry_ms - ack.latency_from_issued_ms)
                    )
    return out


def settle_latencies(
    readings: Iterable[Reading],
    steps: Mapping[str, Sequence[Reading]],
    times: Mapping[tuple[int, int], int],
    group_of: Mapping[str, int],
    targets_w: Sequence[float],
    *,
    initial_w: float = 0.0,
    tolerance: float = 0.10,
) -> tuple[list[float], int]:
    """From each step to the asset's first reading within ``tolerance`` of its new target.

    Step ``k`` moves the target from ``targets_w[k - 1]`` (``initial_w`` before the first)
    to ``targets_w[k]``; a reading is there when ``|power_w - target| <= tolerance *
    |change|``. Readings from the step reading on, before the asset's next step, count.
    Returns ``(ms after the step time of the asset's group, steps never within)``.
    """
    by_asset: dict[str, list[Reading]] = {}
    for r in readings:
        by_asset.setdefault(r.asset, []).append(r)
    for rows in by_asset.values():
        rows.sort(key=lambda r: r.ts_ms)
    settled: list[float] = []
    never = 0
    for asset, seen in steps.items():
        rows = by_asset.get(asset, [])
        for k, first in enumerate(seen[: len(targets_w)]):
            target = targets_w[k]
            change = abs(target - (targets_w[k - 1] if k else initial_w))
            until = seen[k + 1].ts_ms if k + 1 < len(seen) else None
            hit = next(
                (
                    r
                    for r in rows
                    if r.ts_ms >= first.ts_ms
                    and (until is None or r.ts_ms < until)
                    and abs(r.power_w - target) <= tolerance * change
                ),
                None,
            )
            if hit is None:
                never += 1
            else:
                settled.append(float(hit.ts_ms - times[(group_of[asset], k)]))
    return settled, never


def results_count(acks: Iterable[Ack]) -> dict[str, int]:
    """Acks by result, most common first."""
    return dict(Counter(a.result for a in acks).most_common())


def extra_applications(acks: Iterable[Ack]) -> int:
    """Writes of a command id that had been written before (the ledger says: must be 0)."""
    counts = Counter((a.asset, a.command_id) for a in acks if a.result in APPLIED_RESULTS)
    return sum(n - 1 for n in counts.values())


# --------------------------------------------------------------------------- table


def quantiles(values: Sequence[float]) -> tuple[float | None, float | None]:
    """``(p50, p99)`` by nearest rank; ``(None, None)`` when there are no values."""
    return percentile(values, 0.5), percentile(values, 0.99)


def pair(values: tuple[float | None, float | None], spec: str = ".1f") -> str:
    """``"p50 / p99"`` cell; ``-`` for a missing value."""
    return " / ".join("-" if v is None else format(v, spec) for v in values)


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[int] = ()
) -> str:
    """A Markdown table, columns padded; the columns at the indexes ``right`` right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = (("-" * (w - 1) + ":") if i in right else "-" * w for i, w in enumerate(widths))
    return "\n".join([line(header), "| " + " | ".join(rule) + " |", *(line(r) for r in rows)])
