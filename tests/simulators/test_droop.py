"""The droop response of the simulated DER: static law (IEEE 1547) and its time response."""

from __future__ import annotations

import math

import pytest
from numpy.testing import assert_allclose

from simulators.droop import DroopParams, droop_delta_w, first_order_step, time_constant_s

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
