"""Local droop: the curve from the site file, the read-back check, the supervisor (fakes)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from control.droop import DroopReadback, LocalDroopSupervisor, droop_params_of
from gridflex.config import parse_site
from pipelines.dispatch import DroopParams
from pipelines.site import asset_profiles

FAST = DroopParams(db_of_hz=0.1, db_uf_hz=0.2, k_of=0.04, k_uf=0.06, response_time_s=2.5)


def _exact(params: DroopParams, enabled: bool = True) -> DroopReadback:
    return DroopReadback(enabled, params, db_step_hz=0.001, k_step=0.001, response_step_s=0.1)


@dataclass
class FakeDevice:
    """A device that keeps what it is given; ``fail`` makes the next calls raise it."""

    curve: DroopReadback | None = None
    fail: Exception | None = None
    hang: bool = False
    programs: int = 0
    reads: int = 0

    async def program_droop(self, params: DroopParams) -> DroopReadback:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        self.programs += 1
        self.curve = _exact(params)
        return self.curve

    async def read_droop(self) -> DroopReadback:
        if self.fail is not None:
            raise self.fail
        self.reads += 1
        assert self.curve is not None
        return self.curve


@dataclass
class WriteOnlyDevice:
    """A device that can be programmed but not read back (``program_droop`` only)."""

    programs: list[DroopParams] = field(default_factory=list)

    async def program_droop(self, params: DroopParams) -> DroopReadback:
        self.programs.append(params)
        return _exact(params)


def _site(**dispatch: Any) -> Any:
    return parse_site(
        {
            "site": {"id": "s1"},
            "dispatch": {"mode": "droop", "local_droop": True, **dispatch},
            "assets": [
                {"id": "inv-1", "kind": "inverter", "host": "h", "max_charge_w": 10_000},
                {
                    "id": "inv-2",
                    "kind": "inverter",
                    "host": "h",
                    "unit_id": 2,
                    "max_charge_w": 10_000,
                    "droop": {"k_uf": 0.02, "response_time_s": 1.0},
                },
                {"id": "cs-1", "kind": "evse", "max_charge_w": 11_000},
            ],
        }
    )


# --------------------------------------------------------------------------- the curve


def test_droop_params_of_takes_the_site_curve_and_the_assets_overrides() -> None:
    site = _site(droop={"db_uf_hz": 0.05, "response_time_s": 3.0})
    first, second = site.inverters
    assert droop_params_of(site.dispatch, first) == DroopParams(db_uf_hz=0.05, response_time_s=3.0)
    assert droop_params_of(site.dispatch, second) == DroopParams(
        db_uf_hz=0.05, k_uf=0.02, response_time_s=1.0
    )


def test_the_pipeline_expects_the_same_curve_the_devices_get() -> None:
    site = _site(droop={"db_uf_hz": 0.05})
    profiles = asset_profiles(site)
    for asset in site.assets:
        assert profiles[asset.id].droop == droop_params_of(site.dispatch, asset)


@pytest.mark.parametrize(
    ("readback", "expected"),
    [
        (_exact(FAST), []),  # what was asked
        (_exact(DroopParams(0.1004, 0.2, 0.04, 0.06, 2.54)), []),  # within half a step
        (_exact(DroopParams(0.102, 0.2, 0.04, 0.06, 2.5)), ["db_of_hz 0.102 instead of 0.1"]),
        (_exact(FAST, enabled=False), ["droop not enabled"]),
        (DroopReadback(True, None), ["no usable droop curve in force"]),
        (
            _exact(DroopParams(0.1, 0.2, 0.05, 0.06, 5.0)),
            ["k_of 0.05 instead of 0.04", "response_time_s 5 instead of 2.5"],
        ),
    ],
)
def test_read_back_differences_beyond_the_devices_resolution(
    readback: DroopReadback, expected: list[str]
) -> None:
    assert readback.differences(FAST) == expected


# --------------------------------------------------------------------------- supervisor


def _supervisor(devices: dict[str, Any], **options: Any) -> LocalDroopSupervisor:
    options.setdefault("timeout_s", 1.0)
    clock = iter(range(1_000, 10**9, 1_000))
    return LocalDroopSupervisor(
        {asset: (device, FAST) for asset, device in devices.items()},
        now_ms=lambda: next(clock),
        **options,
    )


def test_first_check_programs_the_device_and_records_the_read_back() -> None:
    device = FakeDevice()
    sup = _supervisor({"a": device})
    assert sup.states["a"].status == "pending"
    state = asyncio.run(sup.check("a"))
    assert (state.status, state.reason, state.programs) == ("programmed", "first contact", 1)
    assert state.readback == _exact(FAST)
    assert state.programmed_ms == state.checked_ms == 1_000


def test_a_programmed_device_is_only_read_back_while_it_keeps_the_curve() -> None:
    device = FakeDevice()
    sup = _supervisor({"a": device})

    async def scenario() -> None:
        for _ in range(3):
            await sup.check("a")

    asyncio.run(scenario())
    assert (device.programs, device.reads) == (1, 2)
    assert sup.states["a"].checked_ms == 3_000
    assert sup.states["a"].programmed_ms == 1_000


def test_drift_is_programmed_again_with_the_reason() -> None:
    device = FakeDevice()
    sup = _supervisor({"a": device})

    async def scenario() -> None:
        await sup.check("a")
        device.curve = _exact(DroopParams())  # a reboot back to the factory curve
        await sup.check("a")

    asyncio.run(scenario())
    state = sup.states["a"]
    assert state.status == "programmed" and state.programs == 2
    assert state.reason is not None and state.reason.startswith("drift: db_of_hz 0.036")
    assert device.curve == _exact(FAST)


def test_a_failure_is_shown_with_its_reason_and_the_device_is_programmed_when_back() -> None:
    device = FakeDevice(fail=ConnectionError("cannot connect to h:502"))
    sup = _supervisor({"a": device})

    async def scenario() -> None:
        await sup.check("a")
        await sup.check("a")

    asyncio.run(scenario())
    failed = sup.states["a"]
    assert failed.status == "failed"
    assert failed.reason == "ConnectionError: cannot connect to h:502"
    assert failed.failures == 2
    device.fail = None
    state = asyncio.run(sup.check("a"))
    assert state.status == "programmed" and state.failures == 0
    assert state.reason == "reached again after: ConnectionError: cannot connect to h:502"


def test_a_programmed_device_that_stops_answering_is_programmed_again_once_back() -> None:
    device = FakeDevice()
    sup = _supervisor({"a": device})

    async def scenario() -> None:
        await sup.check("a")
        device.fail = ConnectionError("connection to the device was lost")
        await sup.check("a")
        device.fail = None
        await sup.check("a")

    asyncio.run(scenario())
    assert device.programs == 2  # first contact, then after the outage
    assert sup.states["a"].reason is not None
    assert sup.states["a"].reason.startswith("reached again after: ConnectionError")


def test_a_device_without_read_back_is_programmed_again_at_every_check() -> None:
    device = WriteOnlyDevice()
    sup = _supervisor({"a": device})

    async def scenario() -> None:
        for _ in range(3):
            await sup.check("a")

    asyncio.run(scenario())
    assert device.programs == [FAST, FAST, FAST]
    assert sup.states["a"].reason == "periodic re-programming (the device cannot be read back)"


def test_a_hanging_or_failing_device_blocks_no_other_asset() -> None:
    hanging, failing, good = FakeDevice(hang=True), FakeDevice(fail=OSError("boom")), FakeDevice()
    sup = _supervisor(
        {"hang": hanging, "fail": failing, "good": good},
        verify_s=0.05,
        retry_s=0.05,
        timeout_s=600.0,  # the hanging call outlives the test
    )

    async def scenario() -> None:
        await sup.start()
        try:
            deadline = time.monotonic() + 30.0
            while good.reads < 3 or sup.states["fail"].failures < 3:
                assert time.monotonic() < deadline, sup.snapshot()
                await asyncio.sleep(0.02)
        finally:
            await sup.stop()

    asyncio.run(scenario())
    assert sup.states["good"].status == "programmed"
    assert sup.states["hang"].status == "pending"  # still in its first call
    assert sup.states["fail"].reason == "OSError: boom"


def test_a_device_that_does_not_answer_in_time_fails_with_the_timeout() -> None:
    sup = _supervisor({"a": FakeDevice(hang=True)}, timeout_s=0.05)
    state = asyncio.run(sup.check("a"))
    assert (state.status, state.reason) == ("failed", "timed out after 0.05 s")


def test_for_site_supervises_the_assets_with_a_device_and_shows_the_others_unsupported() -> None:
    site = _site()
    inv1, inv2 = FakeDevice(), FakeDevice()
    sup = LocalDroopSupervisor.for_site(
        site.dispatch, {a.id: a for a in site.assets}, {"inv-1": inv1, "inv-2": inv2}
    )
    assert set(sup.targets) == {"inv-1", "inv-2"}
    assert sup.targets["inv-2"][1] == DroopParams(k_uf=0.02, response_time_s=1.0)
    unsupported = sup.snapshot()["cs-1"]
    assert unsupported["status"] == "unsupported"
    assert unsupported["reason"] == "no local droop for a evse yet"


def test_run_programs_every_asset_and_stops_on_the_event() -> None:
    devices = {"a": FakeDevice(), "b": FakeDevice()}
    sup = _supervisor(devices)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sup.run(stop))
        deadline = time.monotonic() + 30.0
        while any(s.status != "programmed" for s in sup.states.values()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(scenario())
    assert [d.programs for d in devices.values()] == [1, 1]
