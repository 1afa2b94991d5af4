"""The building blocks of the site-file sections: the strict base model and field types.

Every table of the site file is a :class:`_Section`; the aliases here (asset ids, watts,
percentages, file paths, network lists) are shared by the section modules of this package.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from gridflex.access import IpNetwork
from gridflex.config.errors import FieldError
from gridflex.contract import ASSET_ID_PATTERN

__all__ = ["split_listen"]

_AssetId = Annotated[str, Field(pattern=ASSET_ID_PATTERN)]
_NonNegW = Annotated[float, Field(ge=0)]
_Pct = Annotated[float, Field(ge=0, le=100)]
#: A file path: a TOML string is accepted although the sections are strict.
_FilePath = Annotated[Path, Field(strict=False)]


def _literal_values(annotation: Any) -> list[Any]:
    """The values of the ``Literal`` in ``annotation`` (through ``Annotated``/``Optional``)."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [v for arg in get_args(annotation) for v in _literal_values(arg)]


def _networks(value: Any) -> tuple[IpNetwork, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError('expected a list of networks, e.g. ["127.0.0.1/32", "10.0.0.0/8"]')
    out: list[IpNetwork] = []
    for item in value:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise ValueError(f"expected a network as a string, got {item!r}")
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError:
            raise ValueError(
                f"expected a network like 10.0.0.0/8 or fd00::/8 (no host bits set), got {item!r}"
            ) from None
    return tuple(out)


_AllowFrom = Annotated[tuple[IpNetwork, ...], BeforeValidator(_networks)]


class _Section(BaseModel):
    """A table of the site file: unknown keys refused, values frozen, types strict.

    Strict mode refuses ``true`` and ``"5000"`` for numbers (lax pydantic reads them as 1
    and 5000) while an integer still fills a float. Path fields must use ``_FilePath``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numeric_literal(cls, data: Any) -> Any:
        """Refuse ``true`` for ``Literal[1, 2]`` (``True == 1``: strict mode lets it pass)."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if not isinstance(value, bool) or field is None:
                    continue
                choices = [a for a in _literal_values(field.annotation) if not isinstance(a, str)]
                if choices:
                    expected = " or ".join(str(c) for c in choices)
                    raise FieldError(name, f"expected {expected}, got {str(value).lower()}")
        return data


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as ``(host, port)``; ValueError when malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError
    elif ":" in host:
        raise ValueError("expected an IPv6 address in brackets, e.g. [::1]:8080")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("expected a port number 1..65535")
    return host, port
