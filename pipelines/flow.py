"""The gridflex dataflow: validate telemetry, grid frequency per window, Parquet history.

::

    mqtt_in ─▶ validate ─▶ split_acks
      events ─┬─▶ acks_only ─▶ ack_row ─▶ history_acks (Parquet)
              ├─▶ statuses_only ─▶ key_status ─▶ status_change (a change of the asset's
              │     status, not a repeat) ─▶ status_row ─▶ history_status_changes
              ├─▶ sessions_only ─▶ session_row ─▶ history_transactions
              └─▶ fault_events_only ─▶ event_row ─▶ history_events
      rest ───▶ split_valid
      valid ──┬─▶ frequency_sample ─▶ key_site ─▶ frequency_window (pipelines.windows)
              │     ─▶ frequency_stats ─┬─▶ grid_frequency_row ─▶ history_grid_frequency
              │                         └─▶ grid_frequency_json ─▶ merge_out ─▶ mqtt_out
              ├─▶ readings ─▶ key_asset ─▶ asset_state (pipelines.asset_step: energy
              │     registers that went back in a boot flagged; needs, forecast, envelope)
              │       ─┬─▶ telemetry_row ─▶ history_telemetry (Parquet)
              │        ├─▶ forecast ─┬─▶ forecast_row ─▶ history_forecasts
              │        │             └─▶ forecast_json ─▶ merge_out
              │        └─▶ asset_update ───────────────┐
              └─▶ ticks ───────────────────────────────────────┴─▶ key_dispatch ─▶ dispatch
                    (pipelines.fleet: droop / fcr, one decision per reading, summary)
                    ─▶ flatten_dispatch ─┬─▶ command_row ─▶ history_commands
                                         └─▶ dispatch_json ─▶ merge_out
      refused ─▶ key_reason ─▶ count_rejected ─▶ unkey_rejected ─▶ dead_letter ─▶ merge_out

The source subscribes to telemetry, acks, asset statuses, CSMS sessions and the
components' fault events (:func:`pipeline_filters`); ``validate`` checks each against its
schema (:mod:`pipelines.validate`). The events only go to the history: acks
de-duplicated, statuses when they change, sessions and fault events as they come
(:mod:`pipelines.history_events`). The central's
target (``…/target``, :func:`pipelines.validate.validate_target`) goes straight to
``dispatch``: its FCR capacity replaces the site file's while valid.

Dispatch does not wait for the frequency windows: each reading's decision follows it
through ``asset_state`` and ``dispatch`` (keyed by asset, then by site).

In a Bytewax cluster, the keyed steps (``asset_state``, ``frequency_window``,
``dispatch``) and the partitioned history sinks take items from every process: what
crosses there is a plain tuple (:mod:`pipelines.reading`), cheap to pickle.

The source's heartbeats travel with the readings (validate and split_valid pass them on
the valid side, readings drops them): on one path they keep their place in the
stream, so a heartbeat never overtakes readings that came before it. The dispatcher uses
them to publish its summary while no reading arrives.

Anything raised while one message (reading or ack) is handled (validation, the asset
state) sends that message to the dead-letter topic with the reason; the stream goes on.

Step ids are stable (recovery keys on them). The domain logic lives in
:mod:`pipelines.validate`, :mod:`pipelines.frequency`, :mod:`pipelines.windows`,
:mod:`pipelines.asset_step`, :mod:`pipelines.assets`, :mod:`pipelines.forecast`,
:mod:`pipelines.dispatch` and :mod:`pipelines.fleet`; this module only wires it.

The options, subscriptions, source and sink are in :mod:`pipelines.flow_options` (named
here too). ``gridflex pipeline`` (:mod:`pipelines.cli`) runs it until SIGINT or SIGTERM, with
Bytewax recovery.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from gridflex.contract import (
    DispatchCommand,
    GridFrequency,
    SiteSummary,
    command_topic,
    deadletter_topic,
    forecast_topic,
    grid_frequency_topic,
    summary_topic,
)
from gridflex.history import (
    ACKS,
    COMMANDS,
    EVENTS,
    FORECASTS,
    GRID_FREQUENCY,
    STATUS_CHANGES,
    TELEMETRY,
    TRANSACTIONS,
)
from pipelines import history_events as hev
from pipelines.asset_step import AssetStep, TelemetryRows
from pipelines.fleet import AssetUpdate, SiteDispatcher, WireUpdate
from pipelines.flow_options import (
    FlowOptions,
    ack_filter,
    default_mqtt_sink,
    history_filters,
    mqtt_source,
    pipeline_filters,
    telemetry_filter,
    wal_retention_s,
)
from pipelines.frequency import FrequencyAccumulator, summarize_window
from pipelines.history_sink import (
    HistorySink,
    ack_row,
    command_row,
    forecast_row,
    frequency_row,
)
from pipelines.reading import Reading
from pipelines.site import SiteLike, asset_profiles, car_defaults, dispatch_settings
from pipelines.validate import (
    Arrived,
    RawMessage,
    Rejected,
    to_dead_letter,
    validate_ack,
    validate_event,
    validate_session,
    validate_status,
    validate_target,
    validate_telemetry,
)
from pipelines.windows import (
    FrequencyWindowLogic,
    FrequencyWindows,
    Heartbeat,
    WindowInput,
    WireSample,
)

__all__ = [
    "COMPONENT",
    "FLOW_ID",
    "FlowOptions",
    "SiteLike",
    "ack_filter",
    "asset_profiles",
    "build_flow",
    "car_defaults",
    "default_mqtt_sink",
    "dispatch_settings",
    "history_filters",
    "mqtt_source",
    "pipeline_filters",
    "telemetry_filter",
    "wal_retention_s",
]

log = logging.getLogger(__name__)

FLOW_ID = "gridflex_pipeline"
COMPONENT = "pipeline"


# --------------------------------------------------------------------------- step functions


def _frequency_sample(item: Reading | Heartbeat) -> WindowInput | None:
    if isinstance(item, Heartbeat):
        return item
    if item.freq_hz is None:
        return None
    sample: WireSample = (item.site, item.asset, item.ts_ms, item.freq_hz, item.received_ms)
    return sample


def _count_rejected(count: int | None, rejected: Rejected) -> tuple[int, Rejected]:
    """Count refusals per reason kind; log the first of each kind as a warning."""
    count = (count or 0) + 1
    if count == 1:
        log.warning(
            "refused a message (%s) on %s: %s; further refusals of this kind are counted "
            "and logged at debug level",
            rejected.kind,
            rejected.message.topic,
            rejected.reason,
        )
    else:
        log.debug("refused message #%d (%s): %s", count, rejected.kind, rejected.reason)
    return count, rejected


def _dead_letter_message(
    rejected: Rejected, *, site: str, counts: Counter[str] | None = None
) -> tuple[str, bytes]:
    if counts is not None:  # the metrics' dead letters by reason (one per refusal)
        counts[rejected.kind] += 1
    letter = to_dead_letter(rejected, site=site, component=COMPONENT)
    return deadletter_topic(COMPONENT), letter.to_json()


def _is_not_rejected(item: Reading | Heartbeat | Rejected) -> bool:
    return not isinstance(item, Rejected)


def _is_event_topic(topic: str) -> bool:
    """Whether ``topic`` is ``gridflex/v1/{site}/event/{component}`` (by its levels)."""
    parts = topic.split("/")
    return len(parts) == 5 and parts[3] == "event"


def _is_target(item: Reading | Heartbeat | Rejected | Arrived) -> bool:
    return isinstance(item, Arrived)


def _reading(item: Reading | Heartbeat) -> Reading | None:
    return None if isinstance(item, Heartbeat) else item


def _tick(item: Reading | Heartbeat) -> Heartbeat | None:
    return item if isinstance(item, Heartbeat) else None


def _dispatch_message(item: DispatchCommand | SiteSummary) -> tuple[str, bytes]:
    if isinstance(item, DispatchCommand):
        return command_topic(item.site, item.asset), item.to_json()
    return summary_topic(item.site), item.to_json()


def _command_row(item: DispatchCommand | SiteSummary) -> tuple[str, dict[str, Any]] | None:
    return (item.asset, command_row(item)) if isinstance(item, DispatchCommand) else None


# --------------------------------------------------------------------------- flow


def build_flow(
    site: SiteLike,
    data_dir: str | Path | None = None,
    *,
    options: FlowOptions | None = None,
    source: Source[Any] | None = None,
    mqtt_sink: Sink[tuple[str, bytes]] | None = None,
    stop_event: threading.Event | None = None,
    dead_letters: Counter[str] | None = None,
) -> Dataflow:
    """Build the pipeline dataflow of one site.

    Args:
        site: The site configuration (``gridflex.config.SiteConfig``).
        data_dir: History directory; default ``site.history.dir``.
        options: Tuning; see :class:`FlowOptions`.
        source: Input of :class:`RawMessage` and :class:`~pipelines.windows.Heartbeat`;
            default an :class:`MqttSource` subscribed to the site's telemetry and acks
            (:func:`pipeline_filters`) on ``site.mqtt.url``. Without heartbeats, windows
            close on readings and at the end of input only.
        mqtt_sink: Output of ``(topic, payload)``; default an :class:`MqttSink` on the
            site's broker.
        stop_event: Ends the default MQTT source when set (clean shutdown).
        dead_letters: Counts the dead letters by reason kind when given (the metrics).

    Returns:
        The dataflow, for ``bytewax.run.cli_main`` or ``bytewax.testing.run_main``.

    The default source starts its MQTT receiver in a ``spawn`` child process, which
    imports the parent's ``__main__``: a script running this dataflow needs the usual
    ``if __name__ == "__main__":`` guard (the ``gridflex`` command and pytest have it).

    """
    opts = options or FlowOptions()
    root = Path(data_dir if data_dir is not None else site.history.dir)
    window_ms = int(site.pipeline.window_ms)
    lateness_ms = (
        opts.lateness_ms if opts.lateness_ms is not None else site.pipeline.allowed_lateness_ms
    )
    nominal_hz = float(site.nominal_frequency_hz)
    site_id = site.id
    asset_ids = frozenset(asset.id for asset in site.assets)
    settings = dispatch_settings(site)
    profiles = asset_profiles(site)
    defaults = car_defaults(site)
    forecast_interval_ms = round(site.dispatch.forecast_interval_s * 1000)
    if source is None:
        source = mqtt_source(site, opts, stop_event)
    if mqtt_sink is None:
        mqtt_sink = default_mqtt_sink(site, opts)

    def validate(
        message: RawMessage | Heartbeat,
    ) -> Reading | Heartbeat | Rejected | hev.Event | Arrived:
        if isinstance(message, Heartbeat):
            return message
        if _is_event_topic(message.topic):
            return validate_event(message, site_id=site_id)
        if message.topic.endswith("/ack"):
            return validate_ack(message, site_id=site_id, assets=asset_ids)
        if message.topic.endswith("/status"):
            return validate_status(message, site_id=site_id)
        if message.topic.endswith("/session"):
            return validate_session(message, site_id=site_id)
        if message.topic.endswith("/target"):
            return validate_target(message, site_id=site_id)
        result = validate_telemetry(
            message,
            site_id=site_id,
            nominal_hz=nominal_hz,
            now_ms=message.received_ms,
            max_future_ms=opts.max_future_ms,
        )
        return result if isinstance(result, Rejected) else Reading.of(result, message.received_ms)

    def dispatch(
        state: SiteDispatcher | None, item: WireUpdate | Heartbeat | Arrived
    ) -> tuple[SiteDispatcher, list[DispatchCommand | SiteSummary]]:
        state = state or SiteDispatcher(settings)
        try:
            if isinstance(item, Heartbeat):
                return state, state.on_tick(item.wall_ms)
            if isinstance(item, Arrived):
                return state, state.on_target(item.target, item.received_ms)
            return state, state.on_update(AssetUpdate.from_wire(item))
        except Exception:
            log.exception("dispatch failed on %r; skipped", item)
            return state, []

    def frequency_stats(
        item: tuple[str, tuple[int, FrequencyAccumulator]],
    ) -> tuple[str, GridFrequency] | None:
        key, (start_ms, acc) = item
        stats = summarize_window(
            acc, window_start_ms=start_ms, window_ms=window_ms, nominal_hz=nominal_hz
        )
        if stats is None:
            return None
        return key, GridFrequency(
            site=key,
            ts_ms=stats.window_end_ms,
            window_start_ms=stats.window_start_ms,
            window_end_ms=stats.window_end_ms,
            nominal_hz=stats.nominal_hz,
            mean_hz=stats.mean_hz,
            min_hz=stats.min_hz,
            max_hz=stats.max_hz,
            deviation_hz=stats.deviation_hz,
            rocof_hz_per_s=stats.rocof_hz_per_s,
            samples=stats.samples,
            assets=stats.assets,
        )

    def history(stream: str, partitions: int = 1) -> HistorySink:
        return HistorySink(
            root,
            stream,
            partitions=partitions,
            flush_rows=opts.flush_rows,
            flush_interval_s=opts.flush_interval_s,
            dedup_capacity=opts.dedup_capacity,
        )

    flow = Dataflow(FLOW_ID)
    inp: Stream[RawMessage | Heartbeat] = op.input("mqtt_in", flow, source)
    checked = op.map("validate", inp, validate)
    by_kind = op.branch("split_acks", checked, hev.is_event)
    events: Stream[hev.Event] = by_kind.trues  # type: ignore[assignment]
    acks = op.filter_map("acks_only", events, hev.ack_only)
    op.output(
        "history_acks",
        op.map("ack_row", acks, lambda a: (a.asset, ack_row(a))),
        history(ACKS),
    )
    statuses = op.filter_map("statuses_only", events, hev.status_only)
    changes = op.stateful_map(
        "status_change", op.key_on("key_status", statuses, lambda s: s.asset), hev.status_change
    )
    op.output(
        "history_status_changes",
        op.filter_map("status_row", changes, hev.changed_only),
        history(STATUS_CHANGES),
    )
    sessions = op.filter_map("sessions_only", events, hev.session_only)
    op.output(
        "history_transactions",
        op.map("session_row", sessions, lambda x: (x.asset, hev.session_row(x))),
        history(TRANSACTIONS),
    )
    fault_events = op.filter_map("fault_events_only", events, hev.event_only)
    op.output(
        "history_events",
        op.map("event_row", fault_events, lambda e: (e.component, hev.event_row(e))),
        history(EVENTS),
    )
    not_events: Stream[Reading | Heartbeat | Rejected | Arrived] = by_kind.falses  # type: ignore[assignment]
    by_target = op.branch("split_targets", not_events, _is_target)
    arrived: Stream[Arrived] = by_target.trues  # type: ignore[assignment]
    readings_in: Stream[Reading | Heartbeat | Rejected] = by_target.falses  # type: ignore[assignment]
    split = op.branch("split_valid", readings_in, _is_not_rejected)
    valid: Stream[Reading | Heartbeat] = split.trues  # type: ignore[assignment]
    refused: Stream[Rejected] = split.falses  # type: ignore[assignment]

    readings = op.filter_map("readings", valid, _reading)

    # Grid frequency per site over epoch-aligned tumbling windows, by event time. This
    # dataflow serves one site (validate refuses the others' readings): one key.
    window_in: Stream[WindowInput] = op.filter_map("frequency_sample", valid, _frequency_sample)
    by_site = op.key_on("key_site", window_in, lambda _: site_id)
    windows = op.stateful_batch(
        "frequency_window",
        by_site,
        lambda resume: FrequencyWindowLogic(
            resume
            or FrequencyWindows(
                window_ms=window_ms,
                lateness_ms=lateness_ms,
                idle_timeout_ms=opts.idle_timeout_ms,
            )
        ),
    )
    stats = op.filter_map("frequency_stats", windows, frequency_stats)
    op.output(
        "history_grid_frequency",
        op.map("grid_frequency_row", stats, lambda kv: (kv[0], frequency_row(kv[1]))),
        history(GRID_FREQUENCY),
    )
    frequency_out = op.map(
        "grid_frequency_json", stats, lambda kv: (grid_frequency_topic(kv[0]), kv[1].to_json())
    )

    # Per asset, one keyed step: the history row of every valid reading (its energy
    # registers compared with the asset's previous reading; keyed by asset so the sink's
    # de-dup memory stays in one place), charging needs, SoC forecast, flexibility
    # envelope; then one decision per reading at the site's dispatcher (droop or fleet
    # FCR), never waiting for a window.
    step = AssetStep(profiles, defaults, forecast_interval_ms)
    keyed = op.map("key_asset", readings, lambda r: (r.asset, r.to_wire()))
    tracked = op.stateful_map("asset_state", keyed, step)
    op.output(
        "history_telemetry",
        op.map_value("telemetry_row", tracked, lambda t: t.row),
        TelemetryRows(history(TELEMETRY, partitions=opts.history_partitions)),
    )
    tracked_out = op.key_rm("unkey_asset", tracked)
    asset_dead = op.filter_map("asset_refused", tracked_out, lambda t: t.rejected)
    forecasts = op.filter_map("forecast", tracked_out, lambda t: t.forecast)
    op.output(
        "history_forecasts",
        op.map("forecast_row", forecasts, lambda f: (f.asset, forecast_row(f))),
        history(FORECASTS),
    )
    forecast_out = op.map(
        "forecast_json", forecasts, lambda f: (forecast_topic(f.site, f.asset), f.to_json())
    )
    updates = op.filter_map("asset_update", tracked_out, lambda t: t.update)
    ticks = op.filter_map("ticks", valid, _tick)
    to_dispatch: Stream[WireUpdate | Heartbeat | Arrived] = op.merge(
        "dispatch_in", updates, ticks, arrived
    )
    decided = op.stateful_map(
        "dispatch", op.key_on("key_dispatch", to_dispatch, lambda _: site_id), dispatch
    )
    decisions = op.flat_map("flatten_dispatch", op.key_rm("unkey_dispatch", decided), lambda x: x)
    op.output(
        "history_commands",
        op.filter_map("command_row", decisions, _command_row),
        history(COMMANDS),
    )
    dispatch_out = op.map("dispatch_json", decisions, _dispatch_message)

    # Refusals of validation and of the asset step: count and log per reason kind, then
    # dead-letter.
    refused_all = op.merge("refused_all", refused, asset_dead)
    by_reason = op.key_on("key_reason", refused_all, lambda r: r.kind)
    counted = op.stateful_map("count_rejected", by_reason, _count_rejected)
    dead = op.map(
        "dead_letter",
        op.key_rm("unkey_rejected", counted),
        functools.partial(_dead_letter_message, site=site_id, counts=dead_letters),
    )

    op.output(
        "mqtt_out",
        op.merge("merge_out", dead, frequency_out, forecast_out, dispatch_out),
        mqtt_sink,
    )
    return flow
