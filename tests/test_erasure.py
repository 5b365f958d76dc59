"""Erasure that leaves nothing (issue 14).

A user who used every feature the server offers is deactivated with ``erase: true``, once
through the client API (with password UIA) and once through the admin API. Then every row
of every table and every file of the media store is searched for anything of theirs: their
IDs, sessions, addresses and every piece of content they gave the server. Nothing may be
left but the redacted skeletons of their events and the erasure marker (the ``users`` row).
What clients see is checked over HTTP too: their messages are served redacted, to room
mates and newcomers alike; their profile, sessions and password are gone.

Every marker contains the test's tag, so a search for the tag alone also catches content
that was copied somewhere under a name the test did not think of.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo
from signedjson.sign import sign_json

from keybackup.client_crypto import backup_public_key, encrypt_for_backup
from tests.harness import (
    PASSWORD,
    Client,
    Response,
    ServerProcess,
    create_room,
    db_rows,
    free_port,
    join,
    new_user,
    q,
)
from tests.test_e2ee_keys import (
    cross_signing,
    device_keys,
    key_id,
    signed_otk,
)
from tests.test_e2ee_private import database_rows
from tests.test_rooms_basic import send
from tests.test_shared_secret_registration import shared_secret_register

JsonDict = dict[str, Any]
A = "/_synapse/admin"
MEDIA = "/_matrix/media/v3"
AUTHED_MEDIA = "/_matrix/client/v1/media"
SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
DEHYDRATED = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
OTK = "signed_curve25519"

# What may still name the erased user after erasure, and why. In these tables (and only
# these) the user ID itself may remain; nothing else of theirs may (no other identifier,
# no content marker: in `events` the JSON must be the redacted skeleton).
#
# Tables that hold only event IDs, numbers or room IDs (event_edges, event_auth,
# forward_extremities, state_groups, redactions) never contain the user ID, so they need
# no allowance: any marker found there is a leftover like anywhere else.
ALLOWED_USER_ID_TABLES: dict[str, str] = {
    # Their events stay in the room DAG (other servers and the room's history depend on
    # them), pruned to the redacted skeleton: sender and state_key name the user.
    "events": "event skeletons: sender / state_key of their (redacted) events",
    # The room's current state keeps their final (leave) membership, keyed by user ID.
    "current_state": "their leave membership in the current state (state_key)",
    # Membership history of rooms (who was joined when) is part of the room, not of them.
    "room_memberships": "membership history rows (user_id, sender)",
    # State maps: (type, state_key) -> event ID; member entries are keyed by user ID.
    "state_group_entries": "state maps keyed by state_key = user ID",
    # rooms.creator repeats the sender of the m.room.create event, which stays anyway.
    "rooms": "creator of a room they created (the create event's sender)",
    # The erasure marker: the account row, deactivated and erased, without a password.
    "users": "the erasure marker",
    # The admin audit log is append-only: it records that an admin changed this user (the
    # e-mail address, external IDs and rate limits set up below, and the admin-API
    # deactivation), by user ID only; the details must not copy any of their data.
    "admin_audit_log": "admin actions on the user, by user ID",
}


@dataclass
class Erasable:
    """The user to erase and everything the scan must not find afterwards."""

    client: Client
    user_id: str
    localpart: str
    tag: str
    # name -> text that must not be left (identifiers and content markers)
    needles: dict[str, str] = field(default_factory=dict)
    # name -> bytes that must not be left in the media store (files and thumbnails)
    blobs: dict[str, bytes] = field(default_factory=dict)
    # needles not required to be found before erasure: raw tokens (kept as hashes only),
    # presence (kept in memory), the localpart and tag (found as part of the user ID)
    unstored: set[str] = field(default_factory=set)
    # content markers, never allowed, not even in the allowed tables or served events
    content: set[str] = field(default_factory=set)
    rooms: dict[str, str] = field(default_factory=dict)
    event_ids: dict[str, str] = field(default_factory=dict)
    sessions: list[Client] = field(default_factory=list)
    media: dict[str, str] = field(default_factory=dict)


@dataclass
class Bob:
    """A room mate whose own data must survive the erasure."""

    client: Client
    tag: str
    account_data: JsonDict
    message: str
    message_event: str
    media_mxc: str
    media_bytes: bytes
    device_id: str
    user_signing_key: Any


# Small helpers


def ok(resp: Response, what: str) -> Any:
    assert resp.status == 200, (what, resp)
    return resp.body


def uia(client: Client, method: str, path: str, body: JsonDict, what: str) -> Any:
    """A request that needs the password: 401 with a session, then again with auth."""
    first = client.request(method, path, body)
    assert first.status == 401, (what, first)
    assert "session" in first.body, (what, first)
    auth = client.password_auth(PASSWORD, first.body["session"])
    return ok(client.request(method, path, {**body, "auth": auth}), what)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def media_id_of(mxc: str) -> str:
    return mxc.rsplit("/", 1)[1]


def upload(client: Client, data: bytes, content_type: str, filename: str) -> str:
    resp = client.request(
        "POST",
        MEDIA + "/upload",
        raw=data,
        headers={"Content-Type": content_type},
        params={"filename": filename},
    )
    return str(ok(resp, "upload")["content_uri"])


def png_with_text(marker: str, size: tuple[int, int] = (120, 90)) -> bytes:
    image = Image.new("RGB", size, (30, 120, 200))
    for x in range(0, size[0], 7):
        for y in range(0, size[1], 5):
            image.putpixel((x, y), (x * 3 % 256, y * 5 % 256, 90))
    info = PngInfo()
    info.add_text("Comment", marker)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


def media_store(server: ServerProcess) -> Path:
    store = server.config.get("media", {}).get("store_path", "media_store")
    return Path(server.directory) / store


def store_files(server: ServerProcess) -> dict[str, bytes]:
    root = media_store(server)
    found: dict[str, bytes] = {}
    if root.exists():
        for path in sorted(root.rglob("*")):
            if path.is_file():
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# The user who used every feature


def make_everything_user(server: ServerProcess, admin: Client, bob: Bob) -> Erasable:
    tag = secrets.token_hex(6)
    localpart = f"erasable{tag}"
    user_agent = f"ErasableAgent/{tag}"
    main_device = f"ERASABLEMAIN{tag}"

    client = Client(server)
    client.session.headers["User-Agent"] = user_agent
    reg = client.register(
        localpart, device_id=main_device, initial_device_display_name=f"dev-{tag}"
    )
    assert reg.status == 200, reg
    assert client.user_id and client.device_id == main_device, reg
    user_id = client.user_id
    me = Erasable(client=client, user_id=user_id, localpart=localpart, tag=tag)
    n = me.needles
    n["user_id"] = user_id
    n["localpart"] = localpart
    n["tag"] = tag
    # Both are inside the user ID; the scan reports them only where they appear outside it.
    me.unstored |= {"localpart", "tag"}
    n["user_agent"] = user_agent
    n["device:main"] = main_device
    n["device_name:main"] = f"dev-{tag}"
    n["access_token:main"] = str(client.token)
    n["access_token_hash:main"] = token_hash(str(client.token))
    me.unstored.add("access_token:main")

    # More sessions: a second device with a marked name, one with a refresh token.
    phone = Client(server)
    phone.session.headers["User-Agent"] = user_agent
    resp = phone.login(
        user_id, device_id=f"ERASABLEPHONE{tag}", initial_device_display_name=f"phone-{tag}"
    )
    assert resp.status == 200, resp
    n["device:phone"] = f"ERASABLEPHONE{tag}"
    n["device_name:phone"] = f"phone-{tag}"
    n["access_token:phone"] = str(phone.token)
    n["access_token_hash:phone"] = token_hash(str(phone.token))
    me.unstored.add("access_token:phone")
    ok(
        client.put(f"devices/{q(main_device)}", {"display_name": f"renamed-dev-{tag}"}),
        "rename device",
    )
    n["device_name:renamed"] = f"renamed-dev-{tag}"
    refreshing = Client(server)
    resp = refreshing.login(user_id, device_id=f"ERASABLEREFRESH{tag}", refresh_token=True)
    assert resp.status == 200 and "refresh_token" in resp.body, resp
    n["device:refresh"] = f"ERASABLEREFRESH{tag}"
    n["refresh_token_hash"] = token_hash(resp.body["refresh_token"])
    me.sessions = [client, phone, refreshing]

    # A login token (for signing in another device) left unused, and an OpenID token.
    body = uia(client, "POST", "/_matrix/client/v1/login/get_token", {}, "login token")
    n["login_token_hash"] = token_hash(body["login_token"])
    body = ok(client.post(f"user/{q(user_id)}/openid/request_token", {}), "openid token")
    n["openid_token_hash"] = token_hash(body["access_token"])

    # Profile: display name, avatar (a PNG carrying a marker), a custom field.
    display_name = f"Erasable Person {tag}"
    n["displayname"] = display_name
    me.content.add("displayname")
    avatar = png_with_text(f"avatar-marker-{tag}")
    avatar_mxc = upload(client, avatar, "image/png", f"avatar-{tag}.png")
    me.media["avatar"] = avatar_mxc
    n["media:avatar"] = media_id_of(avatar_mxc)
    me.content.add("media:avatar")
    n["avatar_marker"] = f"avatar-marker-{tag}"
    n["filename:avatar"] = f"avatar-{tag}.png"
    me.blobs["avatar"] = avatar
    ok(client.put(f"profile/{q(user_id)}/displayname", {"displayname": display_name}), "name")
    ok(client.put(f"profile/{q(user_id)}/avatar_url", {"avatar_url": avatar_mxc}), "avatar")
    ok(
        client.put(
            f"profile/{q(user_id)}/org.example.pronouns",
            {"org.example.pronouns": f"pronouns-{tag}"},
        ),
        "custom profile field",
    )
    n["profile_field"] = f"pronouns-{tag}"

    # Media: a file with marked bytes and name, a thumbnail of the avatar (made when bob
    # asks for one), and an asynchronous upload never completed.
    file_bytes = f"erasable media bytes {tag} ".encode() + os.urandom(2000)
    file_mxc = upload(client, file_bytes, "application/octet-stream", f"secret-file-{tag}.bin")
    me.media["file"] = file_mxc
    n["media:file"] = media_id_of(file_mxc)
    me.content.add("media:file")
    n["media_bytes_marker"] = f"erasable media bytes {tag}"
    n["filename:file"] = f"secret-file-{tag}.bin"
    me.blobs["file"] = file_bytes
    avatar_media = q(media_id_of(avatar_mxc))
    thumb = bob.client.get(
        f"{AUTHED_MEDIA}/thumbnail/{q(server.server_name)}/{avatar_media}",
        params={"width": "32", "height": "32", "method": "crop"},
    )
    assert thumb.status == 200 and isinstance(thumb.body, bytes), thumb
    me.blobs["thumbnail"] = thumb.body
    created = ok(client.post("/_matrix/media/v1/create", {}), "async media create")
    n["media:pending"] = media_id_of(created["content_uri"])

    # Rooms: one they created (bob joins), one of bob's they joined, one bob invited them
    # to (never answered).
    room_a = create_room(client, name="Room A")
    join(bob.client, room_a)
    room_b = create_room(bob.client, name="Room B")
    join(client, room_b)
    room_c = create_room(bob.client, name="Room C", preset="private_chat")
    ok(bob.client.post(f"rooms/{q(room_c)}/invite", {"user_id": user_id}), "invite")
    me.rooms = {"a": room_a, "b": room_b, "c": room_c}
    # bob's message (kept), then theirs.
    bob.message_event = send(bob.client, room_a, bob.message)
    for i, room_id in enumerate((room_a, room_a, room_b)):
        body_text = f"secret message {tag} {i}"
        n[f"message:{i}"] = body_text
        me.content.add(f"message:{i}")
        me.event_ids[f"message:{i}"] = send(client, room_id, body_text)
    image = ok(
        client.put(
            f"rooms/{q(room_a)}/send/m.room.message/img{tag}",
            {"msgtype": "m.image", "body": f"image-body-{tag}", "url": file_mxc},
        ),
        "image message",
    )
    me.event_ids["image"] = image["event_id"]
    n["image_body"] = f"image-body-{tag}"
    me.content.add("image_body")
    edit = ok(
        client.put(
            f"rooms/{q(room_a)}/send/m.room.message/edit{tag}",
            {
                "msgtype": "m.text",
                "body": f"* edited secret {tag}",
                "m.new_content": {"msgtype": "m.text", "body": f"edited secret {tag}"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": me.event_ids["message:0"]},
            },
        ),
        "edit",
    )
    me.event_ids["edit"] = edit["event_id"]
    n["edit"] = f"edited secret {tag}"
    me.content.add("edit")
    reaction = ok(
        client.put(
            f"rooms/{q(room_a)}/send/m.reaction/react{tag}",
            {
                "m.relates_to": {
                    "rel_type": "m.annotation",
                    "event_id": bob.message_event,
                    "key": f"reaction-{tag}",
                }
            },
        ),
        "reaction",
    )
    me.event_ids["reaction"] = reaction["event_id"]
    n["reaction"] = f"reaction-{tag}"
    me.content.add("reaction")
    # bob's message after theirs, so that they have notifications (push actions).
    send(bob.client, room_a, f"bob says hello {bob.tag}")

    # Receipts, typing, presence.
    ok(
        client.post(f"rooms/{q(room_a)}/receipt/m.read/{q(bob.message_event)}", {}),
        "receipt",
    )
    ok(
        client.put(f"rooms/{q(room_a)}/typing/{q(user_id)}", {"typing": True, "timeout": 30000}),
        "typing",
    )
    ok(
        client.put(
            f"presence/{q(user_id)}/status",
            {"presence": "online", "status_msg": f"presence-{tag}"},
        ),
        "presence",
    )
    n["presence"] = f"presence-{tag}"
    me.unstored.add("presence")  # presence is kept in memory

    # Account data: global, per room, and a room tag.
    ok(
        client.put(
            f"user/{q(user_id)}/account_data/org.example.erasable",
            {"secret": f"global-account-data-{tag}"},
        ),
        "global account data",
    )
    n["account_data:global"] = f"global-account-data-{tag}"
    ok(
        client.put(
            f"user/{q(user_id)}/rooms/{q(room_a)}/account_data/org.example.erasable",
            {"secret": f"room-account-data-{tag}"},
        ),
        "room account data",
    )
    n["account_data:room"] = f"room-account-data-{tag}"
    ok(
        client.put(f"user/{q(user_id)}/rooms/{q(room_b)}/tags/u.tag-{tag}", {"order": 0.5}),
        "room tag",
    )
    n["room_tag"] = f"u.tag-{tag}"

    # Push rules and a pusher.
    ok(
        client.put(
            f"pushrules/global/content/rule-{tag}",
            {"pattern": f"push-pattern-{tag}", "actions": ["notify"]},
        ),
        "push rule",
    )
    n["push_rule_id"] = f"rule-{tag}"
    n["push_pattern"] = f"push-pattern-{tag}"
    gateway = f"http://127.0.0.1:{free_port()}/_matrix/push/v1/notify"
    ok(
        client.post(
            "pushers/set",
            {
                "pushkey": f"pushkey-{tag}",
                "kind": "http",
                "app_id": "org.example.erasable",
                "app_display_name": f"push-app-{tag}",
                "device_display_name": f"push-device-{tag}",
                "profile_tag": "tag1",
                "lang": "en",
                "data": {"url": gateway, "org.example.marker": f"pusher-data-{tag}"},
            },
        ),
        "pusher",
    )
    n["pushkey"] = f"pushkey-{tag}"
    n["pusher_app_name"] = f"push-app-{tag}"
    n["pusher_device_name"] = f"push-device-{tag}"
    n["pusher_data"] = f"pusher-data-{tag}"

    # A stored filter, then a sync with it (before bob's to-device message below, which a
    # sync would acknowledge and delete).
    filter_body = {"room": {"timeline": {"limit": 7}}, "org.example.marker": f"filter-{tag}"}
    filter_id = ok(client.post(f"user/{q(user_id)}/filter", filter_body), "filter")["filter_id"]
    n["filter"] = f"filter-{tag}"
    ok(client.get("sync", params={"timeout": "0", "filter": str(filter_id)}), "sync")
    ok(
        client.post(SLIDING, {"conn_id": f"conn-{tag}", "lists": {"all": {"ranges": [[0, 9]]}}}),
        "sliding sync",
    )
    n["sliding_conn_id"] = f"conn-{tag}"

    # End-to-end keys: device keys for two devices, one-time and fallback keys,
    # cross-signing (replaced once, with UIA), signatures on their own device and on bob's
    # master key, and bob's signature on theirs.
    keys, signing = device_keys(client)
    ok(client.post("keys/upload", {"device_keys": keys}), "device keys")
    n["device_key"] = keys["keys"][f"curve25519:{main_device}"]
    otks = {f"{OTK}:otk{i}{tag}": signed_otk(client, signing) for i in range(3)}
    ok(client.post("keys/upload", {"one_time_keys": otks}), "one-time keys")
    n["one_time_key"] = f"otk2{tag}"
    fallback = {f"{OTK}:fb{tag}": signed_otk(client, signing, fallback=True)}
    ok(client.post("keys/upload", {"fallback_keys": fallback}), "fallback key")
    n["fallback_key"] = f"fb{tag}"
    phone_keys, _ = device_keys(phone)
    ok(phone.post("keys/upload", {"device_keys": phone_keys}), "phone device keys")
    first_cs, _ = cross_signing(user_id)
    ok(client.post("keys/device_signing/upload", first_cs), "cross-signing")
    cs, cs_keys = cross_signing(user_id)
    uia(client, "POST", "keys/device_signing/upload", cs, "cross-signing replacement")
    n["master_key"] = next(iter(cs["master_key"]["keys"].values()))
    n["self_signing_key"] = next(iter(cs["self_signing_key"]["keys"].values()))
    n["user_signing_key"] = next(iter(cs["user_signing_key"]["keys"].values()))
    to_sign = {k: v for k, v in keys.items() if k not in ("signatures", "unsigned")}
    own_sig = sign_json(to_sign, user_id, cs_keys["self_signing"])
    resp = ok(client.post("keys/signatures/upload", {user_id: {main_device: own_sig}}), "sig")
    assert resp["failures"] == {}, resp
    n["own_device_signature"] = own_sig["signatures"][user_id][key_id(cs_keys["self_signing"])]
    bob_id = str(bob.client.user_id)
    bob_master = ok(bob.client.post("keys/query", {"device_keys": {bob_id: []}}), "query")[
        "master_keys"
    ][bob_id]
    bob_master = {k: v for k, v in bob_master.items() if k not in ("signatures", "unsigned")}
    signed_bob = sign_json(bob_master, user_id, cs_keys["user_signing"])
    bob_master_pub = next(iter(bob_master["keys"].values()))
    resp = ok(client.post("keys/signatures/upload", {bob_id: {bob_master_pub: signed_bob}}), "x")
    assert resp["failures"] == {}, resp
    n["signature_on_bob"] = signed_bob["signatures"][user_id][key_id(cs_keys["user_signing"])]
    # bob verified them: his user-signing key signs their master key.
    their_master = {k: v for k, v in cs["master_key"].items() if k != "signatures"}
    bob_sig = sign_json(their_master, bob_id, bob.user_signing_key)
    resp = ok(
        bob.client.post("keys/signatures/upload", {user_id: {n["master_key"]: bob_sig}}),
        "bob signs their master key",
    )
    assert resp["failures"] == {}, resp
    n["bob_signature_on_them"] = bob_sig["signatures"][bob_id][key_id(bob.user_signing_key)]

    # A dehydrated device.
    ok(
        client.put(
            DEHYDRATED,
            {
                "device_id": f"ERASABLEDEHYDRATED{tag}",
                "device_data": {
                    "algorithm": "org.matrix.msc3814.v2",
                    "device_pickle": f"pickle-{tag}",
                },
                "initial_device_display_name": f"dehydrated-{tag}",
            },
        ),
        "dehydrated device",
    )
    n["device:dehydrated"] = f"ERASABLEDEHYDRATED{tag}"
    n["dehydrated_data"] = f"pickle-{tag}"

    # Key backup: a version with marked auth_data and a session in it.
    public_key = backup_public_key(os.urandom(32))
    version = ok(
        client.post(
            "room_keys/version",
            {
                "algorithm": BACKUP_ALGORITHM,
                "auth_data": {"public_key": public_key, "org.example.marker": f"backup-{tag}"},
            },
        ),
        "backup version",
    )["version"]
    n["backup_auth_data"] = f"backup-{tag}"
    session_data = encrypt_for_backup(public_key, {"marker": tag})
    ok(
        client.put(
            f"room_keys/keys/{q(room_a)}/{q(f'session-{tag}')}",
            {
                "first_message_index": 0,
                "forwarded_count": 0,
                "is_verified": False,
                "session_data": session_data,
            },
            params={"version": str(version)},
        ),
        "backup session",
    )
    n["backup_session_id"] = f"session-{tag}"
    n["backup_ciphertext"] = session_data["ciphertext"]

    # To-device: to bob (who does not sync, so it waits in his inbox), and from bob to
    # them (waiting in theirs), both with transaction IDs.
    ok(
        client.put(
            f"sendToDevice/org.example.erasable/td{tag}",
            {"messages": {bob_id: {bob.device_id: {"secret": f"to-device-to-bob-{tag}"}}}},
        ),
        "to-device to bob",
    )
    n["to_device_sent"] = f"to-device-to-bob-{tag}"
    n["to_device_txn"] = f"td{tag}"
    ok(
        bob.client.put(
            f"sendToDevice/org.example.erasable/tdb{secrets.token_hex(4)}",
            {"messages": {user_id: {"*": {"secret": f"to-device-from-bob-{tag}"}}}},
        ),
        "to-device from bob",
    )
    n["to_device_received"] = f"to-device-from-bob-{tag}"

    # Reports they made: an event, a room, a user.
    ok(
        client.post(
            f"rooms/{q(room_a)}/report/{q(bob.message_event)}",
            {"reason": f"report-event-{tag}", "score": -50},
        ),
        "event report",
    )
    ok(client.post(f"rooms/{q(room_b)}/report", {"reason": f"report-room-{tag}"}), "room report")
    ok(client.post(f"users/{q(bob_id)}/report", {"reason": f"report-user-{tag}"}), "user report")
    for kind in ("event", "room", "user"):
        n[f"report:{kind}"] = f"report-{kind}-{tag}"

    # What an admin sets on an account: an e-mail address, an external ID, a rate-limit
    # override, permission to replace cross-signing keys without UIA.
    email = f"erasable-{tag}@example.org"
    body = ok(
        admin.put(
            f"{A}/v2/users/{q(user_id)}",
            {
                "threepids": [{"medium": "email", "address": email}],
                "external_ids": [{"auth_provider": "oidc", "external_id": f"sub-{tag}"}],
            },
        ),
        "admin sets e-mail and external ID",
    )
    assert [t["address"] for t in body["threepids"]] == [email], body
    n["email"] = email
    n["external_id"] = f"sub-{tag}"
    ok(admin.post(f"{A}/v1/users/{q(user_id)}/override_ratelimit", {}), "ratelimit override")
    ok(
        admin.post(f"{A}/v1/users/{q(user_id)}/_allow_cross_signing_replacement_without_uia", {}),
        "cross-signing replacement allowance",
    )

    # The user directory finds them (by their display name).
    found = ok(bob.client.post("user_directory/search", {"search_term": tag}), "directory")
    assert user_id in {r["user_id"] for r in found["results"]}, found

    # IP records are flushed every 200 ms; wait until they are stored.
    def ips_stored() -> bool:
        rows = db_rows(server, "SELECT COUNT(*) FROM client_ips WHERE user_id = ?", (user_id,))
        return int(rows[0][0]) > 0

    wait_for(ips_stored, "client IP records")
    return me


def make_bob(server: ServerProcess) -> Bob:
    client = new_user(server)
    assert client.user_id and client.device_id
    tag = secrets.token_hex(6)
    keys, _ = device_keys(client)
    ok(client.post("keys/upload", {"device_keys": keys}), "bob's device keys")
    cs, cs_keys = cross_signing(client.user_id)
    ok(client.post("keys/device_signing/upload", cs), "bob's cross-signing")
    account_data = {"mine": f"bob-data-{tag}"}
    ok(
        client.put(f"user/{q(client.user_id)}/account_data/org.example.bob", account_data),
        "bob's account data",
    )
    media_bytes = f"bob media {tag} ".encode() + os.urandom(500)
    mxc = upload(client, media_bytes, "application/octet-stream", f"bob-{tag}.bin")
    return Bob(
        client=client,
        tag=tag,
        account_data=account_data,
        message=f"bob message {tag}",
        message_event="",
        media_mxc=mxc,
        media_bytes=media_bytes,
        device_id=client.device_id,
        user_signing_key=cs_keys["user_signing"],
    )


# The scan


@dataclass
class ScanResult:
    where: dict[str, set[str]] = field(default_factory=dict)  # place -> needle names
    rows: dict[str, int] = field(default_factory=dict)  # place -> rows (files) matching
    example: dict[str, str] = field(default_factory=dict)  # place -> text around a match

    def add(self, place: str, names: set[str], text: str, needles: dict[str, str]) -> None:
        self.where.setdefault(place, set()).update(names)
        self.rows[place] = self.rows.get(place, 0) + 1
        if place not in self.example:
            # Show the first match of what is not merely the user ID, if there is one.
            shown = [n for n in names if n in needles and needles[n] in text]
            shown = [n for n in shown if n not in ("user_id", "tag")] or shown
            first = min((text.find(needles[n]) for n in shown), default=0)
            snippet = text[max(0, first - 100) : first + 100]
            self.example[place] = "".join(c if c.isprintable() else "." for c in snippet)

    def by_needle(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for place, names in self.where.items():
            for name in names:
                found.setdefault(name, set()).add(place)
        return found


def scan(server: ServerProcess, me: Erasable) -> ScanResult:
    """Every row of every table and every media file holding any needle of the user's."""
    lowered = {name: text.lower() for name, text in me.needles.items() if text}
    result = ScanResult()
    user_id = me.user_id.lower()
    for table, text in database_rows(server):
        text = text.lower()
        if me.tag not in text and not any(v in text for v in lowered.values()):
            continue
        # What is there besides the user ID (the user ID itself contains the localpart
        # and the tag, which would otherwise always be reported with it).
        rest = text.replace(user_id, "")
        found = {name for name, v in lowered.items() if v in rest}
        if table in ALLOWED_USER_ID_TABLES and not found:
            result.add(f"(allowed) {table}", {"user_id"}, text, lowered)
            continue
        if user_id in text:
            found.add("user_id")
        if found - {"tag", "user_id"}:
            found.discard("tag")
        result.add(table, found, text, lowered)
    for path, data in store_files(server).items():
        haystack = (path + "\x00").encode() + data
        lower = haystack.lower()
        found = {name for name, v in lowered.items() if v.encode() in lower}
        found |= {f"blob:{name}" for name, blob in me.blobs.items() if blob and blob in data}
        if found:
            result.add(f"media_store/{path}", found, lower.decode("latin-1"), lowered)
    return result


def check_stored_before(server: ServerProcess, me: Erasable) -> None:
    """Every needle that should be stored is found before erasure (the set-up worked)."""
    by_needle = scan(server, me).by_needle()
    missing = sorted(
        name for name in me.needles if name not in me.unstored and name not in by_needle
    )
    missing += sorted(f"blob:{b}" for b in me.blobs if f"blob:{b}" not in by_needle)
    assert not missing, f"set-up did not store: {missing}"


# After erasure, over HTTP


def http_problems(server: ServerProcess, me: Erasable, bob: Bob) -> list[str]:
    problems: list[str] = []
    content = [me.needles[name] for name in sorted(me.content)]
    bob_id = str(bob.client.user_id)

    for session in me.sessions:
        resp = session.get("account/whoami")
        if resp.status != 401:
            problems.append(f"access token of {session.device_id} still answers: {resp}")
    login = Client(server).login(me.user_id)
    if login.status not in (401, 403):
        problems.append(f"login still possible: {login}")

    profile = bob.client.get(f"profile/{q(me.user_id)}")
    if profile.status == 200 and profile.body:
        problems.append(f"profile still served: {profile.body}")
    elif profile.status not in (200, 404):
        problems.append(f"profile answered {profile}")
    found = ok(bob.client.post("user_directory/search", {"search_term": me.tag}), "directory")
    if found["results"]:
        problems.append(f"user directory still finds them: {found['results']}")
    keys = ok(bob.client.post("keys/query", {"device_keys": {me.user_id: []}}), "keys query")
    if keys.get("device_keys", {}).get(me.user_id):
        problems.append(f"device keys still served: {list(keys['device_keys'][me.user_id])}")
    if me.user_id in keys.get("master_keys", {}):
        problems.append("cross-signing master key still served")
    claimed = ok(
        bob.client.post(
            "keys/claim", {"one_time_keys": {me.user_id: {me.needles["device:main"]: OTK}}}
        ),
        "keys claim",
    )
    if claimed["one_time_keys"].get(me.user_id):
        problems.append(f"one-time/fallback key still claimable: {claimed['one_time_keys']}")
    for name in ("file", "avatar"):
        mxc = me.media[name]
        resp = bob.client.get(
            f"{AUTHED_MEDIA}/download/{q(server.server_name)}/{q(media_id_of(mxc))}"
        )
        if resp.status != 404:
            problems.append(f"{name} media still served: {resp.status}")

    # Membership: they left every room, the unanswered invite included.
    for label, room_id in me.rooms.items():
        resp = bob.client.get(f"rooms/{q(room_id)}/state/m.room.member/{q(me.user_id)}")
        membership = resp.body.get("membership") if resp.status == 200 else resp
        if membership != "leave":
            problems.append(f"membership in room {label} is {membership!r}, not leave")

    # Their events are served redacted: to bob (in the room at the time) and to carol
    # (joined after the erasure), in /messages and one by one.
    carol = new_user(server)
    join(carol, me.rooms["a"])
    join(carol, me.rooms["b"])
    for viewer_name, viewer in (("bob", bob.client), ("newcomer", carol)):
        for label in ("a", "b"):
            room_id = me.rooms[label]
            resp = ok(
                viewer.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "100"}),
                "messages",
            )
            events = resp["chunk"]
            theirs = [e for e in events if e.get("sender") == me.user_id]
            if not theirs:
                problems.append(f"{viewer_name} sees none of their events in room {label}")
            for event in theirs:
                if event["type"] in ("m.room.message", "m.reaction") and event["content"] != {}:
                    problems.append(
                        f"{viewer_name}'s /messages in room {label}: {event['type']} "
                        f"{event['event_id']} has content {event['content']}"
                    )
            text = json.dumps(resp)
            leaked = [c for c in content if c in text]
            if leaked:
                problems.append(f"{viewer_name}'s /messages in room {label} contains {leaked}")
        for label, event_id in me.event_ids.items():
            room_id = me.rooms["b"] if label == "message:2" else me.rooms["a"]
            resp = viewer.get(f"rooms/{q(room_id)}/event/{q(event_id)}")
            if resp.status == 200 and resp.body.get("content") != {}:
                problems.append(
                    f"{viewer_name}'s GET /event of {label}: content {resp.body.get('content')}"
                )
            elif resp.status not in (200, 404):
                problems.append(f"{viewer_name}'s GET /event of {label}: {resp}")

    # Relations index: their edit and reaction no longer relate to anything (a redacted
    # event has no m.relates_to).
    parents = {"bob's message": bob.message_event, "their message": me.event_ids["message:0"]}
    for label, parent in parents.items():
        resp = bob.client.get(f"/_matrix/client/v1/rooms/{q(me.rooms['a'])}/relations/{q(parent)}")
        if resp.status != 200:
            problems.append(f"/relations of {label}: {resp}")
            continue
        listed = [e["event_id"] for e in resp.body["chunk"] if e.get("sender") == me.user_id]
        if listed:
            problems.append(f"/relations of {label} still lists their events {listed}")

    # bob's own things survive.
    if bob.client.get("account/whoami").status != 200:
        problems.append("bob's session died")
    resp = bob.client.get(f"user/{q(bob_id)}/account_data/org.example.bob")
    if resp.status != 200 or resp.body != bob.account_data:
        problems.append(f"bob's account data lost: {resp}")
    keys = ok(bob.client.post("keys/query", {"device_keys": {bob_id: []}}), "bob keys")
    if bob.device_id not in keys["device_keys"].get(bob_id, {}):
        problems.append("bob's device keys lost")
    if bob_id not in keys.get("master_keys", {}):
        problems.append("bob's master key lost")
    resp = bob.client.get(f"rooms/{q(me.rooms['a'])}/event/{q(bob.message_event)}")
    if resp.status != 200 or resp.body["content"].get("body") != bob.message:
        problems.append(f"bob's message lost: {resp}")
    resp = bob.client.get(
        f"{AUTHED_MEDIA}/download/{q(server.server_name)}/{q(media_id_of(bob.media_mxc))}"
    )
    if resp.status != 200 or resp.body != bob.media_bytes:
        problems.append(f"bob's media lost: {resp.status}")
    return problems


def database_problems(server: ServerProcess, me: Erasable) -> list[str]:
    problems: list[str] = []
    rows = db_rows(
        server,
        "SELECT password_hash, deactivated, erased FROM users WHERE user_id = ?",
        (me.user_id,),
    )
    if rows != [(None, 1, 1)]:
        problems.append(f"users row is {rows}, not (NULL password, deactivated, erased)")
    result = scan(server, me)
    for place in sorted(result.where):
        if place.startswith("(allowed) "):
            continue
        names = ", ".join(sorted(result.where[place]))
        problems.append(
            f"{place} ({result.rows[place]} rows): {names}\n      e.g. {result.example[place]!r}"
        )
    return problems


# The tests


def run_erasure(server: ServerProcess, erase: Callable[[Erasable, Client], None]) -> None:
    admin = shared_secret_register(server, admin=True)
    bob = make_bob(server)
    me = make_everything_user(server, admin, bob)
    check_stored_before(server, me)

    erase(me, admin)
    # Let anything buffered (IP records, flushed every 200 ms) reach the database.
    time.sleep(1.5)

    problems = database_problems(server, me)
    http = http_problems(server, me, bob)
    report = "\n".join(
        ["leftovers in the database and media store (place: what):"]
        + [f"  {p}" for p in problems]
        + ["over HTTP:"]
        + [f"  {p}" for p in http]
    )
    assert not problems and not http, report


def erase_by_client(me: Erasable, admin: Client) -> None:
    uia(me.client, "POST", "account/deactivate", {"erase": True}, "deactivate")


def erase_by_admin(me: Erasable, admin: Client) -> None:
    ok(admin.post(f"{A}/v1/deactivate/{q(me.user_id)}", {"erase": True}), "admin deactivate")


def test_erasure_through_client_api_leaves_nothing(
    server_factory: Callable[..., ServerProcess],
) -> None:
    run_erasure(server_factory(), erase_by_client)


def test_erasure_through_admin_api_leaves_nothing(
    server_factory: Callable[..., ServerProcess],
) -> None:
    run_erasure(server_factory(), erase_by_admin)
