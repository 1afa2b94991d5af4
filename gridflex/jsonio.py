"""Parse JSON from the wire with a bounded nesting depth.

Every payload that arrives from outside (MQTT, OCPP-J frames, HTTP bodies) is parsed here
rather than with :func:`json.loads`. The stdlib parser recurses on the Python stack, so
``[[[[…]]]]`` a hundred thousand deep ends in a ``RecursionError`` near the interpreter's
limit; finalizers that the garbage collector happens to run at that depth then fail too,
and their errors surface far from the message that caused them. ``pydantic_core``'s parser
(jiter) refuses nesting beyond 200 levels with a plain ``ValueError`` and is about four
times faster on gridflex's payloads.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import from_json

__all__ = ["loads"]


def loads(data: bytes | bytearray | str) -> Any:
    """Decode one JSON document; ``NaN`` and ``Infinity`` are not JSON and are refused.

    Raises:
        ValueError: not UTF-8, not JSON, or nested deeper than 200 levels; the message
            names the line and column.

    """
    try:
        return from_json(data, allow_inf_nan=False)
    except TypeError:  # a str holding lone surrogates: it was never UTF-8 on the wire
        raise ValueError("the text is not valid Unicode") from None
