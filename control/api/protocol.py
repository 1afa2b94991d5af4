"""What the REST API needs from the control service: the :class:`ControlApi` protocol.

The API (:mod:`control.api.app`) talks to the running service only through this protocol,
so the service can change behind it and the API is tested against a fake. ``gridflex
control`` wires its :class:`~control.service.ControlService` in through it.

Sign convention as everywhere in gridflex: + is charging/import, - is discharging/export;
powers in W, instants in UTC epoch ms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from gridflex.contract import DispatchAck

__all__ = ["ControlApi"]


@runtime_checkable
class ControlApi(Protocol):
    """The control service as the REST API sees it.

    Every method runs on the service's event loop (the API is served on the same loop) and
    must not block it. ``asset_id`` is always one of :meth:`asset_ids` (the API answers 404
    for any other before calling).
    """

    @property
    def site_id(self) -> str:
        """The site's id (``[site] id``)."""
        ...

    def asset_ids(self) -> list[str]:
        """The ids of the site's assets, in site-file order."""
        ...

    def asset_view(self, asset_id: str) -> dict[str, Any] | None:
        """What the service knows about one asset now, as JSON-able values; None if unknown.

        The API returns it as is (adding ``id`` when missing). Keys:

        - ``kind``: ``"inverter"`` or ``"evse"``;
        - ``telemetry``: the last reading, ``{"power_w", "soc_pct", "status", "temp_c",
          "ts_ms"}`` (absent values None), or None before the first;
        - ``limits``: ``{"max_charge_w", "max_discharge_w", "soc_min_pct", "soc_max_pct",
          "profile"}`` in force, ``profile`` the active charge profile's limits
          (:class:`~control.profiles.ActiveLimits` as a dict) or None;
        - ``last_command`` / ``last_ack``: the last ``command/1`` / ``ack/1`` payload of the
          asset as a dict (``model_dump(mode="json", by_alias=True)``), or None;
        - ``faults``: the latched faults (e.g. ``["ground_fault"]``), empty when none;
        - ``manual``: the manual override in force, ``{"setpoint_w", "transaction_id",
          "valid_until_ms"}``, or None.
        """
        ...

    async def manual_dispatch(
        self, asset_id: str, setpoint_w: float, transaction_id: str, valid_for_s: float
    ) -> DispatchAck:
        """Apply an operator's setpoint through the ledger and the clamp; return its ack.

        The same ``transaction_id`` again is applied once and answered with the first ack
        (the ledger's ``duplicate``, with the first result). While the command is valid
        (``valid_for_s`` from now) it overrides automatic dispatch for the asset.
        ``transaction_id`` is 1 to 100 visible ASCII characters, so a prefix such as
        ``manual:`` still fits a ``command_id``.
        """
        ...

    async def cancel_manual(self, asset_id: str) -> bool:
        """End the asset's manual override; False when there was none."""
        ...

    async def clear_fault(self, asset_id: str) -> list[str]:
        """Clear the asset's latched faults (operator action); returns those cleared."""
        ...

    async def profile_changed(self, asset_id: str) -> None:
        """The asset's charge profiles changed (stored or deleted): re-apply its limits now.

        Called after the :class:`~control.profiles.ProfileStore` changed, never for an
        idempotent repeat.
        """
        ...

    def health(self) -> dict[str, Any]:
        """Liveness for ``GET /api/v1/health`` (no token): JSON-able values.

        Must hold ``mqtt_connected`` (bool); the API answers 503 when it is false. Other
        keys (e.g. ``assets``, ``faulted``) are passed through; nothing secret.
        """
        ...

    def stream(self) -> AsyncIterator[tuple[str, bytes]]:
        """A new subscription to the live messages, ``(topic, payload)``.

        The telemetry, commands and acks as they pass through the service. One iterator
        per WebSocket client; closing it (``aclose``) unsubscribes. It must
        not block the service on a slow client (:class:`~control.api.stream.StreamHub`
        drops the oldest messages of that client).
        """
        ...
