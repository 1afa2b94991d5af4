"""Property tests of the REST API against arbitrary bodies and paths: 4xx, never 5xx.

The API runs over the fake control service of ``api_helpers`` (FastAPI TestClient); every
guarded route gets arbitrary bytes, arbitrary JSON and fuzzed versions of a valid body,
with and without the token. Without the token the answer is 401 whatever the body; with
it, a body that is not a valid request is refused with 4xx and changes nothing.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import example, given, settings
from hypothesis import strategies as st

from control.api import create_app
from control.profiles import ProfileStore
from tests.control.api_helpers import T0_MS, TOKEN, FakeControl, profile_body

AUTH = {"Authorization": f"Bearer {TOKEN}"}
POSTS = ["/api/v1/charge-profile", "/api/v1/dispatch"]

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
VALUES = st.one_of(
    st.floats(),  # NaN and the infinities: json.dumps writes NaN / Infinity
    st.integers(-(2**70), 2**70),
    st.text(max_size=300),
    JSON_VALUES,
)
DISPATCH_KEYS = st.sampled_from(["asset", "setpoint_w", "transaction_id", "valid_for_s", "x"])
PROFILE_KEYS = st.sampled_from(
    ["asset", "profile_id", "valid_from", "valid_to", "max_charge_kw", "max_discharge_kw",
     "soc_min_pct", "soc_max_pct", "x"]
)  # fmt: skip


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[TestClient, FakeControl]]:
    fake = FakeControl()
    with tempfile.TemporaryDirectory() as folder, ProfileStore(Path(folder) / "p.sqlite3") as store:
        app = create_app(fake, store, TOKEN, now_ms=lambda: T0_MS)
        with TestClient(app) as client:
            yield client, fake


def _dispatch(**changes: Any) -> dict[str, Any]:
    return {
        "asset": "inv-001",
        "setpoint_w": -5000.0,
        "transaction_id": "t-1",
        "valid_for_s": 60,
        **changes,
    }


@given(
    path=st.sampled_from(POSTS),
    body=st.binary(max_size=300),
    token=st.booleans(),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form"]),
)
@example(path="/api/v1/dispatch", body=b"[" * 100_000, token=True, content_type="application/json")
# regression: a body that was not UTF-8 was echoed in the 422 and failed with a 500
@example(
    path="/api/v1/dispatch",
    body=b'{"asset": "\xed\xa0\x80"}',
    token=True,
    content_type="application/json",
)
# regression: a body that is not JSON nor UTF-8, sent as text, was echoed as raw bytes: 500
@example(path="/api/v1/dispatch", body=b"\xe4\xd6", token=True, content_type="text/plain")
# regression: a body that is not JSON got 422 before the token was checked
@example(path="/api/v1/charge-profile", body=b"\x00", token=False, content_type="application/json")
@settings(max_examples=200, deadline=None)
def test_any_body_is_refused_with_4xx_and_without_the_token_with_401(
    api: tuple[TestClient, FakeControl], path: str, body: bytes, token: bool, content_type: str
) -> None:
    client, fake = api
    calls = len(fake.calls)
    headers = {"Content-Type": content_type, **(AUTH if token else {})}
    answer = client.post(path, content=body, headers=headers)
    assert answer.status_code < 500, answer.text
    if not token:
        assert answer.status_code == 401
        assert len(fake.calls) == calls
    elif answer.status_code >= 400:
        assert len(fake.calls) == calls


@given(
    edits=st.dictionaries(DISPATCH_KEYS, VALUES, max_size=3),
    drop=st.lists(DISPATCH_KEYS, max_size=2),
)
@example(edits={"setpoint_w": math.nan}, drop=[])
@example(edits={"valid_for_s": math.inf}, drop=[])
@settings(max_examples=200, deadline=None)
def test_a_fuzzed_dispatch_is_answered_without_5xx_and_only_a_valid_one_is_applied(
    api: tuple[TestClient, FakeControl], edits: dict[str, Any], drop: list[str]
) -> None:
    client, fake = api
    body = {**_dispatch(), **edits}
    for name in drop:
        body.pop(name, None)
    calls = len(fake.calls)
    answer = client.post(
        "/api/v1/dispatch",
        content=json.dumps(body, allow_nan=True),
        headers={"Content-Type": "application/json", **AUTH},
    )
    assert answer.status_code < 500, answer.text
    if answer.status_code == 200:
        setpoint = body["setpoint_w"]
        assert isinstance(setpoint, int | float) and math.isfinite(setpoint)
    else:
        assert len(fake.calls) == calls


@given(
    edits=st.dictionaries(PROFILE_KEYS, VALUES, max_size=3),
    drop=st.lists(PROFILE_KEYS, max_size=2),
    profile_id=st.text(min_size=1, max_size=20),
)
@settings(max_examples=150, deadline=None)
def test_a_fuzzed_charge_profile_is_answered_without_5xx(
    api: tuple[TestClient, FakeControl], edits: dict[str, Any], drop: list[str], profile_id: str
) -> None:
    client, _fake = api
    body = {**profile_body(profile_id=profile_id), **edits}
    for name in drop:
        body.pop(name, None)
    answer = client.post(
        "/api/v1/charge-profile",
        content=json.dumps(body, allow_nan=True),
        headers={"Content-Type": "application/json", **AUTH},
    )
    assert answer.status_code < 500, answer.text


@given(
    method=st.sampled_from(["GET", "DELETE", "POST"]),
    route=st.sampled_from(["charge-profile", "dispatch", "assets"]),
    tail=st.text(max_size=40).map(lambda t: quote(t, safe="")),
    token=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_any_path_below_the_api_is_answered_without_5xx(
    api: tuple[TestClient, FakeControl], method: str, route: str, tail: str, token: bool
) -> None:
    client, _fake = api
    answer = client.request(method, f"/api/v1/{route}/{tail}", headers=AUTH if token else {})
    assert answer.status_code < 500, answer.text
