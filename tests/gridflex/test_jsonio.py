"""The wire JSON parser: the stdlib's answers, but bounded depth and no NaN."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridflex import jsonio

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=("Cs",))),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(_JSON)
def test_any_json_document_decodes_as_the_stdlib_decodes_it(value: Any) -> None:
    text = json.dumps(value)
    assert _same(jsonio.loads(text.encode()), json.loads(text))


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_value_error_only(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        jsonio.loads(data)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_nesting_far_beyond_the_bound_is_a_value_error_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(ValueError, match="recursion limit"):
        jsonio.loads(b"[" * depth + b"]" * depth)


def test_nesting_within_the_bound_decodes() -> None:
    value = jsonio.loads(b"[" * 150 + b"]" * 150)
    for _ in range(149):
        value = value[0]
    assert value == []


@pytest.mark.parametrize("text", [b"NaN", b"[Infinity]", b'{"p": -Infinity}'])
def test_nan_and_infinity_literals_are_refused(text: bytes) -> None:
    with pytest.raises(ValueError):
        jsonio.loads(text)


def test_a_string_with_a_lone_surrogate_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        jsonio.loads('"\ud800"')


def test_invalid_utf8_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        jsonio.loads(b'"\xff"')
