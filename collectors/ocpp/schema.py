"""Fast validation of OCPP payloads against the JSON schemas shipped with the ``ocpp`` package.

The ``ocpp`` package validates every message with ``jsonschema.Draft4Validator`` in a thread
pool: about 1.3 ms for one ``TransactionEventRequest`` with seven sampled values on the
reference machine, which alone would take more than one core at 1,000 stations reporting
every second. The OCPP 2.0.1 and 2.1 schemas use a small subset of JSON Schema (``type``,
``$ref`` to local definitions, ``properties``, ``required``, ``additionalProperties``,
``enum``, ``items``, ``minItems``/``maxItems``, ``maxLength``, ``minimum``/``maximum``), so
this module compiles each schema once into nested Python closures that check the same rules
with the same semantics as ``Draft4Validator`` (an integer field refuses ``1.0``; ``format``
is not checked; keywords are checked in the schema's order, so the first error found is the
one ``jsonschema`` would report). A test compares both validators over valid and broken
payloads.

A violation is reported as the OCPP-J error the specification prescribes (OCPP-J 2.0.1 and
2.1, section 4.3 "RPC framework error codes"):

=========================  ======================================
schema keyword              CALLERROR errorCode
=========================  ======================================
``type``, ``maxLength``     ``TypeConstraintViolation``
``required``, ``minItems``,  ``OccurrenceConstraintViolation``
``maxItems``                (2.0.1 spells it ``OccurenceConstraintViolation``)
``enum``, ``minimum``,      ``PropertyConstraintViolation``
``maximum``
``additionalProperties``    ``FormatViolation``
=========================  ======================================
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ocpp
from ocpp.exceptions import (
    FormatViolationError,
    OccurenceConstraintViolationError,
    OccurrenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    TypeConstraintViolationError,
)

__all__ = [
    "SchemaViolation",
    "Validator",
    "ValidatorCache",
    "compile_schema",
    "ocpp_error_for",
]

Validator = Callable[[Any], None]
"""A compiled schema: returns None for a valid instance, raises ``SchemaViolation`` otherwise."""

_SCHEMA_DIRS = {"2.0.1": "v201", "2.1": "v21"}


@dataclass
class SchemaViolation(Exception):
    """One schema rule that an instance breaks."""

    keyword: str
    message: str
    path: list[str | int] = field(default_factory=list)

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.path) or "(payload)"
        return f"{where}: {self.message}"


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _type_validator(expected: str | list[str]) -> Validator:
    names = [expected] if isinstance(expected, str) else list(expected)
    checks = [_TYPE_CHECKS[name] for name in names]

    def check(value: Any) -> None:
        for ok in checks:
            if ok(value):
                return
        raise SchemaViolation("type", f"{value!r} is not of type {' or '.join(names)}")

    return check


def _properties_validator(props: dict[str, Validator]) -> Validator:
    items = list(props.items())

    def check(value: Any) -> None:
        if not isinstance(value, dict):
            return
        for name, sub in items:
            if name in value:
                try:
                    sub(value[name])
                except SchemaViolation as exc:
                    exc.path.insert(0, name)
                    raise

    return check


def _required_validator(names: list[str]) -> Validator:
    def check(value: Any) -> None:
        if not isinstance(value, dict):
            return
        for name in names:
            if name not in value:
                raise SchemaViolation("required", f"{name!r} is a required property")

    return check


def _no_additional_validator(allowed: frozenset[str]) -> Validator:
    def check(value: Any) -> None:
        if not isinstance(value, dict):
            return
        for name in value:
            if name not in allowed:
                raise SchemaViolation(
                    "additionalProperties", f"additional property {name!r} is not allowed"
                )

    return check


def _items_validator(sub: Validator) -> Validator:
    def check(value: Any) -> None:
        if not isinstance(value, list):
            return
        for index, item in enumerate(value):
            try:
                sub(item)
            except SchemaViolation as exc:
                exc.path.insert(0, index)
                raise

    return check


def _min_items_validator(limit: int) -> Validator:
    def check(value: Any) -> None:
        if isinstance(value, list) and len(value) < limit:
            raise SchemaViolation("minItems", f"expected at least {limit} items")

    return check


def _max_items_validator(limit: int) -> Validator:
    def check(value: Any) -> None:
        if isinstance(value, list) and len(value) > limit:
            raise SchemaViolation("maxItems", f"expected at most {limit} items")

    return check


def _max_length_validator(limit: int) -> Validator:
    def check(value: Any) -> None:
        if isinstance(value, str) and len(value) > limit:
            raise SchemaViolation("maxLength", f"string longer than {limit} characters")

    return check


def _minimum_validator(limit: float) -> Validator:
    def check(value: Any) -> None:
        if _is_number(value) and value < limit:
            raise SchemaViolation("minimum", f"{value!r} is less than the minimum of {limit}")

    return check


def _maximum_validator(limit: float) -> Validator:
    def check(value: Any) -> None:
        if _is_number(value) and value > limit:
            raise SchemaViolation("maximum", f"{value!r} is more than the maximum of {limit}")

    return check


def _enum_validator(options: list[Any]) -> Validator:
    allowed = frozenset(o for o in options if isinstance(o, str))
    others = [o for o in options if not isinstance(o, str)]

    def check(value: Any) -> None:
        if isinstance(value, str):
            if value in allowed:
                return
        elif any(value == o and type(value) is type(o) for o in others):
            return
        raise SchemaViolation("enum", f"{value!r} is not one of the allowed values")

    return check


def _sequence(checks: list[Validator]) -> Validator:
    if not checks:
        return lambda _value: None
    if len(checks) == 1:
        return checks[0]

    def check(value: Any) -> None:
        for sub in checks:
            sub(value)

    return check


class _Compiler:
    """Compiles one schema document; ``$ref`` to ``#/definitions/X`` resolve lazily."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.definitions: dict[str, Any] = document.get("definitions", {})
        self.compiled: dict[str, Validator] = {}

    def ref(self, pointer: str) -> Validator:
        prefix = "#/definitions/"
        if not pointer.startswith(prefix):
            raise ValueError(f"unsupported $ref {pointer!r}")
        name = pointer[len(prefix) :]
        if name in self.compiled:
            return self.compiled[name]
        slot: list[Validator] = []

        def deferred(value: Any) -> None:
            slot[0](value)

        self.compiled[name] = deferred  # breaks reference cycles while compiling
        real = self.node(self.definitions[name])
        slot.append(real)
        self.compiled[name] = real
        return real

    def node(self, schema: dict[str, Any]) -> Validator:
        if "$ref" in schema:  # Draft 4: a $ref replaces its siblings
            return self.ref(schema["$ref"])
        checks: list[Validator] = []
        for keyword, value in schema.items():
            if keyword == "type":
                checks.append(_type_validator(value))
            elif keyword == "properties":
                checks.append(_properties_validator({k: self.node(v) for k, v in value.items()}))
            elif keyword == "required":
                checks.append(_required_validator(list(value)))
            elif keyword == "additionalProperties":
                if value is False:
                    checks.append(_no_additional_validator(frozenset(schema.get("properties", {}))))
                elif isinstance(value, dict):
                    raise ValueError("additionalProperties with a schema is not supported")
            elif keyword == "items":
                if not isinstance(value, dict):
                    raise ValueError("tuple-form items is not supported")
                checks.append(_items_validator(self.node(value)))
            elif keyword == "minItems":
                checks.append(_min_items_validator(int(value)))
            elif keyword == "maxItems":
                checks.append(_max_items_validator(int(value)))
            elif keyword == "maxLength":
                checks.append(_max_length_validator(int(value)))
            elif keyword == "minimum":
                checks.append(_minimum_validator(value))
            elif keyword == "maximum":
                checks.append(_maximum_validator(value))
            elif keyword == "enum":
                checks.append(_enum_validator(list(value)))
            elif keyword in ("anyOf", "oneOf", "allOf", "not", "pattern", "minLength"):
                raise ValueError(f"schema keyword {keyword!r} is not supported")
            # description, javaType, default, format, $schema, $id, comment, definitions and
            # additionalItems (meaningless with a single items schema) do not validate.
        return _sequence(checks)


def compile_schema(document: dict[str, Any]) -> Validator:
    """Compile one OCPP JSON schema document into a validator function.

    Raises ``ValueError`` for a keyword outside the subset the OCPP schemas use, so a new
    schema release cannot be validated wrongly without notice.
    """
    return _Compiler(document).node(document)


def ocpp_error_for(violation: SchemaViolation, ocpp_version: str) -> OCPPError:
    """Map a schema violation to the CALLERROR exception OCPP-J prescribes (module table)."""
    details = {"cause": str(violation)}
    keyword = violation.keyword
    if keyword in ("type", "maxLength"):
        return TypeConstraintViolationError(details=details)
    if keyword in ("required", "minItems", "maxItems"):
        if ocpp_version == "2.0.1":
            return OccurenceConstraintViolationError(details=details)
        return OccurrenceConstraintViolationError(details=details)
    if keyword in ("enum", "minimum", "maximum"):
        return PropertyConstraintViolationError(details=details)
    return FormatViolationError(details=details)


class ValidatorCache:
    """Compiled validators per OCPP version, action and direction, loaded on first use."""

    def __init__(self, schema_root: Path | None = None) -> None:
        self._root = schema_root or Path(ocpp.__file__).parent
        self._validators: dict[tuple[str, str, bool], Validator | None] = {}

    def get(self, ocpp_version: str, action: str, *, request: bool) -> Validator | None:
        """The validator of ``action``'s request (or response) schema; None if there is none."""
        key = (ocpp_version, action, request)
        if key not in self._validators:
            self._validators[key] = self._load(ocpp_version, action, request)
        return self._validators[key]

    def _load(self, ocpp_version: str, action: str, request: bool) -> Validator | None:
        folder = _SCHEMA_DIRS.get(ocpp_version)
        if folder is None or not action.isalnum():
            return None
        suffix = "Request" if request else "Response"
        path = self._root / folder / "schemas" / f"{action}{suffix}.json"
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError:
            return None
        return compile_schema(json.loads(text))

    def validate(self, ocpp_version: str, action: str, payload: Any, *, request: bool) -> bool:
        """Validate ``payload``; False when no schema exists for the action.

        Raises the OCPP error of the first violation (see ``ocpp_error_for``).
        """
        validator = self.get(ocpp_version, action, request=request)
        if validator is None:
            return False
        try:
            validator(payload)
        except SchemaViolation as exc:
            raise ocpp_error_for(exc, ocpp_version) from None
        return True
