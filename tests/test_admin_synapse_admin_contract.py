"""Contract test for the synapse-admin web UI (etkecc/synapse-admin, "Ketesa").

The UI cannot run here, so each test replays over real HTTP the requests its data provider
makes for one screen -- same methods, paths (encoded or raw as the UI sends them), query
parameters (from/limit/order_by/dir and the screen's filters) and bodies -- and checks every
answer field the provider and the screen read: the list key, the total key, the fields an
`id` is taken from, and the columns shown. Outcomes are checked too (what was created shows
up, with the values set).

How the UI builds its requests (react-admin on top of Synapse's admin API):
- getList: GET <path>?from=(page-1)*perPage&limit=perPage&<filters>&order_by=<sort>&dir=f|b,
  rows under a per-resource key, total under another (or the row count);
- getManyReference (the tabs of a user or room): GET <endpoint>?from&limit&order_by&dir, sorted
  by react-admin's default `id` DESC unless the tab sets a sort;
- getOne / getMany: GET <path>/<encodeURIComponent(id)>;
- update: PUT <path>/<id> with the whole edited record, nulls dropped (but `user_type`).
Endpoints that synapse-admin calls but which are being added separately (room hierarchy,
account validity, external IDs, DELETE forward_extremities) are not exercised here.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import (
    PASSWORD,
    Client,
    Response,
    ServerProcess,
    create_room,
    free_port,
    join,
    new_user,
    q,
)
from tests.test_shared_secret_registration import shared_secret_register

A = "/_synapse/admin"
NULL = type(None)
FLAG = (bool, int)  # the UI applies `!!` to these; Synapse has sent both 0/1 and booleans

# Fields each screen reads, with the JSON types it can cope with.
USER_LIST_ENTRY = {
    "name": str,
    "displayname": (str, NULL),
    "avatar_url": (str, NULL),
    "is_guest": FLAG,
    "admin": FLAG,
    "deactivated": FLAG,
    "shadow_banned": FLAG,
    "locked": bool,
    "erased": bool,
    "creation_ts": int,
    "user_type": (str, NULL),
}
USER_DETAILS = {
    **USER_LIST_ENTRY,
    "threepids": list,
    "suspended": bool,
    "appservice_id": (str, NULL),
    "consent_version": (str, NULL),
    "consent_server_notice_sent": (str, NULL),
    "consent_ts": (int, NULL),
}
THREEPID = {"medium": str, "address": str, "added_at": int, "validated_at": int}
DEVICE = {
    "device_id": str,
    "display_name": (str, NULL),
    "last_seen_ip": (str, NULL),
    "last_seen_user_agent": (str, NULL),
    "last_seen_ts": (int, NULL),
    "user_id": str,
}
CONNECTION = {"ip": (str, NULL), "last_seen": (int, NULL), "user_agent": (str, NULL)}
PUSHER = {
    "kind": str,
    "app_display_name": str,
    "app_id": str,
    "data": dict,
    "device_display_name": str,
    "lang": str,
    "profile_tag": (str, NULL),
    "pushkey": str,
}
USER_MEDIA = {
    "media_id": str,
    "created_ts": int,
    "last_access_ts": (int, NULL),
    "media_length": int,
    "media_type": str,
    "upload_name": (str, NULL),
    "quarantined_by": (str, NULL),
    "safe_from_quarantine": bool,
}
ROOM_LIST_ENTRY = {
    "room_id": str,
    "name": (str, NULL),
    "canonical_alias": (str, NULL),
    "joined_members": int,
    "joined_local_members": int,
    "version": str,
    "creator": str,
    "encryption": (str, NULL),
    "federatable": FLAG,
    "public": FLAG,
    "join_rules": (str, NULL),
    "guest_access": (str, NULL),
    "history_visibility": (str, NULL),
    "state_events": int,
    "room_type": (str, NULL),
}
ROOM_DETAILS = {
    **ROOM_LIST_ENTRY,
    "topic": (str, NULL),
    "avatar": (str, NULL),
    "joined_local_devices": int,
}
STATE_EVENT = {
    "event_id": str,
    "type": str,
    "origin_server_ts": int,
    "content": dict,
    "sender": str,
    "state_key": str,
}
EXTREMITY = {"event_id": str, "state_group": (int, str, NULL), "depth": int, "received_ts": int}
CLIENT_EVENT = {
    "event_id": str,
    "type": str,
    "sender": str,
    "origin_server_ts": int,
    "content": dict,
}
DIRECTORY_ENTRY = {
    "room_id": str,
    "name": (str, NULL),
    "canonical_alias": (str, NULL),
    "topic": (str, NULL),
    "num_joined_members": int,
    "world_readable": bool,
    "guest_can_join": bool,
}
REPORT = {
    "id": int,
    "received_ts": int,
    "room_id": str,
    "name": (str, NULL),
    "event_id": str,
    "user_id": str,
    "reason": (str, NULL),
    "sender": str,
    "canonical_alias": (str, NULL),
}
TOKEN = {
    "token": str,
    "uses_allowed": (int, NULL),
    "pending": int,
    "completed": int,
    "expiry_time": (int, NULL),
}
DESTINATION = {
    "destination": str,
    "retry_last_ts": int,
    "retry_interval": int,
    "failure_ts": (int, NULL),
    "last_successful_stream_ordering": (int, NULL),
}
MEDIA_STATS = {"user_id": str, "displayname": (str, NULL), "media_count": int, "media_length": int}
TASK = {
    "id": str,
    "action": str,
    "status": str,
    "timestamp_ms": int,
    "resource_id": (str, NULL),
    "error": (str, NULL),
}


@pytest.fixture
def admin(server: ServerProcess) -> Client:
    return shared_secret_register(server, admin=True)


# The data provider's requests


def has(obj: Any, spec: dict[str, Any], where: str = "") -> None:
    """Every field of `spec` is in `obj`, with one of its JSON types (true is no integer)."""
    assert isinstance(obj, dict), f"{where}: not an object: {obj!r}"
    for key, expected in spec.items():
        assert key in obj, f"{where}: no {key!r} in {obj!r}"
        types = expected if isinstance(expected, tuple) else (expected,)
        value = obj[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        assert ok, f"{where}: {key!r} is {value!r}, not {types}"


def ui_list(
    admin: Client,
    path: str,
    sort: str,
    order: str = "ASC",
    filters: dict[str, Any] | None = None,
    page: int = 1,
    per_page: int = 50,
) -> Response:
    """getList: pagination, the filters the screen has set (unset ones are left out), sort."""
    params = {"from": str((page - 1) * per_page), "limit": str(per_page)}
    for key, value in (filters or {}).items():
        if value is not None:
            params[key] = str(value).lower() if isinstance(value, bool) else str(value)
    params["order_by"] = "creation_ts" if sort == "creation_ts_ms" else sort
    params["dir"] = "b" if order == "DESC" else "f"
    return admin.get(path, params=params)


def ui_reference(
    admin: Client, endpoint: str, sort: str = "id", order: str = "DESC", per_page: int = 10
) -> Response:
    """getManyReference (a tab): first page, react-admin's default sort unless the tab sets one."""
    params = {
        "from": "0",
        "limit": str(per_page),
        "order_by": sort,
        "dir": "b" if order == "DESC" else "f",
    }
    return admin.get(endpoint, params=params)


def rows(resp: Response, data: str, total: str | None = "total") -> list[Any]:
    """The rows a list screen shows; `total` is the key its pagination reads (None: the UI
    counts the rows itself)."""
    assert resp.status == 200, resp
    assert isinstance(resp.body.get(data), list), f"no list under {data!r}: {resp.body!r}"
    if total is not None:
        has(resp.body, {total: int}, f"total of {data}")
    return list(resp.body[data])


def drop_nulls(value: Any) -> Any:
    """JSON.stringify with the provider's replacer: null members go, except `user_type`."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None or k == "user_type"}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def ui_user_record(user: dict[str, Any]) -> dict[str, Any]:
    """The users resource's map(): what the edit form starts from."""
    record = dict(user)
    record["id"] = user["name"]
    if user.get("avatar_url"):
        record["avatar_src"] = user["avatar_url"]
    for flag in ("is_guest", "admin", "deactivated", "shadow_banned"):
        record[flag] = bool(user.get(flag))
    ts = int(user["creation_ts"])
    record["creation_ts_ms"] = ts * 1000 if ts < 10**11 else ts
    return record


def ui_save_user(admin: Client, previous: dict[str, Any], edited: dict[str, Any]) -> Response:
    """Saving the user edit form: the provider's beforeUpdate (suspend and shadow-ban through
    their own endpoints), then PUT v2/users/<id> with the whole record."""
    user = q(previous["id"])
    data = dict(edited)
    if data.get("suspended") != previous.get("suspended"):
        resp = admin.put(f"{A}/v1/suspend/{user}", {"suspend": data["suspended"]})
        assert resp.status == 200, resp
        del data["suspended"]
    if data.get("shadow_banned") != previous.get("shadow_banned"):
        method = "POST" if data["shadow_banned"] else "DELETE"
        resp = admin.request(method, f"{A}/v1/users/{user}/shadow_ban")
        assert resp.status == 200, resp
        del data["shadow_banned"]
    if not data.get("deactivated"):
        data.pop("erased", None)  # its input is disabled then, so it is not submitted
    data.pop("external_ids", None)  # covered elsewhere
    return admin.put(f"{A}/v2/users/{user}", drop_nulls(data))


def upload(client: Client, data: bytes, name: str, content_type: str = "text/plain") -> str:
    resp = client.request(
        "POST",
        "/_matrix/media/v3/upload",
        raw=data,
        headers={"Content-Type": content_type},
        params={"filename": name},
    )
    assert resp.status == 200, resp
    return str(resp.body["content_uri"].rsplit("/", 1)[1])


def poll(
    what: str, fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 15
) -> Any:
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r}")
        time.sleep(0.1)
        value = fetch()
    return value


def job_status(admin: Client, path: str) -> Any:
    resp = admin.get(path)
    assert resp.status == 200, resp
    return resp.body


# Screens


def test_login_and_app_shell(server: ServerProcess) -> None:
    """Login page, the login itself, and what the layout fetches once logged in."""
    name = "uiadmin" + secrets.token_hex(3)
    admin = shared_secret_register(server, username=name, admin=True)
    anonymous = Client(server)
    versions = anonymous.get("/_matrix/client/versions", token=False)
    assert versions.status == 200 and isinstance(versions.body["versions"], list), versions
    flows = anonymous.get("login", token=False)
    assert flows.status == 200, flows
    assert "m.login.password" in [f["type"] for f in flows.body["flows"]]
    # The first login has no device ID yet: the UI sends null.
    login = anonymous.post(
        "login",
        {
            "device_id": None,
            "initial_device_display_name": "Ketesa",
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": name},
            "password": PASSWORD,
        },
        token=False,
    )
    assert login.status == 200, login
    has(login.body, {"home_server": str, "user_id": str, "access_token": str, "device_id": str})
    assert login.body["home_server"] == server.server_name  # stored; media paths are built on it
    assert login.body["user_id"] == admin.user_id
    ui = Client(server, login.body["access_token"])
    # Logging in with an access token validates it with whoami.
    whoami = ui.get("account/whoami")
    assert whoami.status == 200 and whoami.body["user_id"] == admin.user_id, whoami
    version = anonymous.get(f"{A}/v1/server_version", token=False)
    assert version.status == 200 and isinstance(version.body["server_version"], str), version
    # getIdentity puts the user ID in the path as is.
    profile = ui.get(f"/_matrix/client/v3/profile/{admin.user_id}")
    assert profile.status == 200 and isinstance(profile.body, dict), profile
    # The admin client settings live in account data; absent at first (the UI's fallback).
    config_path = (
        f"user/{q(admin.user_id or '')}/account_data/io.element.synapse.admin_client_config"
    )
    absent = ui.get(config_path)
    assert absent.status == 404 and absent.body["errcode"] == "M_NOT_FOUND", absent
    settings = {"return_soft_failed_events": True, "return_policy_server_spammy_events": False}
    assert ui.put(config_path, settings).status == 200
    assert ui.get(config_path).body == settings
    devices = ui.get(f"{A}/v2/users/{q(admin.user_id or '')}/devices").body["devices"]
    mine = next(d for d in devices if d["device_id"] == login.body["device_id"])
    assert mine["display_name"] == "Ketesa"
    # Logout: a POST with a JSON content type and no body.
    out = ui.request(
        "POST", "logout", headers={"Content-Type": "application/json", "Accept": "application/json"}
    )
    assert out.status == 200, out
    assert ui.get("account/whoami").status == 401


def test_users_list_create_edit_and_erase(admin: Client, server: ServerProcess) -> None:
    tag = "ui" + secrets.token_hex(3)
    localpart = f"{tag}made"
    user_id = f"@{localpart}:{server.server_name}"
    address = f"{localpart}@example.org"
    # Create form: the ID field checks availability on blur.
    available = admin.get(f"{A}/v1/username_available", params={"username": localpart})
    assert available.status == 200 and available.body == {"available": True}, available
    create = {
        "id": localpart,
        "displayname": "Made In UI",
        "password": "a long enough password",
        "user_type": None,
        "admin": False,
        "threepids": [{"medium": "email", "address": address}],
    }
    created = admin.put(f"{A}/v2/users/{q(user_id)}", create)
    assert created.status == 201, created
    has(created.body, USER_DETAILS, "create answer")
    assert created.body["name"] == user_id and created.body["displayname"] == "Made In UI"
    taken = admin.get(f"{A}/v1/username_available", params={"username": localpart})
    assert taken.status == 400 and taken.body["errcode"] == "M_USER_IN_USE", taken
    assert isinstance(taken.body["error"], str)
    # "Overwrite?" confirmed: the same create request for an existing user.
    again = admin.put(f"{A}/v2/users/{q(user_id)}", create)
    assert again.status == 200 and again.body["name"] == user_id, again
    other_id = new_user(server, f"{tag}other").user_id or ""

    # List: v3, default filters guests/locked/suspended false, sorted by name.
    defaults = {"name": tag, "guests": False, "locked": False, "suspended": False}
    listing = ui_list(admin, f"{A}/v3/users", "name", filters=defaults)
    users = rows(listing, "users")
    for entry in users:
        has(entry, USER_LIST_ENTRY, "users list")
        if "suspended" in entry:
            has(entry, {"suspended": bool})
    assert [u["name"] for u in users] == [user_id, other_id] and listing.body["total"] == 2
    assert users[0]["displayname"] == "Made In UI" and not users[0]["admin"]
    for column in (
        "avatar_url",
        "name",
        "displayname",
        "is_guest",
        "admin",
        "deactivated",
        "locked",
        "shadow_banned",
        "creation_ts_ms",
    ):
        for order in ("ASC", "DESC"):
            resp = ui_list(admin, f"{A}/v3/users", column, order, filters=defaults)
            assert resp.status == 200 and resp.body["total"] == 2, (column, order, resp)
    newest = rows(
        ui_list(admin, f"{A}/v3/users", "creation_ts_ms", "DESC", filters=defaults), "users"
    )
    assert [u["name"] for u in newest] == [other_id, user_id]
    second_page = ui_list(admin, f"{A}/v3/users", "name", filters=defaults, page=2, per_page=1)
    assert [u["name"] for u in rows(second_page, "users")] == [other_id]

    # Edit page: the record, the chips, the experimental features, limits and account data.
    shown = admin.get(f"{A}/v2/users/{q(user_id)}")
    assert shown.status == 200, shown
    has(shown.body, USER_DETAILS, "user details")
    (threepid,) = shown.body["threepids"]
    has(threepid, THREEPID, "threepid")
    assert threepid["address"] == address
    invites = admin.get(f"{A}/v1/users/{q(user_id)}/sent_invite_count", params={"from_ts": "0"})
    assert invites.status == 200 and invites.body == {"invite_count": 0}, invites
    joined = admin.get(
        f"{A}/v1/users/{q(user_id)}/cumulative_joined_room_count", params={"from_ts": "0"}
    )
    assert joined.status == 200 and joined.body == {"cumulative_joined_room_count": 0}, joined
    features_path = f"{A}/v1/experimental_features/{q(user_id)}"
    features = admin.get(features_path)
    assert features.status == 200 and isinstance(features.body["features"], dict), features
    # The tab shows a switch per feature the server lists and sends them all back on a toggle.
    known = features.body["features"]
    assert all(isinstance(k, str) and isinstance(v, bool) for k, v in known.items()), known
    if known:
        first = sorted(known)[0]
        toggled = {**known, first: not known[first]}
        assert admin.put(features_path, {"features": toggled}).status == 200
        assert admin.get(features_path).body["features"] == toggled
    limits_path = f"{A}/v1/users/{q(user_id)}/override_ratelimit"
    limits = admin.get(limits_path)
    assert limits.status == 200 and isinstance(limits.body, dict), limits
    set_limits = admin.post(limits_path, {"messages_per_second": 3, "burst_count": 7})
    assert set_limits.status == 200, set_limits
    assert admin.get(limits_path).body == {"messages_per_second": 3, "burst_count": 7}
    assert admin.request("DELETE", limits_path).status == 200  # every field emptied
    assert admin.get(limits_path).body == {}
    data = admin.get(f"{A}/v1/users/{q(user_id)}/accountdata")
    assert data.status == 200, data
    has(data.body["account_data"], {"global": dict, "rooms": dict}, "account data")

    # Saving the form: renamed, locked, suspended and shadow-banned in one go.
    previous = ui_user_record(shown.body)
    edited = {
        **previous,
        "displayname": "Renamed In UI",
        "locked": True,
        "suspended": True,
        "shadow_banned": True,
    }
    saved = ui_save_user(admin, previous, edited)
    assert saved.status == 200, saved
    has(saved.body, {"name": str})
    assert saved.body["name"] == user_id and saved.body["displayname"] == "Renamed In UI"
    after = admin.get(f"{A}/v2/users/{q(user_id)}").body
    assert (after["displayname"], after["locked"], after["suspended"], after["shadow_banned"]) == (
        "Renamed In UI",
        True,
        True,
        True,
    )
    assert [t["address"] for t in after["threepids"]] == [address]
    # The default filter (locked=false) hides the locked user; asking for locked ones shows it.
    # (The UI always sends suspended=false too; it has no input for it.)
    hidden = rows(ui_list(admin, f"{A}/v3/users", "name", filters=defaults), "users")
    assert [u["name"] for u in hidden] == [other_id]
    previous = ui_user_record(after)
    restored = ui_save_user(
        admin, previous, {**previous, "locked": False, "suspended": False, "shadow_banned": False}
    )
    assert restored.status == 200, restored
    back = admin.get(f"{A}/v2/users/{q(user_id)}").body
    assert (back["locked"], back["suspended"], back["shadow_banned"]) == (False, False, False)

    # Toolbar actions: reset password, cross-signing reset, lookup by address.
    reset = admin.post(
        f"{A}/v1/reset_password/{q(user_id)}",
        {"new_password": "a brand new password", "logout_devices": True},
    )
    assert reset.status == 200, reset
    made = Client(server)
    assert made.login(user_id, "a brand new password").status == 200
    cross = admin.post(
        f"{A}/v1/users/{q(user_id)}/_allow_cross_signing_replacement_without_uia", {}
    )
    assert cross.status == 200 and isinstance(cross.body["updatable_without_uia_before_ms"], int)
    found = admin.get(f"{A}/v1/threepid/{q('email')}/users/{q(address)}")
    assert found.status == 200 and found.body["user_id"] == user_id, found

    # Delete with "delete media" and "redact events": redact, poll, media, then erase.
    room_id = create_room(made)
    made.put(f"rooms/{q(room_id)}/send/m.room.message/t1", {"msgtype": "m.text", "body": "bye"})
    media_id = upload(made, b"soon gone", "gone.txt")
    redact = admin.post(f"{A}/v1/user/{q(user_id)}/redact", {"rooms": []})
    assert redact.status == 200 and isinstance(redact.body["redact_id"], str), redact
    status = poll(
        "redaction",
        lambda: job_status(admin, f"{A}/v1/user/redact_status/{q(redact.body['redact_id'])}"),
        lambda s: s["status"] in ("complete", "failed"),
    )
    assert status["status"] == "complete" and isinstance(status["failed_redactions"], dict)
    media_gone = admin.request("DELETE", f"{A}/v1/users/{q(user_id)}/media")
    assert media_gone.status == 200 and media_gone.body["total"] == 1, media_gone
    assert admin.get(f"{A}/v1/media/{server.server_name}/{media_id}").status == 404
    erased = admin.post(f"{A}/v1/deactivate/{q(user_id)}", {"erase": True})
    assert erased.status == 200, erased
    final = admin.get(f"{A}/v2/users/{q(user_id)}").body
    assert final["deactivated"] and final["erased"] is True
    deactivated = rows(
        ui_list(admin, f"{A}/v3/users", "name", filters={**defaults, "deactivated": True}), "users"
    )
    assert [u["name"] for u in deactivated] == [user_id]
    assert deactivated[0]["erased"] is True
    active = rows(
        ui_list(admin, f"{A}/v3/users", "name", filters={**defaults, "deactivated": False}), "users"
    )
    assert [u["name"] for u in active] == [other_id]
    # Synapse also names what it deleted (the UI types it, but only waits for the call).
    has(media_gone.body, {"deleted_media": list, "total": int}, "user media deletion")
    assert media_gone.body["deleted_media"] == [media_id]


def test_users_list_locked_filter(admin: Client, server: ServerProcess) -> None:
    """The list's "locked" switch: false leaves locked users out (the default), true
    includes them with the others (Synapse: `locked` only decides whether locked users are
    left out), unset is "all" to the UI."""
    tag = "uil" + secrets.token_hex(3)
    locked_id = new_user(server, f"{tag}a").user_id or ""
    open_id = new_user(server, f"{tag}b").user_id or ""
    assert admin.put(f"{A}/v2/users/{q(locked_id)}", {"locked": True}).status == 200

    def names(locked: bool | None) -> list[str]:
        filters = {"name": tag, "guests": False, "locked": locked, "suspended": False}
        return [
            u["name"]
            for u in rows(ui_list(admin, f"{A}/v3/users", "name", filters=filters), "users")
        ]

    assert names(False) == [open_id]
    assert names(True) == [locked_id, open_id]


def test_user_tabs_devices_connections_rooms_pushers_media(
    admin: Client, alice: Client, bob: Client, server: ServerProcess
) -> None:
    user = q(alice.user_id or "")
    # Devices tab: create, list, rename, remove one, remove several.
    made = admin.post(f"{A}/v2/users/{user}/devices", {"device_id": "UICREATED"})
    assert made.status in (200, 201), made
    listing = ui_reference(admin, f"{A}/v2/users/{user}/devices")
    devices = rows(listing, "devices")
    for device in devices:
        has(device, DEVICE, "device")
        assert device["user_id"] == alice.user_id
    assert {alice.device_id, "UICREATED"} <= {d["device_id"] for d in devices}
    assert listing.body["total"] == len(devices)
    renamed = admin.put(f"{A}/v2/users/{user}/devices/UICREATED", {"display_name": "from the UI"})
    assert renamed.status == 200, renamed
    again = rows(ui_reference(admin, f"{A}/v2/users/{user}/devices"), "devices")
    assert {d["device_id"]: d["display_name"] for d in again}["UICREATED"] == "from the UI"
    removed = admin.request("DELETE", f"{A}/v2/users/{user}/devices/UICREATED")
    assert removed.status == 200, removed
    for extra in ("UIBULK1", "UIBULK2"):
        assert admin.post(f"{A}/v2/users/{user}/devices", {"device_id": extra}).status in (200, 201)
    bulk = admin.post(f"{A}/v2/users/{user}/delete_devices", {"devices": ["UIBULK1", "UIBULK2"]})
    assert bulk.status == 200, bulk
    left = {
        d["device_id"] for d in rows(ui_reference(admin, f"{A}/v2/users/{user}/devices"), "devices")
    }
    assert left == {alice.device_id}

    # Connections tab: whois, read as devices[].sessions[0].connections.
    alice.get("account/whoami")

    def connections() -> list[dict[str, Any]]:
        resp = admin.get(f"{A}/v1/whois/{user}")
        assert resp.status == 200, resp
        assert resp.body["user_id"] == alice.user_id
        assert isinstance(resp.body["devices"], dict)
        found = []
        for device in resp.body["devices"].values():
            session = device["sessions"][0]
            found.extend(session["connections"])
        return found

    seen = poll("alice's connection", connections, lambda c: any(x["ip"] for x in c))
    for connection in seen:
        has(connection, CONNECTION, "connection")
    assert any(c["ip"] == "127.0.0.1" and isinstance(c["last_seen"], int) for c in seen)

    # Rooms tab (joined rooms, each looked up in the rooms resource) and memberships tab.
    room_id = create_room(alice, name="UI tabs")
    join(bob, room_id)
    invited_to = create_room(alice, preset="private_chat")
    assert alice.post(f"rooms/{q(invited_to)}/invite", {"user_id": bob.user_id}).status == 200
    joined = ui_reference(admin, f"{A}/v1/users/{q(bob.user_id or '')}/joined_rooms")
    joined_rooms = rows(joined, "joined_rooms")
    assert all(isinstance(r, str) for r in joined_rooms) and room_id in joined_rooms
    assert invited_to not in joined_rooms and joined.body["total"] == len(joined_rooms)
    room = admin.get(f"{A}/v1/rooms/{q(room_id)}")
    assert room.status == 200, room
    has(room.body, ROOM_DETAILS, "joined room")
    assert room.body["name"] == "UI tabs" and room.body["joined_members"] == 2
    memberships = ui_reference(admin, f"{A}/v1/users/{q(bob.user_id or '')}/memberships")
    assert memberships.status == 200, memberships
    has(memberships.body, {"memberships": dict, "total": int}, "memberships")
    assert memberships.body["memberships"][room_id] == "join"
    assert memberships.body["memberships"][invited_to] == "invite"
    assert memberships.body["total"] == len(memberships.body["memberships"])

    # Pushers tab.
    pusher: dict[str, Any] = {
        "kind": "http",
        "app_id": "org.example.ui",
        "pushkey": "ui-pushkey",
        "app_display_name": "UI app",
        "device_display_name": "UI phone",
        "lang": "en",
        "profile_tag": "tag1",
        "data": {"url": "http://127.0.0.1:9/_matrix/push/v1/notify"},
    }
    assert alice.post("pushers/set", pusher).status == 200
    pushers = ui_reference(admin, f"{A}/v1/users/{user}/pushers")
    (shown,) = rows(pushers, "pushers")
    has(shown, PUSHER, "pusher")
    assert shown["pushkey"] == "ui-pushkey" and shown["data"]["url"] == pusher["data"]["url"]
    assert pushers.body["total"] == 1

    # Media tab: sorted by creation, newest first; protect, quarantine, delete.
    first = upload(alice, b"first file", "first.txt")
    time.sleep(0.02)
    second = upload(alice, b"second, longer file", "second.txt")
    path = f"{A}/v1/users/{user}/media"

    def media() -> dict[str, dict[str, Any]]:
        listing = ui_reference(admin, path, "created_ts")
        found = rows(listing, "media")
        assert listing.body["total"] == len(found)
        for item in found:
            has(item, USER_MEDIA, "user media")
        return {m["media_id"]: m for m in found}

    listed = ui_reference(admin, path, "created_ts")
    assert [m["media_id"] for m in rows(listed, "media")] == [second, first]
    by_id = media()
    assert by_id[first]["upload_name"] == "first.txt" and by_id[first]["media_length"] == 10
    assert by_id[first]["media_type"] == "text/plain"
    for column in (
        "media_id",
        "created_ts",
        "last_access_ts",
        "media_length",
        "media_type",
        "upload_name",
        "quarantined_by",
    ):
        for order in ("ASC", "DESC"):
            resp = ui_reference(admin, path, column, order)
            assert resp.status == 200 and resp.body["total"] == 2, (column, order, resp)
    name = server.server_name
    assert admin.post(f"{A}/v1/media/protect/{first}").status == 200
    assert media()[first]["safe_from_quarantine"] is True
    assert admin.post(f"{A}/v1/media/unprotect/{first}").status == 200
    assert media()[first]["safe_from_quarantine"] is False
    assert admin.post(f"{A}/v1/media/quarantine/{name}/{first}").status == 200
    assert media()[first]["quarantined_by"] == admin.user_id
    assert admin.post(f"{A}/v1/media/unquarantine/{name}/{first}").status == 200
    assert media()[first]["quarantined_by"] is None
    everything = admin.request(
        "POST",
        f"{A}/v1/user/{user}/media/quarantine",
        raw=b"{}",
        headers={"Content-Type": "application/json"},
    )
    assert everything.status == 200 and everything.body["num_quarantined"] == 2, everything
    deleted = admin.request("DELETE", f"{A}/v1/media/{name}/{second}")
    assert deleted.status == 200, deleted
    has(deleted.body, {"deleted_media": list, "total": int})
    assert deleted.body["deleted_media"] == [second] and deleted.body["total"] == 1
    assert list(media()) == [first]


def test_rooms_list_show_tabs_and_actions(
    admin: Client, alice: Client, bob: Client, server: ServerProcess
) -> None:
    tag = secrets.token_hex(3)
    name = server.server_name
    room_id = create_room(
        alice, name=f"UI room {tag}", topic="a topic", room_alias_name=f"uiroom{tag}"
    )
    join(bob, room_id)
    listed = create_room(alice, name=f"UI listed {tag}", visibility="public")
    empty = create_room(alice, name=f"UI empty {tag}")
    assert alice.post(f"rooms/{q(empty)}/leave", {}).status == 200
    hello = alice.put(
        f"rooms/{q(room_id)}/send/m.room.message/h1", {"msgtype": "m.text", "body": "hello UI"}
    ).body["event_id"]
    media_id = upload(alice, b"room file", "room.txt")
    assert (
        alice.put(
            f"rooms/{q(room_id)}/send/m.room.message/f1",
            {"msgtype": "m.file", "body": "room.txt", "url": f"mxc://{name}/{media_id}"},
        ).status
        == 200
    )

    # List: sorted by name, with its search box and the public/empty filters.
    listing = ui_list(admin, f"{A}/v1/rooms", "name", filters={"search_term": tag})
    found = rows(listing, "rooms", "total_rooms")
    for entry in found:
        has(entry, ROOM_LIST_ENTRY, "rooms list")
    assert [r["room_id"] for r in found] == [empty, listed, room_id]
    assert listing.body["total_rooms"] == 3
    by_id = {r["room_id"]: r for r in found}
    assert by_id[room_id]["joined_members"] == 2 and by_id[empty]["joined_members"] == 0
    assert by_id[room_id]["canonical_alias"] == f"#uiroom{tag}:{name}"
    assert by_id[listed]["public"] and not by_id[room_id]["public"]
    assert by_id[room_id]["creator"] == alice.user_id
    for column in (
        "name",
        "encryption",
        "joined_members",
        "joined_local_members",
        "state_events",
        "version",
        "join_rules",
        "creator",
        "federatable",
        "public",
    ):
        for order in ("ASC", "DESC"):
            resp = ui_list(admin, f"{A}/v1/rooms", column, order, filters={"search_term": tag})
            assert resp.status == 200 and resp.body["total_rooms"] == 3, (column, order, resp)

    def filtered(**flags: bool) -> list[str]:
        resp = ui_list(admin, f"{A}/v1/rooms", "name", filters={"search_term": tag, **flags})
        return [r["room_id"] for r in rows(resp, "rooms", "total_rooms")]

    assert filtered(public_rooms=True) == [listed]
    assert filtered(public_rooms=False) == [empty, room_id]
    assert filtered(empty_rooms=True) == [empty]
    assert filtered(empty_rooms=False) == [listed, room_id]

    # Show page, with its creator looked up in the users resource.
    details = admin.get(f"{A}/v1/rooms/{q(room_id)}")
    assert details.status == 200, details
    has(details.body, ROOM_DETAILS, "room details")
    assert details.body["topic"] == "a topic" and details.body["joined_local_devices"] >= 2
    creator = admin.get(f"{A}/v2/users/{q(details.body['creator'])}")
    assert creator.status == 200 and creator.body["name"] == alice.user_id
    # Members tab (the room ID goes into these paths unencoded).
    members = ui_reference(admin, f"{A}/v1/rooms/{room_id}/members")
    assert set(rows(members, "members")) == {alice.user_id, bob.user_id}
    assert members.body["total"] == 2
    # State tab: the UI counts the events itself.
    state = rows(ui_reference(admin, f"{A}/v1/rooms/{room_id}/state"), "state", None)
    for event in state:
        has(event, STATE_EVENT, "state event")
    topic = next(e for e in state if e["type"] == "m.room.topic")
    assert topic["content"] == {"topic": "a topic"} and topic["sender"] == alice.user_id
    # Media tab: local MXC URIs (Synapse sends no total here), then one deleted.
    room_media = ui_reference(admin, f"{A}/v1/room/{room_id}/media")
    assert room_media.status == 200, room_media
    has(room_media.body, {"local": list, "remote": list}, "room media")
    assert room_media.body["local"] == [f"mxc://{name}/{media_id}"]
    if "total" in room_media.body:
        assert room_media.body["total"] == 1
    gone = admin.request("DELETE", f"{A}/v1/media/{name}/{media_id}")
    assert gone.status == 200 and gone.body["deleted_media"] == [media_id], gone
    # Forward extremities tab.
    extremities = ui_reference(admin, f"{A}/v1/rooms/{room_id}/forward_extremities")
    results = rows(extremities, "results", "count")
    assert len(results) == extremities.body["count"] == 1
    has(results[0], EXTREMITY, "forward extremity")

    # Messages tab: newest event by time, its context (limit 0) for a token, then pages.
    now = str(int(time.time() * 1000) + 1000)
    latest = admin.get(
        f"{A}/v1/rooms/{q(room_id)}/timestamp_to_event", params={"ts": now, "dir": "b"}
    )
    assert latest.status == 200, latest
    has(latest.body, {"event_id": str, "origin_server_ts": int})
    context = admin.get(
        f"{A}/v1/rooms/{q(room_id)}/context/{q(latest.body['event_id'])}", params={"limit": "0"}
    )
    assert context.status == 200, context
    has(
        context.body,
        {
            "event": dict,
            "events_before": list,
            "events_after": list,
            "start": str,
            "end": str,
            "state": list,
        },
        "context",
    )
    has(context.body["event"], CLIENT_EVENT, "context event")
    page = admin.get(
        f"{A}/v1/rooms/{q(room_id)}/messages",
        params={"from": context.body["end"], "dir": "b", "limit": "20"},
    )
    assert page.status == 200, page
    has(page.body, {"chunk": list, "start": str}, "messages")
    for event in page.body["chunk"]:
        has(event, CLIENT_EVENT, "message")
    assert "hello UI" in [e["content"].get("body") for e in page.body["chunk"]]
    only = json.dumps({"types": ["m.room.message"], "senders": [alice.user_id]})
    texts = admin.get(
        f"{A}/v1/rooms/{q(room_id)}/messages",
        params={"from": context.body["end"], "dir": "b", "limit": "20", "filter": only},
    ).body
    assert texts["chunk"] and {e["type"] for e in texts["chunk"]} == {"m.room.message"}
    if page.body.get("end"):
        more = admin.get(
            f"{A}/v1/rooms/{q(room_id)}/messages",
            params={"from": page.body["end"], "dir": "b", "limit": "20"},
        )
        assert more.status == 200 and isinstance(more.body["chunk"], list), more
    # "Jump to date": the first event after a time, with 5 events of context around it.
    sent_ts = admin.get(f"{A}/v1/fetch_event/{q(hello)}").body["event"]["origin_server_ts"]
    jump = admin.get(
        f"{A}/v1/rooms/{q(room_id)}/timestamp_to_event", params={"ts": str(sent_ts), "dir": "f"}
    )
    assert jump.status == 200 and jump.body["event_id"] == hello, jump
    around = admin.get(f"{A}/v1/rooms/{q(room_id)}/context/{q(hello)}", params={"limit": "5"})
    assert around.status == 200 and around.body["event"]["event_id"] == hello, around
    assert around.body["events_before"] and around.body["events_after"]
    # Event lookup dialog.
    fetched = admin.get(f"{A}/v1/fetch_event/{q(hello)}")
    assert fetched.status == 200 and fetched.body["event"]["event_id"] == hello, fetched

    # Block / unblock.
    block = f"{A}/v1/rooms/{q(room_id)}/block"
    assert admin.get(block).body["block"] is False
    assert admin.put(block, {"block": True}).status == 200
    assert admin.get(block).body["block"] is True
    assert admin.put(block, {"block": False}).status == 200
    # Join a user, make them room admin.
    carol = new_user(server)
    joined = admin.post(f"{A}/v1/join/{q(room_id)}", {"user_id": carol.user_id})
    assert joined.status == 200, joined
    members = ui_reference(admin, f"{A}/v1/rooms/{room_id}/members")
    assert carol.user_id in rows(members, "members")
    made_admin = admin.post(
        f"{A}/v1/rooms/{q(room_id)}/make_room_admin", {"user_id": carol.user_id}
    )
    assert made_admin.status == 200, made_admin
    levels = alice.get(f"rooms/{q(room_id)}/state/m.room.power_levels").body
    assert levels["users"][carol.user_id] == 100
    # Quarantine all media of the room (body "{}").
    quarantined = admin.request(
        "POST",
        f"{A}/v1/room/{q(room_id)}/media/quarantine",
        raw=b"{}",
        headers={"Content-Type": "application/json"},
    )
    assert quarantined.status == 200 and isinstance(quarantined.body["num_quarantined"], int)
    # Purge history, then its status.
    purge = admin.post(
        f"{A}/v1/purge_history/{q(room_id)}",
        {"purge_up_to_ts": int(time.time() * 1000), "delete_local_events": False},
    )
    assert purge.status == 200 and isinstance(purge.body["purge_id"], str), purge
    purged = poll(
        "purge",
        lambda: job_status(admin, f"{A}/v1/purge_history_status/{q(purge.body['purge_id'])}"),
        lambda s: s["status"] != "active",
    )
    assert purged["status"] == "complete", purged
    # Database room statistics (linked from the list; no query parameters).
    sizes = rows(admin.get(f"{A}/v1/statistics/database/rooms"), "rooms", None)
    for size in sizes:
        has(size, {"room_id": str, "estimated_size": int}, "room size")

    # Delete with "block" (the delete button): a job to poll, then the room is gone and blocked.
    deleted = admin.request("DELETE", f"{A}/v2/rooms/{q(room_id)}", {"block": True})
    assert deleted.status == 200 and isinstance(deleted.body["delete_id"], str), deleted
    status = poll(
        "room deletion",
        lambda: job_status(admin, f"{A}/v2/rooms/delete_status/{q(deleted.body['delete_id'])}"),
        lambda s: s["status"] in ("complete", "failed"),
    )
    assert status["status"] == "complete", status
    assert admin.get(f"{A}/v1/rooms/{q(room_id)}").status == 404  # the UI shows a stub then
    assert admin.get(block).body["block"] is True
    # The list's bulk delete: the resource's own delete, one per selected room (raw ID,
    # {"block": false}). The list keeps answering while the rooms are being purged (react-admin
    # refreshes it meanwhile).
    doomed = [listed] + [create_room(alice, name=f"UI bulk {tag} {i}") for i in range(4)]
    jobs = []
    for doomed_id in doomed:
        bulk = admin.request("DELETE", f"{A}/v2/rooms/{doomed_id}", {"block": False})
        assert bulk.status == 200 and isinstance(bulk.body["delete_id"], str), bulk
        jobs.append(bulk.body["delete_id"])
    deadline = time.monotonic() + 15
    while True:
        remaining = filtered()
        statuses = [job_status(admin, f"{A}/v2/rooms/delete_status/{q(j)}")["status"] for j in jobs]
        if set(statuses) == {"complete"} and not set(doomed) & set(remaining):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.02)
    assert remaining == [empty]


def test_room_directory(admin: Client, alice: Client, bob: Client) -> None:
    """Publish (a room's page, or in bulk from the list) and unpublish, by a server admin who
    is not in the room, and the directory list."""
    localpart = f"uidir{secrets.token_hex(3)}"
    room_id = create_room(alice, name="UI directory", topic="a topic", room_alias_name=localpart)
    join(bob, room_id)
    published = admin.put(f"directory/list/room/{room_id}", {"visibility": "public"})
    assert published.status == 200, published
    directory = ui_list(admin, "/_matrix/client/v3/publicRooms", "id")
    chunk = rows(directory, "chunk", "total_room_count_estimate")
    entry = next(r for r in chunk if r["room_id"] == room_id)
    has(entry, DIRECTORY_ENTRY, "directory entry")
    assert entry["num_joined_members"] == 2 and entry["topic"] == "a topic"
    assert entry["name"] == "UI directory"
    assert entry["canonical_alias"] == f"#{localpart}:{alice.server.server_name}"
    assert admin.get(f"{A}/v1/rooms/{q(room_id)}").body["public"]
    unpublished = admin.put(f"directory/list/room/{room_id}", {"visibility": "private"})
    assert unpublished.status == 200, unpublished
    chunk = rows(
        ui_list(admin, "/_matrix/client/v3/publicRooms", "id"), "chunk", "total_room_count_estimate"
    )
    assert room_id not in [r["room_id"] for r in chunk]
    assert not admin.get(f"{A}/v1/rooms/{q(room_id)}").body["public"]


def test_event_reports(admin: Client, alice: Client, bob: Client) -> None:
    room_id = create_room(alice, name="Reported room")
    join(bob, room_id)
    events = []
    for i in range(2):
        sent = bob.put(
            f"rooms/{q(room_id)}/send/m.room.message/r{i}",
            {"msgtype": "m.text", "body": f"bad {i}"},
        )
        events.append(sent.body["event_id"])
        report = alice.post(
            f"rooms/{q(room_id)}/report/{q(sent.body['event_id'])}",
            {"reason": f"reason {i}", "score": -100},
        )
        assert report.status == 200, report
        time.sleep(0.02)
    listing = ui_list(admin, f"{A}/v1/event_reports", "received_ts", "DESC")
    reports = rows(listing, "event_reports")
    for entry in reports:
        has(entry, REPORT, "report")
        if "score" in entry:
            has(entry, {"score": (int, NULL)})
    mine = [r for r in reports if r["event_id"] in events]
    assert [r["event_id"] for r in mine] == events[::-1]  # newest first
    assert mine[0]["name"] == "Reported room" and mine[0]["sender"] == bob.user_id
    assert mine[0]["user_id"] == alice.user_id and mine[0]["reason"] == "reason 1"
    oldest_first = rows(
        ui_list(admin, f"{A}/v1/event_reports", "received_ts", "ASC"), "event_reports"
    )
    assert [r["event_id"] for r in oldest_first if r["event_id"] in events] == events
    # Show page: the report, its event, and the people and room it refers to.
    shown = admin.get(f"{A}/v1/event_reports/{mine[0]['id']}")
    assert shown.status == 200, shown
    has(shown.body, {**REPORT, "event_json": dict}, "report details")
    assert shown.body["event_json"]["content"]["body"] == "bad 1"
    for person in (shown.body["user_id"], shown.body["sender"]):
        assert admin.get(f"{A}/v2/users/{q(person)}").status == 200
    assert admin.get(f"{A}/v1/rooms/{q(shown.body['room_id'])}").status == 200
    # Delete: the provider's generic delete sends the previous record as the body.
    gone = admin.request("DELETE", f"{A}/v1/event_reports/{mine[0]['id']}", shown.body)
    assert gone.status == 200, gone
    assert admin.get(f"{A}/v1/event_reports/{mine[0]['id']}").status == 404


def test_registration_tokens(admin: Client) -> None:
    tag = "ui" + secrets.token_hex(4)
    expiry = int(time.time() * 1000) + 86_400_000
    # Create: every input optional; what is left empty is not sent.
    named = admin.post(
        f"{A}/v1/registration_tokens/new", {"token": tag, "uses_allowed": 5, "expiry_time": expiry}
    )
    assert named.status == 200, named
    has(named.body, TOKEN, "new token")
    assert (named.body["token"], named.body["uses_allowed"], named.body["expiry_time"]) == (
        tag,
        5,
        expiry,
    )
    sized = admin.post(f"{A}/v1/registration_tokens/new", {"length": 20})
    assert sized.status == 200 and len(sized.body["token"]) == 20, sized
    blank = admin.post(f"{A}/v1/registration_tokens/new", {})
    assert blank.status == 200 and blank.body["uses_allowed"] is None, blank
    expired = admin.post(f"{A}/v1/registration_tokens/new", {"uses_allowed": 0})
    assert expired.status == 200, expired
    # List: filter valid=true by default; no pagination (the UI counts the rows).
    valid = rows(
        ui_list(admin, f"{A}/v1/registration_tokens", "id", filters={"valid": True}),
        "registration_tokens",
        None,
    )
    for token in valid:
        has(token, TOKEN, "token")
    tokens = {t["token"] for t in valid}
    assert {tag, sized.body["token"], blank.body["token"]} <= tokens
    assert expired.body["token"] not in tokens
    # The screen has no pagination: whatever `limit` says, every token comes back.
    one_page = rows(
        ui_list(admin, f"{A}/v1/registration_tokens", "id", filters={"valid": True}, per_page=1),
        "registration_tokens",
        None,
    )
    assert {t["token"] for t in one_page} == tokens
    invalid = rows(
        ui_list(admin, f"{A}/v1/registration_tokens", "id", filters={"valid": False}),
        "registration_tokens",
        None,
    )
    assert expired.body["token"] in {t["token"] for t in invalid}
    assert tag not in {t["token"] for t in invalid}
    # Edit: the whole record goes back; only uses_allowed and expiry_time are inputs.
    shown = admin.get(f"{A}/v1/registration_tokens/{q(tag)}")
    assert shown.status == 200, shown
    has(shown.body, TOKEN, "token details")
    record = {**shown.body, "id": tag, "uses_allowed": 9, "expiry_time": expiry + 1000}
    updated = admin.put(f"{A}/v1/registration_tokens/{q(tag)}", drop_nulls(record))
    assert updated.status == 200, updated
    assert (updated.body["token"], updated.body["uses_allowed"], updated.body["expiry_time"]) == (
        tag,
        9,
        expiry + 1000,
    )
    # Delete: raw token in the path, no body.
    assert admin.request("DELETE", f"{A}/v1/registration_tokens/{tag}").status == 200
    assert admin.get(f"{A}/v1/registration_tokens/{q(tag)}").status == 404


def test_server_notices(server_factory: Any) -> None:
    server = server_factory({"server_notices": {"system_mxid_localpart": "notices"}})
    admin = shared_secret_register(server, admin=True)
    users = [new_user(server) for _ in range(2)]
    # One user (the user page's button) or several (the list's bulk button): one POST each.
    for user in users:
        sent = admin.post(
            f"{A}/v1/send_server_notice",
            {"user_id": user.user_id, "content": {"msgtype": "m.text", "body": "From the UI"}},
        )
        assert sent.status == 200, sent
        has(sent.body, {"event_id": str}, "server notice")
    for user in users:
        invites = user.get("sync", params={"timeout": "0"}).body["rooms"]["invite"]
        ((room_id, _),) = invites.items()
        assert user.post(f"join/{q(room_id)}", {}).status == 200
        chunk = user.get(f"rooms/{q(room_id)}/messages", params={"dir": "b"}).body["chunk"]
        assert "From the UI" in [e["content"].get("body") for e in chunk]


def test_destinations(admin: Client, alice: Client) -> None:
    # A server that refuses connections: sending it a to-device message records a failure.
    destination = f"127.0.0.1:{free_port()}"
    sent = alice.put(
        f"sendToDevice/m.ui.test/{secrets.token_hex(4)}",
        {"messages": {f"@someone:{destination}": {"*": {"x": 1}}}},
    )
    assert sent.status == 200, sent

    def listed() -> list[dict[str, Any]]:
        resp = ui_list(
            admin,
            f"{A}/v1/federation/destinations",
            "destination",
            filters={"destination": destination},
        )
        return rows(resp, "destinations")

    found = poll("destination failure", listed, lambda d: bool(d) and bool(d[0]["failure_ts"]))
    assert [d["destination"] for d in found] == [destination]
    has(found[0], DESTINATION, "destination")
    assert found[0]["retry_last_ts"] > 0 and found[0]["retry_interval"] > 0
    for column in (
        "destination",
        "failure_ts",
        "retry_last_ts",
        "retry_interval",
        "last_successful_stream_ordering",
    ):
        for order in ("ASC", "DESC"):
            resp = ui_list(admin, f"{A}/v1/federation/destinations", column, order)
            assert resp.status == 200, (column, order, resp)
            assert destination in [d["destination"] for d in rows(resp, "destinations")]
    shown = admin.get(f"{A}/v1/federation/destinations/{q(destination)}")
    assert shown.status == 200, shown
    has(shown.body, DESTINATION, "destination details")
    rooms = ui_reference(admin, f"{A}/v1/federation/destinations/{destination}/rooms", per_page=50)
    assert rows(rooms, "rooms") == [] and rooms.body["total"] == 0
    # Reconnect (the destinations resource's "delete").
    reset = admin.post(f"{A}/v1/federation/destinations/{destination}/reset_connection")
    assert reset.status == 200, reset
    unknown = admin.get(f"{A}/v1/federation/destinations/{q('unknown.example')}")
    assert unknown.status == 404 and unknown.body["errcode"] == "M_NOT_FOUND", unknown


def test_user_media_statistics_and_cleanup(admin: Client, alice: Client) -> None:
    localpart = (alice.user_id or "")[1:].split(":")[0]
    uploaded = [
        upload(alice, b"x" * size, f"f{size}.bin", "application/octet-stream") for size in (10, 32)
    ]
    listing = ui_list(
        admin,
        f"{A}/v1/statistics/users/media",
        "media_length",
        "DESC",
        filters={"search_term": localpart},
    )
    (entry,) = rows(listing, "users")
    has(entry, MEDIA_STATS, "media statistics")
    assert (entry["user_id"], entry["media_count"], entry["media_length"]) == (alice.user_id, 2, 42)
    assert listing.body["total"] == 1
    for column in ("user_id", "displayname", "media_count", "media_length"):
        for order in ("ASC", "DESC"):
            resp = ui_list(admin, f"{A}/v1/statistics/users/media", column, order)
            assert resp.status == 200 and rows(resp, "users"), (column, order, resp)
    whole = rows(ui_list(admin, f"{A}/v1/statistics/users/media", "media_length", "DESC"), "users")
    sizes = [u["media_length"] for u in whole]
    assert sizes == sorted(sizes, reverse=True)
    assert admin.get(f"{A}/v2/users/{q(entry['user_id'])}").status == 200  # the avatar column
    # "Delete local media" (by date and size, keeping avatars) and "purge remote media".
    before = int(time.time() * 1000) + 1000
    deleted = admin.post(
        f"{A}/v1/media/delete",
        params={"before_ts": str(before), "size_gt": "20", "keep_profiles": "true"},
    )
    assert deleted.status == 200, deleted
    has(deleted.body, {"deleted_media": list, "total": int}, "media deletion")
    assert uploaded[1] in deleted.body["deleted_media"]
    assert uploaded[0] not in deleted.body["deleted_media"]  # not larger than 20 bytes
    after = rows(
        ui_list(
            admin,
            f"{A}/v1/statistics/users/media",
            "media_length",
            "DESC",
            filters={"search_term": localpart},
        ),
        "users",
    )
    assert (after[0]["media_count"], after[0]["media_length"]) == (1, 10)
    purged = admin.post(f"{A}/v1/purge_media_cache", params={"before_ts": str(before)})
    assert purged.status == 200 and isinstance(purged.body["deleted"], int), purged


def test_scheduled_tasks(admin: Client, alice: Client) -> None:
    room_id = create_room(alice)
    deleted = admin.request("DELETE", f"{A}/v2/rooms/{q(room_id)}", {"block": False})
    assert deleted.status == 200, deleted
    task_id = deleted.body["delete_id"]
    poll(
        "room deletion",
        lambda: job_status(admin, f"{A}/v2/rooms/delete_status/{q(task_id)}"),
        lambda s: s["status"] == "complete",
    )
    # List: newest first by ID; the UI counts the rows.
    tasks = rows(ui_list(admin, f"{A}/v1/scheduled_tasks", "id", "DESC"), "scheduled_tasks", None)
    for task in tasks:
        has(task, TASK, "scheduled task")
        assert "result" in task
    assert task_id in [t["id"] for t in tasks]
    (mine,) = rows(
        ui_list(admin, f"{A}/v1/scheduled_tasks", "id", "DESC", filters={"resource_id": room_id}),
        "scheduled_tasks",
        None,
    )
    assert (mine["id"], mine["status"], mine["resource_id"]) == (task_id, "complete", room_id)
    # Its filters: status, action, resource and a latest timestamp.
    narrowed = rows(
        ui_list(
            admin,
            f"{A}/v1/scheduled_tasks",
            "id",
            "DESC",
            filters={"status": "complete", "action_name": mine["action"], "resource_id": room_id},
        ),
        "scheduled_tasks",
        None,
    )
    assert [t["id"] for t in narrowed] == [task_id]
    running = rows(
        ui_list(
            admin,
            f"{A}/v1/scheduled_tasks",
            "id",
            "DESC",
            filters={"status": "active", "resource_id": room_id},
        ),
        "scheduled_tasks",
        None,
    )
    assert running == []
    too_early = rows(
        ui_list(admin, f"{A}/v1/scheduled_tasks", "id", "DESC", filters={"max_timestamp": 1}),
        "scheduled_tasks",
        None,
    )
    assert task_id not in [t["id"] for t in too_early]
