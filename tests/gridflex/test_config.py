"""Site configuration: loading, defaults and error messages that name file, key, expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridflex.config import ConfigError, load_site

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site.toml"

MINIMAL = """
[site]
id = "s1"

[[assets]]
id = "inv-1"
kind = "inverter"
host = "127.0.0.1"
port = 1502
max_charge_w = 5000
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_site_loads_with_its_assets() -> None:
    site = load_site(EXAMPLE)
    assert site.id == "depot-1"
    assert [a.id for a in site.inverters] == ["inv-001", "inv-002"]
    assert site.evses[0].station == "CS001"
    assert site.history.dir == EXAMPLE.parent / "data"


def test_defaults_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    site = load_site(_write(tmp_path, MINIMAL))
    assert site.nominal_frequency_hz == 50
    assert site.modbus.poll_interval_ms == 200
    assert site.inverters[0].unit_id == 1
    assert site.inverters[0].soc_min_pct == 10


@pytest.mark.parametrize(
    ("edit", "key", "expectation"),
    [
        (("max_charge_w = 5000", "max_charge_w = -5"), "assets[id=inv-1].max_charge_w", ">= 0"),
        (('id = "s1"', 'id = "s1"\nnominal_frequency_hz = 55'), "site.nominal_frequency_hz", "50"),
        (('kind = "inverter"', 'kind = "toaster"'), "assets[id=inv-1].kind", "inverter"),
        (("port = 1502", 'port = "x"'), "assets[id=inv-1].port", "whole number"),
        (('host = "127.0.0.1"\n', ""), "assets[id=inv-1].host", "required"),
        (
            ("max_charge_w = 5000", "max_charge_w = 5000\ncolour = 1"),
            "assets[id=inv-1].colour",
            "unknown",
        ),
    ],
)
def test_error_names_file_key_and_expectation(
    tmp_path: Path, edit: tuple[str, str], key: str, expectation: str
) -> None:
    path = _write(tmp_path, MINIMAL.replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_site(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert expectation in message


def test_bad_mqtt_url_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + '\n[mqtt]\nurl = "http://x"\n')
    with pytest.raises(ConfigError, match=r"mqtt\.url: expected mqtt://"):
        load_site(path)


def test_duplicate_asset_ids_are_refused(tmp_path: Path) -> None:
    twice = MINIMAL + MINIMAL.split("\n", 4)[4]
    with pytest.raises(ConfigError, match="appears twice"):
        load_site(_write(tmp_path, twice))


def test_missing_site_table_and_bad_toml_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"site: expected a \[site\] table"):
        load_site(_write(tmp_path, "[mqtt]\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_site(_write(tmp_path, "[site\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_site(tmp_path / "absent.toml")


def test_security_profile_2_needs_certificate_paths(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "\n[ocpp]\nsecurity_profile = 2\n")
    with pytest.raises(ConfigError, match="tls_cert"):
        load_site(path)


def test_check_command_exits_non_zero_and_prints_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gridflex.cli import main

    path = _write(tmp_path, MINIMAL.replace("max_charge_w = 5000", "max_charge_w = -5"))
    assert main(["check", "--site", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"config error in {path}: assets[id=inv-1].max_charge_w: expected >= 0, got -5" in err


def test_check_command_accepts_a_good_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gridflex.cli import main

    assert main(["check", "--site", str(_write(tmp_path, MINIMAL))]) == 0
    assert "site s1: 1 inverter(s), 0 evse(s)" in capsys.readouterr().out


def test_local_droop_is_off_by_default_and_the_response_time_is_ieee_1547s(
    tmp_path: Path,
) -> None:
    site = load_site(_write(tmp_path, MINIMAL))
    assert site.dispatch.local_droop is False
    assert site.dispatch.droop.response_time_s == 5.0


def test_local_droop_with_a_per_asset_response_time_loads(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        '[site]\nid = "s1"', '[site]\nid = "s1"\n[dispatch]\nmode = "droop"\nlocal_droop = true'
    )
    text += "droop = { response_time_s = 1.5 }\n"
    site = load_site(_write(tmp_path, text))
    assert site.dispatch.local_droop is True
    own = site.inverters[0].droop
    assert own is not None and own.response_time_s == 1.5


@pytest.mark.parametrize(
    ("table", "key", "expectation"),
    [
        ("[dispatch.droop]\nresponse_time_s = 0.1", "dispatch.droop.response_time_s", ">= 0.2"),
        ("[dispatch.droop]\nresponse_time_s = 11", "dispatch.droop.response_time_s", "<= 10"),
        ('[dispatch]\nmode = "fcr"\nlocal_droop = true', "dispatch", "would add to the fcr"),
    ],
)
def test_local_droop_settings_are_validated(
    tmp_path: Path, table: str, key: str, expectation: str
) -> None:
    text = MINIMAL.replace("[[assets]]", table + "\n\n[[assets]]")
    with pytest.raises(ConfigError) as err:
        load_site(_write(tmp_path, text))
    message = str(err.value)
    assert f"{key}:" in message and expectation in message, message
