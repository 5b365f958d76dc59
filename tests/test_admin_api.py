"""The admin API over real HTTP, in Synapse's paths and shapes: users, devices, rooms,
reports, statistics, account states (locked, suspended, shadow-banned), and the audit log
of every admin look at a user's data."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from tests.harness import Client, ServerProcess, create_room, db_execute, db_rows, join, new_user, q
from tests.test_rooms_basic import send
from tests.test_shared_secret_registration import shared_secret_register

A = "/_synapse/admin"


@pytest.fixture
def admin(server: ServerProcess) -> Client:
    return shared_secret_register(server, admin=True)


def test_non_admins_are_refused_and_version_is_public(alice: Client, client: Client) -> None:
    for path in (f"{A}/v2/users", f"{A}/v1/rooms", f"{A}/v1/audit_log", f"{A}/v1/event_reports"):
        resp = alice.get(path)
        assert resp.status == 403 and resp.body["errcode"] == "M_FORBIDDEN", path
    version = client.get(f"{A}/v1/server_version", token=False)
    assert version.status == 200 and version.body["server_version"].startswith("homeserver")


def test_user_listing_paging_filters_and_details(admin: Client, server: ServerProcess) -> None:
    tag = secrets.token_hex(3)
    users = [new_user(server, f"list{tag}{i}") for i in range(5)]
    first = admin.get(f"{A}/v2/users", params={"name": f"list{tag}", "limit": "2"})
    assert first.status == 200, first
    assert first.body["total"] == 5 and len(first.body["users"]) == 2
    assert first.body["next_token"] == "2"
    names = [u["name"] for u in first.body["users"]]
    assert names == sorted(names)
    rest = admin.get(f"{A}/v2/users", params={"name": f"list{tag}", "from": "2", "limit": "10"})
    assert len(rest.body["users"]) == 3 and "next_token" not in rest.body
    entry = first.body["users"][0]
    for key in ("name", "admin", "deactivated", "displayname", "creation_ts", "user_type",
                "is_guest", "locked", "shadow_banned", "avatar_url"):  # fmt: skip
        assert key in entry, key
    backwards = admin.get(f"{A}/v2/users", params={"name": f"list{tag}", "dir": "b"})
    assert [u["name"] for u in backwards.body["users"]] == sorted(
        (u.user_id for u in users), reverse=True
    )
    # Deactivated users appear in v2 only when asked, in v3 by the filter.
    gone = users[0].user_id or ""
    assert admin.post(f"{A}/v1/deactivate/{q(gone)}", {"erase": False}).status == 200
    v2 = admin.get(f"{A}/v2/users", params={"name": f"list{tag}"}).body
    assert gone not in [u["name"] for u in v2["users"]]
    v2_all = admin.get(f"{A}/v2/users", params={"name": f"list{tag}", "deactivated": "true"})
    assert gone in [u["name"] for u in v2_all.body["users"]]
    v3 = admin.get(f"{A}/v3/users", params={"name": f"list{tag}", "deactivated": "true"})
    assert [u["name"] for u in v3.body["users"]] == [gone]
    details = admin.get(f"{A}/v2/users/{q(users[1].user_id or '')}").body
    assert details["name"] == users[1].user_id and details["threepids"] == []
    assert admin.get(f"{A}/v2/users/{q('@nobody:' + server.server_name)}").status == 404
    assert admin.get(f"{A}/v2/users", params={"order_by": "bogus"}).status == 400
    assert admin.get(f"{A}/v2/users", params={"from": "-1"}).status == 400


def test_create_modify_and_manage_a_user(admin: Client, server: ServerProcess) -> None:
    user_id = f"@made{secrets.token_hex(3)}:{server.server_name}"
    created = admin.put(f"{A}/v2/users/{q(user_id)}", {"password": "a good long password",
                        "displayname": "Made By Admin", "admin": False})  # fmt: skip
    assert created.status == 201, created
    assert created.body["displayname"] == "Made By Admin"
    user = Client(server)
    assert user.login(user_id, "a good long password").status == 200
    # A bad field, or a password the policy refuses, changes nothing (no half-made user).
    other_id = f"@half{secrets.token_hex(3)}:{server.server_name}"
    bad_avatar = admin.put(f"{A}/v2/users/{q(other_id)}", {"password": "a good long password",
                           "avatar_url": 5})  # fmt: skip
    assert bad_avatar.status == 400, bad_avatar
    weak = admin.put(f"{A}/v2/users/{q(other_id)}", {"password": "x"})
    assert weak.status == 400 and weak.body["errcode"] == "M_WEAK_PASSWORD", weak
    assert admin.get(f"{A}/v2/users/{q(other_id)}").status == 404
    modified = admin.put(f"{A}/v2/users/{q(user_id)}", {"displayname": "Renamed"})
    assert modified.status == 200 and modified.body["displayname"] == "Renamed"
    taken = admin.get(f"{A}/v1/username_available", params={"username": user_id[1:].split(":")[0]})
    assert taken.status == 400 and taken.body["errcode"] == "M_USER_IN_USE"
    assert admin.get(f"{A}/v1/username_available", params={"username": "free" +
                     secrets.token_hex(4)}).body == {"available": True}  # fmt: skip
    assert admin.put(f"{A}/v1/users/{q(user_id)}/admin", {"admin": True}).status == 200
    assert admin.get(f"{A}/v1/users/{q(user_id)}/admin").body == {"admin": True}
    new_password = {"new_password": "another long password", "logout_devices": True}
    reset = admin.post(f"{A}/v1/reset_password/{q(user_id)}", new_password)
    assert reset.status == 200
    assert user.get("account/whoami").status == 401  # logged out
    assert user.login(user_id, "another long password").status == 200
    devices = admin.get(f"{A}/v2/users/{q(user_id)}/devices").body
    assert devices["total"] == 1
    device_id = devices["devices"][0]["device_id"]
    assert admin.put(f"{A}/v2/users/{q(user_id)}/devices/{device_id}",
                     {"display_name": "named by admin"}).status == 200  # fmt: skip
    one = admin.get(f"{A}/v2/users/{q(user_id)}/devices/{device_id}").body
    assert one["display_name"] == "named by admin"
    whois = admin.get(f"{A}/v1/whois/{q(user_id)}").body
    assert device_id in whois["devices"]
    assert admin.post(f"{A}/v2/users/{q(user_id)}/delete_devices",
                      {"devices": [device_id]}).status == 200  # fmt: skip
    assert user.get("account/whoami").status == 401
    made = admin.post(f"{A}/v2/users/{q(user_id)}/devices", {"device_id": "ADMINMADE"})
    assert made.status == 201, made
    assert admin.get(f"{A}/v2/users/{q(user_id)}/devices/ADMINMADE").status == 200
    assert admin.post(f"{A}/v2/users/{q(user_id)}/devices", {}).status == 400
    # Addresses set by the admin, found again by address; one user's address is not another's.
    address = f"{user_id[1:].split(':')[0]}@example.org"
    mail = [{"medium": "email", "address": address.upper()}]
    with_mail = admin.put(f"{A}/v2/users/{q(user_id)}", {"threepids": mail})
    assert [t["address"] for t in with_mail.body["threepids"]] == [address], with_mail
    found = admin.get(f"{A}/v1/threepid/email/users/{q(address)}").body
    assert found["user_id"] == user_id
    other = new_user(server)
    clash = admin.put(f"{A}/v2/users/{q(other.user_id or '')}",
                      {"threepids": [{"medium": "email", "address": address}]})  # fmt: skip
    assert clash.status == 400 and clash.body["errcode"] == "M_THREEPID_IN_USE"
    assert admin.put(f"{A}/v2/users/{q(user_id)}", {"threepids": "x"}).status == 400
    # Deactivated, then reactivated with a new password.
    assert admin.put(f"{A}/v2/users/{q(user_id)}", {"deactivated": True}).status == 200
    assert user.login(user_id, "another long password").status == 403
    refused = admin.put(f"{A}/v2/users/{q(user_id)}", {"deactivated": False})
    assert refused.status == 400, refused
    back = admin.put(f"{A}/v2/users/{q(user_id)}", {"deactivated": False,
                     "password": "a third long password"})  # fmt: skip
    assert back.status == 200 and back.body["deactivated"] is False, back
    assert user.login(user_id, "a third long password").status == 200


def test_user_rooms_data_and_media(admin: Client, alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    alice.put(f"user/{q(alice.user_id or '')}/account_data/org.example.secret", {"x": 1})
    joined = admin.get(f"{A}/v1/users/{q(alice.user_id or '')}/joined_rooms").body
    assert room_id in joined["joined_rooms"] and joined["total"] >= 1
    memberships = admin.get(f"{A}/v1/users/{q(bob.user_id or '')}/memberships").body
    assert memberships["memberships"][room_id] == "join"
    assert memberships["total"] == len(memberships["memberships"])
    data = admin.get(f"{A}/v1/users/{q(alice.user_id or '')}/accountdata").body
    assert data["account_data"]["global"]["org.example.secret"] == {"x": 1}
    assert admin.get(f"{A}/v1/users/{q(alice.user_id or '')}/pushers").body["total"] == 0
    uploaded = alice.request("POST", "/_matrix/media/v3/upload", raw=b"hello",
                             headers={"Content-Type": "text/plain"})  # fmt: skip
    media_id = uploaded.body["content_uri"].rsplit("/", 1)[1]
    listing = admin.get(f"{A}/v1/users/{q(alice.user_id or '')}/media").body
    assert [m["media_id"] for m in listing["media"]] == [media_id]
    info = admin.get(f"{A}/v1/media/{alice.server.server_name}/{media_id}").body["media_info"]
    assert info["media_length"] == 5 and info["user_id"] == alice.user_id
    stats = admin.get(f"{A}/v1/statistics/users/media").body
    assert alice.user_id in [u["user_id"] for u in stats["users"]]
    sizes = [u["media_length"] for u in stats["users"]]
    assert sizes == sorted(sizes, reverse=True)
    localpart = (alice.user_id or "")[1:].split(":")[0]
    mine = admin.get(f"{A}/v1/statistics/users/media",
                     params={"search_term": localpart, "order_by": "user_id"}).body  # fmt: skip
    assert [u["user_id"] for u in mine["users"]] == [alice.user_id] and mine["total"] == 1
    assert mine["users"][0]["media_count"] == 1 and mine["users"][0]["media_length"] == 5
    profile = alice.get(f"profile/{q(alice.user_id or '')}").body
    assert mine["users"][0]["displayname"] == profile.get("displayname")
    later = admin.get(f"{A}/v1/statistics/users/media", params={"search_term": localpart,
                      "from_ts": str(10**15)}).body  # fmt: skip
    assert later["total"] == 0
    bad = admin.get(f"{A}/v1/statistics/users/media", params={"from_ts": "yesterday"})
    assert bad.status == 400


def test_rooms_listing_details_and_reads(admin: Client, alice: Client, bob: Client) -> None:
    tag = secrets.token_hex(3)
    room_id = create_room(alice, name=f"Admin view {tag}", preset="public_chat")
    join(bob, room_id)
    hi = alice.put(f"rooms/{q(room_id)}/send/m.room.message/m1", {"msgtype": "m.text",
                   "body": "hi"}).body["event_id"]  # fmt: skip
    listing = admin.get(f"{A}/v1/rooms", params={"search_term": tag}).body
    assert listing["total_rooms"] == 1
    entry = listing["rooms"][0]
    assert entry["room_id"] == room_id and entry["joined_members"] == 2
    for key in ("name", "canonical_alias", "joined_local_members", "version", "creator",
                "encryption", "federatable", "public", "join_rules", "guest_access",
                "history_visibility", "state_events", "room_type"):  # fmt: skip
        assert key in entry, key
    details = admin.get(f"{A}/v1/rooms/{q(room_id)}").body
    assert details["name"] == f"Admin view {tag}" and details["joined_local_devices"] >= 2
    members = admin.get(f"{A}/v1/rooms/{q(room_id)}/members").body
    assert set(members["members"]) == {alice.user_id, bob.user_id}
    state = admin.get(f"{A}/v1/rooms/{q(room_id)}/state").body["state"]
    assert any(e["type"] == "m.room.create" for e in state)
    typed = admin.get(f"{A}/v1/rooms/{q(room_id)}/state", params={"type": "m.room.member"})
    assert sorted(e["state_key"] for e in typed.body["state"]) == sorted(
        [alice.user_id, bob.user_id]
    )
    messages = admin.get(f"{A}/v1/rooms/{q(room_id)}/messages", params={"dir": "b"}).body
    assert "hi" in [e["content"].get("body") for e in messages["chunk"]]
    only_members = admin.get(f"{A}/v1/rooms/{q(room_id)}/messages", params={
        "dir": "b", "filter": json.dumps({"types": ["m.room.member"]})}).body  # fmt: skip
    assert only_members["chunk"] and {e["type"] for e in only_members["chunk"]} == {"m.room.member"}
    first_page = admin.get(f"{A}/v1/rooms/{q(room_id)}/messages", params={"limit": "2"}).body
    assert first_page["chunk"][0]["type"] == "m.room.create" and "end" in first_page
    extremities = admin.get(f"{A}/v1/rooms/{q(room_id)}/forward_extremities").body
    assert extremities["count"] == 1
    # The admin is not in the room, yet reads around an event and finds one by time.
    context = admin.get(f"{A}/v1/rooms/{q(room_id)}/context/{q(hi)}", params={"limit": "4"})
    assert context.status == 200, context
    assert context.body["event"]["content"]["body"] == "hi"
    assert any(e["type"] == "m.room.member" for e in context.body["events_before"])
    assert admin.get(f"{A}/v1/rooms/{q(room_id)}/context/{q('$nope')}").status == 404
    sent_ts = context.body["event"]["origin_server_ts"]
    found = admin.get(f"{A}/v1/rooms/{q(room_id)}/timestamp_to_event",
                      params={"ts": str(sent_ts), "dir": "f"})  # fmt: skip
    assert found.body == {"event_id": hi, "origin_server_ts": sent_ts}, found
    bad_ts = admin.get(f"{A}/v1/rooms/{q(room_id)}/timestamp_to_event", params={"ts": "x"})
    assert bad_ts.status == 400
    assert alice.get(f"{A}/v1/rooms/{q(room_id)}/context/{q(hi)}").status == 403
    assert admin.put(f"{A}/v1/rooms/{q(room_id)}/block", {"block": True}).body == {"block": True}
    assert admin.get(f"{A}/v1/rooms/{q(room_id)}/block").body["block"] is True
    assert admin.get(f"{A}/v1/rooms/{q('!nope:x')}").status == 404
    by_members = admin.get(f"{A}/v1/rooms", params={"order_by": "joined_members"}).body
    counts = [r["joined_members"] for r in by_members["rooms"]]
    assert counts == sorted(counts, reverse=True)


def test_moderation_flow_and_account_states(
    admin: Client, alice: Client, bob: Client, server: ServerProcess
) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    bad = bob.put(f"rooms/{q(room_id)}/send/m.room.message/bad", {"msgtype": "m.text",
                  "body": "something awful"}).body["event_id"]  # fmt: skip
    assert alice.post(f"rooms/{q(room_id)}/report/{q(bad)}", {"reason": "awful"}).status == 200
    reports = admin.get(f"{A}/v1/event_reports").body
    report = next(r for r in reports["event_reports"] if r["event_id"] == bad)
    assert report["sender"] == bob.user_id and report["user_id"] == alice.user_id
    shown = admin.get(f"{A}/v1/event_reports/{report['id']}").body
    assert shown["event_json"]["content"]["body"] == "something awful"
    fetched = admin.get(f"{A}/v1/fetch_event/{q(bad)}").body
    assert fetched["event"]["event_id"] == bad
    # Redact what bob sent in the room (the reported event included).
    redact = admin.post(f"{A}/v1/user/{q(bob.user_id or '')}/redact", {"rooms": [room_id]})
    assert redact.status == 200, redact
    wait_for_status(admin, redact.body["redact_id"], path=f"{A}/v1/user/redact_status")
    gone = alice.get(f"rooms/{q(room_id)}/event/{q(bad)}").body
    assert gone["content"] == {} and "redacted_because" in gone["unsigned"]
    # Shadow-ban: bob's sends "succeed" but reach nobody.
    assert admin.post(f"{A}/v1/users/{q(bob.user_id or '')}/shadow_ban", {}).status == 200
    ghost = bob.put(f"rooms/{q(room_id)}/send/m.room.message/ghost", {"msgtype": "m.text",
                    "body": "shouting into the void"})  # fmt: skip
    assert ghost.status == 200 and ghost.body["event_id"].startswith("$")
    seen = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b"}).body["chunk"]
    assert "shouting into the void" not in json.dumps(seen)
    lifted = admin.request("DELETE", f"{A}/v1/users/{q(bob.user_id or '')}/shadow_ban")
    assert lifted.status == 200, lifted
    # Suspended: reads, but may not act.
    suspended = admin.put(f"{A}/v1/suspend/{q(bob.user_id or '')}", {"suspend": True})
    assert suspended.status == 200
    assert bob.get("sync", params={"timeout": "0"}).status == 200
    refused = bob.put(f"rooms/{q(room_id)}/send/m.room.message/s1", {"msgtype": "m.text",
                      "body": "x"})  # fmt: skip
    assert refused.status == 403 and refused.body["errcode"] == "M_USER_SUSPENDED"
    no_room = bob.post("createRoom", {})
    assert no_room.status == 403 and no_room.body["errcode"] == "M_USER_SUSPENDED"
    no_upgrade = bob.post(f"rooms/{q(room_id)}/upgrade", {"new_version": "12"})
    assert no_upgrade.status == 403 and no_upgrade.body["errcode"] == "M_USER_SUSPENDED"
    admin.put(f"{A}/v1/suspend/{q(bob.user_id or '')}", {"suspend": False})
    assert bob.put(f"rooms/{q(room_id)}/send/m.room.message/s2", {"msgtype": "m.text",
                   "body": "back"}).status == 200  # fmt: skip
    seen = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b"}).body["chunk"]
    assert "back" in [e["content"].get("body") for e in seen]  # no longer shadow-banned
    # Locked: every request is refused with M_USER_LOCKED.
    assert admin.put(f"{A}/v2/users/{q(bob.user_id or '')}", {"locked": True}).status == 200
    locked = bob.get("account/whoami")
    assert locked.status == 401 and locked.body["errcode"] == "M_USER_LOCKED"
    assert admin.put(f"{A}/v2/users/{q(bob.user_id or '')}", {"locked": False}).status == 200
    assert bob.get("account/whoami").status == 200
    # Deactivate with erasure; the report can then be cleared.
    assert admin.post(f"{A}/v1/deactivate/{q(bob.user_id or '')}", {"erase": True}).status == 200
    assert bob.get("account/whoami").status == 401
    assert admin.request("DELETE", f"{A}/v1/event_reports/{report['id']}").status == 200
    assert admin.get(f"{A}/v1/event_reports/{report['id']}").status == 404


def test_room_and_user_reports_are_listed_shown_and_deleted_apart_from_event_reports(
    admin: Client, alice: Client, bob: Client
) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    assert bob.post(f"rooms/{q(room_id)}/report", {"reason": "spam room"}).status == 200
    assert alice.post(f"users/{q(bob.user_id or '')}/report", {"reason": "rude"}).status == 200
    rooms = admin.get(f"{A}/v1/room_reports", params={"room_id": room_id}).body
    assert rooms["total"] == 1, rooms
    room_report = rooms["room_reports"][0]
    assert room_report["user_id"] == bob.user_id and room_report["reason"] == "spam room"
    assert "event_id" not in room_report
    users = admin.get(f"{A}/v1/user_reports", params={"target_user_id": bob.user_id}).body
    assert users["total"] == 1, users
    user_report = users["user_reports"][0]
    assert user_report["user_id"] == alice.user_id and user_report["target_user_id"] == bob.user_id
    # Each kind is only reachable under its own path, and neither shows up as an event report.
    events = admin.get(f"{A}/v1/event_reports", params={"room_id": room_id}).body
    assert events["total"] == 0
    assert admin.get(f"{A}/v1/event_reports/{room_report['id']}").status == 404
    assert admin.get(f"{A}/v1/user_reports/{room_report['id']}").status == 404
    assert admin.get(f"{A}/v1/room_reports/{room_report['id']}").body["reason"] == "spam room"
    assert admin.get(f"{A}/v1/room_reports/x").body["errcode"] == "M_INVALID_PARAM"
    for odd in (q("²"), "9" * 30):  # digits Python's int() takes or SQL cannot hold
        assert admin.get(f"{A}/v1/room_reports/{odd}").body["errcode"] == "M_INVALID_PARAM"
    assert alice.get(f"{A}/v1/user_reports").status == 403
    assert admin.request("DELETE", f"{A}/v1/user_reports/{user_report['id']}").status == 200
    assert admin.get(f"{A}/v1/user_reports/{user_report['id']}").status == 404


def test_every_sensitive_look_is_audited_and_nothing_secret_leaks(
    admin: Client, alice: Client, server: ServerProcess
) -> None:
    room_id = create_room(alice)
    target = alice.user_id or ""
    calls: list[tuple[str, str]] = [
        ("GET", f"{A}/v1/whois/{q(target)}"),
        ("GET", f"{A}/v2/users/{q(target)}"),
        ("GET", f"{A}/v1/users/{q(target)}/accountdata"),
        ("GET", f"{A}/v2/users/{q(target)}/devices"),
        ("GET", f"{A}/v1/rooms/{q(room_id)}/state"),
        ("GET", f"{A}/v1/rooms/{q(room_id)}/messages"),
    ]
    answers: list[Any] = []
    for method, path in calls:
        resp = admin.request(method, path)
        assert resp.status == 200, (path, resp)
        answers.append(resp.body)
    log = admin.get(f"{A}/v1/audit_log", params={"target_user": target}).body
    actions = {e["action"] for e in log["entries"]}
    assert {"user.whois", "user.read", "user.account_data", "user.devices"} <= actions
    assert all(e["admin"] == admin.user_id and e["ip"] == "127.0.0.1" for e in log["entries"])
    rooms_log = admin.get(f"{A}/v1/audit_log", params={"action": "room.messages"}).body
    assert room_id in [e.get("target_room") for e in rooms_log["entries"]]
    # The audit log cannot be changed through the API.
    assert admin.request("DELETE", f"{A}/v1/audit_log").status in (404, 405)
    text = json.dumps(answers)
    assert "$2b$" not in text and "password_hash" not in text
    assert (alice.token or "") not in text and "access_token" not in text


def wait_for_status(
    admin: Client, task_id: str, wanted: str = "complete", path: str = f"{A}/v2/rooms/delete_status"
) -> Any:
    import time

    deadline = time.monotonic() + 15
    status = None
    while time.monotonic() < deadline:
        status = admin.get(f"{path}/{task_id}")
        assert status.status == 200, status
        if status.body["status"] == wanted:
            return status.body
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} never became {wanted}: {status}")


def test_room_delete_moves_members_out_blocks_and_purges(
    admin: Client, alice: Client, bob: Client, server: ServerProcess
) -> None:
    from tests.harness import db_rows

    localpart = "doomed" + secrets.token_hex(3)
    room_id = create_room(alice, room_alias_name=localpart, preset="public_chat")
    join(bob, room_id)
    alice.put(f"rooms/{q(room_id)}/send/m.room.message/d1", {"msgtype": "m.text",
              "body": "to be purged"})  # fmt: skip
    resp = admin.request("DELETE", f"{A}/v2/rooms/{q(room_id)}", {
        "new_room_user_id": admin.user_id, "room_name": "Moved here", "block": True,
        "purge": True})  # fmt: skip
    assert resp.status == 200, resp
    done = wait_for_status(admin, resp.body["delete_id"])
    shutdown = done["shutdown_room"]
    assert set(shutdown["kicked_users"]) == {alice.user_id, bob.user_id}
    assert shutdown["local_aliases"] == [f"#{localpart}:{server.server_name}"]
    new_room = shutdown["new_room_id"]
    assert new_room in alice.get("joined_rooms").body["joined_rooms"]
    by_room = admin.get(f"{A}/v2/rooms/{q(room_id)}/delete_status").body
    tasks = admin.get(f"{A}/v1/scheduled_tasks", params={"resource_id": room_id}).body
    assert [(t["action"], t["status"]) for t in tasks["scheduled_tasks"]] == [
        ("shutdown_and_purge_room", "complete")
    ]
    assert by_room["results"][0]["delete_id"] == resp.body["delete_id"]
    assert db_rows(server, "SELECT COUNT(*) FROM events WHERE room_id = ?", (room_id,))[0][0] == 0
    assert admin.get(f"{A}/v1/rooms/{q(room_id)}").status == 404
    assert admin.get(f"{A}/v1/rooms/{q(room_id)}/block").body["block"] is True
    assert alice.post(f"join/{q(room_id)}", {}).status in (403, 404)
    assert admin.get(f"{A}/v2/rooms/delete_status/nope").status == 404


def test_purge_history_removes_old_messages_and_keeps_state(
    admin: Client, alice: Client, bob: Client, server: ServerProcess
) -> None:
    from tests.harness import db_rows

    room_id = create_room(alice, name="Long history")
    join(bob, room_id)
    sent = [
        alice.put(
            f"rooms/{q(room_id)}/send/m.room.message/p{i}",
            {"msgtype": "m.text", "body": f"old {i}"},
        ).body["event_id"]
        for i in range(5)
    ]
    status_path = f"{A}/v1/purge_history_status"
    # By default our own users' events are kept: they may be the only copy anywhere.
    kept = admin.post(f"{A}/v1/purge_history/{q(room_id)}", {"purge_up_to_event_id": sent[3]})
    assert kept.status == 200, kept
    assert wait_for_status(admin, kept.body["purge_id"], path=status_path)["purged_events"] == 0
    assert alice.get(f"rooms/{q(room_id)}/event/{q(sent[0])}").status == 200
    # Asked to, everything before the point goes; state and later messages stay.
    purge = admin.post(f"{A}/v1/purge_history/{q(room_id)}/{q(sent[3])}",
                       {"delete_local_events": True})  # fmt: skip
    assert purge.status == 200, purge
    done = wait_for_status(admin, purge.body["purge_id"], path=status_path)
    assert done["purged_events"] == 3
    for event_id in sent[:3]:
        assert alice.get(f"rooms/{q(room_id)}/event/{q(event_id)}").status == 404
    assert db_rows(server, "SELECT COUNT(*) FROM events WHERE event_id = ?", (sent[0],))[0][0] == 0
    history = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "50"}).body
    bodies = [e["content"].get("body") for e in history["chunk"] if e["type"] == "m.room.message"]
    assert bodies == ["old 4", "old 3"]
    assert alice.get(f"rooms/{q(room_id)}/state/m.room.name").body == {"name": "Long history"}
    members = alice.get(f"rooms/{q(room_id)}/joined_members").body["joined"]
    assert set(members) == {alice.user_id, bob.user_id}
    after = bob.put(f"rooms/{q(room_id)}/send/m.room.message/after", {"msgtype": "m.text",
                    "body": "still works"})  # fmt: skip
    assert after.status == 200
    # Bad requests are refused with clear errors.
    url = f"{A}/v1/purge_history/{q(room_id)}"
    assert admin.post(url, {}).body["errcode"] == "M_MISSING_PARAM"
    assert admin.post(url, {"purge_up_to_ts": "soon"}).body["errcode"] == "M_BAD_JSON"
    assert admin.post(url, {"purge_up_to_ts": 1}).status == 404
    assert admin.post(url, {"purge_up_to_event_id": "$nope"}).status == 404
    assert admin.post(f"{A}/v1/purge_history/!nope:x", {"purge_up_to_ts": 1}).status == 404
    assert alice.post(url, {"purge_up_to_event_id": sent[4]}).status == 403
    assert admin.get(f"{status_path}/nope").status == 404
    # A purge ID is not the ID of another kind of job.
    assert admin.get(f"{A}/v1/user/redact_status/{purge.body['purge_id']}").status == 404
    assert admin.get(f"{A}/v2/rooms/delete_status/{purge.body['purge_id']}").status == 404


def test_force_join_and_make_room_admin(admin: Client, alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="public_chat")
    joined = admin.post(f"{A}/v1/join/{q(room_id)}", {"user_id": bob.user_id})
    assert joined.status == 200, joined
    assert bob.user_id in admin.get(f"{A}/v1/rooms/{q(room_id)}/members").body["members"]
    made = admin.post(f"{A}/v1/rooms/{q(room_id)}/make_room_admin", {"user_id": bob.user_id})
    assert made.status == 200, made
    levels = alice.get(f"rooms/{q(room_id)}/state/m.room.power_levels").body
    assert levels["users"][bob.user_id] == 100


def test_deleting_forward_extremities_keeps_the_deepest(server_factory: Any) -> None:
    """A room left with a dangling branch (here written behind the server's back) is cut
    back to its newest extremity, and the next message cites only that one."""
    server = server_factory()
    owner = new_user(server)
    admin_user = shared_secret_register(server, admin=True)
    alias = f"#fork{secrets.token_hex(3)}:{server.server_name}"
    room_id = create_room(owner, room_alias_name=alias[1:].split(":")[0])
    sent = [send(owner, room_id, f"m{i}") for i in range(3)]
    path = f"{A}/v1/rooms/{q(room_id)}/forward_extremities"
    assert admin_user.delete(path).body == {"deleted": 0}
    by_alias = admin_user.get(f"{A}/v1/rooms/{q(alias)}/forward_extremities").body
    assert [r["event_id"] for r in by_alias["results"]] == [sent[2]]
    server.stop(cleanup=False)
    db_execute(server, "INSERT INTO forward_extremities (room_id, event_id) VALUES (?, ?)",
                        (room_id, sent[0]))  # fmt: skip
    server.start()
    before = admin_user.get(path).body
    assert before["count"] == 2 and {r["event_id"] for r in before["results"]} == {sent[0], sent[2]}
    assert owner.get(path).status == 403
    assert admin_user.delete(path).body == {"deleted": 1}
    after = admin_user.get(path).body
    assert [r["event_id"] for r in after["results"]] == [sent[2]]
    next_id = send(owner, room_id, "after the cut")
    cited = db_rows(server, "SELECT prev_event_id FROM event_edges WHERE event_id = ?", (next_id,))
    assert cited == [(sent[2],)]
    unknown = admin_user.delete(
        f"{A}/v1/rooms/{q('!nope:' + server.server_name)}/forward_extremities"
    )
    assert unknown.status == 404


def test_interrupted_jobs_resume_after_a_restart(server_factory: Any, tmp_path: Any) -> None:
    """A job persisted as scheduled when the server stopped runs when it starts again."""
    import time

    server = server_factory()
    owner = new_user(server)
    admin_user = shared_secret_register(server, admin=True)
    room_id = create_room(owner)
    server.stop(cleanup=False)
    now = int(time.time() * 1000)
    params = json.dumps({"admin": admin_user.user_id, "purge": True})
    row = ("resumed1", "shutdown_and_purge_room", room_id, params, "active", now, now)
    sql = ("INSERT INTO scheduled_tasks (id, action, resource_id, params, status, created_ts, "
           "updated_ts) VALUES (?, ?, ?, ?, ?, ?, ?)")  # fmt: skip
    db_execute(server, sql, row)
    server.start()
    admin_user.token = admin_user.login(admin_user.user_id or "").body["access_token"]
    done = wait_for_status(admin_user, "resumed1")
    assert owner.user_id in done["shutdown_room"]["kicked_users"]


def test_ratelimit_override_login_as_counts_and_client_admin_calls(
    server_factory: Any,
) -> None:
    server = server_factory({
        "rate_limiting": {"enabled": True, "message": {"per_second": 0.1, "burst_count": 2},
                          "registration": {"per_second": 100, "burst_count": 100}},
        "admin": {"allow_login_as": True},
    })  # fmt: skip
    admin = shared_secret_register(server, admin=True)
    alice, bob = new_user(server), new_user(server)
    room_id = create_room(alice)
    sends = [alice.put(f"rooms/{q(room_id)}/send/m.room.message/r{i}",
                       {"msgtype": "m.text", "body": str(i)}).status for i in range(4)]  # fmt: skip
    assert 429 in sends
    target = q(alice.user_id or "")
    assert admin.get(f"{A}/v1/users/{target}/override_ratelimit").body == {}
    set_to = admin.post(f"{A}/v1/users/{target}/override_ratelimit", {})
    assert set_to.body == {"messages_per_second": 0, "burst_count": 0}
    sends = [alice.put(f"rooms/{q(room_id)}/send/m.room.message/u{i}",
                       {"msgtype": "m.text", "body": str(i)}).status for i in range(6)]  # fmt: skip
    assert sends == [200] * 6
    assert admin.request("DELETE", f"{A}/v1/users/{target}/override_ratelimit").status == 200

    assert alice.post(f"rooms/{q(room_id)}/invite", {"user_id": bob.user_id}).status == 200
    assert admin.get(f"{A}/v1/users/{target}/sent_invite_count").body == {"invite_count": 1}
    joined = admin.get(f"{A}/v1/users/{target}/cumulative_joined_room_count").body
    assert joined == {"cumulative_joined_room_count": 1}

    login = admin.post(f"{A}/v1/users/{q(bob.user_id or '')}/login", {})
    assert login.status == 200, login
    assert (
        Client(server, login.body["access_token"]).get("account/whoami").body["user_id"]
        == bob.user_id
    )
    log = admin.get(f"{A}/v1/audit_log", params={"action": "user.login_as"}).body["entries"]
    assert [e["target_user"] for e in log] == [bob.user_id]
    refused = admin.post(f"{A}/v1/users/{q(admin.user_id or '')}/login", {})
    assert refused.status == 403  # never another admin

    lock = admin.put(f"/_matrix/client/v1/admin/lock/{q(bob.user_id or '')}", {"locked": True})
    assert lock.body == {"locked": True}
    assert bob.get("account/whoami").body["errcode"] == "M_USER_LOCKED"
    assert admin.get(f"/_matrix/client/v1/admin/lock/{q(bob.user_id or '')}").body == {
        "locked": True
    }
    admin.put(f"/_matrix/client/v1/admin/lock/{q(bob.user_id or '')}", {"locked": False})
    suspend = admin.put(f"/_matrix/client/v1/admin/suspend/{q(bob.user_id or '')}",
                        {"suspended": True})  # fmt: skip
    assert suspend.body == {"suspended": True}
    assert alice.get(f"/_matrix/client/v1/admin/suspend/{q(bob.user_id or '')}").status == 403


def test_login_as_is_off_by_default(admin: Client, alice: Client) -> None:
    resp = admin.post(f"{A}/v1/users/{q(alice.user_id or '')}/login", {})
    assert resp.status == 403


def test_admin_allows_cross_signing_replacement_without_uia(admin: Client, alice: Client) -> None:
    from tests.test_e2ee_keys import cross_signing

    first, _ = cross_signing(alice.user_id or "")
    assert alice.post("keys/device_signing/upload", first).status == 200
    second, _ = cross_signing(alice.user_id or "")
    assert alice.post("keys/device_signing/upload", second).status == 401
    allowed = admin.post(
        f"{A}/v1/users/{q(alice.user_id or '')}/_allow_cross_signing_replacement_without_uia", {}
    )
    assert allowed.status == 200 and allowed.body["updatable_without_uia_before_ms"] > 0
    assert alice.post("keys/device_signing/upload", second).status == 200


def test_server_notices(server_factory: Any) -> None:
    server = server_factory({"server_notices": {"system_mxid_localpart": "notices"}})
    admin = shared_secret_register(server, admin=True)
    alice = new_user(server)
    body = {"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": "Maintenance"}}
    sent = admin.post(f"{A}/v1/send_server_notice", body)
    assert sent.status == 200, sent
    again = admin.put(f"{A}/v1/send_server_notice/txn1", body)
    repeat = admin.put(f"{A}/v1/send_server_notice/txn1", body)
    assert again.body["event_id"] == repeat.body["event_id"]  # idempotent per txn
    other_admin = shared_secret_register(server, admin=True)
    theirs = other_admin.put(f"{A}/v1/send_server_notice/txn1", body)
    assert theirs.status == 200 and theirs.body["event_id"] != again.body["event_id"]
    sync = alice.get("sync", params={"timeout": "0"}).body
    ((room_id, invite),) = sync["rooms"]["invite"].items()
    assert any(e["type"] == "m.room.name" and e["content"]["name"] == "Server Notices"
               for e in invite["invite_state"]["events"])  # fmt: skip
    tags = alice.get(f"user/{q(alice.user_id or '')}/rooms/{q(room_id)}/tags").body["tags"]
    assert "m.server_notice" in tags
    assert alice.post(f"join/{q(room_id)}", {}).status == 200
    messages = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b"}).body["chunk"]
    assert "Maintenance" in [e["content"].get("body") for e in messages]
    written = alice.put(f"rooms/{q(room_id)}/send/m.room.message/x", {"msgtype": "m.text",
                        "body": "reply"})  # fmt: skip
    assert written.status == 403  # notices rooms are read-only for the user
    assert alice.post(f"rooms/{q(room_id)}/leave", {}).status == 200
    admin.post(f"{A}/v1/send_server_notice", body)  # a new room once they left
    invites = alice.get("sync", params={"timeout": "0"}).body["rooms"]["invite"]
    assert invites and room_id not in invites


def test_media_quarantine_protection_and_cleanup(admin: Client, alice: Client, bob: Client) -> None:
    def upload(client: Client, data: bytes) -> str:
        resp = client.request("POST", "/_matrix/media/v3/upload", raw=data,
                              headers={"Content-Type": "text/plain"})  # fmt: skip
        return str(resp.body["content_uri"].rsplit("/", 1)[1])

    name = alice.server.server_name

    def download(media_id: str) -> int:
        return bob.get(f"/_matrix/client/v1/media/download/{name}/{media_id}").status

    bad = upload(alice, b"bad content")
    assert download(bad) == 200
    assert admin.post(f"{A}/v1/media/quarantine/{name}/{bad}", {}).status == 200
    assert download(bad) == 404
    assert admin.post(f"{A}/v1/media/unquarantine/{name}/{bad}", {}).status == 200
    assert download(bad) == 200
    keep = upload(alice, b"precious")
    assert admin.post(f"{A}/v1/media/protect/{keep}", {}).status == 200
    quarantined = admin.post(f"{A}/v1/user/{q(alice.user_id or '')}/media/quarantine", {})
    assert quarantined.body["num_quarantined"] == 1  # the protected one is spared
    assert download(keep) == 200 and download(bad) == 404
    # The user's media listing and each file's info show who quarantined what.
    shown = admin.get(f"{A}/v1/users/{q(alice.user_id or '')}/media",
                      params={"order_by": "media_length", "dir": "b"}).body["media"]  # fmt: skip
    by_id = {m["media_id"]: m for m in shown}
    assert by_id[bad]["quarantined_by"] == admin.user_id
    assert by_id[keep]["safe_from_quarantine"] is True and by_id[keep]["quarantined_by"] is None
    assert [m["media_length"] for m in shown] == sorted((m["media_length"] for m in shown),
                                                        reverse=True)  # fmt: skip
    info = admin.get(f"{A}/v1/media/{name}/{bad}").body["media_info"]
    assert info["quarantined_by"] == admin.user_id
    bad_order = admin.get(f"{A}/v1/users/{q(alice.user_id or '')}/media",
                          params={"order_by": "password"})  # fmt: skip
    assert bad_order.status == 400
    room_id = create_room(alice)
    in_room = upload(alice, b"posted in a room")
    alice.put(f"rooms/{q(room_id)}/send/m.room.message/img", {"msgtype": "m.file",
              "body": "f", "url": f"mxc://{name}/{in_room}"})  # fmt: skip
    listed = admin.get(f"{A}/v1/room/{q(room_id)}/media").body
    assert listed["local"] == [f"mxc://{name}/{in_room}"]
    room_q = admin.post(f"{A}/v1/room/{q(room_id)}/media/quarantine", {}).body
    assert room_q["num_quarantined"] == 1 and download(in_room) == 404
    import time

    old = upload(bob, b"old upload")
    deleted = admin.post(f"{A}/v1/media/delete", params={"before_ts": str(int(time.time() *
                         1000) + 1000)})  # fmt: skip
    assert old in deleted.body["deleted_media"] and keep not in deleted.body["deleted_media"]
    purged = admin.post(f"{A}/v1/purge_media_cache", params={"before_ts": "1"}).body
    assert purged == {"deleted": 0, "total": 0}
    assert admin.post(f"{A}/v1/media/delete").status == 400
    assert admin.post(f"{A}/v1/media/delete", params={"before_ts": "soon"}).status == 400
    local = admin.post(f"{A}/v1/media/{name}/delete", params={"before_ts": "1"})
    assert local.status == 200 and local.body["total"] == 0, local
    remote = admin.post(f"{A}/v1/media/elsewhere.test/delete", params={"before_ts": "1"})
    assert remote.status == 400 and remote.body["errcode"] == "M_INVALID_PARAM"
    huge = admin.get(f"{A}/v1/users/{q(alice.user_id or '')}/sent_invite_count",
                     params={"from_ts": "9" * 30})  # fmt: skip
    assert huge.status == 400 and huge.body["errcode"] == "M_INVALID_PARAM"


def test_redact_everything_a_user_sent(admin: Client, alice: Client, bob: Client) -> None:
    rooms = [create_room(alice) for _ in range(2)]
    for room_id in rooms:
        join(bob, room_id)
        for i in range(3):
            bob.put(f"rooms/{q(room_id)}/send/m.room.message/sp{i}", {"msgtype": "m.text",
                    "body": f"spam {i}"})  # fmt: skip
    bob.post(f"rooms/{q(rooms[1])}/leave", {})  # redacted by alice (the room admin) there
    resp = admin.post(f"{A}/v1/user/{q(bob.user_id or '')}/redact", {"rooms": [],
                      "reason": "spam"})  # fmt: skip
    assert resp.status == 200, resp
    status = wait_for_status(admin, resp.body["redact_id"], path=f"{A}/v1/user/redact_status")
    assert status == {"status": "complete", "failed_redactions": {}}
    for room_id in rooms:
        chunk = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b"}).body["chunk"]
        assert not any(e["content"].get("body", "").startswith("spam") for e in chunk)
        # The three messages are still there, redacted (not merely missing).
        bobs = [e for e in chunk if e["sender"] == bob.user_id and e["type"] == "m.room.message"]
        assert len(bobs) == 3 and all(e["content"] == {} for e in bobs), bobs
        assert all("redacted_because" in e["unsigned"] for e in bobs)


def test_space_hierarchy_shows_an_admin_every_local_room(admin: Client, alice: Client) -> None:
    """Unlike the client API, the admin's view skips membership and join rules (an
    invite-only space and its private child are shown to an admin in neither)."""
    from tests.test_discovery_features import add_child, create_space

    space = create_space(alice, preset="private_chat", name="Hidden space")
    private = create_room(alice, preset="private_chat", name="Secret")
    sub = create_space(alice, preset="private_chat")
    leaf = create_room(alice, preset="private_chat")
    add_child(alice, space, private, order="a")
    add_child(alice, space, sub, order="b")
    add_child(alice, sub, leaf)
    client_view = admin.get(f"/_matrix/client/v1/rooms/{q(space)}/hierarchy")
    assert client_view.status == 403
    path = f"{A}/v1/rooms/{q(space)}/hierarchy"
    assert alice.get(path).status == 403
    whole = admin.get(path)
    assert whole.status == 200, whole
    assert [r["room_id"] for r in whole.body["rooms"]] == [space, private, sub, leaf]
    assert whole.body["rooms"][0]["name"] == "Hidden space"
    assert whole.body["rooms"][0]["join_rule"] == "invite"
    assert {c["state_key"] for c in whole.body["rooms"][0]["children_state"]} == {private, sub}
    first = admin.get(path, params={"limit": "2"}).body
    assert [r["room_id"] for r in first["rooms"]] == [space, private]
    rest = admin.get(path, params={"limit": "2", "from": first["next_batch"]}).body
    assert [r["room_id"] for r in rest["rooms"]] == [sub, leaf] and "next_batch" not in rest
    shallow = admin.get(path, params={"max_depth": "1"}).body
    assert [r["room_id"] for r in shallow["rooms"]] == [space, private, sub]
    assert (
        admin.get(f"{A}/v1/rooms/{q('!gone:' + alice.server.server_name)}/hierarchy").status == 404
    )
    assert admin.get(path, params={"max_depth": "-1"}).status == 400
    actions = [e["action"] for e in admin.get(f"{A}/v1/audit_log").body["entries"]]
    assert "room.hierarchy" in actions


def test_external_ids_link_a_user_to_an_identity_provider(
    admin: Client, server: ServerProcess
) -> None:
    tag = secrets.token_hex(3)
    user_id, other_id = (f"@{n}{tag}:{server.server_name}" for n in ("sso", "other"))
    linked = [{"auth_provider": "oidc", "external_id": f"sub/{tag}:1@x"},
              {"auth_provider": "saml", "external_id": f"uid-{tag}"}]  # fmt: skip
    created = admin.put(f"{A}/v2/users/{q(user_id)}", {"password": "a good long password",
                        "external_ids": linked})  # fmt: skip
    assert created.status == 201, created
    assert sorted(created.body["external_ids"], key=str) == sorted(linked, key=str)
    found = admin.get(f"{A}/v1/auth_providers/oidc/users/{q(linked[0]['external_id'])}")
    assert found.body == {"user_id": user_id}, found
    assert admin.get(f"{A}/v1/auth_providers/oidc/users/nobody").status == 404
    # Another user may not take a linked identity; the refused PUT changes nothing.
    taken = admin.put(f"{A}/v2/users/{q(other_id)}", {"password": "a good long password",
                      "external_ids": [linked[1]]})  # fmt: skip
    assert taken.status == 409, taken
    assert admin.get(f"{A}/v2/users/{q(other_id)}").status == 404
    # Likewise for an e-mail address another user holds (checked before the user is made).
    email = {"medium": "email", "address": f"{tag}@example.org"}
    assert admin.put(f"{A}/v2/users/{q(user_id)}", {"threepids": [email]}).status == 200
    held = admin.put(f"{A}/v2/users/{q(other_id)}", {"password": "a good long password",
                     "threepids": [email]})  # fmt: skip
    assert held.status == 400 and held.body["errcode"] == "M_THREEPID_IN_USE", held
    assert admin.get(f"{A}/v2/users/{q(other_id)}").status == 404
    for bad in ([{"auth_provider": "oidc"}], "oidc", [{"auth_provider": "", "external_id": "x"}]):
        assert admin.put(f"{A}/v2/users/{q(user_id)}", {"external_ids": bad}).status == 400
    # A PUT replaces the whole list; deactivation unlinks the account.
    replaced = admin.put(f"{A}/v2/users/{q(user_id)}", {"external_ids": [linked[1]]}).body
    assert replaced["external_ids"] == [linked[1]]
    assert (
        admin.get(f"{A}/v1/auth_providers/oidc/users/{q(linked[0]['external_id'])}").status == 404
    )
    assert admin.post(f"{A}/v1/deactivate/{q(user_id)}", {}).status == 200
    assert admin.get(f"{A}/v2/users/{q(user_id)}").body["external_ids"] == []
    assert admin.get(f"{A}/v1/auth_providers/saml/users/uid-{tag}").status == 404
    # Accounts do not expire here: renewing one is refused as Synapse refuses it when off.
    renew = admin.post(f"{A}/v1/account_validity/validity", {"user_id": other_id})
    assert renew.status == 400 and renew.body["errcode"] == "M_UNKNOWN", renew


def test_an_erased_users_transaction_ids_are_not_shown_after_reactivation(
    admin: Client, server: ServerProcess, alice: Client
) -> None:
    """Erasure deletes the user's transactions: signed in again on the same device after an
    administrator reactivates the account, they are not shown on the events they sent."""
    room_id = create_room(alice, preset="public_chat")
    bob = new_user(server)
    bob_id = bob.user_id or ""
    device = Client(server)
    assert device.login(bob_id, device_id="SAMEDEVICE").status == 200
    join(device, room_id)
    sent = send(device, room_id, "before erasure", txn_id="erased-txn")
    shown = device.get(f"rooms/{q(room_id)}/event/{q(sent)}").body
    assert shown["unsigned"].get("transaction_id") == "erased-txn", shown
    assert admin.post(f"{A}/v1/deactivate/{q(bob_id)}", {"erase": True}).status == 200
    back = admin.put(f"{A}/v2/users/{q(bob_id)}", {"deactivated": False,
                     "password": "a new long password"})  # fmt: skip
    assert back.status == 200, back
    again = Client(server)
    assert again.login(bob_id, "a new long password", device_id="SAMEDEVICE").status == 200
    join(again, room_id)
    seen = again.get(f"rooms/{q(room_id)}/event/{q(sent)}")
    assert seen.status == 200, seen
    assert "transaction_id" not in seen.body["unsigned"], seen.body
