"""One-line site-file error messages: file, key and expectation, never a secret.

``gridflex.config`` validates a site with pydantic; this module turns pydantic's errors into
the line the user reads (a site that cannot be used raises :class:`ConfigError` with it),
for example::

    config error in site.toml: assets[id=inv-004].max_charge_w: expected a number, got True

Rules the messages keep (issue 9):

* one line, one ``key: expectation`` segment per error, ``; `` between them;
* the key is a TOML path; an asset is named by its id (``assets[id=inv-004]``) when it has a
  valid, unique one, else by its position counted from 0 (``assets[3]``);
* the offending value is shown only when it is a scalar (never a table or an array, so
  never a whole asset or the whole config), shortened, with any URL credentials removed,
  and never for a key whose name says it holds a secret (``password``, ``token``, ``key``,
  ``secret``...).

Validators that check several keys together raise :class:`FieldError` with the key they
blame, so the message names it instead of the table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from gridflex.contract import ASSET_ID_PATTERN

__all__ = ["ConfigError", "FieldError", "format_validation_error", "is_secret_key", "redact"]

#: Parts of key names whose values an error message never repeats.
_SECRET_PARTS = ("password", "passwd", "token", "secret", "key", "credential")

_ASSET_ID = re.compile(ASSET_ID_PATTERN)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_MAX_SHOWN = 60


class ConfigError(ValueError):
    """A site file that cannot be used; the message names file, key and expectation."""


class FieldError(ValueError):
    """A validation failure that names its key (relative to the table being validated).

    ``key`` may be a dotted path (``soc_min_pct``) or, for the site's own checks, a full
    description of the keys involved (``assets[1].id and assets[3].id``).
    """

    def __init__(self, key: str, expectation: str) -> None:
        """Blame ``key``; ``expectation`` says what was expected (no secret in it)."""
        super().__init__(f"{key}: {expectation}")
        self.key = key
        self.expectation = expectation


def is_secret_key(name: object) -> bool:
    """Whether a key's name says its value is a secret (``password``, ``api_token``, ...)."""
    text = str(name).lower()
    return any(part in text for part in _SECRET_PARTS)


def redact(text: str) -> str:
    """``text`` without URL credentials (``mqtt://user:pw@host`` -> ``mqtt://***@host``)."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


def _shown(value: object) -> str | None:
    """The value as the message shows it, or None when it must not be shown."""
    if isinstance(value, str):
        text = redact(value)
        if len(text) > _MAX_SHOWN:
            text = text[:_MAX_SHOWN] + "..."
        return repr(text)
    if isinstance(value, bool):
        return "true" if value else "false"  # as TOML spells it
    if value is None or isinstance(value, int | float):
        return repr(value)
    return None  # a table or an array: never dump it


def _asset_label(assets: Any, index: int) -> str:
    """``assets[id=X]`` when asset ``index`` has a valid id of its own, else ``assets[i]``."""
    if isinstance(assets, list) and 0 <= index < len(assets) and isinstance(assets[index], dict):
        asset_id = assets[index].get("id")
        if isinstance(asset_id, str) and _ASSET_ID.fullmatch(asset_id):
            same = sum(1 for a in assets if isinstance(a, dict) and a.get("id") == asset_id)
            if same == 1:
                return f"assets[id={asset_id}]"
    return f"assets[{index}]"


def _key(loc: tuple[int | str, ...], raw: Mapping[str, Any]) -> str:
    """Render a pydantic location as a TOML key path (``assets[id=inv-2].max_charge_w``)."""
    out = ""
    node: Any = raw
    parent: Any = None
    for part in loc:
        if isinstance(part, int):
            if out == "assets" and parent is raw:
                out = _asset_label(node, part)
            else:
                out += f"[{part}]"
            parent = node
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif part in ("inverter", "evse") and isinstance(node, dict) and node.get("kind") == part:
            continue  # discriminator tag inserted by pydantic, not a key in the file
        else:
            out += f".{part}" if out else str(part)
            parent = node
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _expectation(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        tags = str(ctx.get("expected_tags", "")).replace(", ", " or ")
        return f"kind: expected {tags}, got {_shown(ctx.get('tag'))}"
    if kind == "union_tag_not_found":
        return "kind: required key is missing (inverter or evse)"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a table"
    if kind == "list_type":
        return "expected an array"
    msg = str(err["msg"])
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == ASSET_ID_PATTERN:
        msg = "expected 1 to 64 letters, digits, '_' or '-'"
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if kind in ("float_type", "int_type", "bool_type", "string_type"):
        msg = {
            "float_type": "expected a number (without quotes)",
            "int_type": "expected a whole number (without quotes)",
            "bool_type": "expected true or false",
            "string_type": "expected a quoted string",
        }[kind]
    msg = msg.replace("Input should be ", "expected ").replace("input should be ", "expected ")
    msg = msg.replace("greater than or equal to", ">=").replace("less than or equal to", "<=")
    msg = msg.replace("greater than", ">").replace("less than", "<")
    text = msg[0].lower() + msg[1:] if msg else msg
    loc = tuple(err["loc"])
    secret = any(is_secret_key(part) for part in loc if isinstance(part, str))
    shown = _shown(err.get("input")) if "input" in err else None
    if shown is not None and not secret:
        text += f", got {shown}"
    return text


def _segment(err: Mapping[str, Any], raw: Mapping[str, Any], site_keys: frozenset[str]) -> str:
    loc = tuple(err["loc"])
    key = _key(loc, raw)
    if loc and loc[0] in site_keys:
        key = f"site.{key}"  # keys of the [site] table are validated at the top level
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, FieldError):
        if not key:
            return f"{error.key}: {error.expectation}"
        return f"{key}.{error.key}: {error.expectation}"
    expectation = _expectation(err)
    if err["type"] in ("union_tag_invalid", "union_tag_not_found") and key:
        key_part, _, rest = expectation.partition(": ")
        return f"{key}.{key_part}: {rest}"
    return f"{key or '(top level)'}: {expectation}"


def format_validation_error(
    exc: ValidationError, raw: Mapping[str, Any], site_keys: frozenset[str] = frozenset()
) -> str:
    """The errors of ``exc`` as one line of ``key: expectation`` segments.

    ``raw`` is the document as validated (to name assets by id); ``site_keys`` the keys that
    came from the ``[site]`` table (rendered ``site.KEY``).
    """
    segments = [_segment(err, raw, site_keys) for err in exc.errors()]
    return "; ".join(" ".join(s.split()) for s in segments)
