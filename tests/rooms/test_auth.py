"""The authorisation rules, one rule family at a time, each with an allowed and a refused case."""

from __future__ import annotations

from typing import Any

import pytest
from signedjson.key import (
    decode_signing_key_base64,
    encode_verify_key_base64,
    get_verify_key,
)
from signedjson.sign import sign_json

from rooms.auth import AuthError, auth_types_for_event, check_auth
from rooms.power_levels import StateMap
from tests.rooms.builders import ALICE, BOB, CAROL, DAVE, ERIN, Room, version

JsonDict = dict[str, Any]


def allowed(room: Room, event: JsonDict, **kwargs: Any) -> None:
    check_auth(event, room.state, room.version, **kwargs)


def refused(room: Room, event: JsonDict, match: str | None = None, **kwargs: Any) -> None:
    with pytest.raises(AuthError, match=match):
        check_auth(event, room.state, room.version, **kwargs)


# --- m.room.create --------------------------------------------------------------------------


def _create(room_version: str, sender: str = ALICE, **overrides: Any) -> JsonDict:
    v = version(room_version)
    content: JsonDict = {"room_version": room_version}
    if not v.implicit_room_creator:
        content["creator"] = sender
    event: JsonDict = {
        "event_id": "$create:a.example",
        "type": "m.room.create",
        "state_key": "",
        "sender": sender,
        "content": content,
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
        "origin_server_ts": 0,
    }
    if not v.room_id_from_create_event:
        event["room_id"] = "!room:a.example"
    event.update(overrides)
    return event


@pytest.mark.parametrize("room_version", [str(n) for n in range(1, 13)])
def test_create_allowed(room_version: str) -> None:
    check_auth(_create(room_version), {}, version(room_version))


@pytest.mark.parametrize("room_version", ["1", "10", "12"])
def test_create_with_prev_events_refused(room_version: str) -> None:
    with pytest.raises(AuthError, match="prev_events"):
        check_auth(_create(room_version, prev_events=["$x"]), {}, version(room_version))


@pytest.mark.parametrize("room_version", ["1", "6", "11"])
def test_create_room_id_domain_must_match_sender(room_version: str) -> None:
    v = version(room_version)
    check_auth(_create(room_version, room_id="!r:a.example"), {}, v)
    with pytest.raises(AuthError, match="domain"):
        check_auth(_create(room_version, room_id="!r:b.example"), {}, v)


def test_v12_create_must_not_have_room_id() -> None:
    with pytest.raises(AuthError, match="room_id"):
        check_auth(_create("12", room_id="!r:a.example"), {}, version("12"))


@pytest.mark.parametrize("room_version", ["1", "10", "12"])
def test_create_unknown_room_version_refused(room_version: str) -> None:
    event = _create(room_version)
    event["content"]["room_version"] = "999"
    with pytest.raises(AuthError, match="room version"):
        check_auth(event, {}, version(room_version))
    # Absent room_version means version 1, which is known.
    del event["content"]["room_version"]
    check_auth(event, {}, version(room_version))


@pytest.mark.parametrize("room_version", ["1", "5", "10"])
def test_create_without_creator_refused_before_v11(room_version: str) -> None:
    event = _create(room_version)
    del event["content"]["creator"]
    with pytest.raises(AuthError, match="creator"):
        check_auth(event, {}, version(room_version))


@pytest.mark.parametrize("room_version", ["11", "12"])
def test_create_without_creator_allowed_from_v11(room_version: str) -> None:
    event = _create(room_version)
    assert "creator" not in event["content"]
    check_auth(event, {}, version(room_version))


@pytest.mark.parametrize(
    ("additional", "ok"),
    [
        (["@b:b.example", "@c:c.example"], True),
        ([], True),
        (["not-a-user"], False),
        (["@b:b.example", 5], False),
        ("@b:b.example", False),
        ([["@b:b.example"]], False),
    ],
)
def test_v12_additional_creators_validation(additional: Any, ok: bool) -> None:
    event = _create("12")
    event["content"]["additional_creators"] = additional
    if ok:
        check_auth(event, {}, version("12"))
    else:
        with pytest.raises(AuthError, match="additional_creators"):
            check_auth(event, {}, version("12"))


def test_create_sender_must_be_user_id() -> None:
    with pytest.raises(AuthError, match="sender"):
        check_auth(_create("10", sender="alice"), {}, version("10"))


def test_v12_event_room_id_must_match_create() -> None:
    room = Room("12")
    allowed(room, room.event("m.room.message", ALICE, {"body": "hi"}))
    refused(room, {**room.event("m.room.message", ALICE, {}), "room_id": "!other"}, "room_id")


def test_no_create_event_in_state_refused() -> None:
    room = Room("10")
    del room.state[("m.room.create", "")]
    refused(room, room.event("m.room.message", ALICE, {}), "m.room.create")


# --- the creator's first join ---------------------------------------------------------------


@pytest.mark.parametrize("room_version", ["1", "2", "6", "10", "11", "12"])
def test_creator_first_join_after_create(room_version: str) -> None:
    room = Room(room_version, join_rule=None)
    room.state = {("m.room.create", ""): room.create}
    create_id = room.create["event_id"]
    # v1/v2 reference prev events as [id, hashes] pairs.
    prev: list[Any] = [[create_id, {"sha256": "x"}]] if room_version in ("1", "2") else [create_id]
    allowed(room, room.member(ALICE, ALICE, "join", prev=prev))
    # Someone else cannot use the rule (and the default join rule is invite).
    refused(room, room.member(BOB, BOB, "join", prev=prev))
    # Nor can the creator if the create event is not the only previous event.
    refused(room, room.member(ALICE, ALICE, "join", prev=[create_id, "$other:a.example"]))
    # Nor if the only previous event is not the create event.
    refused(room, room.member(ALICE, ALICE, "join", prev=["$other:a.example"]))


def test_first_join_uses_content_creator_before_v11() -> None:
    room = Room("10", join_rule=None, create_content={"creator": BOB})
    room.state = {("m.room.create", ""): room.create}
    prev = [room.create["event_id"]]
    allowed(room, room.member(BOB, BOB, "join", prev=prev))
    refused(room, room.member(ALICE, ALICE, "join", prev=prev))


def test_first_join_uses_create_sender_from_v11() -> None:
    room = Room("11", join_rule=None, create_content={"creator": BOB})
    room.state = {("m.room.create", ""): room.create}
    prev = [room.create["event_id"]]
    allowed(room, room.member(ALICE, ALICE, "join", prev=prev))
    refused(room, room.member(BOB, BOB, "join", prev=prev))


def test_v12_first_join_is_only_for_the_create_sender() -> None:
    """v12 rule 5.3.1: "the state_key is the sender of the m.room.create" (not additional
    creators, who join like anyone else)."""
    room = Room("12", join_rule=None, create_content={"additional_creators": [BOB]})
    room.state = {("m.room.create", ""): room.create}
    prev = [room.create["event_id"]]
    allowed(room, room.member(ALICE, ALICE, "join", prev=prev))
    refused(room, room.member(BOB, BOB, "join", prev=prev))


# --- joining --------------------------------------------------------------------------------


@pytest.mark.parametrize("room_version", ["1", "6", "10", "12"])
def test_join_public_room(room_version: str) -> None:
    room = Room(room_version, join_rule="public")
    allowed(room, room.member(BOB, BOB, "join"))
    refused(room, room.member(ALICE, BOB, "join"), "another user")


@pytest.mark.parametrize("room_version", ["1", "6", "10", "12"])
def test_join_invite_room_needs_invite(room_version: str) -> None:
    room = Room(room_version, join_rule="invite")
    refused(room, room.member(BOB, BOB, "join"), "invite-only")
    room.put(room.member(ALICE, BOB, "invite"))
    allowed(room, room.member(BOB, BOB, "join"))


def test_join_without_join_rules_defaults_to_invite() -> None:
    room = Room("10", join_rule=None)
    refused(room, room.member(BOB, BOB, "join"))


def test_join_unknown_join_rule_refused() -> None:
    room = Room("10", join_rule="private")
    refused(room, room.member(BOB, BOB, "join"))


@pytest.mark.parametrize("room_version", ["1", "10", "12"])
def test_banned_user_cannot_join_public_room(room_version: str) -> None:
    room = Room(room_version, join_rule="public")
    room.put(room.member(ALICE, BOB, "ban"))
    refused(room, room.member(BOB, BOB, "join"), "banned")
    allowed(room, room.member(CAROL, CAROL, "join"))


def test_join_rule_knock_allows_join_only_when_invited() -> None:
    room = Room("7", join_rule="knock")
    refused(room, room.member(BOB, BOB, "join"))
    room.put(room.member(BOB, BOB, "knock"))
    refused(room, room.member(BOB, BOB, "join"))
    room.put(room.member(ALICE, BOB, "invite"))
    allowed(room, room.member(BOB, BOB, "join"))


# --- invites --------------------------------------------------------------------------------


@pytest.mark.parametrize("room_version", ["1", "10", "12"])
def test_invite_by_joined_member(room_version: str) -> None:
    room = Room(room_version, join_rule="invite")
    allowed(room, room.member(ALICE, BOB, "invite"))
    # A sender who is not joined cannot invite, even at a high level.
    refused(room, room.member(CAROL, BOB, "invite"), "not joined")
    room.put(room.member(ALICE, CAROL, "invite"))
    refused(room, room.member(CAROL, BOB, "invite"), "not joined")


def test_invite_needs_invite_level() -> None:
    room = Room("10", power={"invite": 50, "users": {ALICE: 100, BOB: 49, CAROL: 50}})
    room.join(BOB, CAROL)
    refused(room, room.member(BOB, DAVE, "invite"), "too low")
    allowed(room, room.member(CAROL, DAVE, "invite"))


@pytest.mark.parametrize("membership", ["join", "ban"])
def test_cannot_invite_joined_or_banned_target(membership: str) -> None:
    room = Room("10")
    room.put(room.member(BOB if membership == "join" else ALICE, BOB, membership))
    refused(room, room.member(ALICE, BOB, "invite"), membership)


def test_can_reinvite_invited_or_left_target() -> None:
    room = Room("10")
    room.put(room.member(ALICE, BOB, "invite"))
    allowed(room, room.member(ALICE, BOB, "invite"))
    room.put(room.member(BOB, BOB, "leave"))
    allowed(room, room.member(ALICE, BOB, "invite"))


def _third_party_room() -> tuple[Room, Any, JsonDict]:
    key = decode_signing_key_base64("ed25519", "1", "B" * 43)
    public = encode_verify_key_base64(get_verify_key(key))
    room = Room("10")
    invite = room.state_event(
        "m.room.third_party_invite",
        ALICE,
        {"display_name": "b...", "public_key": public, "key_validity_url": "https://id"},
        state_key="tok",
    )
    room.put(invite)
    signed = sign_json({"mxid": BOB, "token": "tok"}, "id.example", key)
    return room, key, signed


def test_third_party_invite_allowed_with_valid_signature() -> None:
    room, _, signed = _third_party_room()
    event = room.member(ALICE, BOB, "invite", third_party_invite={"signed": signed})
    allowed(room, event)
    assert ("m.room.third_party_invite", "tok") in auth_types_for_event(event, room.version)


def test_third_party_invite_refusals() -> None:
    room, _, signed = _third_party_room()
    other_key = decode_signing_key_base64("ed25519", "1", "C" * 43)
    forged = sign_json({"mxid": BOB, "token": "tok"}, "id.example", other_key)
    refused(room, room.member(ALICE, BOB, "invite", third_party_invite={"signed": forged}))
    # The mxid must be the target.
    refused(room, room.member(ALICE, CAROL, "invite", third_party_invite={"signed": signed}))
    # Only the sender of the m.room.third_party_invite may use it.
    room.join(CAROL)
    refused(room, room.member(CAROL, BOB, "invite", third_party_invite={"signed": signed}))
    # No signed block.
    refused(room, room.member(ALICE, BOB, "invite", third_party_invite={}))
    # Banned target.
    room.put(room.member(ALICE, BOB, "ban"))
    refused(room, room.member(ALICE, BOB, "invite", third_party_invite={"signed": signed}))


# --- leave, kick, ban, unban ----------------------------------------------------------------


def test_self_leave() -> None:
    room = Room("10")
    room.join(BOB)
    allowed(room, room.member(BOB, BOB, "leave"))
    room.put(room.member(ALICE, CAROL, "invite"))
    allowed(room, room.member(CAROL, CAROL, "leave"))  # rejecting an invite
    refused(room, room.member(DAVE, DAVE, "leave"))  # never in the room
    room.put(room.member(ALICE, ERIN, "ban"))
    refused(room, room.member(ERIN, ERIN, "leave"))  # cannot unban yourself


def test_self_leave_from_knock_only_from_v7() -> None:
    for room_version, ok in (("6", False), ("7", True)):
        room = Room(room_version, join_rule="knock")
        room.put(room.member(BOB, BOB, "knock"))
        if ok:
            allowed(room, room.member(BOB, BOB, "leave"))
        else:
            refused(room, room.member(BOB, BOB, "leave"))


def _moderated_room(room_version: str = "10", **levels: Any) -> Room:
    users = {ALICE: 100, BOB: 50, CAROL: 50, DAVE: 0}
    if version(room_version).creators_infinite_power:
        del users[ALICE]
    room = Room(room_version, power={"users": users, **levels})
    room.join(BOB, CAROL, DAVE)
    return room


def test_kick_needs_kick_level_and_higher_level_than_target() -> None:
    room = _moderated_room(kick=50)
    allowed(room, room.member(BOB, DAVE, "leave"))  # 50 >= kick, 0 < 50
    refused(room, room.member(BOB, CAROL, "leave"), "kick")  # equal level
    refused(room, room.member(BOB, ALICE, "leave"), "kick")  # higher level
    refused(room, room.member(DAVE, BOB, "leave"), "kick")  # below kick level
    allowed(room, room.member(ALICE, BOB, "leave"))


def test_kick_level_above_sender_refused() -> None:
    room = _moderated_room(kick=75)
    refused(room, room.member(BOB, DAVE, "leave"), "kick")
    allowed(room, room.member(ALICE, DAVE, "leave"))


def test_kick_by_non_member_refused() -> None:
    room = _moderated_room()
    room.put(room.member(BOB, BOB, "leave"))
    refused(room, room.member(BOB, DAVE, "leave"), "not joined")


def test_ban_needs_ban_level_and_higher_level_than_target() -> None:
    room = _moderated_room(ban=50)
    allowed(room, room.member(BOB, DAVE, "ban"))
    refused(room, room.member(BOB, CAROL, "ban"), "ban")
    refused(room, room.member(DAVE, BOB, "ban"), "ban")
    # Banning someone who is not in the room is fine.
    allowed(room, room.member(BOB, ERIN, "ban"))
    room.put(room.member(BOB, BOB, "leave"))
    refused(room, room.member(BOB, DAVE, "ban"), "not joined")


def test_ban_level_above_sender_refused() -> None:
    room = _moderated_room(ban=51)
    refused(room, room.member(BOB, DAVE, "ban"))
    allowed(room, room.member(ALICE, DAVE, "ban"))


def test_unban_needs_ban_level() -> None:
    room = _moderated_room(kick=0, ban=75)
    room.put(room.member(ALICE, DAVE, "ban"))
    refused(room, room.member(BOB, DAVE, "leave"), "unban")
    allowed(room, room.member(ALICE, DAVE, "leave"))
    room.set_power({"users": {ALICE: 100, BOB: 50, CAROL: 50}, "kick": 0, "ban": 50})
    allowed(room, room.member(BOB, DAVE, "leave"))


def test_unban_also_needs_kick_level() -> None:
    room = _moderated_room(kick=75, ban=50)
    room.put(room.member(ALICE, DAVE, "ban"))
    refused(room, room.member(BOB, DAVE, "leave"))


def test_unknown_membership_refused() -> None:
    room = Room("10")
    refused(room, room.member(BOB, BOB, "dance"), "unknown membership")
    event = room.member(BOB, BOB, "join")
    del event["state_key"]
    refused(room, event, "state_key")


# --- knocking -------------------------------------------------------------------------------


@pytest.mark.parametrize("room_version", ["7", "10", "12"])
def test_knock(room_version: str) -> None:
    room = Room(room_version, join_rule="knock")
    allowed(room, room.member(BOB, BOB, "knock"))
    refused(room, room.member(BOB, CAROL, "knock"), "another user")
    room.put(room.member(ALICE, CAROL, "ban"))
    refused(room, room.member(CAROL, CAROL, "knock"))
    room.put(room.member(ALICE, DAVE, "invite"))
    refused(room, room.member(DAVE, DAVE, "knock"))
    refused(room, room.member(ALICE, ALICE, "knock"))  # already joined


@pytest.mark.parametrize("room_version", ["7", "10"])
def test_knock_needs_knock_join_rule(room_version: str) -> None:
    for rule in ("public", "invite"):
        room = Room(room_version, join_rule=rule)
        refused(room, room.member(BOB, BOB, "knock"), "knock")


def test_knock_refused_in_v6() -> None:
    room = Room("6", join_rule="knock")
    refused(room, room.member(BOB, BOB, "knock"))


def test_knock_restricted_join_rule_allows_knock_from_v10_only() -> None:
    allowed(r := Room("10", join_rule="knock_restricted"), r.member(BOB, BOB, "knock"))
    refused(r := Room("9", join_rule="knock_restricted"), r.member(BOB, BOB, "knock"))


# --- restricted joins -----------------------------------------------------------------------


def _restricted(room_version: str, rule: str = "restricted", invite: int = 0) -> Room:
    room = Room(room_version, join_rule=rule, power={"users": {ALICE: 100}, "invite": invite})
    if version(room_version).creators_infinite_power:
        room.set_power({"invite": invite})
    room.join(CAROL)
    return room


def _via_join(room: Room, user: str, via: str | None) -> JsonDict:
    content = {} if via is None else {"join_authorised_via_users_server": via}
    return room.member(user, user, "join", **content)


@pytest.mark.parametrize("room_version", ["8", "9", "10", "12"])
def test_restricted_join_via_joined_user_with_invite_power(room_version: str) -> None:
    room = _restricted(room_version, invite=50)
    allowed(room, _via_join(room, BOB, ALICE))
    refused(room, _via_join(room, BOB, None), "join_authorised_via_users_server")
    refused(room, _via_join(room, BOB, CAROL), "may not invite")  # joined, level 0 < 50
    refused(room, _via_join(room, BOB, DAVE), "may not invite")  # not joined
    # The via server's signature must be valid.
    refused(room, _via_join(room, BOB, ALICE), "signed", authorised_via_signed=False)


def test_restricted_join_via_any_joined_user_when_invite_level_is_zero() -> None:
    room = _restricted("9", invite=0)
    allowed(room, _via_join(room, BOB, CAROL))


def test_restricted_join_allowed_without_via_when_already_invited() -> None:
    room = _restricted("8")
    room.put(room.member(ALICE, BOB, "invite"))
    allowed(room, _via_join(room, BOB, None))


def test_restricted_join_rule_unknown_before_v8() -> None:
    room = _restricted("7")
    refused(room, _via_join(room, BOB, ALICE))


def test_knock_restricted_join_from_v10() -> None:
    room = _restricted("10", rule="knock_restricted")
    allowed(room, _via_join(room, BOB, ALICE))
    room = _restricted("9", rule="knock_restricted")
    refused(room, _via_join(room, BOB, ALICE))


# --- other events: membership, required power, reserved state keys ---------------------------


def test_events_need_sender_joined() -> None:
    room = Room("10")
    refused(room, room.event("m.room.message", BOB, {"body": "hi"}), "not joined")
    room.put(room.member(ALICE, BOB, "invite"))
    refused(room, room.event("m.room.message", BOB, {"body": "hi"}), "not joined")
    room.join(BOB)
    allowed(room, room.event("m.room.message", BOB, {"body": "hi"}))


def test_state_events_need_state_level() -> None:
    room = _moderated_room(state_default=50, events={"m.room.name": 75, "m.room.topic": 0})
    allowed(room, room.state_event("m.custom", BOB, {}))  # 50 >= state_default 50
    refused(room, room.state_event("m.custom", DAVE, {}), "too low")
    refused(room, room.state_event("m.room.name", BOB, {"name": "n"}), "too low")
    allowed(room, room.state_event("m.room.name", ALICE, {"name": "n"}))
    allowed(room, room.state_event("m.room.topic", DAVE, {"topic": "t"}))


def test_state_default_defaults_to_50_with_power_levels_and_0_without() -> None:
    room = Room("10", power={"users": {ALICE: 100}})
    room.join(BOB)
    refused(room, room.state_event("m.custom", BOB, {}))
    del room.state[("m.room.power_levels", "")]
    allowed(room, room.state_event("m.custom", BOB, {}))


def test_message_events_need_events_default() -> None:
    room = _moderated_room(events_default=10, events={"m.reaction": 0})
    refused(room, room.event("m.room.message", DAVE, {}), "too low")
    allowed(room, room.event("m.room.message", BOB, {}))
    allowed(room, room.event("m.reaction", DAVE, {}))


def test_state_keys_starting_with_at_are_reserved() -> None:
    room = Room("10", power={"users": {ALICE: 100}, "state_default": 0})
    room.join(BOB)
    allowed(room, room.state_event("m.custom", BOB, {}, state_key=BOB))
    refused(room, room.state_event("m.custom", BOB, {}, state_key=ALICE), "reserved")
    refused(room, room.state_event("m.custom", ALICE, {}, state_key="@bob"), "reserved")
    allowed(room, room.state_event("m.custom", BOB, {}, state_key="not@start"))


def test_third_party_invite_event_needs_invite_level() -> None:
    room = _moderated_room(invite=50)
    allowed(room, room.state_event("m.room.third_party_invite", BOB, {}, state_key="t"))
    refused(room, room.state_event("m.room.third_party_invite", DAVE, {}, state_key="t"))


def test_redaction_events_ignore_redact_level() -> None:
    room = _moderated_room(redact=100)
    allowed(room, room.event("m.room.redaction", DAVE, {}, redacts="$x:a.example"))


# --- power levels ---------------------------------------------------------------------------


def _pl(room: Room, sender: str, content: JsonDict) -> JsonDict:
    return room.state_event("m.room.power_levels", sender, content)


BASE_PL = {
    "users": {ALICE: 100, BOB: 50, CAROL: 50, DAVE: 0},
    "events": {"m.room.name": 50, "m.room.power_levels": 50, "m.room.tombstone": 100},
    "state_default": 50,
    "ban": 50,
    "kick": 50,
}


def _pl_room(room_version: str = "10", **overrides: Any) -> Room:
    room = Room(room_version, power={**BASE_PL, **overrides})
    room.join(BOB, CAROL, DAVE)
    return room


def test_power_levels_without_previous_event_allowed() -> None:
    room = Room("10", power=None)
    del room.state[("m.room.power_levels", "")]
    allowed(room, _pl(room, ALICE, {"users": {ALICE: 100, BOB: 100}, "ban": 100}))


def test_power_levels_cannot_raise_scalar_above_own_level() -> None:
    room = _pl_room()
    allowed(room, _pl(room, BOB, {**BASE_PL, "kick": 40}))
    allowed(room, _pl(room, BOB, {**BASE_PL, "invite": 50}))  # added, not above 50
    refused(room, _pl(room, BOB, {**BASE_PL, "ban": 60}), "above your own")
    refused(room, _pl(room, BOB, {**BASE_PL, "redact": 51}), "above your own")


def test_power_levels_cannot_change_scalar_currently_above_own_level() -> None:
    room = _pl_room(state_default=75)
    refused(room, _pl(room, BOB, {**BASE_PL, "state_default": 40}), "above your level")
    # Removing it counts as a change too.
    content = {k: v for k, v in BASE_PL.items() if k != "state_default"}
    refused(room, _pl(room, BOB, content), "above your level")
    allowed(room, _pl(room, ALICE, {**BASE_PL, "state_default": 40}))


def test_power_levels_users_changes() -> None:
    room = _pl_room()
    users = BASE_PL["users"]
    # A user below you: may be changed up to your level.
    allowed(room, _pl(room, BOB, {**BASE_PL, "users": {**users, DAVE: 50}}))
    refused(room, _pl(room, BOB, {**BASE_PL, "users": {**users, DAVE: 51}}), "above your own")
    # Adding a new user at or below your level.
    allowed(room, _pl(room, BOB, {**BASE_PL, "users": {**users, ERIN: 50}}))
    refused(room, _pl(room, BOB, {**BASE_PL, "users": {**users, ERIN: 51}}))
    # A user at your level: neither changed nor removed.
    refused(room, _pl(room, BOB, {**BASE_PL, "users": {**users, CAROL: 10}}), "not below")
    without_carol = {u: v for u, v in users.items() if u != CAROL}
    refused(room, _pl(room, BOB, {**BASE_PL, "users": without_carol}), "not below")
    # A user above your level cannot be touched.
    refused(room, _pl(room, BOB, {**BASE_PL, "users": {**users, ALICE: 50}}), "not below")
    # Your own entry may go down, not up.
    allowed(room, _pl(room, BOB, {**BASE_PL, "users": {**users, BOB: 10}}))
    refused(room, _pl(room, BOB, {**BASE_PL, "users": {**users, BOB: 60}}))


def test_power_levels_events_changes() -> None:
    room = _pl_room()
    events = BASE_PL["events"]
    allowed(room, _pl(room, BOB, {**BASE_PL, "events": {**events, "m.room.topic": 50}}))
    refused(room, _pl(room, BOB, {**BASE_PL, "events": {**events, "m.room.topic": 60}}))
    # Changing or removing an entry currently above your level.
    refused(room, _pl(room, BOB, {**BASE_PL, "events": {**events, "m.room.tombstone": 50}}))
    without = {k: v for k, v in events.items() if k != "m.room.tombstone"}
    refused(room, _pl(room, BOB, {**BASE_PL, "events": without}))
    # An entry at your level may be lowered.
    allowed(room, _pl(room, BOB, {**BASE_PL, "events": {**events, "m.room.name": 0}}))


def test_power_levels_users_must_be_user_ids_with_integer_levels() -> None:
    room = _pl_room()
    refused(room, _pl(room, ALICE, {**BASE_PL, "users": {"bob": 10}}), "not a user ID")
    refused(room, _pl(room, ALICE, {**BASE_PL, "users": {ALICE: 100, BOB: "abc"}}))
    refused(room, _pl(room, ALICE, {**BASE_PL, "users": [ALICE]}))


@pytest.mark.parametrize(
    "content",
    [
        {**BASE_PL, "ban": "50"},
        {**BASE_PL, "users": {**BASE_PL["users"], DAVE: "10"}},
        {**BASE_PL, "events": {"m.room.name": "50"}},
        {**BASE_PL, "notifications": {"room": "50"}},
        {**BASE_PL, "kick": 50.0},
        {**BASE_PL, "invite": True},
    ],
)
def test_v10_power_levels_must_be_integers(content: JsonDict) -> None:
    room = _pl_room("10")
    refused(room, _pl(room, ALICE, content))


@pytest.mark.parametrize(
    "content",
    [
        {**BASE_PL, "ban": "50"},
        {**BASE_PL, "users": {**BASE_PL["users"], DAVE: "10"}},
        {**BASE_PL, "events": {**BASE_PL["events"], "m.room.name": "50"}},
    ],
)
def test_v9_power_levels_accept_integer_strings(content: JsonDict) -> None:
    room = _pl_room("9")
    allowed(room, _pl(room, ALICE, content))


def test_v9_string_levels_are_used_as_levels() -> None:
    room = _pl_room("9", users={ALICE: 100, BOB: "50", DAVE: 0}, kick="50")
    allowed(room, room.member(BOB, DAVE, "leave"))
    room = _pl_room("9", users={ALICE: 100, BOB: "49", DAVE: 0}, kick="50")
    refused(room, room.member(BOB, DAVE, "leave"))


def test_v6_checks_notifications_but_v5_does_not() -> None:
    for room_version, checked in (("5", False), ("6", True), ("10", True)):
        room = _pl_room(room_version, notifications={"room": 100})
        lowered = _pl(room, BOB, {**BASE_PL, "notifications": {"room": 50}})
        raised = _pl(room, BOB, {**BASE_PL, "notifications": {"room": 100, "x": 60}})
        if checked:
            refused(room, lowered)
            refused(room, raised)
        else:
            allowed(room, lowered)
            allowed(room, raised)
        allowed(room, _pl(room, ALICE, {**BASE_PL, "notifications": {"room": 50}}))


# --- room version 12: creators --------------------------------------------------------------


def _v12_room() -> Room:
    room = Room(
        "12",
        create_content={"additional_creators": [ERIN]},
        power={"users": {BOB: 100, CAROL: 50}, "ban": 50, "kick": 50},
    )
    room.join(BOB, CAROL, ERIN)
    return room


def test_v12_creators_have_infinite_power() -> None:
    room = _v12_room()
    # Bob (100) cannot kick, ban or demote a creator.
    refused(room, room.member(BOB, ALICE, "ban"))
    refused(room, room.member(BOB, ERIN, "leave"))
    # A creator can ban a user at 100, and set levels above 100.
    allowed(room, room.member(ALICE, BOB, "ban"))
    allowed(room, room.member(ERIN, BOB, "leave"))
    allowed(room, _pl(room, ALICE, {"users": {BOB: 1000, CAROL: 50}, "ban": 500}))
    refused(room, _pl(room, BOB, {"users": {BOB: 100, CAROL: 50}, "ban": 500}))
    # Creators pass any required level.
    room.set_power({"users": {BOB: 100}, "events": {"m.room.tombstone": 10**9}})
    allowed(room, room.state_event("m.room.tombstone", ERIN, {}))
    refused(room, room.state_event("m.room.tombstone", BOB, {}))


@pytest.mark.parametrize("creator", [ALICE, ERIN])
def test_v12_creators_cannot_appear_in_power_levels_users(creator: str) -> None:
    room = _v12_room()
    refused(room, _pl(room, ALICE, {"users": {BOB: 100, creator: 100}}), "creators")
    # Even in the room's first power levels event.
    del room.state[("m.room.power_levels", "")]
    refused(room, _pl(room, ALICE, {"users": {creator: 100}}), "creators")
    allowed(room, _pl(room, ALICE, {"users": {BOB: 100}}))


def test_before_v12_additional_creators_are_ordinary_users() -> None:
    room = Room("11", create_content={"additional_creators": [ERIN]})
    room.join(ERIN, BOB)
    refused(room, room.member(ERIN, BOB, "ban"))
    allowed(room, _pl(room, ALICE, {"users": {ALICE: 100, ERIN: 100}}))


# --- m.federate -----------------------------------------------------------------------------


def test_m_federate_false_refuses_other_servers() -> None:
    room = Room("10", create_content={"m.federate": False})
    refused(room, room.member(BOB, BOB, "join"), "federate")
    allowed(room, room.member(ERIN, ERIN, "join"))  # same server as the creator
    room.join(BOB)
    refused(room, room.event("m.room.message", BOB, {}), "federate")


def test_m_federate_true_allows_other_servers() -> None:
    room = Room("10", create_content={"m.federate": True})
    allowed(room, room.member(BOB, BOB, "join"))


# --- m.room.aliases in room versions 1 to 5 ---------------------------------------------------


@pytest.mark.parametrize("room_version", ["1", "3", "5"])
def test_aliases_special_case_v1_to_v5(room_version: str) -> None:
    room = Room(room_version)
    # Bob is not even joined: only the state key matters.
    allowed(room, room.state_event("m.room.aliases", BOB, {"aliases": []}, "b.example"))
    refused(room, room.state_event("m.room.aliases", BOB, {}, "a.example"), "server")
    no_key = room.event("m.room.aliases", BOB, {})
    refused(room, no_key, "state_key")


@pytest.mark.parametrize("room_version", ["6", "10", "12"])
def test_aliases_are_ordinary_state_from_v6(room_version: str) -> None:
    room = Room(room_version)
    refused(room, room.state_event("m.room.aliases", BOB, {}, "b.example"), "not joined")
    allowed(room, room.state_event("m.room.aliases", ALICE, {}, "b.example"))


# --- auth events selection -----------------------------------------------------------------


def test_auth_types_for_create_is_empty() -> None:
    assert auth_types_for_event({"type": "m.room.create", "sender": ALICE}, version("10")) == []


def test_auth_types_for_message() -> None:
    event = {"type": "m.room.message", "sender": BOB}
    assert auth_types_for_event(event, version("11")) == [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.member", BOB),
    ]
    assert auth_types_for_event(event, version("12")) == [
        ("m.room.power_levels", ""),
        ("m.room.member", BOB),
    ]


@pytest.mark.parametrize(
    ("membership", "with_join_rules"),
    [("join", True), ("invite", True), ("knock", True), ("leave", False), ("ban", False)],
)
def test_auth_types_for_membership(membership: str, with_join_rules: bool) -> None:
    event = {
        "type": "m.room.member",
        "sender": ALICE,
        "state_key": BOB,
        "content": {"membership": membership},
    }
    expected = [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.member", ALICE),
        ("m.room.member", BOB),
    ]
    if with_join_rules:
        expected.append(("m.room.join_rules", ""))
    assert auth_types_for_event(event, version("10")) == expected
    assert auth_types_for_event(event, version("12")) == expected[1:]


def test_auth_types_for_restricted_join() -> None:
    event = {
        "type": "m.room.member",
        "sender": BOB,
        "state_key": BOB,
        "content": {"membership": "join", "join_authorised_via_users_server": CAROL},
    }
    assert ("m.room.member", CAROL) in auth_types_for_event(event, version("8"))
    assert ("m.room.member", CAROL) not in auth_types_for_event(event, version("7"))
    # The sender's and target's member keys appear once.
    keys = auth_types_for_event(event, version("8"))
    assert len(keys) == len(set(keys))


def test_auth_state_map_type_is_a_plain_dict() -> None:
    state: StateMap = Room("10").state
    assert ("m.room.create", "") in state
