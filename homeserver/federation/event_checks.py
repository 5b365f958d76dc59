"""The checks a PDU from another server passes before it may touch a room: format, the
signatures of the servers that must have signed it, and its content hash (a mismatch
keeps only the redacted form). Authorisation comes after, in the room's writer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.federation.keyring import KeyNotFound
from rooms.events import (
    check_content_hash,
    check_pdu_format,
    required_signers,
    verify_event_signature,
)
from rooms.redaction import redact
from rooms.versions import RoomVersion

if TYPE_CHECKING:
    from homeserver.federation.keyring import Keyring

JsonDict = dict[str, Any]


class InvalidPdu(Exception):
    """The PDU is malformed or not signed as it must be: dropped."""


async def verify_pdu(keyring: Keyring, pdu: Any, version: RoomVersion) -> JsonDict:
    """The event to go on with: as received, or redacted if its content hash is wrong."""
    try:
        check_pdu_format(pdu, version)
    except ValueError as e:
        raise InvalidPdu(str(e)) from None
    event: JsonDict = {k: v for k, v in pdu.items() if k != "unsigned"}
    at_ms = int(event["origin_server_ts"]) if version.enforce_key_validity else None
    signatures = event.get("signatures") or {}
    for server in required_signers(event, version):
        by_server = signatures.get(server)
        if not isinstance(by_server, dict) or not by_server:
            raise InvalidPdu(f"not signed by {server}")
        if not await _one_valid_signature(keyring, event, version, server, by_server, at_ms):
            raise InvalidPdu(f"no valid signature by {server}")
    if not check_content_hash(event):
        return redact(event, version)
    return event


async def _one_valid_signature(
    keyring: Keyring,
    event: JsonDict,
    version: RoomVersion,
    server: str,
    by_server: dict[str, Any],
    at_ms: int | None,
) -> bool:
    for key_id in by_server:
        if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
            continue
        try:
            key = await keyring.verify_key(server, key_id, at_ms)
        except KeyNotFound:
            continue
        if verify_event_signature(event, version, server, key_id, key):
            return True
    return False
