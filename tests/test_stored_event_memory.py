"""What a cached event costs: its parsed JSON shares its recurring strings with the other
cached events (room ID, sender, type, the event IDs it cites), leaves out the signatures
and hashes (the stored text keeps them), and is kept only for the most recently parsed events."""

from __future__ import annotations

import json

import pytest

from homeserver.storage import events
from homeserver.storage.events import StoredEvent, parse_event_json


def stored(event_id: str, body: dict[str, object]) -> StoredEvent:
    text = json.dumps(body, separators=(",", ":"))  # each parsed into fresh strings
    return StoredEvent(event_id, str(body["room_id"]), 1, text, 1, 1, False)


def message(prev: str, n: int) -> dict[str, object]:
    return {
        "auth_events": ["$create", "$power"], "prev_events": [prev], "room_id": "!room:hs",
        "sender": "@alice:hs", "type": "m.room.message", "depth": n,
        "content": {"msgtype": "m.text", "body": f"message {n}"},
        "hashes": {"sha256": "abc"}, "signatures": {"hs": {"ed25519:k": "sig"}},
    }  # fmt: skip


def test_recurring_strings_are_shared_and_the_event_unchanged() -> None:
    first = stored("$first", message("$zero", 1))
    second = stored("$second", message("".join(["$fir", "st"]), 2))  # a distinct copy
    a, b = first.data, second.data
    for field in ("room_id", "sender", "type"):
        assert a[field] is b[field]
    assert all(x is y for x, y in zip(a["auth_events"], b["auth_events"], strict=True))
    # The second cites the first, which it now shares with the first's own ID.
    assert b["prev_events"][0] is a["event_id"]
    assert first.room_id is a["room_id"] is second.room_id
    whole = parse_event_json(second.json_text)
    del whole["signatures"], whole["hashes"]
    assert b == {**whole, "event_id": "$second"}
    assert a["content"] == {"msgtype": "m.text", "body": "message 1"}


def test_fields_of_unexpected_types_are_left_alone() -> None:
    odd = {"room_id": "!room:hs", "sender": 5, "type": None, "auth_events": "$x",
           "prev_events": [1, "$a", None]}  # fmt: skip
    assert stored("$odd", odd).data == {**odd, "event_id": "$odd"}


def test_signatures_and_hashes_are_not_kept_parsed_but_stay_in_the_stored_text() -> None:
    event = stored("$e", message("$zero", 1))
    assert "signatures" not in event.data and "hashes" not in event.data
    whole = json.loads(event.json_text)
    assert whole["signatures"] == {"hs": {"ed25519:k": "sig"}}
    assert whole["hashes"] == {"sha256": "abc"}
    assert event.data["content"] == whole["content"]


def test_only_the_most_recently_parsed_events_keep_their_parsed_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "_parsed", events._ParsedEvents("parsed_events", maxsize=2))
    a, b, c = (stored(f"${n}", message("$zero", n)) for n in range(3))
    first = a.data
    b.data, c.data  # noqa: B018 (parsing is the point)
    assert a._data is None and b._data is not None and c._data is not None
    again = a.data  # parsed again from the text, equal, and now b's is the oldest
    assert again == first and again is not first
    assert b._data is None and c._data is not None


def test_an_event_leaving_the_cache_lets_go_of_its_parsed_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = events._ParsedEvents("parsed_events", maxsize=10)
    monkeypatch.setattr(events, "_parsed", parsed)
    event = stored("$e", message("$zero", 1))
    assert event.data and id(event) in parsed
    event.forget_parsed()
    assert event._data is None and id(event) not in parsed
    assert event.data["content"]["body"] == "message 1"  # parsed again when read


def test_room_v1_references_hash_the_whole_stored_event() -> None:
    """The parsed form has no hashes, but a v1/v2 reference must cover them: it is
    computed from the stored text."""
    from homeserver.services.room_events import RoomEventService
    from rooms.events import reference_hash
    from rooms.versions import get_room_version

    v1 = get_room_version("1")
    body = {**message("$zero", 1), "event_id": "$e:hs"}
    event = stored("$e:hs", body)
    refs = RoomEventService._event_refs(None, v1, [event])  # type: ignore[arg-type]
    assert refs == [["$e:hs", {"sha256": reference_hash(body, v1, urlsafe=False)}]]
    without_hashes = {k: v for k, v in body.items() if k != "hashes"}
    assert refs[0][1]["sha256"] != reference_hash(without_hashes, v1, urlsafe=False)
