"""Property tests of the site file: any value for any key is loaded or refused in one line.

tests/gridflex/test_config_errors.py fuzzes asset keys and the MQTT password (and checks no
secret is repeated); here every key of every table gets arbitrary TOML values, and whole
site files get arbitrary text and bytes: the only error is a one-line ``ConfigError`` that
names the key, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from gridflex import config
from gridflex.config import ConfigError, load_site

SOURCE = "site.toml"
PREFIX = f"config error in {SOURCE}: "


def _section_keys(model: type[BaseModel], path: str) -> list[tuple[str, str]]:
    """``(table path, key)`` of every setting below ``model`` (nested tables included)."""
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = [
            a
            for a in (annotation, *getattr(annotation, "__args__", ()))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if nested:
            found += _section_keys(nested[0], f"{path}.{name}")
        else:
            found.append((path, name))
    return found


TABLES = [
    name
    for name, field in config.SiteConfig.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
] + ["api"]


def _model_of(table: str) -> type[BaseModel]:
    annotation = config.SiteConfig.model_fields[table].annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise AssertionError(table)


SETTINGS = sorted({key for table in TABLES for key in _section_keys(_model_of(table), table)})

TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),  # nan and inf are TOML too
    st.text(max_size=30),
    st.datetimes(),
    st.dates(),
    st.times(),
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _set(doc: dict[str, Any], dotted: str, key: str, value: Any) -> None:
    node = doc
    for part in dotted.split("."):
        node = node.setdefault(part, {})
    node[key] = value


def _check_one_line_naming(message: str, *names: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(PREFIX), message
    assert any(name in message for name in names), (names, message)


def test_the_fuzzed_settings_cover_every_table() -> None:
    tables = {table.split(".")[0] for table, _key in SETTINGS}
    assert {"mqtt", "history", "modbus", "pipeline", "ocpp", "dispatch", "control", "api"} <= (
        tables
    )
    assert ("dispatch.fcr", "capacity_w") in SETTINGS


@given(setting=st.sampled_from(SETTINGS), value=TOML_VALUES)
@example(setting=("mqtt", "queue_limit"), value=True)
@example(setting=("ocpp", "port"), value=dt.datetime(2025, 1, 1))  # noqa: DTZ001
@example(setting=("api", "listen"), value=[])
@settings(max_examples=400, deadline=None)
def test_any_value_for_any_key_loads_or_is_a_one_line_error_naming_the_key(
    setting: tuple[str, str], value: Any
) -> None:
    table, key = setting
    doc: dict[str, Any] = {"site": {"id": "s1"}}
    _set(doc, table, key, value)
    try:
        config.parse_site(doc, SOURCE)
    except ConfigError as exc:
        _check_one_line_naming(str(exc), f"{table}.{key}", key)


SITE_KEYS = st.sampled_from(["id", "nominal_frequency_hz", "max_import_w", "max_export_w"])


@given(key=SITE_KEYS, value=TOML_VALUES)
@settings(max_examples=100, deadline=None)
def test_any_value_for_a_site_key_loads_or_is_a_one_line_error_naming_it(
    key: str, value: Any
) -> None:
    try:
        config.parse_site({"site": {"id": "s1", key: value}}, SOURCE)
    except ConfigError as exc:
        _check_one_line_naming(str(exc), key)


@given(text=st.text(max_size=200))
@example(text='[site]\nid = "s1"\n[mqtt]\nurl = """\n')
@example(text='[site]\nid = "s1"\n[site]\nid = "s2"\n')
@settings(max_examples=200, deadline=None)
def test_any_text_as_a_site_file_loads_or_is_a_one_line_error(text: str) -> None:
    _load_bytes(text.encode("utf-8", "surrogatepass"))


@given(
    head=st.sampled_from(['[site]\nid = "s1"\n', '[site]\nid = "s1"\n[mqtt]\nurl = ']),
    tail=st.binary(max_size=40),
)
# regression: a site file saved in Latin-1 ("Müller") ended in a UnicodeDecodeError traceback
@example(head='[site]\nid = "s1"\n', tail="# Müller".encode("latin-1"))
@settings(max_examples=100, deadline=None)
def test_any_bytes_in_a_site_file_load_or_are_a_one_line_error(head: str, tail: bytes) -> None:
    _load_bytes(head.encode() + tail)


def _load_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / SOURCE
        path.write_bytes(data)
        try:
            load_site(path)
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message and "\r" not in message, message
            assert message.startswith(f"config error in {path}: "), message


@pytest.mark.parametrize("table", ["mqtt", "ocpp", "dispatch.fcr"])
def test_a_toml_table_where_a_value_belongs_is_named(table: str) -> None:
    document = f'[site]\nid = "s1"\n[{table}]\n'
    doc = tomllib.loads(document)
    _set(doc, table, "zz_unknown", 1)
    with pytest.raises(ConfigError, match=rf"{table}\.zz_unknown: unknown key"):
        config.parse_site(doc, SOURCE)
