"""Golden vectors for the SunSpec codec: each type, its sentinel and scale factors."""

from __future__ import annotations

import pytest

from gridflex.sunspec.codec import CodecError, apply_sf, decode, encode, not_implemented, unscale

# (type, value, registers): the value encodes to exactly these big-endian registers.
GOLDEN = [
    ("int16", -2, [0xFFFE]),
    ("int16", 1234, [0x04D2]),
    ("uint16", 65534, [0xFFFE]),
    ("count", 7, [0x0007]),
    ("acc16", 1, [0x0001]),
    ("enum16", 3, [0x0003]),
    ("bitfield16", 0x00A5, [0x00A5]),
    ("sunssf", -2, [0xFFFE]),
    ("int32", -100_000, [0xFFFE, 0x7960]),
    ("uint32", 5_000_123, [0x004C, 0x4BBB]),
    ("acc32", 70_000, [0x0001, 0x1170]),
    ("enum32", 2, [0x0000, 0x0002]),
    ("bitfield32", 0x80000001, [0x8000, 0x0001]),
    ("int64", -1, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE + 1]),
    ("uint64", 2**40 + 5, [0x0000, 0x0100, 0x0000, 0x0005]),
    ("acc64", 123_456_789_012, [0x0000, 0x001C, 0xBE99, 0x1A14]),
    ("float32", 1.5, [0x3FC0, 0x0000]),
]


@pytest.mark.parametrize(("type_", "value", "registers"), GOLDEN)
def test_encode_produces_the_golden_registers(type_: str, value: int, registers: list[int]) -> None:
    assert encode(type_, value, len(registers)) == registers


@pytest.mark.parametrize(("type_", "value", "registers"), GOLDEN)
def test_decode_reads_the_golden_value(type_: str, value: int, registers: list[int]) -> None:
    assert decode(type_, registers, 0, len(registers)) == value


@pytest.mark.parametrize(
    ("type_", "registers"),
    [
        ("int16", [0x8000]),
        ("sunssf", [0x8000]),
        ("uint16", [0xFFFF]),
        ("count", [0xFFFF]),
        ("enum16", [0xFFFF]),
        ("bitfield16", [0xFFFF]),
        ("acc16", [0]),
        ("int32", [0x8000, 0x0000]),
        ("uint32", [0xFFFF, 0xFFFF]),
        ("enum32", [0xFFFF, 0xFFFF]),
        ("bitfield32", [0xFFFF, 0xFFFF]),
        ("acc32", [0, 0]),
        ("int64", [0x8000, 0, 0, 0]),
        ("uint64", [0xFFFF] * 4),
        ("acc64", [0] * 4),
        ("float32", [0x7FC0, 0x0000]),
        ("string", [0, 0, 0]),
        ("pad", [0]),
    ],
)
def test_not_implemented_sentinel_decodes_to_none(type_: str, registers: list[int]) -> None:
    assert decode(type_, registers, 0, len(registers)) is None
    assert not_implemented(type_, len(registers)) == registers
    assert encode(type_, None, len(registers)) == registers


def test_decode_at_an_offset_inside_a_block() -> None:
    block = [0x1111, 0x0001, 0x86A0, 0x2222]
    assert decode("uint32", block, 1) == 100_000


def test_string_is_nul_padded_and_stripped() -> None:
    assert encode("string", "SunS", 4) == [0x5375, 0x6E53, 0, 0]
    assert decode("string", [0x6772, 0x6964, 0x666C, 0x6578, 0, 0], 0, 6) == "gridflex"


def test_string_longer_than_its_point_is_refused() -> None:
    with pytest.raises(CodecError, match="longer"):
        encode("string", "abcde", 2)


@pytest.mark.parametrize(
    ("type_", "value"),
    [("int16", 40_000), ("uint16", -1), ("int32", 2**31), ("uint64", 2**64), ("acc16", 70_000)],
)
def test_out_of_range_value_is_refused(type_: str, value: int) -> None:
    with pytest.raises(CodecError, match="out of range"):
        encode(type_, value)


@pytest.mark.parametrize(("type_", "value"), [("int16", -32768), ("uint16", 65535)])
def test_a_value_equal_to_the_sentinel_is_refused(type_: str, value: int) -> None:
    with pytest.raises(CodecError, match="not-implemented"):
        encode(type_, value)


def test_unknown_type_is_an_error() -> None:
    with pytest.raises(CodecError, match="unknown"):
        decode("int24", [0])


@pytest.mark.parametrize(
    ("raw", "sf", "expected"),
    [(5001, -2, 50.01), (123, 0, 123.0), (12, 3, 12_000.0), (-250, -1, -25.0)],
)
def test_scale_factor_applies_power_of_ten(raw: int, sf: int, expected: float) -> None:
    assert apply_sf(raw, sf) == pytest.approx(expected)


def test_scaled_value_is_none_when_value_or_sf_is_not_implemented() -> None:
    assert apply_sf(None, -2) is None
    assert apply_sf(100, None) is None


def test_unscale_rounds_to_the_nearest_raw_step() -> None:
    assert unscale(49.987, -2) == 4999
    assert unscale(-7400.0, 1) == -740
    assert unscale(3.0, 0) == 3
