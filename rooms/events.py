"""The signed event format: content hashes, reference hashes, event IDs, signing, verifying."""

from __future__ import annotations

import copy
from typing import Any

from signedjson.types import SigningKey
from unpaddedbase64 import encode_base64

from crypto.canonical import canonical_json, sha256_b64, sign, verify
from rooms.redaction import redact
from rooms.versions import RoomVersion

JsonDict = dict[str, Any]

MAX_EVENT_BYTES = 65536


def content_hash(event: JsonDict) -> str:
    """The ``hashes.sha256`` of an event: over everything but unsigned, signatures, hashes."""
    stripped = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    return sha256_b64(canonical_json(stripped))


def add_content_hash(event: JsonDict) -> JsonDict:
    event["hashes"] = {"sha256": content_hash(event)}
    return event


def _signed_form(event: JsonDict, version: RoomVersion) -> JsonDict:
    """The redacted event as signed and hashed. From room version 3 the event ID is not part
    of the event (it is derived from it), so a locally attached ``event_id`` is dropped."""
    redacted = redact(event, version)
    if version.event_id_format != 1:
        redacted.pop("event_id", None)
    return redacted


def reference_hash(event: JsonDict, version: RoomVersion, urlsafe: bool) -> str:
    redacted = _signed_form(event, version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    redacted.pop("age_ts", None)
    return sha256_b64(canonical_json(redacted), urlsafe=urlsafe)


def compute_event_id(event: JsonDict, version: RoomVersion) -> str:
    """The event ID of a v3+ event (derived from its content); v1/v2 events carry theirs."""
    if version.event_id_format == 1:
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("room versions 1 and 2 need an explicit event_id")
        return event_id
    return "$" + reference_hash(event, version, urlsafe=version.event_id_format == 3)


def room_id_for_create_event(create_event: JsonDict, version: RoomVersion) -> str:
    """Room version 12: the room ID is the create event's ID with the sigil ``!``."""
    return "!" + compute_event_id(create_event, version)[1:]


def sign_event(
    event: JsonDict, version: RoomVersion, server_name: str, key: SigningKey
) -> JsonDict:
    """Sign the redacted form (so signatures survive redaction); attach to the full event."""
    signed_redacted = sign(_signed_form(event, version), server_name, key)
    event.setdefault("signatures", {}).update(
        {server_name: signed_redacted["signatures"][server_name]}
    )
    return event


def hash_sign_and_identify(
    event: JsonDict, version: RoomVersion, server_name: str, key: SigningKey
) -> str:
    """For an event this server creates (no signatures or unsigned yet): add its content
    hash and signature and return its ID. The same as ``add_content_hash``, ``sign_event``
    and ``compute_event_id`` in turn, with the redacted form built and encoded once: the
    signature and the reference hash cover the same bytes."""
    add_content_hash(event)
    if version.event_id_format == 1 or "signatures" in event or "unsigned" in event:
        sign_event(event, version, server_name, key)
        return compute_event_id(event, version)
    signed_bytes = canonical_json(_signed_form(event, version))
    signature = encode_base64(key.sign(signed_bytes).signature)
    event["signatures"] = {server_name: {f"{key.alg}:{key.version}": signature}}
    return "$" + sha256_b64(signed_bytes, urlsafe=version.event_id_format == 3)


def verify_event_signature(
    event: JsonDict, version: RoomVersion, server_name: str, key_id: str, public_key_b64: str
) -> bool:
    redacted = _signed_form(event, version)
    redacted.pop("unsigned", None)
    return verify(redacted, server_name, key_id, public_key_b64)


def check_content_hash(event: JsonDict) -> bool:
    hashes = event.get("hashes")
    return isinstance(hashes, dict) and hashes.get("sha256") == content_hash(event)


def event_size(event: JsonDict) -> int:
    return len(canonical_json(event))


def deep_copy(event: JsonDict) -> JsonDict:
    return copy.deepcopy(event)


MAX_SAFE_INTEGER = 2**53 - 1


def check_event_numbers(value: Any, version: RoomVersion) -> None:
    """Room v6+ allow only integers in [-(2**53)+1, (2**53)-1]; raise ValueError otherwise."""
    if not version.strict_canonical_json:
        return
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, float):
            raise ValueError("numbers in events must be integers")
        if isinstance(item, int):
            if abs(item) > MAX_SAFE_INTEGER:
                raise ValueError("integers in events must be within ±(2**53 - 1)")
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_pdu_format(event: Any, version: RoomVersion) -> None:
    """The shape every PDU must have before anything else is looked at; ValueError if not."""
    if not isinstance(event, dict):
        raise ValueError("a PDU must be an object")
    if event_size({k: v for k, v in event.items() if k != "unsigned"}) > MAX_EVENT_BYTES:
        raise ValueError("event is larger than 65536 bytes")
    for key, kind in (("type", str), ("sender", str), ("content", dict), ("depth", int),
                      ("origin_server_ts", int), ("prev_events", list), ("auth_events", list),
                      ("hashes", dict), ("signatures", dict)):  # fmt: skip
        value = event.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{key} is missing or not a {kind.__name__}")
    create_v12 = version.room_id_from_create_event and event["type"] == "m.room.create"
    if not create_v12 and not isinstance(event.get("room_id"), str):
        raise ValueError("room_id is missing")
    if "state_key" in event and not isinstance(event["state_key"], str):
        raise ValueError("state_key must be a string")
    if version.event_id_format == 1 and not isinstance(event.get("event_id"), str):
        raise ValueError("room versions 1 and 2 need an event_id")
    sender = event["sender"]
    if not sender.startswith("@") or ":" not in sender:
        raise ValueError("sender is not a user ID")
    if len(event["prev_events"]) > 20 or len(event["auth_events"]) > 10:
        raise ValueError("too many prev_events or auth_events")
    if names_hold_nul(event):
        raise ValueError("IDs, types, state keys and memberships may not hold U+0000")
    check_event_numbers(event, version)


def names_hold_nul(event: JsonDict) -> bool:
    """Whether what a server keeps as text columns (not the event's JSON, which escapes
    it) holds a NUL character, which PostgreSQL's text cannot: no valid ID does."""
    content = event.get("content")
    names = [event.get(k) for k in ("type", "state_key", "sender", "room_id", "redacts")]
    if isinstance(content, dict):
        names += [content.get("redacts"), content.get("membership")]
    for reference in [*event.get("prev_events", ()), *event.get("auth_events", ())]:
        names.append(reference[0] if isinstance(reference, list) and reference else reference)
    return any(isinstance(name, str) and "\x00" in name for name in names)


def relates_to(event: JsonDict) -> tuple[str | None, str | None]:
    """(parent event ID, rel_type) of ``content.m.relates_to``, each None if absent or not
    a string; one holding U+0000 counts as absent (no event's ID holds one)."""
    relates = (event.get("content") or {}).get("m.relates_to")
    if not isinstance(relates, dict):
        return None, None
    parent, rel_type = relates.get("event_id"), relates.get("rel_type")
    return (
        parent if isinstance(parent, str) and "\x00" not in parent else None,
        rel_type if isinstance(rel_type, str) and "\x00" not in rel_type else None,
    )


def required_signers(event: JsonDict, version: RoomVersion) -> set[str]:
    """The servers whose signatures an event must carry: the sender's; in room v1/v2 the
    event ID's server too; for a restricted join, the authorising user's server."""
    servers = {str(event["sender"]).split(":", 1)[1]}
    if version.event_id_format == 1:
        event_id = str(event.get("event_id", ""))
        if ":" in event_id:
            servers.add(event_id.split(":", 1)[1])
    if event.get("type") == "m.room.member" and version.restricted_join_rule:
        content = event.get("content") or {}
        via = content.get("join_authorised_via_users_server")
        if content.get("membership") == "join" and isinstance(via, str) and ":" in via:
            servers.add(via.split(":", 1)[1])
    return servers
