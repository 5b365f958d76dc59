"""Data export: a user's own copy (client API), an admin's (admin API, audited, only for
the admin who asked), and the command line; each holds everything the policy lists and
nothing of anyone else's private data."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import time
import zipfile
from typing import Any

from tests.harness import Client, ServerProcess, create_room, join, new_user, q
from tests.test_key_backup import create_backup, key_data, keys_path
from tests.test_media import upload
from tests.test_push import pusher_body
from tests.test_rooms_basic import send
from tests.test_shared_secret_registration import shared_secret_register

NS = "/_matrix/client/unstable/org.homeserver"
A = "/_synapse/admin"


def user_with_everything(server: ServerProcess, tag: str) -> tuple[Client, Client, dict[str, Any]]:
    """Alice uses every feature; Bob shares a room with her and keeps private data."""
    alice, bob, carol = new_user(server), new_user(server), new_user(server)
    avatar_bytes = b"avatar-" + tag.encode() + os.urandom(64)
    avatar = upload(alice, avatar_bytes, "image/png", "me.png")
    assert (
        alice.put(f"profile/{q(alice.user_id or '')}/avatar_url", {"avatar_url": avatar}).status
        == 200
    )
    assert alice.put(f"profile/{q(alice.user_id or '')}/displayname",
                     {"displayname": f"Alice {tag}"}).status == 200  # fmt: skip
    file_bytes = b"file-" + tag.encode() + os.urandom(128)
    file_mxc = upload(alice, file_bytes, "application/octet-stream", "notes.bin")
    assert alice.put(f"user/{q(alice.user_id or '')}/account_data/org.example.setting",
                     {"value": f"setting-{tag}"}).status == 200  # fmt: skip
    assert alice.put("pushrules/global/content/export", {"pattern": f"word{tag}",
                     "actions": ["notify"]}).status == 200  # fmt: skip
    assert alice.post("pushers/set", pusher_body("https://push.example.org/_matrix/push/v1/notify",
                      pushkey=f"pk-{tag}")).status == 200  # fmt: skip
    shared = create_room(alice, name=f"Shared {tag}")
    join(bob, shared)
    mine = send(alice, shared, f"alice says {tag}")
    theirs = send(bob, shared, f"bob replies {tag}")
    ciphertext = f"CIPHERTEXT{tag}"
    encrypted = alice.put(f"rooms/{q(shared)}/send/m.room.encrypted/e1", {
        "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": ciphertext,
        "sender_key": "k", "device_id": alice.device_id, "session_id": "s"})  # fmt: skip
    assert encrypted.status == 200
    left = create_room(bob, name=f"Left {tag}")
    join(alice, left)
    send(alice, left, f"before leaving {tag}")
    assert alice.post(f"rooms/{q(left)}/leave", {}).status == 200
    send(bob, left, f"after alice left {tag}")  # not hers to see
    private = create_room(bob, preset="private_chat", invite=[carol.user_id or ""])
    join(carol, private)
    send(bob, private, f"bob private {tag}")
    assert bob.put(f"user/{q(bob.user_id or '')}/account_data/org.example.setting",
                   {"value": f"bob-setting-{tag}"}).status == 200  # fmt: skip
    version = create_backup(alice)
    session = key_data(tag=tag)
    backed = alice.put(keys_path(shared, "session1"), session, params={"version": version})
    assert backed.status == 200, backed
    alice.get("account/whoami")  # a sighting of this session's address
    facts = {
        "avatar": avatar_bytes,
        "file": file_bytes,
        "file_id": file_mxc.rsplit("/", 1)[1],
        "shared": shared,
        "left": left,
        "mine": mine,
        "theirs": theirs,
        "ciphertext": ciphertext,
        "session_data": session["session_data"],
    }
    return alice, bob, facts


def check_archive(data: bytes, alice: Client, facts: dict[str, Any], tag: str) -> None:
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = set(archive.namelist())
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["user_id"] == alice.user_id and manifest["format"].endswith(".export.v1")
    assert set(manifest["files"]) <= names and "README.txt" in names
    assert archive.read("profile/avatar") == facts["avatar"]
    assert json.loads(archive.read("profile.json"))["displayname"] == f"Alice {tag}"
    devices = json.loads(archive.read("devices.json"))
    device = next(d for d in devices if d["device_id"] == alice.device_id)
    assert any(s["ip"] == "127.0.0.1" for s in device["seen_from"])
    account_data = json.loads(archive.read("account_data.json"))
    assert account_data["global"]["org.example.setting"] == {"value": f"setting-{tag}"}
    push = json.loads(archive.read("push.json"))
    assert [r["pattern"] for r in push["rules"]["content"]] == [f"word{tag}"]
    assert [p["pushkey"] for p in push["pushers"]] == [f"pk-{tag}"]
    assert archive.read(f"media/{facts['file_id']}") == facts["file"]
    index = json.loads(archive.read("media/index.json"))
    assert {m["media_id"] for m in index} == {facts["file_id"], facts["avatar_id"]}
    backup = json.loads(archive.read("key_backup.json"))
    assert backup["rooms"][facts["shared"]]["sessions"]["session1"]["session_data"] == (
        facts["session_data"])  # fmt: skip
    rooms = {}
    for name in names:
        if name.endswith("/room.json"):
            room = json.loads(archive.read(name))
            lines = archive.read(name.replace("room.json", "events.jsonl")).decode().splitlines()
            rooms[room["room_id"]] = [json.loads(line) for line in lines]
    assert set(rooms) == {facts["shared"], facts["left"]}
    shared_ids = {e["event_id"] for e in rooms[facts["shared"]]}
    assert {facts["mine"], facts["theirs"]} <= shared_ids
    assert any(
        e["content"].get("ciphertext") == facts["ciphertext"] for e in rooms[facts["shared"]]
    )
    left_bodies = [e["content"].get("body") for e in rooms[facts["left"]]]
    assert f"before leaving {tag}" in left_bodies and f"after alice left {tag}" not in left_bodies
    everything = b"".join(archive.read(n) for n in names)
    for private in (f"bob private {tag}", f"bob-setting-{tag}", f"after alice left {tag}"):
        assert private.encode() not in everything, private


def wait_done(client: Client, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = client.get(path)
        assert status.status == 200, status
        if status.body["status"] in ("complete", "failed"):
            return dict(status.body)
        time.sleep(0.1)
    raise AssertionError("export did not finish")


def test_a_user_exports_their_own_data(server: ServerProcess) -> None:
    tag = secrets.token_hex(4)
    alice, bob, facts = user_with_everything(server, tag)
    facts["avatar_id"] = None
    started = alice.post(f"{NS}/export", {})
    assert started.status == 200, started
    export_id = started.body["export_id"]
    done = wait_done(alice, f"{NS}/export/{export_id}")
    assert done["status"] == "complete" and done["size"] > 0, done
    # Only its owner sees it, even knowing its ID.
    assert bob.get(f"{NS}/export/{export_id}").status == 404
    assert bob.get(f"{NS}/export/{export_id}/download").status == 404
    download = alice.get(f"{NS}/export/{export_id}/download")
    assert download.status == 200 and download.headers["Content-Type"] == "application/zip"
    profile_avatar = alice.get(f"profile/{q(alice.user_id or '')}").body["avatar_url"]
    facts["avatar_id"] = profile_avatar.rsplit("/", 1)[1]
    check_archive(download.body, alice, facts, tag)
    assert alice.get(f"{NS}/export/nope").status == 404


def test_an_admin_exports_a_user_audited_and_only_for_themself(server: ServerProcess) -> None:
    tag = secrets.token_hex(4)
    alice, _, facts = user_with_everything(server, tag)
    admin = shared_secret_register(server, admin=True)
    other_admin = shared_secret_register(server, admin=True)
    started = admin.post(f"{A}/v1/users/{q(alice.user_id or '')}/export", {})
    assert started.status == 200, started
    base = f"{A}/v1/users/{q(alice.user_id or '')}/export/{started.body['export_id']}"
    assert wait_done(admin, base)["status"] == "complete"
    assert other_admin.get(base + "/download").status == 404
    assert alice.get(base + "/download").status == 403  # not an admin at all
    download = admin.get(base + "/download")
    assert download.status == 200
    facts["avatar_id"] = alice.get(f"profile/{q(alice.user_id or '')}").body["avatar_url"].rsplit(
        "/", 1)[1]  # fmt: skip
    check_archive(download.body, alice, facts, tag)
    audit = admin.get(f"{A}/v1/audit_log", params={"target_user": alice.user_id or ""}).body
    actions = [e["action"] for e in audit["entries"]]
    assert "user.export" in actions and "user.export.download" in actions
    assert admin.post(f"{A}/v1/users/{q('@nobody:' + server.server_name)}/export", {}).status == 404


def test_exports_are_rate_limited(server_factory: Any) -> None:
    server = server_factory({"rate_limiting": {"enabled": True,
                             "data_export": {"per_second": 0.0001, "burst_count": 1}}})  # fmt: skip
    alice = new_user(server)
    assert alice.post(f"{NS}/export", {}).status == 200
    limited = alice.post(f"{NS}/export", {})
    assert limited.status == 429 and limited.body["errcode"] == "M_LIMIT_EXCEEDED", limited


def test_the_command_line_export(server: ServerProcess, tmp_path: Any) -> None:
    tag = secrets.token_hex(4)
    alice, _, facts = user_with_everything(server, tag)
    facts["avatar_id"] = alice.get(f"profile/{q(alice.user_id or '')}").body["avatar_url"].rsplit(
        "/", 1)[1]  # fmt: skip
    time.sleep(0.5)  # the server writes client IP sightings in batches
    done = subprocess.run(
        [sys.executable, "-m", "scripts.export_user", "-c", server.config_path,
         alice.user_id or "", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = done.stdout.strip().splitlines()[-1]
    with open(path, "rb") as f:
        check_archive(f.read(), alice, facts, tag)
    missing = subprocess.run(
        [sys.executable, "-m", "scripts.export_user", "-c", server.config_path,
         "@nobody:" + server.server_name, str(tmp_path)],
        capture_output=True, text=True, timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )  # fmt: skip
    assert missing.returncode == 1 and "no user" in missing.stderr
