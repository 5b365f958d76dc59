"""Stored event JSON parses to the same value whichever parser takes it: msgspec for the
usual event, the json module for what msgspec refuses but a stored event may hold."""

from __future__ import annotations

import json

import pytest

from homeserver.storage.events import StoredEvent, parse_event_json

TEXTS = [
    '{"type":"m.room.message","content":{"body":"h\\u00e9llo","n":-0,"f":1.5e3,"z":-0.0,"i":1}}',
    '{"content":{"big":123456789012345678901234567890},"depth":1}',
    # a lone surrogate escape: the json module accepts it, msgspec does not
    '{"content":{"body":"\\ud800"},"type":"m.room.message"}',
    # beyond a double: the json module reads infinity, msgspec refuses
    '{"content":{"x":1e400}}',
]


@pytest.mark.parametrize("text", TEXTS)
def test_parse_event_json_matches_the_json_module(text: str) -> None:
    # Compared as JSON text: == alone would take 1 for 1.0 and 0 for -0.0, and the push
    # rules and power levels tell integers from floats.
    assert json.dumps(parse_event_json(text)) == json.dumps(json.loads(text))


def test_stored_event_data_adds_the_event_id_once_parsed() -> None:
    event = StoredEvent("$e", "!r:x", 5, TEXTS[2], 1, 1, False)
    assert event.data["content"]["body"] == "\ud800"
    assert event.data["event_id"] == "$e"
    assert event.data is event.data  # parsed once
