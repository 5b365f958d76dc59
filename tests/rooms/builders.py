"""Small builders for the pure room tests: events as plain dicts that carry their event_id."""

from __future__ import annotations

import itertools
from typing import Any

from rooms.power_levels import StateMap
from rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion

JsonDict = dict[str, Any]

ALICE = "@alice:a.example"
BOB = "@bob:b.example"
CAROL = "@carol:c.example"
DAVE = "@dave:d.example"
ERIN = "@erin:a.example"


def version(identifier: str) -> RoomVersion:
    return KNOWN_ROOM_VERSIONS[identifier]


class Room:
    """A room built directly as a state map (no auth checks while setting up)."""

    def __init__(
        self,
        version_id: str = "10",
        *,
        creator: str = ALICE,
        join_rule: str | None = "public",
        power: JsonDict | None = None,
        create_content: JsonDict | None = None,
    ) -> None:
        self.version = version(version_id)
        self.state: StateMap = {}
        self._ids = itertools.count(1)
        content: JsonDict = {"room_version": version_id}
        if not self.version.implicit_room_creator:
            content["creator"] = creator
        content.update(create_content or {})
        create: JsonDict = {
            "type": "m.room.create",
            "state_key": "",
            "sender": creator,
            "content": content,
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
            "origin_server_ts": 0,
        }
        if self.version.room_id_from_create_event:
            create["event_id"] = "$createroom"
            self.room_id = "!createroom"
        else:
            create["event_id"] = "$createroom:a.example"
            self.room_id = "!room:a.example"
            create["room_id"] = self.room_id
        self.create = create
        self.state[("m.room.create", "")] = create
        self.creator = creator
        self.put(self.member(creator, creator, "join", prev=[create["event_id"]]))
        if power is not None or not self.version.creators_infinite_power:
            users = {} if self.version.creators_infinite_power else {creator: 100}
            content = {"users": users}
            content.update(power or {})
            self.put(self.state_event("m.room.power_levels", creator, content))
        if join_rule is not None:
            self.put(self.state_event("m.room.join_rules", creator, {"join_rule": join_rule}))

    def event(
        self,
        event_type: str,
        sender: str,
        content: JsonDict,
        state_key: str | None = None,
        prev: list[Any] | None = None,
        **extra: Any,
    ) -> JsonDict:
        number = next(self._ids)
        event: JsonDict = {
            "event_id": f"$e{number}:a.example",
            "type": event_type,
            "room_id": self.room_id,
            "sender": sender,
            "content": content,
            "prev_events": prev if prev is not None else [f"$prev{number}:a.example"],
            "auth_events": [],
            "depth": number + 1,
            "origin_server_ts": 1000 + number,
        }
        if state_key is not None:
            event["state_key"] = state_key
        event.update(extra)
        return event

    def state_event(
        self, event_type: str, sender: str, content: JsonDict, state_key: str = ""
    ) -> JsonDict:
        return self.event(event_type, sender, content, state_key=state_key)

    def member(
        self,
        sender: str,
        target: str,
        membership: str,
        prev: list[Any] | None = None,
        **content: Any,
    ) -> JsonDict:
        return self.event(
            "m.room.member", sender, {"membership": membership, **content}, target, prev=prev
        )

    def put(self, event: JsonDict) -> JsonDict:
        """Set ``event`` in the state without authorising it (test set-up)."""
        self.state[(event["type"], event["state_key"])] = event
        return event

    def join(self, *users: str) -> None:
        for user in users:
            self.put(self.member(user, user, "join"))

    def set_power(self, content: JsonDict) -> None:
        self.put(self.state_event("m.room.power_levels", self.creator, content))
