"""SunSpec Modbus: model register tables (as data), a pure codec, discovery and the sign rule.

- ``gridflex.sunspec.codec``: encode/decode each SunSpec type, scale factors, sentinels.
- ``gridflex.sunspec.tables``: ``load_model(id)`` -> ``ModelTable`` of ``Point`` rows, from
  the model definitions shipped in ``models/`` (SunSpec Alliance, Apache-2.0).
- ``gridflex.sunspec.discovery``: find ``SunS``, walk the model chain, plan merged reads.
- ``gridflex.sunspec.sign``: SunSpec + injection <-> gridflex + import, written once.
"""

from gridflex.sunspec.codec import CodecError, apply_sf, decode, encode, not_implemented
from gridflex.sunspec.discovery import (
    BASE_ADDRESSES,
    SUNS_MARKER,
    DiscoveryError,
    IllegalAddress,
    ModelInstance,
    ModelMap,
    discover,
    plan_reads,
)
from gridflex.sunspec.sign import power_w_from_sunspec, sunspec_w_from_power_w
from gridflex.sunspec.tables import SHIPPED_MODELS, ModelTable, Point, load_model

__all__ = [
    "BASE_ADDRESSES",
    "SHIPPED_MODELS",
    "SUNS_MARKER",
    "CodecError",
    "DiscoveryError",
    "IllegalAddress",
    "ModelInstance",
    "ModelMap",
    "ModelTable",
    "Point",
    "apply_sf",
    "decode",
    "discover",
    "encode",
    "load_model",
    "not_implemented",
    "plan_reads",
    "power_w_from_sunspec",
    "sunspec_w_from_power_w",
]
