"""Billing views over the history: segments, settlements, sessions, response, reconciliation.

All of it is SQL (a DuckDB window over the stored readings, ``telemetry_copies``, or a
streaming pass over the sorted ones, below; the sessions and SoC from the de-duplicated
``telemetry`` view), so a settlement of millions of readings runs in the engine, not in a
Python loop. The building block is the **segment**: two consecutive register readings of one asset
(ordered by ``ts_ms``), with the energy between them from the cumulative registers::

    reading r0 (t0, import0, export0) ── segment ──▶ reading r1 (t1, import1, export1)
    energy_import_wh = import1 - import0        (NULL register: its last known value)

Rules (``docs/history.md`` has them for readers of the bill):

* **Resets.** A register lower than the one before it (a device reboot, a new ``boot``
  whose meter starts from zero, a swapped meter) makes the energy of that segment unknown:
  it counts 0 and the segment is flagged ``reset``. A new ``boot`` whose registers go on
  from where they were (a collector restart; the meter kept counting) is an ordinary
  segment.
* **Intervals.** Intervals are ``[k * L, (k + 1) * L)`` in UTC epoch milliseconds, ``L`` =
  ``interval_min`` minutes, a divisor of the day, so midnight is a boundary. A segment that
  straddles boundaries is apportioned linearly in time; a reading exactly on a boundary
  ends the segment before it in the earlier interval and starts the next one in the later.
* **Gaps.** A segment longer than ``max_gap_s`` is a gap: its register energy is still
  counted (the registers measured it) and apportioned linearly, and every interval it
  touches is flagged ``gap``; nothing is invented in between.
* **Sessions.** A segment belongs to the transaction of the reading that ends it.
* **Response.** ``response_energy`` integrates measured power minus the base setpoint
  (trapezoid rule) while a command is in force; ``reconciliation`` compares the registers
  with integrated power per interval and flags a difference over 1 % (and over 1 Wh).
* **Duplicates.** Copies of a reading (at-least-once delivery) are the same message, so
  in time order they are neighbours: the segment from a reading to its own copy is
  dropped, which counts each reading once as the ``telemetry`` view does, in the window
  the segments need anyway (``telemetry_copies`` is every stored copy; reading the
  de-duplicated ``telemetry`` view would cost a second sort of every row).

**Two paths to the segments, one answer.** The general path is one window over every
reading (``lag`` per asset in ``(ts_ms, boot, seq)`` order): a sort of every row, 0.7-0.9 s
of the 1.37 s a settlement of 10 M readings took. A closed day that ``gridflex history
compact`` merged is already stored in that order (``gridflex.sorted_by``), so its segments
need no sort: ``lag(...) OVER ()`` pairs each reading with the row before it in the file,
which DuckDB evaluates in one streaming pass in file order. The sorted partitions are those
of ``telemetry_sorted_partitions`` (one compacted file alone, recorded as sorted, every
``ts_ms`` in its day, from the footers) whose registers are each either never or always
NULL (a register NULL in some rows needs ``IGNORE NULLS``, which does not stream: such a
day takes the general path). Within a run (one asset in one file) the streaming pass
pairs the readings; the first and last reading of each run join the readings of all other
partitions (today's files, a day with a late file, an older compaction) in the general
window, which pairs each run's first reading with its true predecessor and carries the
registers across runs (a day's readings lie in its own partition, the layout's rule,
which the footers' ``ts_ms`` bounds check for the sorted files). The days are split over
parallel passes (``streams``, by day number modulo their count: each pass reads only its
own files; one pass is one thread).
``register(con, streams=0)`` sends everything through the general window:
``tests/gridflex/test_billing_streaming.py`` checks on generated histories (resets, NULL
registers, gaps, copies, sessions, boundary readings, several days, files as written,
compacted, with late files) that both give the same rows.

Measured on 10 M readings, compacted (``bench/history.py``, 2-core VM shared with other
jobs, best of 4): the general settlement 2.8-3.1 s of CPU; the streaming one 1.05 s of
CPU and wall in one pass, 1.13 s of CPU in 0.71-0.73 s wall in two passes split by day
(the two days hold 36 % and 64 % of the rows). Splitting by asset hash instead balances
any number of days but each pass reads every file: 1.36 s of CPU, 0.82 s wall. The
alternatives tried: **aggregate first** (per asset, boot, interval and session, then a
window over the aggregates) still needs each reading's predecessor to find a register
that drops inside a group and the last non-NULL register, so it needs the same order: a
streaming cumulative ``arg_max`` for the last non-NULL value costs 0.25-0.33 s per
register on 10 M rows, and the runs' first and last readings by a parallel
``arg_min``/``arg_max`` aggregate 0.8 s of CPU against about 0.26 s for the second
streaming pass (DuckDB's profile). **Narrowing the sort** (integers instead of strings)
was not tried: it would only shorten a sort the compacted days no longer have. Two more
costs went with it: ``settlements`` sums the segments that lie within one interval per
interval first and cuts only the others into pieces (``billing_pieces`` as a CTE used
twice made DuckDB keep all 10 M segments, 0.7 s), and the files of the sorted days are
left out of the general path by a semi-join, which DuckDB prunes before reading them.
"""

from __future__ import annotations

from typing import Final

import duckdb

__all__ = [
    "DEFAULT_INTERVAL_MIN",
    "DEFAULT_MAX_GAP_S",
    "RECONCILIATION_TOLERANCE",
    "VIEWS",
    "register",
]

DEFAULT_INTERVAL_MIN: Final = 15
DEFAULT_MAX_GAP_S: Final = 60.0
#: Reconciliation flags an interval whose registers and integrated power differ by more.
RECONCILIATION_TOLERANCE: Final = 0.01
#: ... and by at least this much (Wh): the resolution of a meter register.
RECONCILIATION_FLOOR_WH: Final = 1.0

_MS_PER_H: Final = 3_600_000.0
#: Most streaming passes ``billing_segments`` splits the sorted partitions over.
_MAX_STREAMS: Final = 4
#: Time buckets in which response_energy meets commands and segments, ms.
_BUCKET_MS: Final = 60_000

# Consecutive register readings of one asset. `lag(... IGNORE NULLS)`: a reading without a
# register leaves its last value in place. Power is integrated with the trapezoid rule.
#
# Two paths, one answer (see the module docstring). `fast`: the partitions stored as one
# compacted file in the window's order, each register in it never or always NULL. Their
# readings are paired in one streaming pass over `telemetry_compacted` (`lag`/`lead`
# OVER (): no sort), within a run of one asset in one file. The first and last reading of
# each run (`edges`) join the readings of every other partition in the general window,
# which pairs each run's first reading with its true predecessor (a day before, in a file
# not yet compacted, ...) and carries registers across runs; a run's last reading only
# serves there as a predecessor. `stream` is read twice (`NOT MATERIALIZED`: two passes
# cost less than keeping 10 M rows), and nothing but filters stands between the files and
# its window, which DuckDB only streams over an ordered input, in one thread: the assets
# are split over `parts` passes (by day) that run side by side.

# One streaming pass over the days whose number falls in part {part} of {parts}: a filter
# on the partition column only, so DuckDB opens none of the other days' files, and each
# day's file is read whole, in order, so its runs stay whole and contiguous.
_STREAM: Final = """, stream{part} AS NOT MATERIALIZED (
    SELECT site, asset, boot, seq, ts_ms, power_w, transaction_id,
           energy_import_wh, energy_export_wh, date,
           coalesce(lag(date) OVER () = date AND lag(site) OVER () = site
                    AND lag(asset) OVER () = asset, false) AS run_goes_on,
           coalesce(lead(date) OVER () = date AND lead(site) OVER () = site
                    AND lead(asset) OVER () = asset, false) AS run_continues,
           lag(ts_ms) OVER () AS start_ms, lag(boot) OVER () AS start_boot,
           lag(seq) OVER () AS start_seq, lag(power_w) OVER () AS start_power_w,
           lag(energy_import_wh) OVER () AS start_import_wh,
           lag(energy_export_wh) OVER () AS start_export_wh
    FROM telemetry_compacted
    WHERE (energy_import_wh IS NOT NULL OR energy_export_wh IS NOT NULL)
      AND (date - DATE '1970-01-01') % {parts} = {part}
)"""

_SEGMENTS: Final = """
CREATE OR REPLACE VIEW billing_segments AS
WITH fast AS (
    SELECT date FROM telemetry_sorted_partitions
    WHERE energy_import_nulls IN (0, rows) AND energy_export_nulls IN (0, rows) AND {streaming}
){streams}, stream AS NOT MATERIALIZED (
    {union}
), inner_pairs AS (
    SELECT site, asset, transaction_id AS session_id, start_ms, ts_ms AS end_ms,
           start_boot, boot AS end_boot, start_seq, seq AS end_seq,
           energy_import_wh - start_import_wh AS import_delta_wh,
           energy_export_wh - start_export_wh AS export_delta_wh,
           start_power_w, power_w AS end_power_w
    FROM stream
    WHERE run_goes_on AND date IN (SELECT date FROM fast)
), readings AS (
    SELECT site, asset, boot, seq, ts_ms, power_w, transaction_id,
           energy_import_wh, energy_export_wh, true AS ends_segment
    FROM telemetry_copies
    WHERE (energy_import_wh IS NOT NULL OR energy_export_wh IS NOT NULL)
      AND date IN (SELECT date FROM telemetry_files EXCEPT SELECT date FROM fast)
    UNION ALL
    SELECT site, asset, boot, seq, ts_ms, power_w, transaction_id,
           energy_import_wh, energy_export_wh, NOT run_goes_on AS ends_segment
    FROM stream
    WHERE (NOT run_goes_on OR NOT run_continues) AND date IN (SELECT date FROM fast)
), outer_pairs AS (
    SELECT
        ends_segment, site, asset, transaction_id AS session_id,
        lag(ts_ms) OVER w AS start_ms, ts_ms AS end_ms,
        lag(boot) OVER w AS start_boot, boot AS end_boot,
        lag(seq) OVER w AS start_seq, seq AS end_seq,
        energy_import_wh - lag(energy_import_wh IGNORE NULLS) OVER w AS import_delta_wh,
        energy_export_wh - lag(energy_export_wh IGNORE NULLS) OVER w AS export_delta_wh,
        lag(power_w) OVER w AS start_power_w, power_w AS end_power_w
    FROM readings
    WINDOW w AS (PARTITION BY site, asset ORDER BY ts_ms, boot, seq)
), pairs AS (
    SELECT * FROM inner_pairs
    UNION ALL
    SELECT * EXCLUDE (ends_segment) FROM outer_pairs WHERE ends_segment
)
SELECT
    site, asset, session_id, start_ms, end_ms, start_boot, end_boot,
    CASE WHEN import_delta_wh > 0 THEN import_delta_wh ELSE 0.0 END AS energy_import_wh,
    CASE WHEN export_delta_wh > 0 THEN export_delta_wh ELSE 0.0 END AS energy_export_wh,
    coalesce(import_delta_wh < 0 OR export_delta_wh < 0, false) AS reset,
    end_ms - start_ms > {gap_ms} AS gap,
    start_power_w, end_power_w,
    (start_power_w + end_power_w) / 2 * (end_ms - start_ms) / {ms_per_h} AS power_energy_wh
FROM pairs
WHERE start_ms IS NOT NULL AND NOT (start_boot = end_boot AND start_seq = end_seq)
"""

# Each segment cut at the interval boundaries: `share` is the fraction of its duration
# inside interval k. Most segments lie in one interval (a list of one); only the others
# are expanded (one `unnest` over the segments: a second reference to them would make
# DuckDB keep every segment in memory).
_PIECES: Final = """
CREATE OR REPLACE VIEW billing_pieces AS
WITH s AS (
    SELECT *, unnest(CASE WHEN k1 <= k0 THEN [k0] ELSE range(k0, k1 + 1) END) AS k
    FROM (SELECT *, start_ms // {interval_ms} AS k0, (end_ms - 1) // {interval_ms} AS k1
          FROM billing_segments)
)
SELECT site, asset, session_id, k,
       CASE WHEN k1 <= k0 THEN 1.0::DOUBLE
            ELSE (least(end_ms, (k + 1) * {interval_ms}) - greatest(start_ms, k * {interval_ms}))
                 / (end_ms - start_ms)::DOUBLE
       END AS share,
       energy_import_wh, energy_export_wh, power_energy_wh, reset, gap
FROM s
"""

_QUALITY: Final = """
    CASE
        WHEN bool_or(gap) AND bool_or(reset) THEN 'gap,reset'
        WHEN bool_or(gap) THEN 'gap'
        WHEN bool_or(reset) THEN 'reset'
        ELSE 'ok'
    END"""

# The sums of `billing_pieces` per asset, session and interval, in two steps: the segments
# inside one interval are summed per interval first (one aggregation of every segment, no
# pieces made), the few that cross a boundary are kept one by one (their `end_ms` in the
# key: no two segments of an asset that cross a boundary end at the same time) and cut
# into their pieces after.
_SETTLEMENTS: Final = f"""
CREATE OR REPLACE VIEW settlements AS
WITH s AS (
    SELECT site, asset, session_id, energy_import_wh, energy_export_wh, reset, gap,
           start_ms // {{interval_ms}} AS k0, (end_ms - 1) // {{interval_ms}} AS k1,
           (end_ms - 1) // {{interval_ms}} > start_ms // {{interval_ms}} AS crosses,
           start_ms, end_ms
    FROM billing_segments
), g AS (
    SELECT site, asset, session_id, k0, CASE WHEN crosses THEN end_ms END AS crossing_end_ms,
           max(k1) AS k1, max(start_ms) AS start_ms,
           sum(energy_import_wh) AS energy_import_wh, sum(energy_export_wh) AS energy_export_wh,
           bool_or(reset) AS reset, bool_or(gap) AS gap
    FROM s
    GROUP BY site, asset, session_id, k0, crossing_end_ms
), p AS (
    SELECT site, asset, session_id, k0 AS k, energy_import_wh, energy_export_wh, reset, gap
    FROM g WHERE crossing_end_ms IS NULL
    UNION ALL
    SELECT site, asset, session_id, k, energy_import_wh * share, energy_export_wh * share,
           reset, gap
    FROM (
        SELECT *, (least(crossing_end_ms, (r.k + 1) * {{interval_ms}})
                   - greatest(start_ms, r.k * {{interval_ms}}))
                  / (crossing_end_ms - start_ms)::DOUBLE AS share
        FROM g, range(k0, k1 + 1) AS r(k)
        WHERE crossing_end_ms IS NOT NULL
    )
)
SELECT
    site, asset, session_id,
    k * {{interval_ms}} AS interval_start_ms, (k + 1) * {{interval_ms}} AS interval_end_ms,
    sum(energy_import_wh) AS energy_import_wh,
    sum(energy_export_wh) AS energy_export_wh,
    {_QUALITY} AS quality
FROM p
GROUP BY site, asset, session_id, k
"""

# Start, end and the id token's hash come from the CSMS's own record of the transaction
# (the `transactions` view, `session/1` messages) when it has one; otherwise start and end
# are the first and last reading and id_token_hash is NULL, never made up.
_SESSIONS: Final = f"""
CREATE OR REPLACE VIEW sessions AS
WITH readings AS (
    SELECT site, asset, transaction_id AS session_id,
           min(ts_ms) AS start_ms, max(ts_ms) AS end_ms,
           arg_min(soc_pct, ts_ms) FILTER (WHERE soc_pct IS NOT NULL) AS soc_start_pct,
           arg_max(soc_pct, ts_ms) FILTER (WHERE soc_pct IS NOT NULL) AS soc_end_pct,
           count(*) AS readings
    FROM telemetry
    WHERE transaction_id IS NOT NULL
    GROUP BY site, asset, transaction_id
), energy AS (
    SELECT site, asset, session_id,
           sum(energy_import_wh) AS energy_import_wh,
           sum(energy_export_wh) AS energy_export_wh,
           {_QUALITY} AS quality
    FROM billing_segments
    WHERE session_id IS NOT NULL
    GROUP BY site, asset, session_id
)
SELECT
    r.site, r.asset, r.session_id, r.session_id AS transaction_id,
    coalesce(t.start_ms, r.start_ms) AS start_ms,
    make_timestamptz(coalesce(t.start_ms, r.start_ms) * 1000) AS start,
    coalesce(t.end_ms, r.end_ms) AS end_ms,
    make_timestamptz(coalesce(t.end_ms, r.end_ms) * 1000) AS "end",
    coalesce(e.energy_import_wh, 0.0) AS energy_import_wh,
    coalesce(e.energy_export_wh, 0.0) AS energy_export_wh,
    coalesce(r.soc_start_pct, t.soc_start_pct) AS soc_start_pct,
    coalesce(r.soc_end_pct, t.soc_end_pct) AS soc_end_pct,
    r.readings,
    t.id_token_hash,
    coalesce(e.quality, 'ok') AS quality
FROM readings r
LEFT JOIN energy e USING (site, asset, session_id)
LEFT JOIN transactions t
    ON t.site = r.site AND t.asset = r.asset AND t.transaction_id = r.session_id
"""

# A command is in force from its issue until its validity ends or the asset's next command,
# whichever is first. Power between two readings is linear (the trapezoid rule, as in the
# segments), clipped to that span; gaps are left out (covered_ms tells how much was seen).
# Commands and segments meet in minute buckets (an equi-join; a plain overlap join would
# compare every command of an asset with every segment of it), each pair clipped to its
# bucket so a segment or a command spread over two buckets counts once.
_RESPONSE: Final = f"""
CREATE OR REPLACE VIEW response_energy AS
WITH c AS (
    SELECT site, asset, command_id, mode, reason, setpoint_w, base_setpoint_w,
           issued_ms AS start_ms,
           least(valid_until_ms,
                 coalesce(lead(issued_ms) OVER (PARTITION BY site, asset ORDER BY issued_ms),
                          valid_until_ms)) AS end_ms
    FROM commands
), cb AS (
    SELECT c.site, c.asset, c.command_id, c.base_setpoint_w, c.start_ms, c.end_ms, r.bucket
    FROM c, range(c.start_ms // {_BUCKET_MS}, (c.end_ms - 1) // {_BUCKET_MS} + 1) AS r(bucket)
    WHERE c.end_ms > c.start_ms
), sb AS (
    SELECT s.site, s.asset, s.start_ms AS t0, s.end_ms AS t1, s.gap,
           s.start_power_w AS p0, s.end_power_w AS p1, r.bucket
    FROM billing_segments AS s,
         range(s.start_ms // {_BUCKET_MS}, (s.end_ms - 1) // {_BUCKET_MS} + 1) AS r(bucket)
    WHERE s.end_ms > s.start_ms
), clipped AS (
    SELECT cb.site, cb.asset, cb.command_id, cb.base_setpoint_w, sb.gap, sb.t0, sb.t1,
           sb.p0, sb.p1,
           greatest(sb.t0, cb.start_ms, cb.bucket * {_BUCKET_MS}) AS a,
           least(sb.t1, cb.end_ms, (cb.bucket + 1) * {_BUCKET_MS}) AS b
    FROM cb JOIN sb USING (site, asset, bucket)
), pieces AS (
    SELECT site, asset, command_id, gap, b - a AS ms,
           (p0 + (p1 - p0) * (a - t0) / (t1 - t0) + p0 + (p1 - p0) * (b - t0) / (t1 - t0)) / 2
               - base_setpoint_w AS mean_response_w
    FROM clipped WHERE b > a
), delivered AS (
    SELECT site, asset, command_id,
           sum(mean_response_w * ms) FILTER (WHERE NOT gap) / {_MS_PER_H} AS delivered_wh,
           coalesce(sum(ms) FILTER (WHERE NOT gap), 0) AS covered_ms,
           bool_or(gap) AS gap
    FROM pieces GROUP BY site, asset, command_id
), acked AS (
    SELECT site, asset, command_id, arg_max(result, ts_ms) AS ack_result
    FROM acks GROUP BY site, asset, command_id
)
SELECT
    c.site, c.asset, c.command_id, c.mode, c.reason,
    c.start_ms, make_timestamptz(c.start_ms * 1000) AS start,
    c.end_ms, make_timestamptz(c.end_ms * 1000) AS "end",
    c.setpoint_w, c.base_setpoint_w,
    (c.setpoint_w - c.base_setpoint_w) * (c.end_ms - c.start_ms) / {_MS_PER_H} AS requested_wh,
    coalesce(d.delivered_wh, 0.0) AS delivered_wh,
    coalesce(d.covered_ms, 0) AS covered_ms,
    CASE WHEN coalesce(d.covered_ms, 0) < c.end_ms - c.start_ms OR d.gap THEN 'gap' ELSE 'ok' END
        AS quality,
    a.ack_result
FROM c
LEFT JOIN delivered d USING (site, asset, command_id)
LEFT JOIN acked a USING (site, asset, command_id)
WHERE c.end_ms > c.start_ms
"""

# Register energy against integrated power per asset and interval, over the segments whose
# registers are trustworthy and whose power was sampled (no reset, no gap).
_RECONCILIATION: Final = """
CREATE OR REPLACE VIEW reconciliation AS
WITH sums AS (
    SELECT site, asset, k,
           sum(energy_import_wh * share) FILTER (WHERE NOT gap AND NOT reset)
               AS register_import_wh,
           sum(energy_export_wh * share) FILTER (WHERE NOT gap AND NOT reset)
               AS register_export_wh,
           sum(power_energy_wh * share) FILTER (WHERE NOT gap AND NOT reset)
               AS integrated_net_wh,
           count(*) FILTER (WHERE gap OR reset) AS segments_excluded
    FROM billing_pieces
    GROUP BY site, asset, k
), d AS (
    SELECT *,
           coalesce(register_import_wh, 0.0) - coalesce(register_export_wh, 0.0)
               AS register_net_wh
    FROM sums
)
SELECT
    site, asset, k * {interval_ms} AS interval_start_ms, (k + 1) * {interval_ms} AS interval_end_ms,
    coalesce(register_import_wh, 0.0) AS register_import_wh,
    coalesce(register_export_wh, 0.0) AS register_export_wh,
    register_net_wh,
    coalesce(integrated_net_wh, 0.0) AS integrated_net_wh,
    coalesce(integrated_net_wh, 0.0) - register_net_wh AS difference_wh,
    100 * abs(coalesce(integrated_net_wh, 0.0) - register_net_wh)
        / nullif(coalesce(register_import_wh, 0.0) + coalesce(register_export_wh, 0.0), 0)
        AS difference_pct,
    abs(coalesce(integrated_net_wh, 0.0) - register_net_wh) > {floor_wh}
        AND abs(coalesce(integrated_net_wh, 0.0) - register_net_wh)
            > {tolerance} * (coalesce(register_import_wh, 0.0) + coalesce(register_export_wh, 0.0))
        AS flagged,
    segments_excluded
FROM d
"""

#: The billing views in creation order (each reads the ones before it).
VIEWS: Final = (
    "billing_segments",
    "billing_pieces",
    "settlements",
    "sessions",
    "response_energy",
    "reconciliation",
)


def register(
    con: duckdb.DuckDBPyConnection,
    *,
    interval_min: int = DEFAULT_INTERVAL_MIN,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
    streams: int | None = None,
) -> None:
    """Create (or replace) the billing views on a connection that has the history views.

    Args:
        con: A connection from :func:`gridflex.history.connect` (views ``telemetry``,
            ``commands``, ``acks``).
        interval_min: Settlement interval, minutes; a divisor of 1440 (``[billing]``).
        max_gap_s: Readings further apart than this, seconds, make a flagged gap.
        streams: Streaming passes over the sorted compacted partitions, side by side
            (default: DuckDB's threads, at most 4). ``0``: none, every reading goes through
            the general window (the same answer, slower; the reference the tests compare
            the streaming path with).

    Raises:
        ValueError: ``interval_min`` does not divide the day, ``max_gap_s`` is not > 0 or
            ``streams`` is out of range.

    """
    if not (isinstance(interval_min, int) and 1 <= interval_min <= 1440):
        raise ValueError(f"interval_min: expected a whole number 1..1440, got {interval_min!r}")
    if 1440 % interval_min:
        raise ValueError(f"interval_min: expected a divisor of 1440, got {interval_min}")
    if not max_gap_s > 0:
        raise ValueError(f"max_gap_s: expected > 0, got {max_gap_s!r}")
    if streams is None:
        threads = con.execute("SELECT current_setting('threads')").fetchone()
        streams = min(max(int(threads[0]) if threads else 1, 1), _MAX_STREAMS)
    if not (isinstance(streams, int) and 0 <= streams <= _MAX_STREAMS):
        raise ValueError(f"streams: expected a whole number 0..{_MAX_STREAMS}, got {streams!r}")
    parts = max(streams, 1)
    params = {
        "streaming": "true" if streams else "false",
        "streams": "".join(_STREAM.format(part=i, parts=parts) for i in range(parts)),
        "union": "\n    UNION ALL ".join(f"SELECT * FROM stream{i}" for i in range(parts)),
        "interval_ms": interval_min * 60_000,
        "gap_ms": int(max_gap_s * 1000),
        "ms_per_h": _MS_PER_H,
        "tolerance": RECONCILIATION_TOLERANCE,
        "floor_wh": RECONCILIATION_FLOOR_WH,
    }
    for sql in (_SEGMENTS, _PIECES, _SETTLEMENTS, _SESSIONS, _RESPONSE, _RECONCILIATION):
        con.execute(sql.format(**params))
