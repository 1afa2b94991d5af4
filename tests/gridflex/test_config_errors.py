"""Site-file errors: strict types, one line naming file/key/expectation, never a secret."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from gridflex import config
from gridflex.config import ConfigError, load_site

HEAD = '[site]\nid = "s1"\n'
INVERTER = """
[[assets]]
id = "{id}"
kind = "inverter"
host = "{host}"
unit_id = {unit}
max_charge_w = {max_charge_w}
"""
STATION_PASSWORD = "evse-secret-password-1"
EVSE = f"""
[[assets]]
id = "ev-1"
kind = "evse"
max_charge_w = 7400
password = "{STATION_PASSWORD}"
"""


def _inverter(
    asset_id: str = "inv-1", host: str = "10.0.0.5", unit: int = 1, max_charge_w: str = "5000"
) -> str:
    return INVERTER.format(id=asset_id, host=host, unit=unit, max_charge_w=max_charge_w)


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_site(path)
    message = str(info.value)
    assert message.startswith(f"config error in {path}: "), message
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("value", "shown"), [("true", "got true"), ('"5000"', "got '5000'"), ("5000.0e0", None)]
)
def test_a_number_must_be_a_toml_number_not_a_boolean_or_a_quoted_string(
    tmp_path: Path, value: str, shown: str | None
) -> None:
    text = HEAD + _inverter(max_charge_w=value)
    if shown is None:  # a float is fine
        path = tmp_path / "site.toml"
        path.write_text(text, encoding="utf-8")
        assert load_site(path).inverters[0].max_charge_w == 5000.0
        return
    message = _error(tmp_path, text)
    assert f"assets[id=inv-1].max_charge_w: expected a number (without quotes), {shown}" in message


def test_an_integer_still_fills_a_float_field(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(HEAD + _inverter(max_charge_w="5000"), encoding="utf-8")
    limit = load_site(path).inverters[0].max_charge_w
    assert limit == 5000 and isinstance(limit, float)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("[ocpp]\nsecurity_profile = true", "ocpp.security_profile"),
        ('[modbus]\npoll_interval_ms = "200"', "modbus.poll_interval_ms"),
        ("[modbus]\npoll_interval_ms = 200.5", "modbus.poll_interval_ms"),
        ('[dispatch]\nlocal_droop = "yes"', "dispatch.local_droop"),
        ("[pipeline]\nrecovery = 1", "pipeline.recovery"),
    ],
)
def test_lax_conversions_are_refused_in_every_table(tmp_path: Path, table: str, key: str) -> None:
    assert f"{key}: expected" in _error(tmp_path, HEAD + table + "\n" + _inverter())


def test_two_inverters_on_one_host_port_unit_are_refused_naming_both(tmp_path: Path) -> None:
    text = HEAD + _inverter("inv-1") + _inverter("inv-2", host="10.0.0.9") + _inverter("inv-3")
    message = _error(tmp_path, text)
    assert (
        "assets[0].host and assets[2].host: expected one inverter asset per host:port:unit_id"
        in (message)
    )
    assert "10.0.0.5:502 unit_id 1" in message


def test_two_inverters_behind_one_gateway_with_their_own_unit_ids_load(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(HEAD + _inverter("inv-1") + _inverter("inv-2", unit=2), encoding="utf-8")
    assert [a.unit_id for a in load_site(path).inverters] == [1, 2]


def test_duplicate_ids_name_both_positions(tmp_path: Path) -> None:
    text = HEAD + _inverter("inv-1") + _inverter("inv-2", unit=2) + _inverter("inv-1", unit=3)
    message = _error(tmp_path, text)
    assert "assets[0].id and assets[2].id: expected unique asset ids, 'inv-1' appears twice" in (
        message
    )


@pytest.mark.parametrize(
    ("edit", "key", "expectation"),
    [
        (('kind = "evse"', 'kind = "evsex"'), "assets[id=ev-1].kind", "expected 'inverter' or"),
        (("max_charge_w = 7400", "max_charge_w = 7400\nsoc_min_pct = 95"), "soc_min_pct", "below"),
        (("max_charge_w = 7400", "max_charge_w = -1"), "assets[id=ev-1].max_charge_w", ">= 0"),
        (("ev-1", "ev 1"), "assets[0].id", "expected 1 to 64 letters"),
    ],
)
def test_asset_errors_name_the_key_and_never_dump_the_asset_or_its_password(
    tmp_path: Path, edit: tuple[str, str], key: str, expectation: str
) -> None:
    message = _error(tmp_path, HEAD + EVSE.replace(*edit))
    assert key in message and expectation in message, message
    assert STATION_PASSWORD not in message
    assert "{" not in message, message  # no table dumped


def test_a_bad_secret_is_named_but_never_repeated(tmp_path: Path) -> None:
    text = HEAD + '[mqtt]\npassword = 1234567890123\n[api]\ntoken = "short-token"\n'
    message = _error(tmp_path, text + _inverter())
    assert "mqtt.password: expected a quoted string" in message
    assert "api.token: string should have at least 16 characters" in message
    assert "1234567890123" not in message and "short-token" not in message


def test_url_credentials_are_removed_from_the_message(tmp_path: Path) -> None:
    text = HEAD + '[mqtt]\nurl = "http://gateway:hunter2@broker.local"\n' + _inverter()
    message = _error(tmp_path, text)
    assert "mqtt.url: expected mqtt://" in message
    assert "hunter2" not in message and "http://***@broker.local" in message


def _models(model: type[BaseModel]) -> set[type[BaseModel]]:
    found = {model}
    for field in model.model_fields.values():
        for arg in _flatten(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in found:
                found |= _models(arg)
    return found


def _flatten(annotation: object) -> list[object]:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    return [a for arg in args for a in _flatten(arg)]


def test_every_path_field_reads_a_toml_string_although_the_tables_are_strict() -> None:
    checked = []
    for model in _models(config.SiteConfig):
        names = [n for n, f in model.model_fields.items() if Path in _flatten(f.annotation)]
        if not names:
            continue
        required = {"id": "s1"} if model is config.SiteConfig else {}
        value = model.model_validate({**required, **dict.fromkeys(names, "some/file")})
        for name in names:
            assert getattr(value, name) == Path("some/file"), (model, name)
            checked.append(f"{model.__name__}.{name}")
    assert "HistoryConfig.dir" in checked and "OcppConfig.tls_key" in checked


_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
_ASSET_KEYS = st.sampled_from(
    ["id", "kind", "max_charge_w", "soc_min_pct", "soc_max_pct", "evse_id", "station_id",
     "station_max_w", "base_setpoint_w", "colour", "droop"]
)  # fmt: skip
_SECRET = "Zq-secret-password-7781"


@settings(max_examples=150, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 2), _ASSET_KEYS, _SCALARS), max_size=4),
    mqtt_password=_SCALARS,
)
def test_no_site_error_repeats_a_password_or_spans_two_lines(
    edits: list[tuple[int, str, object]], mqtt_password: object
) -> None:
    assets: list[dict[str, object]] = [
        {"id": f"ev-{i}", "kind": "evse", "max_charge_w": 7400, "password": _SECRET}
        for i in range(3)
    ]
    for index, key, value in edits:
        assets[index][key] = value
    doc = {"site": {"id": "s1"}, "mqtt": {"password": mqtt_password}, "assets": assets}
    try:
        config.parse_site(doc, "site.toml")
    except ConfigError as exc:
        message = str(exc)
        assert _SECRET not in message
        assert "\n" not in message and "\r" not in message
        assert message.startswith("config error in site.toml: ")
        segments = message.removeprefix("config error in site.toml: ").split("; ")
        about_password = [s for s in segments if s.startswith("mqtt.password:")]
        if not isinstance(mqtt_password, str):  # named, its value not repeated
            assert about_password == ["mqtt.password: expected a quoted string"]
