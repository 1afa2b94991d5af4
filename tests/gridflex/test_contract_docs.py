"""The committed docs/ contract files are exactly what the models generate."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from gridflex.contract import PAYLOADS
from gridflex.contract_docs import CHANNELS, render

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_committed_contract_files_match_the_models() -> None:
    stale = [rel for rel, text in render().items() if (DOCS / rel).read_text("utf-8") != text]
    assert stale == [], f"run `gridflex contract export` and commit: {stale}"


def test_every_payload_schema_is_a_valid_json_schema() -> None:
    for rel, text in render().items():
        if rel.startswith("schemas/"):
            jsonschema.Draft202012Validator.check_schema(json.loads(text))


def test_every_payload_has_a_channel_in_the_asyncapi_document() -> None:
    documented = {schema for _addr, schema, _retained, _desc in CHANNELS.values()}
    assert documented == set(PAYLOADS)
