"""Scheduled deletion of one's own messages: a user's retention setting has their old
messages redacted by themselves, keeping pinned ones and direct chats when asked."""

from __future__ import annotations

import time
from typing import Any

from rooms.message_retention import RetentionSetting, parse_setting
from tests.harness import Client, create_room, join, new_user, q
from tests.test_rooms_basic import send

SETTING = "org.homeserver.message_retention"


def bodies_and_redactions(client: Client, room_id: str) -> dict[str, Any]:
    chunk = client.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "100"})
    assert chunk.status == 200, chunk
    return {e["event_id"]: e for e in chunk.body["chunk"] if e["type"] == "m.room.message"}


def test_old_own_messages_are_redacted_pinned_and_direct_kept(server_factory: Any) -> None:
    server = server_factory({"privacy": {"message_retention_interval": "300ms"}})
    alice, bob = new_user(server), new_user(server)
    room_id = create_room(alice)
    join(bob, room_id)
    old = [send(alice, room_id, f"old {i}") for i in range(3)]
    pinned = send(alice, room_id, "pinned, kept")
    assert alice.put(f"rooms/{q(room_id)}/state/m.room.pinned_events",
                     {"pinned": [pinned]}).status == 200  # fmt: skip
    bobs = send(bob, room_id, "bob's, never touched")
    dm = create_room(alice, preset="trusted_private_chat", is_direct=True, invite=[bob.user_id])
    join(bob, dm)
    in_dm = send(alice, dm, "in a direct chat, kept")
    assert alice.put(f"user/{q(alice.user_id or '')}/account_data/m.direct",
                     {bob.user_id: [dm]}).status == 200  # fmt: skip
    time.sleep(1.2)
    setting = {"max_age": 1000, "keep_pinned": True, "keep_direct": True}
    assert alice.put(f"user/{q(alice.user_id or '')}/account_data/{SETTING}", setting).status == 200
    fresh = send(alice, room_id, "fresh, kept")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        seen = bodies_and_redactions(bob, room_id)
        if all(seen[e]["content"] == {} for e in old):
            break
        time.sleep(0.2)
    seen = bodies_and_redactions(bob, room_id)
    for event_id in old:
        assert seen[event_id]["content"] == {}, seen[event_id]
        redaction = seen[event_id]["unsigned"]["redacted_because"]
        assert redaction["sender"] == alice.user_id  # as if she had removed it herself
    for event_id in (pinned, bobs, fresh):
        assert seen[event_id]["content"].get("body"), seen[event_id]
    assert bodies_and_redactions(bob, dm)[in_dm]["content"]["body"] == "in a direct chat, kept"
    # Switched off (or malformed), nothing more goes.
    assert alice.put(f"user/{q(alice.user_id or '')}/account_data/{SETTING}", {}).status == 200
    later = send(alice, room_id, "after switching off")
    time.sleep(1.5)
    assert bodies_and_redactions(bob, room_id)[later]["content"]["body"] == "after switching off"


def test_setting_parsing() -> None:
    assert parse_setting({"max_age": 86_400_000}) == RetentionSetting(86_400_000, True, False)
    assert parse_setting({"max_age": 5, "keep_pinned": False, "keep_direct": True}) == (
        RetentionSetting(5, False, True))  # fmt: skip
    for bad in ({}, {"max_age": 0}, {"max_age": -5}, {"max_age": "1d"}, {"max_age": True},
                {"max_age": 5, "keep_pinned": "yes"}, None, []):  # fmt: skip
        assert parse_setting(bad) is None, bad
