"""End-to-end encryption key distribution over real HTTP: device keys, one-time and
fallback keys (including concurrent claims), cross-signing and signatures, device-list
changes in /sync and /keys/changes, and to-device messages, with the database checked
directly where the outcome is a deletion."""

from __future__ import annotations

import copy
import os
import secrets
import threading
import time
from typing import Any
from urllib.parse import quote

from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json, verify_signed_json
from signedjson.types import SigningKey
from unpaddedbase64 import encode_base64

from tests.harness import (
    PASSWORD,
    Client,
    ServerProcess,
    create_room,
    db_rows,
    join,
    leave,
    new_user,
)

JsonDict = dict[str, Any]
OTK = "signed_curve25519"
MEGOLM = "m.megolm.v1.aes-sha2"
OLM = "m.olm.v1.curve25519-aes-sha2"


# Helpers


def q(value: str) -> str:
    return quote(value, safe="")


def new_key(version: str | None = None) -> tuple[SigningKey, str]:
    """An ed25519 signing key and its public half; the key ID is ``ed25519:<version>``,
    by default the public key itself (as cross-signing keys are named)."""
    key = generate_signing_key("tmp")
    public = encode_verify_key_base64(get_verify_key(key))
    key.version = version or public
    return key, public


def curve_key() -> str:
    return encode_base64(os.urandom(32))


def device_keys(client: Client, key: SigningKey | None = None) -> tuple[JsonDict, SigningKey]:
    """The device's identity keys, signed by its own ed25519 key (or by ``key``)."""
    assert client.user_id and client.device_id
    own, public = new_key(client.device_id)
    body = {
        "user_id": client.user_id,
        "device_id": client.device_id,
        "algorithms": [OLM, MEGOLM],
        "keys": {
            f"curve25519:{client.device_id}": curve_key(),
            f"ed25519:{client.device_id}": public,
        },
    }
    return sign_json(body, client.user_id, key or own), own


def upload_device_keys(client: Client) -> tuple[JsonDict, SigningKey]:
    keys, signing = device_keys(client)
    resp = client.post("keys/upload", {"device_keys": keys})
    assert resp.status == 200, resp
    return keys, signing


def signed_otk(client: Client, signing: SigningKey, fallback: bool = False) -> JsonDict:
    body: JsonDict = {"key": curve_key()}
    if fallback:
        body["fallback"] = True
    assert client.user_id
    return sign_json(body, client.user_id, signing)


def upload_otks(client: Client, signing: SigningKey, ids: list[str]) -> dict[str, JsonDict]:
    keys = {f"{OTK}:{i}": signed_otk(client, signing) for i in ids}
    resp = client.post("keys/upload", {"one_time_keys": keys})
    assert resp.status == 200, resp
    return keys


def upload_fallback(client: Client, signing: SigningKey, key_id: str) -> dict[str, JsonDict]:
    keys = {f"{OTK}:{key_id}": signed_otk(client, signing, fallback=True)}
    resp = client.post("keys/upload", {"fallback_keys": keys})
    assert resp.status == 200, resp
    return keys


def claim(client: Client, user_id: str, device_id: str, algorithm: str = OTK) -> JsonDict:
    """The {key ID: key} handed out for that device (empty if nothing was)."""
    resp = client.post("keys/claim", {"one_time_keys": {user_id: {device_id: algorithm}}})
    assert resp.status == 200, resp
    result: JsonDict = resp.body["one_time_keys"].get(user_id, {}).get(device_id, {})
    return result


def query(client: Client, wanted: JsonDict) -> JsonDict:
    resp = client.post("keys/query", {"device_keys": wanted})
    assert resp.status == 200, resp
    body: JsonDict = resp.body
    return body


def sync(client: Client, since: str | None = None) -> JsonDict:
    params = {"timeout": "0"}
    if since is not None:
        params["since"] = since
    resp = client.get("sync", params=params)
    assert resp.status == 200, resp
    body: JsonDict = resp.body
    return body


def second_session(user: Client, display_name: str | None = None) -> Client:
    other = Client(user.server)
    assert user.user_id
    extra = {"initial_device_display_name": display_name} if display_name else {}
    resp = other.login(user.user_id, **extra)
    assert resp.status == 200, resp
    return other


def count_rows(server: ServerProcess, table: str, user_id: str, device_id: str) -> int:
    rows = db_rows(
        server,
        f"SELECT COUNT(*) FROM {table} WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    )
    return int(rows[0][0])


def uia(client: Client, method: str, path: str, body: JsonDict) -> None:
    """Do a request that needs the password: first 401 with flows, then with auth."""
    first = client.request(method, path, body)
    assert first.status == 401, first
    assert {"stages": ["m.login.password"]} in first.body["flows"], first
    done = client.request(
        method, path, {**body, "auth": client.password_auth(PASSWORD, first.body["session"])}
    )
    assert done.status == 200, done


# /keys/upload: device keys


def test_device_keys_must_name_this_device_and_be_self_signed(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id and bob.user_id
    good, own = device_keys(alice)

    # Naming another user, or another device, is refused.
    for field, value in (("user_id", bob.user_id), ("device_id", "OTHERDEVICE")):
        wrong = {k: v for k, v in good.items() if k != "signatures"}
        wrong[field] = value
        resp = alice.post("keys/upload", {"device_keys": sign_json(wrong, alice.user_id, own)})
        assert resp.status == 400, (field, resp)
        assert resp.body["errcode"].startswith("M_"), resp

    # Signed by a key other than the device's own ed25519 key.
    impostor, _ = new_key(alice.device_id)
    forged, _ = device_keys(alice, key=impostor)
    resp = alice.post("keys/upload", {"device_keys": forged})
    assert resp.status == 400, resp
    # Tampered after signing.
    tampered = copy.deepcopy(good)
    tampered["algorithms"] = [MEGOLM]
    resp = alice.post("keys/upload", {"device_keys": tampered})
    assert resp.status == 400, resp
    # No signature at all.
    unsigned = {k: v for k, v in good.items() if k != "signatures"}
    resp = alice.post("keys/upload", {"device_keys": unsigned})
    assert resp.status == 400, resp

    # None of those were stored.
    assert query(bob, {alice.user_id: []})["device_keys"][alice.user_id] == {}

    resp = alice.post("keys/upload", {"device_keys": good})
    assert resp.status == 200, resp
    assert resp.body["one_time_key_counts"] == {} or resp.body["one_time_key_counts"].get(OTK) == 0
    stored = query(bob, {alice.user_id: []})["device_keys"][alice.user_id][alice.device_id]
    assert stored["keys"] == good["keys"]
    assert stored["signatures"] == good["signatures"]
    # What comes back still verifies (nothing was altered but ``unsigned``).
    verify_signed_json(stored, alice.user_id, get_verify_key(own))


def test_query_returns_display_name_and_remote_failures(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id and bob.user_id
    phone = second_session(alice, display_name="Alice's phone")
    keys, _ = upload_device_keys(alice)
    phone_keys, _ = upload_device_keys(phone)
    resp = alice.put(f"devices/{q(alice.device_id)}", {"display_name": "Alice's laptop"})
    assert resp.status == 200, resp

    result = query(bob, {alice.user_id: [], "@someone:remote.example": []})
    devices = result["device_keys"][alice.user_id]
    assert set(devices) == {alice.device_id, phone.device_id}
    assert devices[alice.device_id]["unsigned"]["device_display_name"] == "Alice's laptop"
    assert devices[phone.device_id]["unsigned"]["device_display_name"] == "Alice's phone"
    assert devices[phone.device_id]["keys"] == phone_keys["keys"]
    assert devices[alice.device_id]["keys"] == keys["keys"]
    assert "remote.example" in result["failures"], result
    assert "@someone:remote.example" not in result["device_keys"]

    # Asking for one device returns only that one; bob (no keys) is an empty map.
    one = query(bob, {alice.user_id: [phone.device_id], bob.user_id: []})
    assert set(one["device_keys"][alice.user_id]) == {phone.device_id}
    assert one["device_keys"][bob.user_id] == {}
    assert one["failures"] == {}


def test_query_with_devices_as_an_object_is_bad_json(alice: Client, bob: Client) -> None:
    """The spec's schema: each user maps to a list of device IDs, not an object."""
    assert alice.user_id and alice.device_id
    upload_device_keys(alice)
    wrongs: list[Any] = [{alice.device_id: {}}, alice.device_id, None, [1]]
    for wrong in wrongs:
        resp = bob.post("keys/query", {"device_keys": {alice.user_id: wrong}})
        assert resp.status == 400, (wrong, resp)
        assert resp.body["errcode"] == "M_BAD_JSON"


# /keys/upload: one-time and fallback keys


def test_one_time_keys_idempotent_and_conflicts_refused(alice: Client) -> None:
    assert alice.user_id and alice.device_id
    _, signing = upload_device_keys(alice)
    keys = {f"{OTK}:AAA{i}": signed_otk(alice, signing) for i in range(3)}
    resp = alice.post("keys/upload", {"one_time_keys": keys})
    assert resp.status == 200, resp
    assert resp.body["one_time_key_counts"] == {OTK: 3}

    # The identical upload again (a retried request) changes nothing.
    resp = alice.post("keys/upload", {"one_time_keys": keys})
    assert resp.status == 200, resp
    assert resp.body["one_time_key_counts"] == {OTK: 3}

    # A different key under an existing ID is refused, and nothing of that request is kept.
    conflicting = {
        f"{OTK}:NEW1": signed_otk(alice, signing),
        f"{OTK}:AAA1": signed_otk(alice, signing),
    }
    resp = alice.post("keys/upload", {"one_time_keys": conflicting})
    assert resp.status == 400, resp
    assert resp.body["errcode"] == "M_INVALID_PARAM", resp
    resp = alice.post("keys/upload", {})
    assert resp.status == 200, resp
    assert resp.body["one_time_key_counts"] == {OTK: 3}
    # The original AAA1 is still the one handed out.
    handed = {}
    for _ in range(3):
        handed.update(claim(alice, alice.user_id, alice.device_id))
    assert handed == keys

    # A key ID without an algorithm is refused.
    resp = alice.post("keys/upload", {"one_time_keys": {"noalgorithm": {"key": curve_key()}}})
    assert resp.status == 400, resp


def test_large_one_time_key_upload_is_idempotent(alice: Client) -> None:
    # More keys than one page of the lookup of already-known keys (500).
    _, signing = upload_device_keys(alice)
    key = signed_otk(alice, signing)
    keys = {f"{OTK}:BIG{i:04d}": key for i in range(600)}
    for _ in range(2):
        resp = alice.post("keys/upload", {"one_time_keys": keys})
        assert resp.status == 200, resp
        assert resp.body["one_time_key_counts"] == {OTK: 600}
    changed = dict(keys)
    changed[f"{OTK}:BIG0599"] = signed_otk(alice, signing)  # known, on the second page: refused
    resp = alice.post("keys/upload", {"one_time_keys": changed})
    assert resp.status == 400, resp
    assert claim(alice, alice.user_id, alice.device_id) == {f"{OTK}:BIG0000": key}


def test_fallback_key_one_per_algorithm_replaced_by_reupload(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id
    _, signing = upload_device_keys(alice)
    assert sync(alice)["device_unused_fallback_key_types"] == []

    first = upload_fallback(alice, signing, "FB1")
    assert sync(alice)["device_unused_fallback_key_types"] == [OTK]
    second = upload_fallback(alice, signing, "FB2")
    assert sync(alice)["device_unused_fallback_key_types"] == [OTK]
    # No one-time keys: the claim gets the replacement, never the replaced key.
    for _ in range(2):
        assert claim(bob, alice.user_id, alice.device_id) == second
    assert first != second
    assert sync(alice)["device_unused_fallback_key_types"] == []
    assert count_rows(alice.server, "fallback_keys", alice.user_id, alice.device_id) == 1

    # Re-uploading the same (already used) fallback key keeps it marked used ...
    resp = alice.post("keys/upload", {"fallback_keys": second})
    assert resp.status == 200, resp
    assert sync(alice)["device_unused_fallback_key_types"] == []
    # ... a new one is unused again; a second algorithm is tracked separately.
    third = upload_fallback(alice, signing, "FB3")
    other = {"other_algorithm:X1": {"key": curve_key(), "fallback": True}}
    resp = alice.post("keys/upload", {"fallback_keys": other})
    assert resp.status == 200, resp
    assert sync(alice)["device_unused_fallback_key_types"] == sorted([OTK, "other_algorithm"])
    assert claim(bob, alice.user_id, alice.device_id) == third
    assert sync(alice)["device_unused_fallback_key_types"] == ["other_algorithm"]
    assert claim(bob, alice.user_id, alice.device_id, "other_algorithm") == other
    assert count_rows(alice.server, "fallback_keys", alice.user_id, alice.device_id) == 2


# /keys/claim


def test_claim_each_key_once_in_upload_order_then_fallback(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id
    _, signing = upload_device_keys(alice)
    # Separate uploads, with IDs that sort in the opposite order to the uploads.
    uploaded: list[dict[str, JsonDict]] = []
    for key_id in ("zz5", "yy4", "xx3", "ww2"):
        uploaded.append(upload_otks(alice, signing, [key_id]))
    fallback = upload_fallback(alice, signing, "FALLBACK")
    before = sync(alice)
    assert before["device_one_time_keys_count"] == {OTK: 4}
    assert before["device_unused_fallback_key_types"] == [OTK]

    # Bob's claims get the keys one by one, oldest first, each exactly once.
    for expected in uploaded:
        assert claim(bob, alice.user_id, alice.device_id) == expected
    after_otks = sync(alice, before["next_batch"])
    assert after_otks["device_one_time_keys_count"].get(OTK, 0) == 0
    assert after_otks["device_unused_fallback_key_types"] == [OTK]

    # Then the fallback key, as often as asked; /sync says it has been used.
    for _ in range(3):
        assert claim(bob, alice.user_id, alice.device_id) == fallback
    after = sync(alice, after_otks["next_batch"])
    assert after["device_unused_fallback_key_types"] == []
    assert sync(alice)["device_unused_fallback_key_types"] == []

    # A device with no keys at all, and an unknown device, get nothing.
    bare = second_session(alice)
    assert bare.device_id
    resp = bob.post(
        "keys/claim", {"one_time_keys": {alice.user_id: {bare.device_id: OTK, "NOSUCHDEVICE": OTK}}}
    )
    assert resp.status == 200, resp
    assert resp.body["one_time_keys"].get(alice.user_id, {}) == {}


def test_concurrent_claims_hand_out_each_key_once(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id and bob.token
    _, signing = upload_device_keys(alice)
    otks = upload_otks(alice, signing, [f"K{i}" for i in range(5)])
    fallback = upload_fallback(alice, signing, "FALLBACK")

    claimers = 10
    barrier = threading.Barrier(claimers)
    statuses: list[int] = []
    handed: list[JsonDict] = []
    lock = threading.Lock()

    def claimer() -> None:
        client = Client(bob.server, token=bob.token)
        barrier.wait()
        resp = client.post("keys/claim", {"one_time_keys": {alice.user_id: {alice.device_id: OTK}}})
        with lock:
            statuses.append(resp.status)
            if resp.status == 200:
                handed.append(
                    resp.body["one_time_keys"].get(alice.user_id, {}).get(alice.device_id, {})
                )

    threads = [threading.Thread(target=claimer) for _ in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * claimers, statuses
    assert all(len(h) == 1 for h in handed), handed
    one_time = [h for h in handed if h != fallback]
    ids = [next(iter(h)) for h in one_time]
    assert len(ids) == len(set(ids)), f"a one-time key was handed out twice: {ids}"
    assert sorted(ids) == sorted(otks), handed
    for h in one_time:
        key_id = next(iter(h))
        assert h[key_id] == otks[key_id]
    assert handed.count(fallback) == claimers - len(otks), handed
    assert count_rows(alice.server, "one_time_keys", alice.user_id, alice.device_id) == 0
    assert sync(alice)["device_unused_fallback_key_types"] == []


# /sync key counts and device lists


def test_sync_reports_counts_for_the_requesting_device(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id
    phone = second_session(alice)
    _, signing = upload_device_keys(alice)
    _, phone_signing = upload_device_keys(phone)
    upload_otks(alice, signing, ["A1", "A2", "A3"])
    upload_otks(phone, phone_signing, ["P1"])

    laptop_sync = sync(alice)
    phone_sync = sync(phone)
    assert laptop_sync["device_one_time_keys_count"] == {OTK: 3}
    assert phone_sync["device_one_time_keys_count"] == {OTK: 1}
    # Always present, even when empty, in initial and incremental syncs.
    assert laptop_sync["device_unused_fallback_key_types"] == []
    assert phone_sync["device_unused_fallback_key_types"] == []

    claim(bob, alice.user_id, alice.device_id)
    upload_fallback(phone, phone_signing, "PF")
    laptop_next = sync(alice, laptop_sync["next_batch"])
    phone_next = sync(phone, phone_sync["next_batch"])
    assert laptop_next["device_one_time_keys_count"] == {OTK: 2}
    assert laptop_next["device_unused_fallback_key_types"] == []
    assert phone_next["device_one_time_keys_count"] == {OTK: 1}
    assert phone_next["device_unused_fallback_key_types"] == [OTK]


def test_device_lists_changed_and_left(server: ServerProcess, alice: Client, bob: Client) -> None:
    assert alice.user_id and bob.user_id
    carol, dave, erin = new_user(server), new_user(server), new_user(server)
    assert carol.user_id and dave.user_id and erin.user_id
    room = create_room(alice)
    other_room = create_room(bob)
    join(bob, room)
    join(dave, room)
    join(dave, other_room)
    t0 = sync(bob)["next_batch"]

    # Alice uploads device keys: bob, who shares a room, hears of it; erin (no room) does not.
    erin_t0 = sync(erin)["next_batch"]
    upload_device_keys(alice)
    s1 = sync(bob, t0)
    assert alice.user_id in s1["device_lists"]["changed"], s1["device_lists"]
    assert bob.user_id not in s1["device_lists"]["changed"]
    assert alice.user_id not in s1["device_lists"]["left"]
    assert alice.user_id not in sync(erin, erin_t0)["device_lists"]["changed"]
    t1 = s1["next_batch"]

    # The same through /keys/changes between the two sync tokens.
    changes = bob.get("keys/changes", params={"from": t0, "to": t1})
    assert changes.status == 200, changes
    assert alice.user_id in changes.body["changed"]
    empty = bob.get("keys/changes", params={"from": t1, "to": t1})
    assert empty.status == 200, empty
    assert alice.user_id not in empty.body["changed"]
    bad = bob.get("keys/changes", params={"from": "nonsense", "to": t1})
    assert bad.status == 400, bad

    # Carol newly joins the shared room: bob must fetch her keys.
    join(carol, room)
    s2 = sync(bob, t1)
    assert carol.user_id in s2["device_lists"]["changed"], s2["device_lists"]
    t2 = s2["next_batch"]

    # Carol leaves (no room shared any more): left. Dave leaves one room but still shares
    # another with bob: not left.
    leave(carol, room)
    leave(dave, room)
    s3 = sync(bob, t2)
    assert carol.user_id in s3["device_lists"]["left"], s3["device_lists"]
    assert carol.user_id not in s3["device_lists"]["changed"]
    assert dave.user_id not in s3["device_lists"]["left"], s3["device_lists"]
    t3 = s3["next_batch"]

    # Carol's later key changes are none of bob's business any more.
    upload_device_keys(carol)
    upload_device_keys(dave)
    s4 = sync(bob, t3)
    assert carol.user_id not in s4["device_lists"]["changed"], s4["device_lists"]
    assert dave.user_id in s4["device_lists"]["changed"], s4["device_lists"]
    t4 = s4["next_batch"]

    # Bob joining a room with erin in it: erin is new to bob.
    erin_room = create_room(erin)
    join(bob, erin_room)
    s5 = sync(bob, t4)
    assert erin.user_id in s5["device_lists"]["changed"], s5["device_lists"]


# Cross-signing


def cross_signing(user_id: str) -> tuple[JsonDict, dict[str, SigningKey]]:
    """A master key and self-signing and user-signing keys signed by it."""
    master, master_pub = new_key()
    ssk, ssk_pub = new_key()
    usk, usk_pub = new_key()

    def key_obj(usage: str, public: str) -> JsonDict:
        return {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}

    body = {
        "master_key": key_obj("master", master_pub),
        "self_signing_key": sign_json(key_obj("self_signing", ssk_pub), user_id, master),
        "user_signing_key": sign_json(key_obj("user_signing", usk_pub), user_id, master),
    }
    return body, {"master": master, "self_signing": ssk, "user_signing": usk}


def key_id(key: SigningKey) -> str:
    return f"ed25519:{key.version}"


def test_cross_signing_upload_and_reauthentication(alice: Client, bob: Client) -> None:
    assert alice.user_id
    body, _ = cross_signing(alice.user_id)
    # The first upload needs no password.
    resp = alice.post("keys/device_signing/upload", body)
    assert resp.status == 200, resp
    # Nor does the identical upload again.
    resp = alice.post("keys/device_signing/upload", body)
    assert resp.status == 200, resp

    # Replacing the master key does.
    replacement, _ = cross_signing(alice.user_id)
    first = alice.post("keys/device_signing/upload", replacement)
    assert first.status == 401, first
    assert {"stages": ["m.login.password"]} in first.body["flows"], first
    assert query(bob, {alice.user_id: []})["master_keys"][alice.user_id] == body["master_key"]
    wrong = alice.post(
        "keys/device_signing/upload",
        {**replacement, "auth": alice.password_auth("not the password", first.body["session"])},
    )
    assert wrong.status == 401, wrong
    assert query(bob, {alice.user_id: []})["master_keys"][alice.user_id] == body["master_key"]
    done = alice.post(
        "keys/device_signing/upload",
        {**replacement, "auth": alice.password_auth(PASSWORD, first.body["session"])},
    )
    assert done.status == 200, done
    result = query(bob, {alice.user_id: []})
    assert result["master_keys"][alice.user_id] == replacement["master_key"]
    assert result["self_signing_keys"][alice.user_id] == replacement["self_signing_key"]


def test_self_signing_key_must_be_signed_by_master(alice: Client, bob: Client) -> None:
    assert alice.user_id
    body, _ = cross_signing(alice.user_id)
    stranger, _ = new_key()
    forged = {k: v for k, v in body["self_signing_key"].items() if k != "signatures"}
    forged = sign_json(forged, alice.user_id, stranger)
    resp = alice.post(
        "keys/device_signing/upload", {"master_key": body["master_key"], "self_signing_key": forged}
    )
    assert resp.status == 400, resp
    # Nothing of the refused upload was kept.
    result = query(bob, {alice.user_id: []})
    assert alice.user_id not in result["master_keys"]
    assert alice.user_id not in result["self_signing_keys"]

    # With a master key in place, an unsigned self-signing key is refused too.
    resp = alice.post("keys/device_signing/upload", {"master_key": body["master_key"]})
    assert resp.status == 200, resp
    unsigned = {k: v for k, v in body["self_signing_key"].items() if k != "signatures"}
    resp = alice.post("keys/device_signing/upload", {"self_signing_key": unsigned})
    assert resp.status == 400, resp
    assert alice.user_id not in query(bob, {alice.user_id: []})["self_signing_keys"]


def test_user_signing_key_only_visible_to_its_owner(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    assert alice.user_id and bob.user_id
    alice_body, alice_keys = cross_signing(alice.user_id)
    bob_body, _ = cross_signing(bob.user_id)
    assert alice.post("keys/device_signing/upload", alice_body).status == 200
    assert bob.post("keys/device_signing/upload", bob_body).status == 200

    seen_by_bob = query(bob, {alice.user_id: []})
    assert seen_by_bob["master_keys"][alice.user_id] == alice_body["master_key"]
    assert seen_by_bob["self_signing_keys"][alice.user_id] == alice_body["self_signing_key"]
    assert alice.user_id not in seen_by_bob.get("user_signing_keys", {})
    seen_by_alice = query(alice, {alice.user_id: []})
    assert seen_by_alice["user_signing_keys"][alice.user_id] == alice_body["user_signing_key"]

    # Alice signs bob's master key with her user-signing key: alice sees that signature,
    # bob and carol do not.
    bob_master = {k: v for k, v in bob_body["master_key"].items() if k != "signatures"}
    signed = sign_json(bob_master, alice.user_id, alice_keys["user_signing"])
    usk_id = key_id(alice_keys["user_signing"])
    bob_master_pub = next(iter(bob_master["keys"].values()))
    resp = alice.post("keys/signatures/upload", {bob.user_id: {bob_master_pub: signed}})
    assert resp.status == 200, resp
    assert resp.body["failures"] == {}, resp
    mine = query(alice, {bob.user_id: []})["master_keys"][bob.user_id]
    assert mine["signatures"][alice.user_id][usk_id] == signed["signatures"][alice.user_id][usk_id]
    carol = new_user(server)
    for viewer in (bob, carol):
        theirs = query(viewer, {bob.user_id: []})["master_keys"][bob.user_id]
        assert alice.user_id not in theirs.get("signatures", {}), theirs


def test_signatures_upload_valid_stored_invalid_reported(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id
    phone = second_session(alice)
    assert phone.device_id
    laptop_keys, _ = upload_device_keys(alice)
    phone_keys, _ = upload_device_keys(phone)
    body, keys = cross_signing(alice.user_id)
    assert alice.post("keys/device_signing/upload", body).status == 200
    ssk = keys["self_signing"]

    def to_sign(device: JsonDict) -> JsonDict:
        return {k: v for k, v in device.items() if k not in ("signatures", "unsigned")}

    # A valid self-signing signature on the laptop; a forged one (another key under the
    # self-signing key's ID) on the phone.
    good = sign_json(to_sign(laptop_keys), alice.user_id, ssk)
    forger, _ = new_key(ssk.version)
    bad = sign_json(to_sign(phone_keys), alice.user_id, forger)
    resp = alice.post(
        "keys/signatures/upload", {alice.user_id: {alice.device_id: good, phone.device_id: bad}}
    )
    assert resp.status == 200, resp
    failures = resp.body["failures"]
    assert set(failures) == {alice.user_id}, failures
    assert set(failures[alice.user_id]) == {phone.device_id}, failures
    assert failures[alice.user_id][phone.device_id]["errcode"].startswith("M_")

    devices = query(bob, {alice.user_id: []})["device_keys"][alice.user_id]
    laptop_sigs = devices[alice.device_id]["signatures"][alice.user_id]
    assert laptop_sigs[key_id(ssk)] == good["signatures"][alice.user_id][key_id(ssk)]
    assert f"ed25519:{alice.device_id}" in laptop_sigs  # the device's own signature stays
    verify_signed_json(
        {
            **to_sign(devices[alice.device_id]),
            "signatures": {alice.user_id: {key_id(ssk): laptop_sigs[key_id(ssk)]}},
        },
        alice.user_id,
        get_verify_key(ssk),
    )
    phone_sigs = devices[phone.device_id]["signatures"][alice.user_id]
    assert key_id(ssk) not in phone_sigs, phone_sigs
    rows = db_rows(
        alice.server,
        "SELECT signature FROM e2e_signatures WHERE target_user_id = ?",
        (alice.user_id,),
    )
    assert [r[0] for r in rows] == [good["signatures"][alice.user_id][key_id(ssk)]]

    # Signing a key the server does not know is a failure too, not an error.
    resp = alice.post("keys/signatures/upload", {alice.user_id: {"NOSUCHDEVICE": good}})
    assert resp.status == 200, resp
    assert "NOSUCHDEVICE" in resp.body["failures"][alice.user_id]


# To-device messages


def send_to_device(sender: Client, event_type: str, txn_id: str, messages: JsonDict) -> None:
    resp = sender.put(f"sendToDevice/{q(event_type)}/{q(txn_id)}", {"messages": messages})
    assert resp.status == 200, resp


def to_device(body: JsonDict) -> list[JsonDict]:
    events: list[JsonDict] = body["to_device"]["events"]
    return events


def test_to_device_to_one_device_and_to_all_in_order(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id and bob.user_id
    phone = second_session(alice)
    assert phone.device_id
    laptop_since = sync(alice)["next_batch"]
    phone_since = sync(phone)["next_batch"]

    send_to_device(bob, "m.test.first", "t1", {alice.user_id: {alice.device_id: {"n": 1}}})
    send_to_device(bob, "m.test.all", "t2", {alice.user_id: {"*": {"n": 2}}})
    for n in range(3, 7):
        send_to_device(bob, "m.test.more", f"t{n}", {alice.user_id: {alice.device_id: {"n": n}}})
    send_to_device(bob, "m.test.phone", "t7", {alice.user_id: {phone.device_id: {"n": 7}}})

    laptop = to_device(sync(alice, laptop_since))
    assert [e["content"]["n"] for e in laptop] == [1, 2, 3, 4, 5, 6]
    assert laptop[0] == {"type": "m.test.first", "sender": bob.user_id, "content": {"n": 1}}
    assert laptop[1]["type"] == "m.test.all"
    assert all(e["sender"] == bob.user_id for e in laptop)
    phone_events = to_device(sync(phone, phone_since))
    assert phone_events == [
        {"type": "m.test.all", "sender": bob.user_id, "content": {"n": 2}},
        {"type": "m.test.phone", "sender": bob.user_id, "content": {"n": 7}},
    ]
    # Bob's own devices got nothing.
    assert to_device(sync(bob)) == []


def test_to_device_txn_once_and_deleted_when_acknowledged(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id and bob.user_id
    server = alice.server
    phone = second_session(alice)
    bob_phone = second_session(bob)
    assert phone.device_id
    since = sync(alice)["next_batch"]
    phone_since = sync(phone)["next_batch"]

    send_to_device(bob, "m.test", "same-txn", {alice.user_id: {"*": {"n": 1}}})
    # A retry of the same transaction (even with other content) is not delivered again.
    send_to_device(bob, "m.test", "same-txn", {alice.user_id: {"*": {"n": 99}}})
    # The same transaction ID from another of bob's devices is a different transaction.
    send_to_device(bob_phone, "m.test", "same-txn", {alice.user_id: {alice.device_id: {"n": 2}}})
    assert count_rows(server, "to_device_messages", alice.user_id, alice.device_id) == 2

    first = sync(alice, since)
    assert [e["content"]["n"] for e in to_device(first)] == [1, 2]
    # Not acknowledged yet (the response could have been lost): the same since repeats them.
    again = sync(alice, since)
    assert [e["content"]["n"] for e in to_device(again)] == [1, 2]
    assert count_rows(server, "to_device_messages", alice.user_id, alice.device_id) == 2

    # Syncing from the next batch acknowledges them: not returned, and gone from the table.
    after = sync(alice, first["next_batch"])
    assert to_device(after) == []
    assert count_rows(server, "to_device_messages", alice.user_id, alice.device_id) == 0
    assert to_device(sync(alice, first["next_batch"])) == []

    # The phone's copy is untouched until the phone acknowledges it.
    assert count_rows(server, "to_device_messages", alice.user_id, phone.device_id) == 1
    phone_first = sync(phone, phone_since)
    assert [e["content"]["n"] for e in to_device(phone_first)] == [1]
    sync(phone, phone_first["next_batch"])
    assert count_rows(server, "to_device_messages", alice.user_id, phone.device_id) == 0


def test_deleting_a_device_removes_its_keys_and_messages(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id and bob.user_id
    server = alice.server
    room = create_room(alice)
    join(bob, room)
    phone = second_session(alice)
    assert phone.device_id
    upload_device_keys(alice)
    _, signing = upload_device_keys(phone)
    upload_otks(phone, signing, ["P1", "P2", "P3"])
    upload_fallback(phone, signing, "PF")
    send_to_device(
        bob, "m.test", secrets.token_hex(4), {alice.user_id: {phone.device_id: {"n": 1}}}
    )
    for table in ("device_keys", "one_time_keys", "fallback_keys", "to_device_messages"):
        assert count_rows(server, table, alice.user_id, phone.device_id) > 0, table
    bob_since = sync(bob)["next_batch"]

    uia(alice, "DELETE", f"devices/{q(phone.device_id)}", {})

    devices = query(bob, {alice.user_id: []})["device_keys"][alice.user_id]
    assert set(devices) == {alice.device_id}
    assert query(alice, {alice.user_id: [phone.device_id]})["device_keys"][alice.user_id] == {}
    assert claim(bob, alice.user_id, phone.device_id) == {}
    for table in ("device_keys", "one_time_keys", "fallback_keys", "to_device_messages"):
        assert count_rows(server, table, alice.user_id, phone.device_id) == 0, table
    # The laptop's keys are untouched, and room-mates learn the device list changed.
    assert count_rows(server, "device_keys", alice.user_id, alice.device_id) == 1
    assert alice.user_id in sync(bob, bob_since)["device_lists"]["changed"]


# More device-list and long-poll behaviour


def test_own_new_device_reported_to_own_other_devices(alice: Client, bob: Client) -> None:
    """A user's existing devices must learn of the user's own new device (or their new
    cross-signing keys), or they never encrypt to it and never prompt to verify it."""
    assert alice.user_id
    room = create_room(alice)
    join(bob, room)
    upload_device_keys(alice)
    laptop_since = sync(alice)["next_batch"]
    bob_since = sync(bob)["next_batch"]

    phone = second_session(alice)
    upload_device_keys(phone)
    laptop = sync(alice, laptop_since)
    assert alice.user_id in sync(bob, bob_since)["device_lists"]["changed"]
    assert alice.user_id in laptop["device_lists"]["changed"], laptop["device_lists"]

    body, _ = cross_signing(alice.user_id)
    assert alice.post("keys/device_signing/upload", body).status == 200
    again = sync(alice, laptop["next_batch"])
    assert alice.user_id in again["device_lists"]["changed"], again["device_lists"]


def test_cross_signing_changes_reach_room_mates(alice: Client, bob: Client) -> None:
    assert alice.user_id
    room = create_room(alice)
    join(bob, room)
    since = sync(bob)["next_batch"]
    body, _ = cross_signing(alice.user_id)
    assert alice.post("keys/device_signing/upload", body).status == 200
    after = sync(bob, since)
    assert alice.user_id in after["device_lists"]["changed"], after["device_lists"]
    # Nothing new: not listed again.
    assert alice.user_id not in sync(bob, after["next_batch"])["device_lists"]["changed"]


def test_keys_changes_lists_users_who_left(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    """/keys/changes (used by a client coming back online) reports who no longer shares
    any room, like /sync's device_lists.left."""
    assert bob.user_id
    room = create_room(alice)
    join(bob, room)
    start = sync(alice)["next_batch"]
    leave(bob, room)
    end = sync(alice, start)
    assert bob.user_id in end["device_lists"]["left"], end["device_lists"]
    changes = alice.get("keys/changes", params={"from": start, "to": end["next_batch"]})
    assert changes.status == 200, changes
    assert bob.user_id in changes.body["left"], changes.body


def long_poll(client: Client, since: str, result: list[Any]) -> threading.Thread:
    def run() -> None:
        other = Client(client.server, token=client.token)
        started = time.monotonic()
        resp = other.get("sync", params={"since": since, "timeout": "15000"})
        result.append((time.monotonic() - started, resp))

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    return thread


def test_to_device_and_key_changes_wake_a_waiting_sync(alice: Client, bob: Client) -> None:
    assert alice.user_id and alice.device_id and bob.user_id
    room = create_room(alice)
    join(bob, room)
    since = sync(alice)["next_batch"]
    result: list[Any] = []
    thread = long_poll(alice, since, result)
    send_to_device(bob, "m.test", "wake", {alice.user_id: {alice.device_id: {"wake": True}}})
    thread.join(20)
    elapsed, resp = result[0]
    assert resp.status == 200, resp
    assert elapsed < 10, elapsed
    assert [e["content"] for e in to_device(resp.body)] == [{"wake": True}]

    since = sync(alice, resp.body["next_batch"])["next_batch"]
    result.clear()
    thread = long_poll(alice, since, result)
    upload_device_keys(bob)
    thread.join(20)
    elapsed, resp = result[0]
    assert resp.status == 200, resp
    assert elapsed < 10, elapsed
    assert bob.user_id in resp.body["device_lists"]["changed"]
