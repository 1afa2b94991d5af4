"""SunSpec register tables, built as data from the published model definitions.

Each model shipped in ``gridflex/sunspec/models/`` (JSON, SunSpec Alliance, Apache-2.0)
becomes a ``ModelTable``: a tuple of ``Point`` rows (name, offset, size, type, scale
factor point, units, access), evcc style. Offsets count from the model's ``ID`` register,
so ``ID`` is at offset 0, ``L`` at 1 and the first data point at 2. Points of a group are
named ``Group.Point``; a repeating group gets an index (``Ctl[0].DbOf``). The scale factor
of a group point names a point of the model's top level (``Db_SF``).

704's groups (``PFWInj`` ...) occur once; 711's ``Ctl`` curves repeat ``NCtl`` times and
the caller picks the count (``load_model(711, repeats={"Ctl": 1})``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from gridflex.sunspec.codec import SIZES, Value, apply_sf, decode, encode

__all__ = [
    "SHIPPED_MODELS",
    "ModelTable",
    "Point",
    "load_model",
]

#: Model ids whose definitions ship with gridflex.
SHIPPED_MODELS: tuple[int, ...] = (1, 701, 702, 704, 711, 713)


@dataclass(frozen=True, slots=True)
class Point:
    """One register point of a model."""

    name: str
    offset: int
    size: int
    type: str
    sf: str | None = None
    units: str | None = None
    access: str = "R"
    mandatory: bool = False
    static: bool = False
    symbols: Mapping[int, str] = field(default_factory=dict)

    @property
    def writable(self) -> bool:
        """Whether the point is read-write (``access: RW``)."""
        return self.access == "RW"


@dataclass(frozen=True)
class ModelTable:
    """The register layout of one SunSpec model (with a chosen repeat count per group)."""

    model_id: int
    name: str
    points: tuple[Point, ...]
    _by_name: dict[str, Point] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.points})

    @property
    def size(self) -> int:
        """Registers of the whole model block, ``ID`` and ``L`` included."""
        last = self.points[-1]
        return last.offset + last.size

    @property
    def length(self) -> int:
        """The model's ``L``: registers after ``ID`` and ``L``."""
        return self.size - 2

    def point(self, name: str) -> Point:
        """Return the point called ``name``; ``KeyError`` names the model if absent."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"model {self.model_id} has no point {name!r}") from None

    def has(self, name: str) -> bool:
        """Whether the model has a point called ``name``."""
        return name in self._by_name

    def decode(
        self, registers: Sequence[int], names: Sequence[str] | None = None
    ) -> dict[str, Value]:
        """Decode raw values of ``names`` (default: every point) from the model's registers.

        ``registers[0]`` is the model's ``ID`` register. Values are raw (unscaled); see
        ``decode_scaled`` for engineering values.
        """
        wanted = self.points if names is None else [self.point(n) for n in names]
        return {p.name: decode(p.type, registers, p.offset, p.size) for p in wanted}

    def decode_scaled(self, registers: Sequence[int], name: str) -> Value:
        """Decode one point and apply its scale factor (if it has one)."""
        point = self.point(name)
        raw = decode(point.type, registers, point.offset, point.size)
        if point.sf is None or isinstance(raw, str):
            return raw
        sf = decode("sunssf", registers, self.point(point.sf).offset)
        assert not isinstance(sf, str | float)
        return apply_sf(raw, sf)

    def encode(self, values: Mapping[str, Value]) -> list[int]:
        """Build the model's whole register block.

        ``ID`` and ``L`` are filled in; a point missing from ``values`` (or ``None``) is
        written as *not implemented*. Raises ``KeyError`` for a name the model lacks.
        """
        for name in values:
            self.point(name)
        registers = [0] * self.size
        for p in self.points:
            if p.name == "ID":
                value: Value = self.model_id
            elif p.name == "L":
                value = self.length
            else:
                value = values.get(p.name)
            registers[p.offset : p.offset + p.size] = encode(p.type, value, p.size)
        return registers


def _point(raw: Mapping[str, Any], offset: int, prefix: str) -> Point:
    type_ = str(raw["type"])
    size = int(raw.get("size", SIZES.get(type_, 1)))
    return Point(
        name=prefix + str(raw["name"]),
        offset=offset,
        size=size,
        type=type_,
        sf=raw.get("sf"),
        units=raw.get("units"),
        access=str(raw.get("access", "R")),
        mandatory=raw.get("mandatory") == "M",
        static=raw.get("static") == "S",
        symbols={int(s["value"]): str(s["name"]) for s in raw.get("symbols", [])},
    )


def _flatten(
    group: Mapping[str, Any], offset: int, prefix: str, repeats: Mapping[str, int]
) -> list[Point]:
    points: list[Point] = []
    for raw in group.get("points", []):
        point = _point(raw, offset, prefix)
        points.append(point)
        offset += point.size
    for sub in group.get("groups", []):
        name = str(sub["name"])
        count = sub.get("count")
        if count is None:
            points.extend(_flatten(sub, offset, f"{prefix}{name}.", repeats))
            offset = points[-1].offset + points[-1].size
            continue
        n = repeats.get(name, 1)
        for i in range(n):
            points.extend(_flatten(sub, offset, f"{prefix}{name}[{i}].", repeats))
            offset = points[-1].offset + points[-1].size
    return points


@cache
def _definition(model_id: int) -> dict[str, Any]:
    if model_id not in SHIPPED_MODELS:
        raise KeyError(f"SunSpec model {model_id} is not shipped (have {SHIPPED_MODELS})")
    text = resources.files("gridflex.sunspec").joinpath(f"models/model_{model_id}.json")
    data: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return data


def load_model(model_id: int, repeats: Mapping[str, int] | None = None) -> ModelTable:
    """Build the register table of a shipped model (cached; tables are immutable).

    ``repeats`` gives the count of each repeating group by name (default 1 each), e.g.
    ``{"Ctl": 1}`` for 711. Fixed groups (no ``count`` in the definition) occur once.
    """
    return _load(model_id, tuple(sorted((repeats or {}).items())))


@cache
def _load(model_id: int, repeats: tuple[tuple[str, int], ...]) -> ModelTable:
    group = _definition(model_id)["group"]
    points = _flatten(group, 0, "", dict(repeats))
    return ModelTable(model_id=model_id, name=str(group["name"]), points=tuple(points))
