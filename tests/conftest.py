"""Shared fixtures: a real Mosquitto on a free loopback port, started by the tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gridflex.broker import Broker, find_mosquitto, start_broker


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Broker]:
    """A real Mosquitto broker for the whole test session (``.url``, ``.host``, ``.port``)."""
    if find_mosquitto() is None:
        pytest.fail(
            "mosquitto is not installed: `make test` installs it (apt-get install mosquitto)"
        )
    broker = start_broker("mosquitto")
    yield broker
    broker.stop()
