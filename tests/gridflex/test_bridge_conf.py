"""The bridge section of ``broker-config --central-url``: topics, login, TLS, file mode."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gridflex.broker_config import Credentials, bridge_conf, write_broker_config
from gridflex.config import ConfigError


def test_only_the_summary_goes_out_and_only_the_target_comes_in() -> None:
    text = bridge_conf("s1", "mqtt://central.example:1884")
    topics = [line for line in text.splitlines() if line.startswith("topic ")]
    assert topics == ["topic gridflex/v1/s1/summary out 1", "topic gridflex/v1/s1/target in 1"]
    assert "address central.example:1884" in text
    assert "cleansession false" in text
    assert "remote_password" not in text and "bridge_cafile" not in text


def test_an_mqtts_central_gets_tls_and_the_bridge_logs_in(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    text = bridge_conf(
        "s1", "mqtts://central.example", credentials=Credentials("s1-bridge", "pw"), cafile=ca
    )
    assert "address central.example:8883" in text
    assert f"bridge_cafile {ca.resolve()}" in text
    assert "remote_username s1-bridge" in text and "remote_password pw" in text


def test_a_conf_holding_the_bridge_password_is_owner_only(tmp_path: Path) -> None:
    bridge = bridge_conf("s1", "mqtt://c:1883", credentials=Credentials("s1-bridge", "pw"))
    files = write_broker_config("s1", tmp_path, bind="127.0.0.1", port=1883, bridge=bridge)
    assert stat.S_IMODE(files.conf.stat().st_mode) == 0o600
    assert files.conf.read_text().endswith(bridge)


@pytest.mark.parametrize("url", ["http://c:1883", "mqtt://", "c:1883"])
def test_a_central_url_that_is_not_mqtt_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="central-url"):
        bridge_conf("s1", url)
