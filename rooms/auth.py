"""The authorisation rules, per room version: may this event be accepted given this state?

Events here are plain JSON dicts that also carry their ``event_id`` (computed for
room versions 3 and later, where it is not part of the signed JSON).

``check_auth`` takes the event and the state it is checked against (a map from
``(type, state_key)`` to event JSON) and raises ``AuthError`` naming the rule that
refuses it. Signature checks are the caller's job; everything else is here.
"""

from __future__ import annotations

import re
from typing import Any

from crypto.canonical import verify
from rooms.power_levels import (
    PowerLevels,
    StateMap,
    creators,
    parse_level,
    power_levels_from_state,
)
from rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion

JsonDict = dict[str, Any]

_USER_ID_RE = re.compile(r"^@[^:]+:.+$")
_POWER_LEVEL_SCALARS = (
    "users_default", "events_default", "state_default", "ban", "redact", "kick", "invite",
)  # fmt: skip


class AuthError(Exception):
    """The event is refused by the authorisation rules."""


def domain_of(identifier: str) -> str:
    return identifier.split(":", 1)[1] if ":" in identifier else ""


def membership_of(state: StateMap, user_id: str) -> str:
    event = state.get(("m.room.member", user_id))
    if event is None:
        return "leave"
    membership = (event.get("content") or {}).get("membership")
    return membership if isinstance(membership, str) else "leave"


def join_rule_of(state: StateMap) -> str:
    event = state.get(("m.room.join_rules", ""))
    if event is None:
        return "invite"
    rule = (event.get("content") or {}).get("join_rule")
    return rule if isinstance(rule, str) else "invite"


def auth_types_for_event(event: JsonDict, version: RoomVersion) -> list[tuple[str, str]]:
    """The auth events selection: which state an event must cite in ``auth_events``."""
    if event.get("type") == "m.room.create":
        return []
    keys: list[tuple[str, str]] = []
    if not version.room_id_from_create_event:
        keys.append(("m.room.create", ""))
    keys += [("m.room.power_levels", ""), ("m.room.member", event.get("sender", ""))]
    if event.get("type") == "m.room.member":
        content = event.get("content") or {}
        membership = content.get("membership")
        target = event.get("state_key", "")
        keys.append(("m.room.member", target))
        if membership in ("join", "invite", "knock"):
            keys.append(("m.room.join_rules", ""))
        if membership == "invite":
            third_party = content.get("third_party_invite")
            if isinstance(third_party, dict):
                signed = third_party.get("signed")
                if isinstance(signed, dict) and isinstance(signed.get("token"), str):
                    keys.append(("m.room.third_party_invite", signed["token"]))
        via = content.get("join_authorised_via_users_server")
        if membership == "join" and version.restricted_join_rule and isinstance(via, str):
            keys.append(("m.room.member", via))
    # Keep the first occurrence of each key, in order.
    return list(dict.fromkeys(keys))


def check_auth(
    event: JsonDict,
    state: StateMap,
    version: RoomVersion,
    authorised_via_signed: bool = True,
) -> None:
    """Raise ``AuthError`` if the rules refuse ``event`` against ``state``.

    ``authorised_via_signed`` says whether the event carries a valid signature from the
    server of ``join_authorised_via_users_server`` (the caller checks signatures).
    """
    event_type = event.get("type")
    sender = event.get("sender", "")
    if not isinstance(sender, str) or not _USER_ID_RE.match(sender):
        raise AuthError("sender is not a user ID")

    if event_type == "m.room.create":
        _check_create(event, version)
        return

    create = state.get(("m.room.create", ""))
    if create is None:
        raise AuthError("no m.room.create event in the room state")
    if version.room_id_from_create_event:
        expected = "!" + str(create.get("event_id", ""))[1:]
        if event.get("room_id") != expected:
            raise AuthError("room_id is not that of the room's create event")
    create_content = create.get("content") or {}
    if create_content.get("m.federate", True) is False and domain_of(sender) != domain_of(
        create.get("sender", "")
    ):
        raise AuthError("room does not federate with the sender's server")

    if event_type == "m.room.aliases" and version.special_case_aliases_auth:
        state_key = event.get("state_key")
        if state_key is None:
            raise AuthError("m.room.aliases without a state_key")
        if state_key != domain_of(sender):
            raise AuthError("m.room.aliases state_key must be the sender's server")
        return

    power = power_levels_from_state(state, version)
    if event_type == "m.room.member":
        _check_membership(event, state, version, power, authorised_via_signed)
        return

    if membership_of(state, sender) != "join":
        raise AuthError(f"{sender} is not joined to the room")
    sender_level = power.user_level(sender)
    if event_type == "m.room.third_party_invite":
        if sender_level < power.invite:
            raise AuthError("sender may not invite")
        return
    is_state = "state_key" in event
    if power.event_level(str(event_type), is_state) > sender_level:
        raise AuthError(f"sender's power level is too low to send {event_type}")
    state_key = event.get("state_key")
    if isinstance(state_key, str) and state_key.startswith("@") and state_key != sender:
        raise AuthError("state keys starting with @ are reserved for that user")
    if event_type == "m.room.power_levels":
        _check_power_levels(event, state, version, power)


def _check_create(event: JsonDict, version: RoomVersion) -> None:
    if event.get("prev_events"):
        raise AuthError("create event has prev_events")
    sender = str(event.get("sender", ""))
    content = event.get("content") or {}
    if version.room_id_from_create_event:
        if "room_id" in event:
            raise AuthError("create event must not have a room_id in this room version")
    elif domain_of(str(event.get("room_id", ""))) != domain_of(sender):
        raise AuthError("room_id domain does not match the sender's")
    room_version = content.get("room_version", "1")
    if room_version not in KNOWN_ROOM_VERSIONS:
        raise AuthError(f"unknown room version {room_version!r}")
    if not version.implicit_room_creator and "creator" not in content:
        raise AuthError("create event content has no creator")
    if version.creators_infinite_power and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(
            isinstance(u, str) and _USER_ID_RE.match(u) for u in extra
        ):
            raise AuthError("additional_creators must be a list of user IDs")


def _check_membership(
    event: JsonDict,
    state: StateMap,
    version: RoomVersion,
    power: PowerLevels,
    authorised_via_signed: bool,
) -> None:
    content = event.get("content") or {}
    target = event.get("state_key")
    membership = content.get("membership")
    if not isinstance(target, str) or not isinstance(membership, str):
        raise AuthError("member event needs a state_key and content.membership")
    sender = str(event["sender"])
    via = content.get("join_authorised_via_users_server")
    if version.restricted_join_rule and via is not None and not authorised_via_signed:
        raise AuthError("join_authorised_via_users_server is not signed by that user's server")

    sender_membership = membership_of(state, sender)
    target_membership = membership_of(state, target)
    join_rule = join_rule_of(state)
    sender_level = power.user_level(sender)
    target_level = power.user_level(target)

    if membership == "join":
        create = state.get(("m.room.create", ""))
        prev_events = event.get("prev_events") or []
        if len(prev_events) == 1 and create is not None:
            prev = prev_events[0]
            prev_id = prev[0] if isinstance(prev, list) else prev
            # The creator: ``content.creator`` before v11, then the create event's sender
            # (from v12 not the ``additional_creators``, who join like anyone else).
            create_content = create.get("content") or {}
            creator = (
                create.get("sender")
                if version.implicit_room_creator
                else create_content.get("creator", create.get("sender"))
            )
            if prev_id == create.get("event_id") and target == creator:
                return
        if sender != target:
            raise AuthError("cannot make another user join")
        if sender_membership == "ban":
            raise AuthError("sender is banned")
        if join_rule == "invite" or (version.knock_join_rule and join_rule == "knock"):
            if sender_membership in ("invite", "join"):
                return
            raise AuthError("the room is invite-only")
        if (version.restricted_join_rule and join_rule == "restricted") or (
            version.knock_restricted_join_rule and join_rule == "knock_restricted"
        ):
            if sender_membership in ("join", "invite"):
                return
            if not isinstance(via, str):
                raise AuthError("a restricted join needs join_authorised_via_users_server")
            if membership_of(state, via) != "join" or power.user_level(via) < power.invite:
                raise AuthError("the authorising user may not invite")
            return
        if join_rule == "public":
            return
        raise AuthError(f"join rule {join_rule!r} does not allow joining")

    if membership == "invite":
        if "third_party_invite" in content:
            _check_third_party_invite(event, state, target_membership)
            return
        if sender_membership != "join":
            raise AuthError("sender is not joined to the room")
        if target_membership in ("join", "ban"):
            raise AuthError(f"target is already {target_membership}")
        if sender_level >= power.invite:
            return
        raise AuthError("sender's power level is too low to invite")

    if membership == "leave":
        if sender == target:
            allowed = ("invite", "join", "knock") if version.knock_join_rule else ("invite", "join")
            if sender_membership in allowed:
                return
            raise AuthError(f"cannot leave from membership {sender_membership!r}")
        if sender_membership != "join":
            raise AuthError("sender is not joined to the room")
        if target_membership == "ban" and sender_level < power.ban:
            raise AuthError("sender's power level is too low to unban")
        if sender_level >= power.kick and target_level < sender_level:
            return
        raise AuthError("sender's power level is too low to kick this user")

    if membership == "ban":
        if sender_membership != "join":
            raise AuthError("sender is not joined to the room")
        if sender_level >= power.ban and target_level < sender_level:
            return
        raise AuthError("sender's power level is too low to ban this user")

    if membership == "knock" and version.knock_join_rule:
        allowed_rules = (
            ("knock", "knock_restricted") if version.knock_restricted_join_rule else ("knock",)
        )
        if join_rule not in allowed_rules:
            raise AuthError("the room does not allow knocking")
        if sender != target:
            raise AuthError("cannot knock for another user")
        if sender_membership not in ("ban", "invite", "join"):
            return
        raise AuthError(f"cannot knock from membership {sender_membership!r}")

    raise AuthError(f"unknown membership {membership!r}")


def _check_third_party_invite(event: JsonDict, state: StateMap, target_membership: str) -> None:
    if target_membership == "ban":
        raise AuthError("target is banned")
    third_party = (event.get("content") or {}).get("third_party_invite")
    signed = third_party.get("signed") if isinstance(third_party, dict) else None
    if not isinstance(signed, dict) or "mxid" not in signed or "token" not in signed:
        raise AuthError("third_party_invite needs signed.mxid and signed.token")
    if signed["mxid"] != event.get("state_key"):
        raise AuthError("third_party_invite mxid does not match the target")
    invite = state.get(("m.room.third_party_invite", str(signed["token"])))
    if invite is None:
        raise AuthError("no matching m.room.third_party_invite")
    if invite.get("sender") != event.get("sender"):
        raise AuthError("third-party invite was made by someone else")
    invite_content = invite.get("content") or {}
    public_keys = []
    if isinstance(invite_content.get("public_key"), str):
        public_keys.append(invite_content["public_key"])
    for entry in invite_content.get("public_keys") or []:
        if isinstance(entry, dict) and isinstance(entry.get("public_key"), str):
            public_keys.append(entry["public_key"])
    signatures = signed.get("signatures")
    if isinstance(signatures, dict):
        for server, keys in signatures.items():
            if not isinstance(keys, dict):
                continue
            for key_id in keys:
                if any(verify(signed, server, key_id, pk) for pk in public_keys):
                    return
    raise AuthError("third-party invite signature does not verify")


def _check_power_levels(
    event: JsonDict, state: StateMap, version: RoomVersion, power: PowerLevels
) -> None:
    content = event.get("content") or {}
    if version.enforce_int_power_levels:
        for key in _POWER_LEVEL_SCALARS:
            if key in content and (
                not isinstance(content[key], int) or isinstance(content[key], bool)
            ):
                raise AuthError(f"power level {key} must be an integer")
        for key in ("events", "notifications"):
            if key in content and (
                not isinstance(content[key], dict)
                or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in content[key].values()
                )
            ):
                raise AuthError(f"power levels {key} must map to integers")
    users = content.get("users", {})
    if not isinstance(users, dict):
        raise AuthError("power levels users must be an object")
    for user_id, level in users.items():
        if not isinstance(user_id, str) or not _USER_ID_RE.match(user_id):
            raise AuthError(f"{user_id!r} in power levels users is not a user ID")
        if parse_level(level, version) is None:
            raise AuthError(f"power level of {user_id} must be an integer")
    if version.creators_infinite_power:
        room_creators = creators(state.get(("m.room.create", "")), version)
        if room_creators & set(users):
            raise AuthError("room creators cannot be given a power level")

    previous = state.get(("m.room.power_levels", ""))
    if previous is None:
        return
    old = previous.get("content") or {}
    sender_level = power.user_level(str(event["sender"]))

    def as_level(value: Any) -> int | None:
        return parse_level(value, version)

    for key in _POWER_LEVEL_SCALARS:
        old_value, new_value = as_level(old.get(key)), as_level(content.get(key))
        if old_value == new_value:
            continue
        if old_value is not None and old_value > sender_level:
            raise AuthError(f"cannot change {key}: current value is above your level")
        if new_value is not None and new_value > sender_level:
            raise AuthError(f"cannot set {key} above your own level")

    mapped = ["events"] + (["notifications"] if version.limit_notifications_power_levels else [])
    for key in mapped:
        old_map = _as_dict(old.get(key))
        new_map = _as_dict(content.get(key))
        for name in set(old_map) | set(new_map):
            old_value, new_value = as_level(old_map.get(name)), as_level(new_map.get(name))
            if old_value == new_value and (name in old_map) == (name in new_map):
                continue
            if name in old_map and old_value is not None and old_value > sender_level:
                raise AuthError(f"cannot change {key}.{name}: current value is above your level")
            if name in new_map and new_value is not None and new_value > sender_level:
                raise AuthError(f"cannot set {key}.{name} above your own level")

    old_users = _as_dict(old.get("users"))
    sender = event["sender"]
    for user_id in set(old_users) | set(users):
        old_value, new_value = as_level(old_users.get(user_id)), as_level(users.get(user_id))
        if old_value == new_value and (user_id in old_users) == (user_id in users):
            continue
        if user_id in old_users and user_id != sender and (old_value or 0) >= sender_level:
            raise AuthError(f"cannot change the level of {user_id}: not below your own")
        if user_id in users and new_value is not None and new_value > sender_level:
            raise AuthError(f"cannot give {user_id} a level above your own")


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
