"""Validation of OCPP payloads against the JSON schemas shipped with the ``ocpp`` package.

The ``ocpp`` package validates every message with ``jsonschema.Draft4Validator`` in a thread
pool: about 0.5 ms for one ``TransactionEventRequest`` with eight sampled values on the
reference machine (``bench/ocpp_schema.py``), half a core at 1,000 stations reporting every
second. This module compiles each schema once with ``fastjsonschema`` (generated Python
code) after inlining the schema's ``$ref``s (``inline_refs``), and caches the validator per
OCPP version, action and direction: about 12-18 µs for the same message.

The semantics stay those of the ``ocpp`` package's ``Draft4Validator``, which the tests
compare against over valid and broken payloads:

- Draft 4 rules whatever ``$schema`` the file declares (the OCPP files say draft-06): an
  ``integer`` field refuses ``1.0``;
- ``format`` (``date-time``) is not checked, as ``Draft4Validator`` without a format
  checker does not;
- ``default`` values are never written into the payload (``use_default=False``): the
  station's payload is validated, not changed.

A payload with one violation gets the same verdict and error keyword as from
``Draft4Validator``. With several, the first one found is reported, and the order differs:
``fastjsonschema`` checks an object's ``required`` before its ``properties``, where
``jsonschema`` follows the schema file (``properties`` first). So a ``BootNotification``
whose ``chargingStation`` lacks ``vendorName`` and has a number as ``model`` is answered
``OccurrenceConstraintViolation`` (the ``ocpp`` package would say
``TypeConstraintViolation``): OCPP-J does not say which of several violations to report.

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

The schema files are found at ``<ocpp package>/v201/schemas`` and ``<ocpp package>/v21/schemas``
(``{Action}Request.json`` / ``{Action}Response.json``): a layout of the ``ocpp`` package, not
its public API, pinned by ``tests/collectors/test_ocpp_private_api.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastjsonschema
import ocpp
from fastjsonschema import JsonSchemaValueException
from ocpp.exceptions import (
    FormatViolationError,
    OccurenceConstraintViolationError,
    OccurrenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    TypeConstraintViolationError,
)

__all__ = [
    "SCHEMA_DIRS",
    "SchemaViolation",
    "Validator",
    "ValidatorCache",
    "compile_schema",
    "inline_refs",
    "ocpp_error_for",
    "schema_path",
]

Validator = Callable[[Any], None]
"""A compiled schema: returns None for a valid instance, raises ``SchemaViolation`` otherwise."""

SCHEMA_DIRS = {"2.0.1": "v201", "2.1": "v21"}
"""OCPP version -> folder of the ``ocpp`` package that holds its ``schemas/``."""

_DRAFT4 = "http://json-schema.org/draft-04/schema#"
#: Keywords that annotate and validate nothing (left out before compiling).
_ANNOTATIONS = frozenset({"description", "javaType", "comment", "$comment"})
#: Keywords whose value maps names to schemas / is a list of schemas / is one schema.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependencies"})
_SCHEMA_LISTS = frozenset({"items", "allOf", "anyOf", "oneOf"})
_SCHEMA_VALUES = frozenset({"items", "additionalProperties", "additionalItems", "not"})
_PATH_ITEM = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


@dataclass
class SchemaViolation(Exception):
    """One schema rule that an instance breaks."""

    keyword: str
    message: str
    path: list[str | int] = field(default_factory=list)

    def __str__(self) -> str:
        """``path: message``, a message echoing a huge value cut to 200 characters.

        It goes back to the station in the CALLERROR, into the log and the dead letter.
        """
        where = ".".join(str(p) for p in self.path) or "(payload)"
        message = self.message if len(self.message) <= 200 else self.message[:199] + "…"
        return f"{where}: {message}"


def _violation(exc: JsonSchemaValueException) -> SchemaViolation:
    """``fastjsonschema``'s error as a ``SchemaViolation`` (path without its ``data`` root)."""
    name = exc.name or "data"
    path: list[str | int] = [
        int(index) if index else key for key, index in _PATH_ITEM.findall(name.removeprefix("data"))
    ]
    message = exc.message.removeprefix(name).strip() or exc.message
    return SchemaViolation(exc.rule or "schema", message, path)


def inline_refs(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its local ``$ref``s replaced by the definitions, annotations left out.

    In Draft 4 a ``$ref`` stands for the schema it points to (its siblings are ignored), so
    the result validates exactly as the document does. ``fastjsonschema`` compiles each
    ``$ref`` into a function call that also builds the error path string at run time: the
    OCPP schemas reference a definition for every enum and nested object, and inlining them
    halves the time per ``TransactionEvent`` (``bench/ocpp_schema.py``). A recursive
    reference stays a ``$ref`` (the OCPP schemas have none). The annotations
    (``description``, ``javaType``, ``comment``) validate nothing; ``fastjsonschema`` would
    copy each schema node, long descriptions included, into the code of every error it can
    raise, so they are left out: a smaller, faster compile. The walk follows the schema's
    structure, so a property that is *named* ``description`` or ``$ref`` stays.
    """
    definitions: dict[str, Any] = document.get("definitions", {})
    prefix = "#/definitions/"

    def schema(node: Any, seen: frozenset[str]) -> Any:
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(prefix):
            name = ref[len(prefix) :]
            if name in definitions and name not in seen:
                return schema(definitions[name], seen | {name})
            return {"$ref": ref}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _ANNOTATIONS:
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {name: schema(sub, seen) for name, sub in value.items()}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [schema(sub, seen) for sub in value]
            elif key in _SCHEMA_VALUES:
                out[key] = schema(value, seen)
            else:
                out[key] = value
        return out

    prepared: dict[str, Any] = schema(document, frozenset())
    if definitions:  # what a recursive $ref left in place points to
        prepared["definitions"] = {
            name: schema(sub, frozenset({name})) for name, sub in definitions.items()
        }
    return prepared


def compile_schema(document: dict[str, Any]) -> Validator:
    """Compile one OCPP JSON schema document into a validator function (Draft 4 rules).

    Valid payloads run through a validator compiled without ``fastjsonschema``'s detailed
    exceptions: the same checks in the same order, but its code is a third the size, so it
    compiles about three times faster (each schema is compiled on first use, on the event
    loop). A payload it refuses is validated again by a detailed twin, compiled on the first
    refusal, which names the broken keyword and the path for the CALLERROR.
    """
    definition = {**inline_refs(document), "$schema": _DRAFT4}
    options: dict[str, Any] = {"use_default": False, "use_formats": False}
    check = fastjsonschema.compile(definition, detailed_exceptions=False, **options)
    detailed: list[Callable[[Any], Any]] = []

    def explain(instance: Any, refusal: JsonSchemaValueException) -> SchemaViolation:
        if not detailed:
            detailed.append(fastjsonschema.compile(definition, **options))
        try:
            detailed[0](instance)
        except JsonSchemaValueException as exc:
            return _violation(exc)
        return SchemaViolation("schema", refusal.message)  # cannot happen: same checks

    def validate(instance: Any) -> None:
        try:
            check(instance)
        except JsonSchemaValueException as exc:
            raise explain(instance, exc) from None

    return validate


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


def schema_path(root: Path, ocpp_version: str, action: str, *, request: bool) -> Path | None:
    """Where the ``ocpp`` package keeps ``action``'s schema; None for an unknown version/name."""
    folder = SCHEMA_DIRS.get(ocpp_version)
    if folder is None or not action.isalnum():
        return None
    suffix = "Request" if request else "Response"
    return root / folder / "schemas" / f"{action}{suffix}.json"


_COMPILED: dict[Path, dict[tuple[str, str, bool], Validator | None]] = {}


class ValidatorCache:
    """Compiled validators per OCPP version, action and direction, loaded on first use.

    Caches over the same schema folder share their validators within the process.
    """

    def __init__(self, schema_root: Path | None = None, *, shared: bool = True) -> None:
        self._root = schema_root or Path(ocpp.__file__).parent
        # Shared by the caches of one process over the same files: compiled once (a
        # benchmark that measures compiling asks for a cache of its own).
        self._validators: dict[tuple[str, str, bool], Validator | None] = (
            _COMPILED.setdefault(self._root, {}) if shared else {}
        )

    def get(self, ocpp_version: str, action: str, *, request: bool) -> Validator | None:
        """The validator of ``action``'s request (or response) schema; None if there is none."""
        key = (ocpp_version, action, request)
        if key not in self._validators:
            self._validators[key] = self._load(ocpp_version, action, request)
        return self._validators[key]

    def _load(self, ocpp_version: str, action: str, request: bool) -> Validator | None:
        path = schema_path(self._root, ocpp_version, action, request=request)
        if path is None:
            return None
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError:
            return None
        return self._compile(json.loads(text))

    def _compile(self, document: dict[str, Any]) -> Validator:
        """One schema's validator (``bench/_ocpp_schema_codegen.py`` swaps the compiler)."""
        return compile_schema(document)

    def warm(self, versions: Iterable[str], actions: Iterable[str]) -> int:
        """Compile both directions of ``actions`` in every version now; returns how many.

        A schema compiles in up to ~70 ms (the CSMS's largest); done at start-up, the first
        message of each kind does not stall the event loop that serves every station.
        """
        actions = tuple(actions)
        for version in versions:
            for action in actions:
                for request in (True, False):
                    self.get(version, action, request=request)
        return sum(v is not None for v in self._validators.values())

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
