"""The REST API of ``gridflex control`` (FastAPI): charge profiles, manual dispatch, assets.

:func:`create_app` builds the application over a :class:`~control.api.protocol.ControlApi`
(the running control service) and a :class:`~control.profiles.ProfileStore`. Routes, all
under ``/api/v1``:

==========================================  ===============================================
``POST   /charge-profile``                  store a :class:`~control.profiles.ChargeProfile`:
                                            201 created, 200 the same again, 409 another
                                            body under the same ``profile_id``, 404 unknown
                                            asset, 422 naming each bad field
``GET    /charge-profile?asset=ID``         the stored profiles (and the limits in force)
``DELETE /charge-profile/{profile_id}``     remove one; 404 when unknown
``POST   /dispatch``                        a manual setpoint; answers with its ``ack/1``
``DELETE /dispatch/{asset}``                end the asset's manual override
``GET    /assets``, ``GET /assets/{id}``    live state, limits, last command and ack, faults
``POST   /assets/{id}/clear-fault``         clear the latched faults; says which
``GET    /health``                          liveness; the only route without a token
``WS     /stream``                          telemetry, commands and acks, live
``GET    /openapi.json``                    the OpenAPI document (behind the token)
==========================================  ===============================================

Every route but ``/health`` wants ``Authorization: Bearer <token>`` (the WebSocket also
accepts ``?token=``, for browsers); a missing or wrong token gets 401 with
``WWW-Authenticate: Bearer``. Tokens are compared in constant time and never logged. After
a store change the service hears :meth:`ControlApi.profile_changed` and re-applies the
asset's limits at once.
"""

import contextlib
import dataclasses
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,
    Response,
    WebSocket,
    status,
)
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from control.api.protocol import ControlApi
from control.profiles import ActiveLimits, ChargeProfile, ProfileStore
from gridflex import __version__, jsonio
from gridflex.contract import ASSET_ID_PATTERN, ContractError, DispatchAck, parse_topic

__all__ = [
    "PREFIX",
    "TRANSACTION_ID_PATTERN",
    "ManualDispatch",
    "create_app",
]

log = logging.getLogger(__name__)

PREFIX = "/api/v1"

TRANSACTION_ID_PATTERN = r"^[\x21-\x7e]{1,100}$"
"""A manual command's ``transaction_id``: 1 to 100 visible ASCII characters."""

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ManualDispatch(BaseModel):
    """Body of ``POST /api/v1/dispatch``: the field manual's "Discharge 5 kW".

    ``setpoint_w`` is absolute, + charge, - discharge (``-5000`` discharges 5 kW);
    ``valid_for_s`` how long it overrides automatic dispatch for the asset.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    asset: Annotated[str, Field(pattern=ASSET_ID_PATTERN)]
    setpoint_w: Annotated[float, Field(allow_inf_nan=False)] = Field(
        description="absolute setpoint, W, + charge, - discharge"
    )
    transaction_id: Annotated[str, Field(pattern=TRANSACTION_ID_PATTERN)] = Field(
        description="the operator's id: the same one twice is applied once"
    )
    valid_for_s: Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)] = Field(
        description="how long the override lasts, s"
    )


class ProfileAnswer(BaseModel):
    """Answer of ``POST /api/v1/charge-profile``: ``created`` or ``unchanged``, and the body."""

    result: str
    profile: ChargeProfile


class ProfileList(BaseModel):
    """The stored profiles, and for one asset the limits in force now (or null)."""

    profiles: list[ChargeProfile]
    active: dict[str, Any] | None = None


def _same_token(presented: str | None, expected: bytes) -> bool:
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected)


def _bearer_of(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _frame(topic: str, payload: bytes) -> str:
    """One WebSocket text frame: ``{"topic": ..., "payload": <the JSON payload>}``."""
    try:
        body: Any = jsonio.loads(payload)
    except ValueError:  # not JSON (never for gridflex payloads): pass it as text
        return json.dumps({"topic": topic, "payload_text": payload.decode("utf-8", "replace")})
    return json.dumps({"topic": topic, "payload": body}, separators=(",", ":"))


def _asset_of(topic: str) -> str | None:
    try:
        return parse_topic(topic).get("asset")
    except ContractError:
        return None


def create_app(
    api: ControlApi,
    store: ProfileStore,
    token: str,
    *,
    now_ms: Callable[[], int] = _now_ms,
) -> FastAPI:
    """The API application over ``api`` and ``store``; ``token`` is the bearer token.

    ``now_ms`` (epoch ms) stamps stored profiles and picks the limits in force for the
    listings; tests pass their own clock.
    """
    if not token:
        raise ValueError("the API needs a non-empty token")
    expected = token.encode("utf-8")
    bearer = HTTPBearer(
        auto_error=False,
        description="the site's `[api] token` (or GRIDFLEX_API_TOKEN)",
    )

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if credentials is None or not _same_token(credentials.credentials, expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing or wrong bearer token",
                headers=_UNAUTHORIZED,
            )

    app = FastAPI(
        title="gridflex control",
        version=__version__,
        description="Charge profiles, manual dispatch and live state of one gridflex site.",
        openapi_url=None,  # served below, behind the token
        docs_url=None,
        redoc_url=None,
    )

    def unauthorized(request: Request) -> JSONResponse | None:
        """401 when ``request`` lacks the token, else None.

        A body that is not JSON (or not UTF-8) fails before the token is checked: the
        handlers below make 401 win then too.
        """
        if _same_token(_bearer_of(request.headers.get("Authorization")), expected):
            return None
        return JSONResponse(
            {"detail": "missing or wrong bearer token"},
            status_code=status.HTTP_401_UNAUTHORIZED,
            headers=_UNAUTHORIZED,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each bad field; an echoed NaN or infinity is sent as text."""
        detail = jsonable_encoder(_json_safe(exc.errors()))
        return unauthorized(request) or JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """FastAPI's own answers; a body it could not read (400) without the token is 401."""
        if exc.status_code == status.HTTP_400_BAD_REQUEST:
            refused = unauthorized(request)
            if refused is not None:
                return refused
        return await http_exception_handler(request, exc)

    open_routes = APIRouter(prefix=PREFIX)
    routes = APIRouter(prefix=PREFIX, dependencies=[Depends(require_token)])

    def known_asset(asset_id: str) -> str:
        if asset_id not in api.asset_ids():
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown asset {asset_id!r}")
        return asset_id

    # ------------------------------------------------------------------ charge profiles

    @routes.post(
        "/charge-profile",
        status_code=status.HTTP_201_CREATED,
        response_model=ProfileAnswer,
        responses={
            200: {"model": ProfileAnswer, "description": "the same profile again: unchanged"},
            404: {"description": "unknown asset"},
            409: {"description": "this profile_id holds another body"},
        },
    )
    async def post_charge_profile(profile: ChargeProfile) -> Any:
        """Store a charge profile; the same one again is idempotent, another body 409."""
        known_asset(profile.asset)
        result = store.put(profile, now_ms())
        if result == "conflict":
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=f"profile_id {profile.profile_id!r} is stored with another body",
            )
        answer = ProfileAnswer(result=result, profile=profile)
        if result == "unchanged":
            return JSONResponse(answer.model_dump(mode="json"), status_code=status.HTTP_200_OK)
        log.info(
            "charge profile %s stored for %s (%s .. %s)",
            profile.profile_id,
            profile.asset,
            profile.valid_from.isoformat(),
            profile.valid_to.isoformat(),
        )
        await api.profile_changed(profile.asset)
        return answer

    @routes.get("/charge-profile", response_model=ProfileList)
    async def get_charge_profiles(
        asset: Annotated[str | None, Query(pattern=ASSET_ID_PATTERN)] = None,
    ) -> ProfileList:
        """The stored profiles (of one asset, with the limits in force now, when given)."""
        if asset is None:
            return ProfileList(profiles=store.list())
        known_asset(asset)
        active = store.active(asset, now_ms())
        return ProfileList(
            profiles=store.list(asset),
            active=None if active is None else _limits_dict(active),
        )

    @routes.delete("/charge-profile/{profile_id}")
    async def delete_charge_profile(profile_id: str) -> dict[str, Any]:
        """Remove a profile; the asset's limits are re-applied."""
        profile = store.delete(profile_id)
        if profile is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, detail=f"unknown profile_id {profile_id!r}"
            )
        log.info("charge profile %s of %s deleted", profile_id, profile.asset)
        await api.profile_changed(profile.asset)
        return {"deleted": profile_id, "asset": profile.asset}

    # ------------------------------------------------------------------ dispatch

    @routes.post(
        "/dispatch",
        response_model=DispatchAck,
        response_model_exclude_none=True,
        responses={404: {"description": "unknown asset"}},
    )
    async def post_dispatch(command: ManualDispatch) -> DispatchAck:
        """A manual setpoint through the ledger and the clamp; the answer is its ack."""
        known_asset(command.asset)
        ack = await api.manual_dispatch(
            command.asset, command.setpoint_w, command.transaction_id, command.valid_for_s
        )
        log.info(
            "manual dispatch %s: %s %.0f W -> %s",
            command.transaction_id,
            command.asset,
            command.setpoint_w,
            ack.result,
        )
        return ack

    @routes.delete("/dispatch/{asset}", responses={404: {"description": "unknown asset"}})
    async def delete_dispatch(asset: str) -> dict[str, Any]:
        """End the asset's manual override (automatic dispatch resumes)."""
        known_asset(asset)
        return {"asset": asset, "cancelled": await api.cancel_manual(asset)}

    # ------------------------------------------------------------------ assets

    @routes.get("/assets")
    async def get_assets() -> dict[str, Any]:
        """Every asset's view (see ``ControlApi.asset_view``)."""
        views = []
        for asset_id in api.asset_ids():
            view = api.asset_view(asset_id)
            if view is not None:
                views.append({"id": asset_id, **view})
        return {"site": api.site_id, "assets": views}

    @routes.get("/assets/{asset_id}", responses={404: {"description": "unknown asset"}})
    async def get_asset(asset_id: str) -> dict[str, Any]:
        """One asset's live state, limits, last command and ack, latched faults."""
        view = api.asset_view(known_asset(asset_id))
        if view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown asset {asset_id!r}")
        return {"id": asset_id, **view}

    @routes.post(
        "/assets/{asset_id}/clear-fault", responses={404: {"description": "unknown asset"}}
    )
    async def post_clear_fault(asset_id: str) -> dict[str, Any]:
        """Clear the asset's latched faults (operator action); lists those cleared."""
        cleared = await api.clear_fault(known_asset(asset_id))
        if cleared:
            log.warning("%s: latched faults cleared by the operator: %s", asset_id, cleared)
        return {"asset": asset_id, "cleared": cleared}

    # ------------------------------------------------------------------ health, OpenAPI

    @open_routes.get("/health", responses={503: {"description": "MQTT not connected"}})
    async def get_health() -> JSONResponse:
        """Liveness without a token: 200 when the service is connected to MQTT, else 503."""
        health = dict(api.health())
        ok = bool(health.get("mqtt_connected", False))
        body = {"status": "ok" if ok else "degraded", "site": api.site_id, **health}
        return JSONResponse(body, status_code=200 if ok else 503)

    app.include_router(open_routes)
    app.include_router(routes)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_token)])
    async def get_openapi() -> JSONResponse:
        """The OpenAPI document (behind the token, like every route but health)."""
        return JSONResponse(app.openapi())

    # ------------------------------------------------------------------ live stream

    @app.websocket(f"{PREFIX}/stream")
    async def stream(
        websocket: WebSocket,
        token_query: Annotated[str | None, Query(alias="token")] = None,
        asset: Annotated[list[str] | None, Query()] = None,
    ) -> None:
        """Push ``{"topic", "payload"}`` frames of telemetry, commands and acks.

        ``?asset=ID`` (repeatable) keeps only those assets' messages.
        """
        presented = _bearer_of(websocket.headers.get("authorization")) or token_query
        if not _same_token(presented, expected):
            log.info("stream: refused a client without a valid token")
            denial = JSONResponse(
                {"detail": "missing or wrong bearer token"},
                status_code=status.HTTP_401_UNAUTHORIZED,
                headers=_UNAUTHORIZED,
            )
            try:
                await websocket.send_denial_response(denial)
            except RuntimeError:  # the server cannot answer the handshake with HTTP
                await websocket.close(code=1008, reason="missing or wrong bearer token")
            return
        wanted = set(asset) if asset else None
        messages = api.stream()  # subscribe before the client sees the handshake succeed
        try:
            await websocket.accept()
            await _pump(websocket, messages, wanted)
            with contextlib.suppress(Exception):  # the client may have closed first
                await websocket.close()
        finally:
            closer = getattr(messages, "aclose", None)
            if closer is not None:
                await closer()

    return app


async def _pump(
    websocket: WebSocket, messages: AsyncIterator[tuple[str, bytes]], wanted: set[str] | None
) -> None:
    """Send the messages until the client leaves or the stream ends.

    An anyio task group (Starlette's own concurrency) rather than bare asyncio tasks, so a
    server or test client cancelling the connection cancels both halves cleanly.
    """
    async with anyio.create_task_group() as group:

        async def forward() -> None:
            try:
                async for topic, payload in messages:
                    if wanted is None or _asset_of(topic) in wanted:
                        await websocket.send_text(_frame(topic, payload))
            except Exception as exc:  # the client went away mid-send
                log.info("stream: client dropped: %r", exc)
            finally:
                group.cancel_scope.cancel()

        async def until_disconnect() -> None:
            try:
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass  # clients send nothing that matters; this only sees them leave
            except Exception as exc:
                log.info("stream: client dropped: %r", exc)
            finally:
                group.cancel_scope.cancel()

        group.start_soon(forward)
        group.start_soon(until_disconnect)


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by its text (JSON has neither).

    An echoed body that was not UTF-8 (raw ``bytes``, or text with a lone surrogate) gets
    its bad bytes escaped.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {_json_safe(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _limits_dict(limits: ActiveLimits) -> dict[str, Any]:
    return dataclasses.asdict(limits)
