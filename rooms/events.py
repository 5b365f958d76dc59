"""The signed event format: content hashes, reference hashes, event IDs, signing, verifying."""

from __future__ import annotations

import copy
from typing import Any

from signedjson.types import SigningKey

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
