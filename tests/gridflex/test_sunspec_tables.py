"""Register tables built from the shipped SunSpec model definitions."""

from __future__ import annotations

import pytest

from gridflex.sunspec.tables import SHIPPED_MODELS, load_model


@pytest.mark.parametrize(
    ("model_id", "length"), [(1, 66), (701, 153), (702, 50), (704, 65), (713, 7)]
)
def test_model_length_matches_the_published_L(model_id: int, length: int) -> None:
    assert load_model(model_id).length == length


def test_points_are_contiguous_and_start_with_id_and_l() -> None:
    for model_id in SHIPPED_MODELS:
        table = load_model(model_id)
        assert [p.name for p in table.points[:2]] == ["ID", "L"]
        offset = 0
        for point in table.points:
            assert point.offset == offset, (model_id, point.name)
            offset += point.size


def test_701_point_rows_carry_offset_type_sf_units_access() -> None:
    table = load_model(701)
    w = table.point("W")
    assert (w.offset, w.size, w.type, w.sf, w.units, w.access) == (10, 1, "int16", "W_SF", "W", "R")
    assert table.point("Hz").type == "uint32"
    assert table.point("TotWhInj").size == 4


def test_704_fixed_groups_are_flattened_with_group_prefix() -> None:
    table = load_model(704)
    wset = table.point("WSet")
    assert (wset.offset, wset.type, wset.access) == (24, "int32", "RW")
    assert table.point("PFWInj.PF").offset == 59
    assert table.point("PFWAbsRvrt.Ext").offset == 66


def test_711_repeating_curve_count_changes_the_length() -> None:
    one = load_model(711, repeats={"Ctl": 1})
    two = load_model(711, repeats={"Ctl": 2})
    assert two.length - one.length == 10
    assert one.point("Ctl[0].DbOf").sf == "Db_SF"
    assert two.point("Ctl[1].ReadOnly").offset == two.size - 1


def test_encode_then_decode_round_trips_and_fills_id_and_l() -> None:
    table = load_model(713)
    registers = table.encode({"WHRtg": 600, "SoC": 5000, "WH_SF": 2, "Pct_SF": -2})
    assert registers[:2] == [713, 7]
    assert table.decode(registers, ["WHRtg", "SoC", "SoH"]) == {
        "WHRtg": 600,
        "SoC": 5000,
        "SoH": None,
    }
    assert table.decode_scaled(registers, "WHRtg") == 60_000.0
    assert table.decode_scaled(registers, "SoC") == pytest.approx(50.0)


def test_enum_symbols_are_kept() -> None:
    assert load_model(701).point("InvSt").symbols[3] == "RUNNING"


def test_unknown_point_names_the_model() -> None:
    with pytest.raises(KeyError, match="model 713 has no point 'Nope'"):
        load_model(713).point("Nope")
