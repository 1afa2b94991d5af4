"""The REST API over a fake control service (FastAPI TestClient): routes, token, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from control.api import ControlApi, create_app
from control.profiles import ProfileStore
from tests.control.api_helpers import SITE, T0_MS, TOKEN, FakeControl, profile_body

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW_MS = T0_MS + 10_000

#: Every route that wants the token: (method, path, JSON body).
GUARDED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/v1/charge-profile", profile_body()),
    ("GET", "/api/v1/charge-profile?asset=inv-001", None),
    ("DELETE", "/api/v1/charge-profile/p-1", None),
    (
        "POST",
        "/api/v1/dispatch",
        {"asset": "inv-001", "setpoint_w": -5000, "transaction_id": "t-1", "valid_for_s": 60},
    ),
    ("DELETE", "/api/v1/dispatch/inv-001", None),
    ("GET", "/api/v1/assets", None),
    ("GET", "/api/v1/assets/inv-001", None),
    ("POST", "/api/v1/assets/inv-001/clear-fault", None),
    ("GET", "/openapi.json", None),
]

BAD_CREDENTIALS = {
    "no header": {},
    "wrong token": {"Authorization": "Bearer wrong-token-0123456789abcdef"},
    "token with a suffix": {"Authorization": f"Bearer {TOKEN}x"},
    "token prefix only": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "basic scheme": {"Authorization": f"Basic {TOKEN}"},
    "no scheme": {"Authorization": TOKEN},
}


@pytest.fixture
def fake() -> FakeControl:
    return FakeControl()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProfileStore]:
    with ProfileStore(tmp_path / "profiles.sqlite3") as s:
        yield s


@pytest.fixture
def client(fake: FakeControl, store: ProfileStore) -> Iterator[TestClient]:
    with TestClient(create_app(fake, store, TOKEN, now_ms=lambda: NOW_MS)) as c:
        yield c


def _dispatch(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "asset": "inv-001",
        "setpoint_w": -5000.0,
        "transaction_id": "t-1",
        "valid_for_s": 60,
    }
    body.update(changes)
    return body


def test_the_fake_implements_the_protocol(fake: FakeControl) -> None:
    assert isinstance(fake, ControlApi)


# ---------------------------------------------------------------------------- token


def _template(path: str) -> str:
    path = path.split("?", maxsplit=1)[0].replace("/p-1", "/{profile_id}")
    if path.startswith("/api/v1/dispatch/"):
        return "/api/v1/dispatch/{asset}"
    return path.replace("/inv-001", "/{asset_id}")


def test_route_table_covers_every_http_route(client: TestClient) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in client.app.openapi()["paths"].items()  # type: ignore[attr-defined]
        for method in operations
    }
    guarded = {(method, _template(path)) for method, path, _ in GUARDED}
    assert documented - {("GET", "/api/v1/health")} == guarded - {("GET", "/openapi.json")}


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
@pytest.mark.parametrize("route", GUARDED, ids=[f"{m} {p}" for m, p, _ in GUARDED])
def test_missing_or_wrong_token_is_401_and_changes_nothing(
    client: TestClient,
    fake: FakeControl,
    store: ProfileStore,
    route: tuple[str, str, dict[str, Any] | None],
    credentials: dict[str, str],
) -> None:
    method, path, body = route
    response = client.request(method, path, json=body, headers=credentials)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text
    assert fake.calls == []
    assert store.list() == []


def test_401_wins_over_a_bad_body(client: TestClient) -> None:
    response = client.post("/api/v1/charge-profile", json={"asset": 5})
    assert response.status_code == 401


def test_health_needs_no_token(client: TestClient, fake: FakeControl) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "site": SITE, "mqtt_connected": True, "assets": 2}
    fake.mqtt_connected = False
    response = client.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"


@pytest.mark.parametrize("query", ["", "?token=wrong-token-0123456789abcdef"])
def test_stream_without_a_valid_token_is_refused_with_401(client: TestClient, query: str) -> None:
    with (
        pytest.raises(WebSocketDenialResponse) as info,
        client.websocket_connect(f"/api/v1/stream{query}"),
    ):
        pass
    assert info.value.status_code == 401
    assert info.value.headers["www-authenticate"] == "Bearer"


def test_openapi_lists_the_routes_and_the_bearer_scheme(client: TestClient) -> None:
    doc = client.get("/openapi.json", headers=AUTH).json()
    assert set(doc["paths"]) >= {
        "/api/v1/charge-profile",
        "/api/v1/dispatch",
        "/api/v1/assets/{asset_id}/clear-fault",
        "/api/v1/health",
    }
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


# ---------------------------------------------------------------------------- charge profiles


def test_bad_profile_is_422_naming_each_bad_field(client: TestClient, fake: FakeControl) -> None:
    body = profile_body(
        valid_to="2026-05-28T20:00:00Z",  # before valid_from
        max_charge_kw=-1,
        soc_min_pct=80,
        soc_max_pct=20,
        max_charge_w=5000,  # unknown key
    )
    del body["max_discharge_kw"]
    response = client.post("/api/v1/charge-profile", json=body, headers=AUTH)
    assert response.status_code == 422
    locations = {tuple(err["loc"]) for err in response.json()["detail"]}
    assert locations == {
        ("body", "valid_to"),
        ("body", "max_charge_kw"),
        ("body", "max_discharge_kw"),
        ("body", "soc_max_pct"),
        ("body", "max_charge_w"),
    }
    assert fake.calls == []


def test_profile_body_that_is_not_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/api/v1/charge-profile",
        content=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 422


def test_profile_for_an_unknown_asset_is_404(
    client: TestClient, fake: FakeControl, store: ProfileStore
) -> None:
    response = client.post("/api/v1/charge-profile", json=profile_body(asset="nope"), headers=AUTH)
    assert response.status_code == 404
    assert store.list() == []
    assert fake.calls == []


def test_same_profile_twice_is_idempotent_and_another_body_is_409(
    client: TestClient, fake: FakeControl, store: ProfileStore
) -> None:
    first = client.post("/api/v1/charge-profile", json=profile_body(), headers=AUTH)
    assert first.status_code == 201
    assert first.json()["result"] == "created"
    again = client.post("/api/v1/charge-profile", json=profile_body(), headers=AUTH)
    assert again.status_code == 200
    assert again.json() == {**first.json(), "result": "unchanged"}
    other = client.post(
        "/api/v1/charge-profile", json=profile_body(max_charge_kw=1.0), headers=AUTH
    )
    assert other.status_code == 409
    assert "p-1" in other.json()["detail"]
    assert fake.calls == [("profile_changed", "inv-001")]  # once: only the store change
    stored = store.get("p-1")
    assert stored is not None
    assert stored.max_charge_kw == 5.0


def test_same_profile_in_another_time_zone_is_unchanged(client: TestClient) -> None:
    client.post("/api/v1/charge-profile", json=profile_body(), headers=AUTH)
    shifted = profile_body(
        valid_from="2026-05-28T22:26:40+02:00", valid_to="2026-05-28T23:26:40+02:00"
    )
    assert client.post("/api/v1/charge-profile", json=shifted, headers=AUTH).status_code == 200


def test_list_profiles_with_the_limits_in_force(client: TestClient) -> None:
    client.post("/api/v1/charge-profile", json=profile_body(), headers=AUTH)
    client.post(
        "/api/v1/charge-profile",
        json=profile_body(profile_id="p-2", asset="cs-001", max_charge_kw=7),
        headers=AUTH,
    )
    mine = client.get("/api/v1/charge-profile", params={"asset": "inv-001"}, headers=AUTH).json()
    assert [p["profile_id"] for p in mine["profiles"]] == ["p-1"]
    assert mine["active"] == {
        "max_charge_w": 5000.0,
        "max_discharge_w": 3000.0,
        "soc_min_pct": 20.0,
        "soc_max_pct": 80.0,
        "profile_ids": ["p-1"],
        "until_ms": T0_MS + 3_600_000,
    }
    everything = client.get("/api/v1/charge-profile", headers=AUTH).json()
    assert [p["profile_id"] for p in everything["profiles"]] == ["p-1", "p-2"]
    assert everything["active"] is None
    unknown = client.get("/api/v1/charge-profile", params={"asset": "nope"}, headers=AUTH)
    assert unknown.status_code == 404


def test_delete_profile_tells_the_service(
    client: TestClient, fake: FakeControl, store: ProfileStore
) -> None:
    client.post("/api/v1/charge-profile", json=profile_body(), headers=AUTH)
    response = client.delete("/api/v1/charge-profile/p-1", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"deleted": "p-1", "asset": "inv-001"}
    assert store.list() == []
    assert fake.calls == [("profile_changed", "inv-001"), ("profile_changed", "inv-001")]
    assert client.delete("/api/v1/charge-profile/p-1", headers=AUTH).status_code == 404


# ---------------------------------------------------------------------------- dispatch


def test_dispatch_answers_with_the_services_ack(client: TestClient, fake: FakeControl) -> None:
    response = client.post("/api/v1/dispatch", json=_dispatch(), headers=AUTH)
    assert response.status_code == 200
    ack = response.json()
    assert ack["schema"] == "ack/1"
    assert (ack["result"], ack["requested_w"], ack["applied_w"]) == ("clamped", -5000.0, -3000.0)
    assert ack["rules"] == ["rating"]
    assert "latency_from_issued_ms" not in ack  # None fields are left out, as on MQTT
    assert fake.calls == [("manual_dispatch", ("inv-001", -5000.0, "t-1", 60.0))]


def test_dispatch_same_transaction_twice_gets_the_first_answer(
    client: TestClient, fake: FakeControl
) -> None:
    first = client.post("/api/v1/dispatch", json=_dispatch(), headers=AUTH)
    second = client.post("/api/v1/dispatch", json=_dispatch(setpoint_w=-9000), headers=AUTH)
    assert second.status_code == 200
    assert second.json() == first.json()
    # The API passes both to the service: deduplication is the ledger's, not the API's.
    assert [name for name, _ in fake.calls] == ["manual_dispatch", "manual_dispatch"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"valid_for_s": 0}, "valid_for_s"),
        ({"valid_for_s": 100_000}, "valid_for_s"),
        ({"transaction_id": "has space"}, "transaction_id"),
        ({"transaction_id": "x" * 101}, "transaction_id"),
        ({"setpoint_w": "five"}, "setpoint_w"),
        ({"asset": "a/b"}, "asset"),
        ({"command_id": "c"}, "command_id"),
    ],
)
def test_bad_dispatch_is_422_naming_the_field(
    client: TestClient, fake: FakeControl, changes: dict[str, Any], field: str
) -> None:
    response = client.post("/api/v1/dispatch", json=_dispatch(**changes), headers=AUTH)
    assert response.status_code == 422
    assert {tuple(err["loc"]) for err in response.json()["detail"]} == {("body", field)}
    assert fake.calls == []


def test_dispatch_refuses_infinity(client: TestClient, fake: FakeControl) -> None:
    body = b'{"asset": "inv-001", "setpoint_w": -Infinity, "transaction_id": "t", "valid_for_s": 5}'
    response = client.post(
        "/api/v1/dispatch", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert {tuple(err["loc"]) for err in response.json()["detail"]} == {("body", "setpoint_w")}
    assert fake.calls == []


def test_dispatch_to_an_unknown_asset_is_404(client: TestClient, fake: FakeControl) -> None:
    response = client.post("/api/v1/dispatch", json=_dispatch(asset="nope"), headers=AUTH)
    assert response.status_code == 404
    assert fake.calls == []


def test_cancel_manual_dispatch(client: TestClient) -> None:
    assert client.delete("/api/v1/dispatch/inv-001", headers=AUTH).json() == {
        "asset": "inv-001",
        "cancelled": False,
    }
    client.post("/api/v1/dispatch", json=_dispatch(), headers=AUTH)
    assert client.delete("/api/v1/dispatch/inv-001", headers=AUTH).json()["cancelled"] is True
    assert client.delete("/api/v1/dispatch/nope", headers=AUTH).status_code == 404


# ---------------------------------------------------------------------------- assets


def test_assets_list_and_one_asset(client: TestClient) -> None:
    everything = client.get("/api/v1/assets", headers=AUTH).json()
    assert everything["site"] == SITE
    assert [a["id"] for a in everything["assets"]] == ["inv-001", "cs-001"]
    one = client.get("/api/v1/assets/inv-001", headers=AUTH).json()
    assert one == {
        "id": "inv-001",
        "kind": "inverter",
        "faults": ["ground_fault"],
        "telemetry": None,
    }
    assert client.get("/api/v1/assets/nope", headers=AUTH).status_code == 404


def test_clear_fault_says_what_was_cleared(client: TestClient, fake: FakeControl) -> None:
    response = client.post("/api/v1/assets/inv-001/clear-fault", headers=AUTH)
    assert response.json() == {"asset": "inv-001", "cleared": ["ground_fault"]}
    again = client.post("/api/v1/assets/inv-001/clear-fault", headers=AUTH)
    assert again.json() == {"asset": "inv-001", "cleared": []}
    assert client.post("/api/v1/assets/nope/clear-fault", headers=AUTH).status_code == 404
    assert fake.calls == [("clear_fault", "inv-001"), ("clear_fault", "inv-001")]


# ---------------------------------------------------------------------------- stream

TELEMETRY = (
    "gridflex/v1/depot-1/inverter/inv-001/telemetry",
    b'{"schema":"telemetry/1","power_w":-2500.0}',
)
COMMAND = (
    "gridflex/v1/depot-1/dispatch/cs-001/command",
    b'{"schema":"command/1","setpoint_w":1000}',
)
ACK = ("gridflex/v1/depot-1/dispatch/inv-001/ack", b'{"schema":"ack/1","result":"applied"}')


def test_stream_delivers_what_the_service_streams(client: TestClient, fake: FakeControl) -> None:
    fake.preload = [TELEMETRY, COMMAND, ACK]
    with client.websocket_connect("/api/v1/stream", headers=AUTH) as ws:
        got = [ws.receive_json() for _ in range(3)]
    assert got == [
        {"topic": TELEMETRY[0], "payload": {"schema": "telemetry/1", "power_w": -2500.0}},
        {"topic": COMMAND[0], "payload": {"schema": "command/1", "setpoint_w": 1000}},
        {"topic": ACK[0], "payload": {"schema": "ack/1", "result": "applied"}},
    ]


def test_stream_token_in_the_query_and_asset_filter(client: TestClient, fake: FakeControl) -> None:
    fake.preload = [TELEMETRY, COMMAND, ACK]
    with client.websocket_connect(f"/api/v1/stream?token={TOKEN}&asset=inv-001") as ws:
        topics = [ws.receive_json()["topic"] for _ in range(2)]
    assert topics == [TELEMETRY[0], ACK[0]]


def test_stream_unsubscribes_when_the_client_leaves(client: TestClient, fake: FakeControl) -> None:
    fake.preload = [TELEMETRY]
    with client.websocket_connect("/api/v1/stream", headers=AUTH) as ws:
        ws.receive_json()
        assert fake.hub.subscribers == 1
    # The handler ends once it sees the close; the subscription goes with it.
    assert fake.hub.subscribers == 0
