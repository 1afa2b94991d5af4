"""The droop response of the simulated DER: static law (IEEE 1547) and its time response."""

from __future__ import annotations

import math

import pytest
from numpy.testing import assert_allclose

from gridflex.sunspec.codec import Value
from simulators.droop import (
    ADOPT_COMPLETED,
    ADOPT_FAILED,
    DroopParams,
    DroopScale,
    droop_delta_w,
    droop_state,
    first_order_step,
    time_constant_s,
)

RATED_W = 10_000.0


def _delta_w(freq_hz: float) -> float:
    return droop_delta_w(
        freq_hz, 50.0, DroopParams(), rated_charge_w=RATED_W, rated_discharge_w=RATED_W
    )


@pytest.mark.parametrize(
    ("freq_hz", "expected_w"),
    [
        (50.000, 0.0),  # nominal
        (49.964, 0.0),  # edge of the under-frequency dead band
        (50.036, 0.0),  # edge of the over-frequency dead band
        (49.800, -656.0),  # (49.80 - 49.964) / (0.05 * 50) * 10 kW: inject 656 W
        (50.200, 656.0),  # mirror image: absorb 656 W
        (47.000, -RATED_W),  # clipped to the discharge rating
        (53.000, RATED_W),  # clipped to the charge rating
    ],
)
def test_static_droop_golden_values(freq_hz: float, expected_w: float) -> None:
    assert_allclose(_delta_w(freq_hz), expected_w, atol=1e-9)


def test_time_constant_puts_90_pct_at_the_response_time() -> None:
    assert_allclose(time_constant_s(5.0), 5.0 / math.log(10.0))
    assert_allclose(time_constant_s(5.0), 2.1715, atol=1e-4)
    assert time_constant_s(0.0) == 0.0


def test_first_order_step_reaches_90_pct_after_the_response_time() -> None:
    tau_s = time_constant_s(5.0)
    value = 0.0
    for _ in range(50):  # 50 x 0.1 s = the response time
        value = first_order_step(value, -656.0, 0.1, tau_s)
    assert_allclose(value, -590.4, atol=0.05)  # 90 % of -656 W


def test_first_order_step_edge_cases() -> None:
    assert first_order_step(1.0, 5.0, 0.1, 0.0) == 5.0  # no lag: follows at once
    assert first_order_step(1.0, 5.0, 0.0, 2.0) == 1.0  # no time: no change
    assert_allclose(first_order_step(1.0, 5.0, 2.0, 2.0), 5.0 - 4.0 / math.e)


# --------------------------------------------------------------------------- 711 control sets

SCALE = DroopScale(db_sf=-3, k_sf=-3, rsp_tms_sf=-1)
IEEE_RAW = {"DbOf": 36, "DbUf": 36, "KOf": 50, "KUf": 50, "RspTms": 50}


def _values(ena: int = 1, req: int = 1, **second: int) -> dict[str, Value]:
    """A two-set 711: ``Ctl[0]`` the IEEE defaults, ``Ctl[1]`` IEEE with ``second`` changed."""
    values: dict[str, Value] = {"Ena": ena, "AdptCtlReq": req, "NCtl": 2}
    for i, curve in enumerate((IEEE_RAW, {**IEEE_RAW, **second})):
        values |= {f"Ctl[{i}].{name}": raw for name, raw in curve.items()}
    return values


@pytest.mark.parametrize(
    ("values", "active", "adopt", "expected"),
    [
        # adopt set 2 (KUf 0.02): it is in force, COMPLETED
        (_values(req=2, KUf=20), 1, True, (True, DroopParams(k_uf=0.02), 2, ADOPT_COMPLETED)),
        # adopt a set with a droop of 0: FAILED, set 1 stays
        (_values(req=2, KOf=0), 1, True, (True, DroopParams(), 1, ADOPT_FAILED)),
        # adopt 0: no active control, no droop even with Ena set
        (_values(req=0), 1, True, (False, None, 0, ADOPT_COMPLETED)),
        # a stored set written but not adopted: nothing changes
        (_values(KUf=20), 1, False, (True, DroopParams(), 1, None)),
        # Ena cleared: set 1 stays in force, switched off
        (_values(ena=0), 1, False, (False, DroopParams(), 1, None)),
    ],
)
def test_droop_state_follows_the_711_adoption_rules(
    values: dict[str, Value],
    active: int,
    adopt: bool,
    expected: tuple[bool, DroopParams | None, int, int | None],
) -> None:
    state = droop_state(values, active=active, adopt_requested=adopt, scale=SCALE)
    assert state is not None
    assert (state.enabled, state.params, state.active, state.result) == expected


@pytest.mark.parametrize(
    ("values", "active"),
    [
        (_values(ena=2), 1),  # Ena is 0 or 1
        (_values(req=3), 1),  # beyond NCtl
        (_values(KOf=0), 2),  # the active set itself made unusable
    ],
)
def test_droop_state_refuses_a_write_that_leaves_nothing_usable(
    values: dict[str, Value], active: int
) -> None:
    assert droop_state(values, active=active, adopt_requested=False, scale=SCALE) is None
