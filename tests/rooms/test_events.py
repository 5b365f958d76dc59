"""Canonical JSON, signing, content/reference hashes and event IDs, against the spec's vectors."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest
from signedjson.key import decode_signing_key_base64, encode_verify_key_base64, get_verify_key

from crypto.canonical import canonical_json, sign, verify
from rooms.events import (
    add_content_hash,
    check_content_hash,
    check_pdu_format,
    compute_event_id,
    content_hash,
    hash_sign_and_identify,
    reference_hash,
    room_id_for_create_event,
    sign_event,
    verify_event_signature,
)
from rooms.redaction import redact
from tests.rooms.builders import version

SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SERVER = "domain"
KEY_ID = "ed25519:1"
KEY = decode_signing_key_base64("ed25519", "1", SEED)
PUBLIC = encode_verify_key_base64(get_verify_key(KEY))
SIG_EMPTY = "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
SIG_OBJECT = (
    "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
)
SIG_MINIMAL_EVENT = (
    "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
)
SIG_REDACTABLE_EVENT = (
    "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
)
OTHER_KEY = decode_signing_key_base64("ed25519", "1", "A" * 43)

# appendices.md, "Canonical JSON" / "Examples": (input JSON text, canonical output).
CANONICAL_EXAMPLES = [
    ("{}", "{}"),
    ('{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'),
    ('{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {
            "display_name": "John Doe", "three_pids": [
                {"medium": "email", "address": "john.doe@example.org"},
                {"medium": "msisdn", "address": "123456789"}]}}}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
    ('{"a": -0, "b": 1e10}', '{"a":0,"b":10000000000}'),
]


def _json_number(text: str) -> int | float:
    """The spec's number model: a JSON number with an integral value (``1e10``) is an integer.
    (Events in room v6+ refuse non-integral numbers outright: see ``check_event_numbers``.)"""
    value = float(text)
    return int(value) if value.is_integer() else value


@pytest.mark.parametrize(("source", "expected"), CANONICAL_EXAMPLES)
def test_canonical_json_examples(source: str, expected: str) -> None:
    assert canonical_json(json.loads(source, parse_float=_json_number)) == expected.encode("utf-8")


def test_canonical_json_is_utf8_not_escaped() -> None:
    assert canonical_json({"a": "é"}) == b'{"a":"\xc3\xa9"}'
    assert canonical_json({"a": "\n\u0001"}) == b'{"a":"\\n\\u0001"}'


# appendices.md, "Cryptographic Test Vectors".


def test_sign_empty_object_vector() -> None:
    signed = sign({}, SERVER, KEY)
    assert signed == {"signatures": {SERVER: {KEY_ID: SIG_EMPTY}}}
    assert verify(signed, SERVER, KEY_ID, PUBLIC)


def test_sign_object_vector() -> None:
    original = {"one": 1, "two": "Two"}
    signed = sign(original, SERVER, KEY)
    assert signed == {
        "one": 1,
        "signatures": {SERVER: {KEY_ID: SIG_OBJECT}},
        "two": "Two",
    }
    assert original == {"one": 1, "two": "Two"}, "sign returns a copy"
    assert verify(signed, SERVER, KEY_ID, PUBLIC)


def test_verify_refuses_tampering_wrong_server_and_wrong_key() -> None:
    signed = sign({"one": 1, "two": "Two"}, SERVER, KEY)
    assert not verify({**signed, "two": "Three"}, SERVER, KEY_ID, PUBLIC)
    assert not verify(signed, "elsewhere", KEY_ID, PUBLIC)
    other_public = encode_verify_key_base64(get_verify_key(OTHER_KEY))
    assert not verify(signed, SERVER, KEY_ID, other_public)
    # unsigned is not covered by the signature.
    assert verify({**signed, "unsigned": {"age": 5}}, SERVER, KEY_ID, PUBLIC)


def _minimal_event() -> dict[str, Any]:
    return {
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "signatures": {},
        "hashes": {},
        "type": "X",
        "content": {},
        "prev_events": [],
        "auth_events": [],
        "depth": 3,
        "unsigned": {"age_ts": 1000000},
    }


def _redactable_event() -> dict[str, Any]:
    return {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {},
        "unsigned": {"age_ts": 1000000},
    }


# The vectors' signatures cover ``origin``, which the v11 redaction algorithm drops.
@pytest.mark.parametrize("room_version", [str(n) for n in range(1, 11)])
def test_minimal_event_signing_vector(room_version: str) -> None:
    event = add_content_hash(_minimal_event())
    sign_event(event, version(room_version), SERVER, KEY)
    assert event == {
        "auth_events": [],
        "content": {},
        "depth": 3,
        "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "prev_events": [],
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "signatures": {SERVER: {KEY_ID: SIG_MINIMAL_EVENT}},
        "type": "X",
        "unsigned": {"age_ts": 1000000},
    }
    assert verify_event_signature(event, version(room_version), SERVER, KEY_ID, PUBLIC)
    assert check_content_hash(event)


# The redactable vector carries ``event_id`` in the signed JSON: the v1/v2 event format.
@pytest.mark.parametrize("room_version", ["1", "2"])
def test_redactable_event_signing_vector(room_version: str) -> None:
    event = add_content_hash(_redactable_event())
    sign_event(event, version(room_version), SERVER, KEY)
    assert event == {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {SERVER: {KEY_ID: SIG_REDACTABLE_EVENT}},
        "unsigned": {"age_ts": 1000000},
    }
    assert verify_event_signature(event, version(room_version), SERVER, KEY_ID, PUBLIC)
    # The signature is over the redacted form, so it survives redaction.
    redacted = redact(event, version(room_version))
    assert redacted["content"] == {}
    assert verify_event_signature(redacted, version(room_version), SERVER, KEY_ID, PUBLIC)


def test_sign_event_keeps_other_servers_signatures() -> None:
    event = add_content_hash(_minimal_event())
    event["signatures"] = {"other.example": {"ed25519:x": "c2ln"}}
    sign_event(event, version("10"), SERVER, KEY)
    assert event["signatures"]["other.example"] == {"ed25519:x": "c2ln"}
    assert KEY_ID in event["signatures"][SERVER]
    assert verify_event_signature(event, version("10"), SERVER, KEY_ID, PUBLIC)


def test_content_hash_ignores_unsigned_signatures_and_hashes() -> None:
    event = _redactable_event()
    expected = content_hash(event)
    stripped = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    digest = hashlib.sha256(canonical_json(stripped)).digest()
    assert expected == base64.b64encode(digest).decode().rstrip("=")

    changed = copy.deepcopy(event)
    changed["unsigned"] = {"age": 12345, "transaction_id": "t"}
    changed["signatures"] = {"x": {"ed25519:1": "abc"}}
    changed["hashes"] = {"sha256": "nonsense"}
    assert content_hash(changed) == expected

    changed["content"]["body"] = "edited"
    assert content_hash(changed) != expected
    assert content_hash({**event, "origin_server_ts": 1}) != expected


def test_check_content_hash() -> None:
    event = add_content_hash(_redactable_event())
    assert check_content_hash(event)
    assert not check_content_hash({**event, "content": {"body": "other"}})
    assert not check_content_hash({k: v for k, v in event.items() if k != "hashes"})


# --- Event IDs ------------------------------------------------------------------------------


def _message(ts: int) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "content": {"body": "hello", "msgtype": "m.text"},
        "origin": "domain",
        "origin_server_ts": ts,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "depth": 4,
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {"domain": {"ed25519:1": "c2ln"}},
        "unsigned": {"age": 1},
    }


def _expected_reference_digest(event: dict[str, Any]) -> bytes:
    """Spec: redact, drop signatures/unsigned, canonical JSON, sha256 (redacted by hand)."""
    redacted = {
        k: v for k, v in event.items() if k not in ("signatures", "unsigned", "content", "event_id")
    }
    redacted["content"] = {}
    return hashlib.sha256(canonical_json(redacted)).digest()


def _event_with_plus_or_slash() -> dict[str, Any]:
    """A message whose reference hash, in standard base64, contains + or / (deterministic)."""
    for ts in range(1000):
        event = _message(ts)
        encoded = base64.b64encode(_expected_reference_digest(event)).decode()
        if "+" in encoded or "/" in encoded:
            return event
    raise AssertionError("no suitable event found")


@pytest.mark.parametrize("room_version", ["1", "2"])
def test_v1_v2_event_id_is_the_given_one(room_version: str) -> None:
    event = {**_message(1), "event_id": "$abc:domain"}
    assert compute_event_id(event, version(room_version)) == "$abc:domain"
    with pytest.raises(ValueError):
        compute_event_id(_message(1), version(room_version))


def test_v3_event_id_is_standard_unpadded_base64_of_reference_hash() -> None:
    event = _event_with_plus_or_slash()
    digest = _expected_reference_digest(event)
    expected = "$" + base64.b64encode(digest).decode().rstrip("=")
    assert compute_event_id(event, version("3")) == expected
    assert "+" in expected or "/" in expected
    assert len(expected) == 44
    assert reference_hash(event, version("3"), urlsafe=False) == expected[1:]


@pytest.mark.parametrize("room_version", ["4", "5", "6", "7", "8", "9", "10"])
def test_v4_plus_event_id_is_url_safe(room_version: str) -> None:
    event = _event_with_plus_or_slash()
    digest = _expected_reference_digest(event)
    expected = "$" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    event_id = compute_event_id(event, version(room_version))
    assert event_id == expected
    assert "+" not in event_id and "/" not in event_id and "=" not in event_id
    assert event_id == compute_event_id(event, version("3")).replace("+", "-").replace("/", "_")


@pytest.mark.parametrize("room_version", ["3", "4", "6", "9", "11", "12"])
def test_redaction_changes_neither_reference_hash_nor_event_id(room_version: str) -> None:
    v = version(room_version)
    event = _message(7)
    redacted = redact(event, v)
    assert redacted["content"] == {}
    assert compute_event_id(redacted, v) == compute_event_id(event, v)
    assert reference_hash(redacted, v, urlsafe=True) == reference_hash(event, v, urlsafe=True)
    # But the ID does depend on preserved fields.
    assert compute_event_id({**event, "depth": 5}, v) != compute_event_id(event, v)


@pytest.mark.parametrize("room_version", ["3", "4", "10", "11", "12"])
def test_event_id_ignores_a_locally_attached_event_id(room_version: str) -> None:
    """From v3 the event ID is not part of the event: carrying it must not change the hash."""
    v = version(room_version)
    event = _message(7)
    event_id = compute_event_id(event, v)
    assert compute_event_id({**event, "event_id": event_id}, v) == event_id


def test_reference_hash_ignores_signatures_and_unsigned() -> None:
    v = version("10")
    event = _message(3)
    other = {**event, "signatures": {"elsewhere": {"ed25519:z": "eHl6"}}, "unsigned": {"a": 2}}
    assert reference_hash(other, v, urlsafe=True) == reference_hash(event, v, urlsafe=True)


# --- Signatures over the redacted form ------------------------------------------------------


@pytest.mark.parametrize("room_version", ["1", "4", "10", "11", "12"])
def test_signature_covers_redacted_form_and_hash_covers_content(room_version: str) -> None:
    v = version(room_version)
    event = _message(99)
    event.pop("signatures")
    event.pop("hashes")
    add_content_hash(event)
    sign_event(event, v, SERVER, KEY)
    assert verify_event_signature(event, v, SERVER, KEY_ID, PUBLIC)
    assert check_content_hash(event)

    # Changing a body key (not preserved by redaction): signature still valid, hash broken.
    edited = copy.deepcopy(event)
    edited["content"]["body"] = "tampered"
    assert verify_event_signature(edited, v, SERVER, KEY_ID, PUBLIC)
    assert not check_content_hash(edited)

    # Changing a key that survives redaction breaks the signature.
    for key, value in (("sender", "@evil:domain"), ("depth", 5), ("type", "m.room.other")):
        assert not verify_event_signature({**event, key: value}, v, SERVER, KEY_ID, PUBLIC)

    # The wrong key or server does not verify.
    other_public = encode_verify_key_base64(get_verify_key(OTHER_KEY))
    assert not verify_event_signature(event, v, SERVER, KEY_ID, other_public)
    assert not verify_event_signature(event, v, "other.example", KEY_ID, PUBLIC)


def test_signature_of_preserved_content_key_breaks_on_change() -> None:
    v = version("10")
    event = {
        "type": "m.room.member",
        "state_key": "@u:domain",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "content": {"membership": "join", "displayname": "U"},
        "origin_server_ts": 5,
        "prev_events": [],
        "auth_events": [],
        "depth": 2,
    }
    add_content_hash(event)
    sign_event(event, v, SERVER, KEY)
    renamed = copy.deepcopy(event)
    renamed["content"]["displayname"] = "V"
    assert verify_event_signature(renamed, v, SERVER, KEY_ID, PUBLIC)
    left = copy.deepcopy(event)
    left["content"]["membership"] = "leave"
    assert not verify_event_signature(left, v, SERVER, KEY_ID, PUBLIC)


@pytest.mark.parametrize("room_version", ["4", "11", "12"])
def test_v3_plus_signature_ignores_a_locally_attached_event_id(room_version: str) -> None:
    v = version(room_version)
    event = _message(42)
    event.pop("signatures")
    event.pop("hashes")
    add_content_hash(event)
    sign_event(event, v, SERVER, KEY)
    event_id = compute_event_id(event, v)
    annotated = {**event, "event_id": event_id}
    assert verify_event_signature(annotated, v, SERVER, KEY_ID, PUBLIC)
    # Signing the annotated form yields the same signature as signing the wire form.
    resigned = copy.deepcopy(annotated)
    resigned["signatures"] = {}
    sign_event(resigned, v, SERVER, KEY)
    assert resigned["signatures"] == event["signatures"]


# --- Room version 12: room IDs from the create event --------------------------------------------


def _create_v12(sender: str = "@creator:domain") -> dict[str, Any]:
    return {
        "type": "m.room.create",
        "state_key": "",
        "sender": sender,
        "content": {"room_version": "12"},
        "origin_server_ts": 1234,
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
    }


def test_v12_room_id_is_create_event_id_with_bang() -> None:
    v = version("12")
    create = add_content_hash(_create_v12())
    sign_event(create, v, SERVER, KEY)
    room_id = room_id_for_create_event(create, v)
    event_id = compute_event_id(create, v)
    assert room_id.startswith("!")
    assert room_id == "!" + event_id[1:]
    assert event_id.startswith("$")
    assert ":" not in room_id
    assert "+" not in room_id and "/" not in room_id
    digest = _v12_create_digest(create)
    assert room_id == "!" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    # Different create events make different rooms; signatures do not matter.
    assert room_id_for_create_event(_create_v12("@other:domain"), v) != room_id
    unsigned_copy = {k: v_ for k, v_ in create.items() if k != "signatures"}
    assert room_id_for_create_event(unsigned_copy, v) == room_id
    # The create event ID attached locally does not change the room ID.
    assert room_id_for_create_event({**create, "event_id": event_id}, v) == room_id


def _v12_create_digest(create: dict[str, Any]) -> bytes:
    # v11+ redaction keeps all of a create event's content, and drops nothing else here.
    stripped = {k: v for k, v in create.items() if k not in ("signatures", "unsigned")}
    return hashlib.sha256(canonical_json(stripped)).digest()


@pytest.mark.parametrize("room_version", ["1", "3", "4", "10", "11", "12"])
def test_hash_sign_and_identify_is_the_three_steps_in_one(room_version: str) -> None:
    """Local events are hashed, signed and identified in one pass over the redacted form:
    the result must be byte for byte what the separate steps give."""
    power = {"users": {"@a:domain": 100}, "ban": 50, "x": "dropped"}
    for extra in ({}, {"state_key": "", "type": "m.room.power_levels", "content": power}):
        event = {k: v for k, v in _minimal_event().items() if k not in ("signatures", "unsigned")}
        event.update({"content": {"body": "héllo"}}, **extra)
        if version(room_version).event_id_format == 1:
            event["event_id"] = "$abc:domain"
        separate = copy.deepcopy(event)
        add_content_hash(separate)
        sign_event(separate, version(room_version), SERVER, KEY)
        expected_id = compute_event_id(separate, version(room_version))
        combined = copy.deepcopy(event)
        event_id = hash_sign_and_identify(combined, version(room_version), SERVER, KEY)
        assert (event_id, canonical_json(combined)) == (expected_id, canonical_json(separate))
        assert verify_event_signature(combined, version(room_version), SERVER, KEY_ID, PUBLIC)


def _pdu(**changes: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": "m.room.message", "sender": "@a:example.org", "room_id": "!r:example.org",
        "content": {"body": "nul\x00is fine here"}, "depth": 2, "origin_server_ts": 1,
        "prev_events": ["$p"], "auth_events": ["$a"], "hashes": {"sha256": "x"},
        "signatures": {},
    }  # fmt: skip
    pdu.update(changes)
    return pdu


@pytest.mark.parametrize(
    "changes",
    [
        {"type": "m.x\x00"},
        {"state_key": "\x00"},
        {"sender": "@a\x00:example.org"},
        {"room_id": "!r\x00:example.org"},
        {"redacts": "$e\x00"},
        {"content": {"redacts": "$e\x00"}},
        {
            "type": "m.room.member",
            "state_key": "@a:example.org",
            "content": {"membership": "join\x00"},
        },
        {"prev_events": ["$p\x00"]},
        {"auth_events": [["$a\x00", {"sha256": "x"}]]},
    ],
)
def test_pdus_whose_kept_names_hold_nul_are_refused(changes: dict[str, Any]) -> None:
    check_pdu_format(_pdu(), version("11"))  # content may hold one: it is kept as JSON
    with pytest.raises(ValueError, match="U\\+0000"):
        check_pdu_format(_pdu(**changes), version("11"))
