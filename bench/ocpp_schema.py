"""Benchmark: OCPP payload validation per message, old validators vs fastjsonschema.

Times, in this one process, the validators the CSMS runs on every CALL it receives
(``collectors.ocpp.schema.ValidatorCache``, compiled by ``fastjsonschema``), the generated
validators it used before (``bench/_ocpp_schema_codegen.py``, kept only as this baseline),
``fastjsonschema`` on the schema files as they are, with its default detailed exceptions
(what ``inline_refs`` and the plain hot-path validator buy) and, for scale, the ``ocpp``
package's own ``jsonschema.Draft4Validator`` (what the stock ``ocpp.ChargePoint`` runs,
without its thread pool), on the messages a station sends:

- ``TransactionEvent``: an ``Updated`` event with one meter value carrying every measurand
  the CSMS asks for (``collectors.ocpp.settings.MEASURANDS``, as the simulated stations
  build it: ``simulators.charger.wire.sampled_values``) plus the 2.1 setpoint;
- ``MeterValues``: an idle EVSE's registers; ``BootNotification``; ``StatusNotification``.

Each message is validated as OCPP 2.0.1 and as 2.1. Before timing, every validator must
accept each message and refuse it with one extra property (so nothing is timed that does no
work). The variants are interleaved in ``--rounds`` rounds so a slower moment of a shared
machine hits them alike. Per row: p50/p99 of single validations (``perf_counter_ns`` around
each call), messages/s of a tight loop (one core), CPU µs per message in that loop (thread
CPU time), what 1,000 messages/s would cost (% of one core) and the CPU per message
against the validators before. A second table times the CSMS's receive path without
sockets (``RpcChargePoint.route_message`` of one TransactionEvent frame, median of the
rounds) with each of the two validator caches. A third table gives each variant's compile
time for the eight schemas and the memory the compiled validators keep (``tracemalloc``),
and the process RSS.

    .venv/bin/python bench/ocpp_schema.py                    # 20,000 messages per row
    .venv/bin/python bench/ocpp_schema.py -n 5000 --versions 2.1
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script, this folder is sys.path[0] and its ocpp.py would shadow the ocpp package.
if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import fastjsonschema
import ocpp
import psutil
from fastjsonschema import JsonSchemaValueException
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError
from ocpp.routing import on

from bench import _ocpp_schema_codegen as codegen
from bench._harness import fmt, percentile
from collectors.ocpp import schema as fast
from collectors.ocpp.rpc import RpcChargePoint
from collectors.ocpp.settings import MEASURANDS
from simulators.charger.wire import SUPPORTED_MEASURANDS, ocpp_time, sampled_values
from simulators.ev import EvState

ACTIONS = ("TransactionEvent", "MeterValues", "BootNotification", "StatusNotification")
VERSIONS = ("2.0.1", "2.1")
VARIANTS = (
    "codegen (before)",
    "fastjsonschema (now)",
    "fastjsonschema, files as-is",
    "jsonschema (ocpp pkg)",
)

Check = Callable[[Any], Any]


def payloads(version: str) -> dict[str, dict[str, Any]]:
    """One request payload per action, in wire format, as the simulated stations send them."""
    setpoint_w = 7400.0 if version == "2.1" else None  # Power.Active.Setpoint: 2.1 only
    now = ocpp_time()
    measurands = frozenset(MEASURANDS.split(",")) & SUPPORTED_MEASURANDS
    ev = EvState(soc_pct=55.0, power_w=7400.0, energy_import_wh=12_500.0)
    idle = EvState(soc_pct=0.0, energy_import_wh=12_500.0, energy_export_wh=800.0)
    return {
        "TransactionEvent": {
            "eventType": "Updated",
            "timestamp": now,
            "triggerReason": "MeterValuePeriodic",
            "seqNo": 42,
            "transactionInfo": {"transactionId": "tx-0001-1", "chargingState": "Charging"},
            "evse": {"id": 1, "connectorId": 1},
            "meterValue": [
                {
                    "timestamp": now,
                    "sampledValue": sampled_values(ev, measurands, setpoint_w=setpoint_w),
                }
            ],
        },
        "MeterValues": {
            "evseId": 1,
            "meterValue": [
                {
                    "timestamp": now,
                    "sampledValue": [
                        v for v in sampled_values(idle, measurands) if v["measurand"] != "SoC"
                    ],
                }
            ],
        },
        "BootNotification": {
            "chargingStation": {
                "model": f"SimEVSE-{version}",
                "vendorName": "gridflex",
                "serialNumber": "st-0001",
                "firmwareVersion": "1.0",
            },
            "reason": "PowerUp",
        },
        "StatusNotification": {
            "timestamp": now,
            "connectorStatus": "Occupied",
            "evseId": 1,
            "connectorId": 1,
        },
    }


def _schema_file(version: str, action: str) -> Path:
    path = fast.schema_path(Path(ocpp.__file__).parent, version, action, request=True)
    assert path is not None
    return path


def compile_variant(variant: str, cases: list[tuple[str, str]]) -> dict[tuple[str, str], Check]:
    """The request validators of ``cases`` ((version, action)) compiled by ``variant``."""
    checks: dict[tuple[str, str], Check] = {}
    for version, action in cases:
        if variant == "fastjsonschema (now)":
            found = fast.ValidatorCache(shared=False).get(version, action, request=True)
        elif variant.startswith("fastjsonschema"):  # the files as they are, detailed errors
            document = json.loads(_schema_file(version, action).read_text(encoding="utf-8-sig"))
            found = fastjsonschema.compile(
                {**document, "$schema": "http://json-schema.org/draft-04/schema#"},
                use_default=False,
                use_formats=False,
            )
        elif variant.startswith("codegen"):
            found = codegen.ValidatorCache().get(version, action, request=True)
        else:
            text = _schema_file(version, action).read_text(encoding="utf-8-sig")
            found = Draft4Validator(json.loads(text)).validate
        assert found is not None, (variant, version, action)
        checks[version, action] = found
    return checks


def sanity_check(check: Check, payload: dict[str, Any], label: str) -> None:
    """``check`` accepts ``payload`` and refuses it with one extra property."""
    check(payload)
    broken = {**copy.deepcopy(payload), "zzExtra": 1}
    try:
        check(broken)
    except (codegen.SchemaViolation, fast.SchemaViolation, JsonSchemaValueException):
        return
    except ValidationError:
        return
    raise SystemExit(f"{label}: a payload with an extra property passed validation")


def latencies_ns(check: Check, payload: Any, n: int) -> list[int]:
    """``n`` single validations, each timed."""
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        start = clock()
        check(payload)
        out.append(clock() - start)
    return out


def loop(check: Check, payload: Any, n: int) -> tuple[float, float]:
    """Wall and thread-CPU seconds of ``n`` validations back to back."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(n):
        check(payload)
    return time.perf_counter() - wall, time.thread_time() - cpu


class _Connection:
    """A WebSocket stand-in that drops what is sent."""

    async def send(self, _message: str) -> None:
        return None


def receive_path(validators: Any, version: str, payload: dict[str, Any], n: int) -> float:
    """Thread-CPU µs per ``RpcChargePoint.route_message`` of one TransactionEvent frame.

    The CSMS's receive path without sockets: decode the frame, validate the request, a
    handler answering ``{}``, validate the response, encode and "send" the CALLRESULT.
    """

    class Station(RpcChargePoint):
        _ocpp_version = version

        @on("TransactionEvent")
        def on_transaction_event(self, _payload: dict[str, Any]) -> dict[str, Any]:
            return {}

    frame = json.dumps([2, "m-1", "TransactionEvent", payload], separators=(",", ":"))

    async def run() -> float:
        station = Station("st-1", _Connection(), validators=validators)
        for _ in range(200):
            await station.route_message(frame)
        cpu = time.thread_time()
        for _ in range(n):
            await station.route_message(frame)
        return (time.thread_time() - cpu) / n * 1e6

    return asyncio.run(run())


def compile_costs(variant: str, cases: list[tuple[str, str]]) -> tuple[float, float]:
    """(ms to compile ``cases``' validators, KiB they keep), each from a fresh compile."""
    gc.collect()
    start = time.perf_counter()
    compile_variant(variant, cases)
    elapsed_ms = (time.perf_counter() - start) * 1000
    gc.collect()
    tracemalloc.start()
    kept = compile_variant(variant, cases)
    gc.collect()
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    return elapsed_ms, current / 1024


def main() -> int:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="messages per row (default 20,000)")
    parser.add_argument(
        "--reference-n",
        type=int,
        default=1_000,
        help="messages per row for the slow jsonschema reference (default 1,000)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--versions", nargs="+", choices=VERSIONS, default=list(VERSIONS))
    args = parser.parse_args()
    if args.n < args.rounds or args.reference_n < args.rounds:
        parser.error("-n and --reference-n must be at least --rounds")

    proc = psutil.Process(os.getpid())
    rss_start = proc.memory_info().rss / 2**20
    cases = [(version, action) for action in ACTIONS for version in args.versions]
    messages = {version: payloads(version) for version in args.versions}
    costs = {variant: compile_costs(variant, cases) for variant in VARIANTS}
    checks = {variant: compile_variant(variant, cases) for variant in VARIANTS}
    for variant, by_case in checks.items():
        for (version, action), check in by_case.items():
            sanity_check(check, messages[version][action], f"{variant} {action} {version}")
            latencies_ns(check, messages[version][action], 200)  # warm-up

    lat: dict[tuple[str, str, str], list[int]] = {}
    busy: dict[tuple[str, str, str], list[float]] = {}
    for _round in range(args.rounds):
        for version, action in cases:
            for variant in VARIANTS:
                total = args.reference_n if variant.startswith("jsonschema") else args.n
                n = total // args.rounds
                key = (action, version, variant)
                check, payload = checks[variant][version, action], messages[version][action]
                lat.setdefault(key, []).extend(latencies_ns(check, payload, n))
                wall_s, cpu_s = loop(check, payload, n)
                acc = busy.setdefault(key, [0.0, 0.0, 0.0])
                acc[0] += wall_s
                acc[1] += cpu_s
                acc[2] += n

    sampled = "/".join(
        str(len(messages[v]["TransactionEvent"]["meterValue"][0]["sampledValue"]))
        for v in args.versions
    )
    print(
        f"\nOCPP request validation, one process (Python {sys.version.split()[0]}, "
        f"ocpp {ocpp_version()}, fastjsonschema {fast_version()}); -n {args.n} "
        f"(jsonschema {args.reference_n}) per row in {args.rounds} interleaved rounds; "
        f"TransactionEvent with {sampled} sampled values ({'/'.join(args.versions)})"
    )
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(
        "| message | OCPP | validator | p50 µs | p99 µs | msg/s (one core) | CPU µs/msg "
        "| core % at 1,000 msg/s | CPU vs before |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for action in ACTIONS:
        for version in args.versions:
            base = busy[action, version, VARIANTS[0]]
            base_us = base[1] / base[2] * 1e6
            for variant in VARIANTS:
                key = (action, version, variant)
                wall_s, cpu_s, n = busy[key]
                cpu_us = cpu_s / n * 1e6
                values = lat[key]
                p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
                print(
                    f"| {action} | {version} | {variant} "
                    f"| {fmt(None if p50 is None else p50 / 1000, '.1f')} "
                    f"| {fmt(None if p99 is None else p99 / 1000, '.1f')} "
                    f"| {n / wall_s:,.0f} | {cpu_us:.1f} | {cpu_us / 10:.2f} "
                    f"| {cpu_us / base_us:.2f}x |"
                )
    print(
        "\n| receive path (route_message of one TransactionEvent) | OCPP "
        "| before CPU µs/msg | now CPU µs/msg | difference µs |"
    )
    print("| --- | --- | ---: | ---: | ---: |")
    for version in args.versions:
        payload = messages[version]["TransactionEvent"]
        before_us, now_us = [], []
        for _round in range(args.rounds):
            n = max(1, args.n // (4 * args.rounds))
            before_us.append(receive_path(codegen.ValidatorCache(), version, payload, n))
            now_us.append(receive_path(fast.ValidatorCache(), version, payload, n))
        before, now = sorted(before_us)[len(before_us) // 2], sorted(now_us)[len(now_us) // 2]
        print(
            f"| decode, validate, handler, validate answer, encode | {version} "
            f"| {before:.1f} | {now:.1f} | {now - before:+.1f} |"
        )
    print(f"\n| validator | compile {len(cases)} schemas ms | kept by the validators KiB |")
    print("| --- | ---: | ---: |")
    for variant in VARIANTS:
        elapsed_ms, kib = costs[variant]
        print(f"| {variant} | {elapsed_ms:.0f} | {kib:,.0f} |")
    rss_end = proc.memory_info().rss / 2**20
    print(f"\nprocess RSS: {rss_start:.0f} MiB after imports, {rss_end:.0f} MiB at the end")
    return 0


def ocpp_version() -> str:
    """The installed ``ocpp`` package's version."""
    from importlib.metadata import version

    return version("ocpp")


def fast_version() -> str:
    """The installed ``fastjsonschema``'s version."""
    from importlib.metadata import version

    return version("fastjsonschema")


if __name__ == "__main__":
    sys.exit(main())
