"""Admin API for users, on Synapse's paths and in its shapes (synapse-admin reads these
fields). Every look at or change to a user's data is audited."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, bad_json, invalid_param, not_found
from homeserver.http.server import FileBody, MatrixRequest, Router
from homeserver.http.servlet import optional, parse_json_object, query_int, query_string
from homeserver.services.room_shutdown import REDACT_USER
from homeserver.storage.admin import USER_MEDIA_ORDERS

if TYPE_CHECKING:
    from homeserver.server import HomeServer

ADMIN = "/_synapse/admin"
_BOOL = {"true": True, "false": False}


def query_flag(request: MatrixRequest, name: str) -> bool | None:
    value = request.query_arg(name)
    if value is None:
        return None
    if value not in _BOOL:
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must be true or false")
    return _BOOL[value]


def page(request: MatrixRequest) -> tuple[int, int]:
    start = request.query_arg("from") or "0"
    if not re.fullmatch(r"\d{1,9}", start):
        raise MatrixError(400, Codes.INVALID_PARAM, "from must be a non-negative integer")
    return int(start), query_int(request, "limit", 100, minimum=0, maximum=10_000)


def paged(
    key: str, chunk: list[Any], offset: int, total: int, token: type[int] | type[str] = int
) -> dict[str, Any]:
    """A page of a Synapse admin listing: the chunk under `key`, `total`, and `next_token`
    (as the int or string Synapse uses for that listing) while more follow."""
    body: dict[str, Any] = {key: chunk, "total": total}
    if chunk and offset + len(chunk) < total:
        body["next_token"] = token(offset + len(chunk))
    return body


def register(hs: HomeServer, router: Router) -> None:
    admin = hs.admin
    store = admin.store

    def list_users(v3: bool) -> Any:
        async def handler(request: MatrixRequest) -> tuple[int, Any]:
            await hs.auth.require_admin(request)
            offset, limit = page(request)
            order_by = query_string(request, "order_by", "name")
            if order_by not in (
                "name", "is_guest", "admin", "user_type", "deactivated", "shadow_banned",
                "displayname", "avatar_url", "creation_ts", "last_seen_ts", "locked",
                "suspended", "approved",
            ):  # fmt: skip
                raise MatrixError(400, Codes.INVALID_PARAM, "Unknown order_by")
            direction = query_string(request, "dir", "f", ("f", "b"))
            deactivated = query_flag(request, "deactivated")
            # Locked users are listed only when asked to include them (both versions, as
            # Synapse documents); deactivated ones likewise in v2, by the filter in v3.
            locked = None if query_flag(request, "locked") else False
            if not v3:
                deactivated = None if deactivated else False
            query_flag(request, "guests")  # checked; there are no guest accounts here
            user_types = request.query_args("user_types") or None
            users, total = await store.list_users(
                offset, limit, str(order_by), direction == "f",
                query_string(request, "name"), query_string(request, "user_id"),
                deactivated, query_flag(request, "admins"), locked,
                query_flag(request, "suspended"), user_types,
                request.query_args("not_user_types") or None,
            )  # fmt: skip
            return 200, paged("users", [admin.user_json(u) for u in users], offset, total, str)

        return handler

    async def get_user(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        user = await admin.require_user(user_id)
        await admin.audit(request, requester, "user.read", user_id)
        return 200, await admin.user_details(user)

    async def put_user(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        body = parse_json_object(request)
        if not hs.accounts.is_local(user_id):
            raise invalid_param("Only users of this server can be managed here")
        existing = await store.get_user(user_id)
        created = existing is None
        # Every field is checked before anything is written: a bad one changes nothing.
        password = optional(body, "password", str)
        if password is not None:
            password = hs.accounts.validate_new_password(password)
        displayname = optional(body, "displayname", str)
        avatar_url = optional(body, "avatar_url", str)
        make_admin = optional(body, "admin", bool)
        flags = {flag: optional(body, flag, bool, False) for flag in ("locked", "suspended")
                 if flag in body}  # fmt: skip
        user_type = optional(body, "user_type", str)
        threepids = _threepids(body["threepids"]) if "threepids" in body else None
        if threepids is not None:
            await hs.threepids.check_replacement(user_id, threepids)
        external_ids = _external_ids(body["external_ids"]) if "external_ids" in body else None
        for provider, external_id in external_ids or []:
            owner = await hs.stores.users.external_id_owner(provider, external_id)
            if owner is not None and owner != user_id:
                raise MatrixError(409, Codes.UNKNOWN, "External ID is already in use")
        deactivated = optional(body, "deactivated", bool)
        erase = optional(body, "erase", bool, False)
        logout_devices = optional(body, "logout_devices", bool, True)
        reactivate = deactivated is False and existing is not None and existing.deactivated
        if reactivate and password is None:
            # The account needs a way back in (deactivation removed its password).
            raise invalid_param("A password is needed to reactivate a user")
        if created:
            localpart = user_id[1:].split(":", 1)[0]
            await hs.accounts.create_account(
                localpart, password, admin=bool(make_admin), displayname=displayname
            )
        elif password is not None:
            await hs.accounts.change_password(user_id, password)
            if logout_devices:
                await hs.devices.delete_all_devices(user_id)
        if not created and "displayname" in body:
            await hs.profiles.set_field(user_id, user_id, "displayname", displayname)
        if "avatar_url" in body:
            await hs.profiles.set_field(user_id, user_id, "avatar_url", avatar_url)
        if make_admin is not None and not created:
            await store.set_flag(user_id, "is_admin", make_admin)
        for flag, value in flags.items():
            await store.set_flag(user_id, flag, value)
            hs.auth.account_state_changed()
        if "user_type" in body:
            await store.set_flag(user_id, "user_type", user_type)
        if threepids is not None:
            await hs.threepids.replace_for_user(user_id, threepids)
        if external_ids is not None:
            await hs.stores.users.replace_external_ids(user_id, external_ids)
        if deactivated and not created:
            await hs.accounts.deactivate(user_id, erase=erase)
        elif reactivate:
            await store.set_flag(user_id, "deactivated", False)
            hs.auth.account_state_changed()
        await admin.audit(request, requester, "user.create" if created else "user.modify",
                          user_id, details={k: True for k in body if k != "password"})  # fmt: skip
        user = await admin.require_user(user_id)
        return (201 if created else 200), await admin.user_details(user)

    async def username_available(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        username = query_string(request, "username")
        if not username:
            raise MatrixError(400, Codes.MISSING_PARAM, "username is required")
        if not await hs.accounts.is_available(username.lower()):
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")
        return 200, {"available": True}

    async def deactivate(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        body = parse_json_object(request, allow_empty=True)
        await admin.require_user(user_id)
        erase = optional(body, "erase", bool, False)
        await hs.accounts.deactivate(user_id, erase=erase)
        await admin.audit(request, requester, "user.deactivate", user_id, details={"erase": erase})
        return 200, {"id_server_unbind_result": "success"}

    async def reset_password(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        body = parse_json_object(request)
        await admin.require_user(user_id)
        new_password = body.get("new_password")
        if not isinstance(new_password, str):
            raise bad_json("new_password must be a string")
        await hs.accounts.change_password(user_id, hs.accounts.validate_new_password(new_password))
        if optional(body, "logout_devices", bool, True):
            await hs.devices.delete_all_devices(user_id)
        await admin.audit(request, requester, "user.reset_password", user_id)
        return 200, {}

    async def get_admin(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        return 200, {"admin": (await admin.require_user(user_id)).is_admin}

    async def put_admin(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        body = parse_json_object(request)
        value = body.get("admin")
        if not isinstance(value, bool):
            raise bad_json("admin must be a boolean")
        await admin.require_user(user_id)
        if user_id == requester.user_id and not value:
            raise MatrixError(400, Codes.UNKNOWN, "You may not demote yourself")
        await store.set_flag(user_id, "is_admin", value)
        await admin.audit(request, requester, "user.admin", user_id, details={"admin": value})
        return 200, {}

    async def whois(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        sessions: dict[str, Any] = {}
        for device in await hs.devices.get_devices(user_id):
            sessions[device.device_id] = {"sessions": [{"connections": [{
                "ip": device.last_seen_ip, "last_seen": device.last_seen_ts,
                "user_agent": device.last_seen_user_agent,
            }]}]}  # fmt: skip
        await admin.audit(request, requester, "user.whois", user_id)
        return 200, {"user_id": user_id, "devices": sessions}

    def device_json(device: Any, dehydrated: str | None = None) -> dict[str, Any]:
        return {"device_id": device.device_id, "display_name": device.display_name,
                "last_seen_ip": device.last_seen_ip, "last_seen_ts": device.last_seen_ts,
                "last_seen_user_agent": device.last_seen_user_agent,
                "user_id": device.user_id,
                "dehydrated": device.device_id == dehydrated}  # fmt: skip

    async def list_devices(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        found = await hs.stores.e2ee.get_dehydrated_device(user_id)
        dehydrated = found[0] if found else None
        devices = [device_json(d, dehydrated) for d in await hs.devices.get_devices(user_id)]
        await admin.audit(request, requester, "user.devices", user_id)
        return 200, {"devices": devices, "total": len(devices)}

    async def create_device(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        device_id = optional(parse_json_object(request), "device_id", str)
        if device_id is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "device_id is required")
        await hs.devices.ensure_device(user_id, device_id, None)
        await admin.audit(request, requester, "user.device_create", user_id,
                          details={"device_id": device_id})  # fmt: skip
        return 201, {}

    async def get_device(request: MatrixRequest, user_id: str, device_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        device = await hs.devices.get_device(user_id, device_id)
        await admin.audit(request, requester, "user.devices", user_id)
        return 200, device_json(device)

    async def put_device(request: MatrixRequest, user_id: str, device_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        body = parse_json_object(request)
        name = hs.devices.check_display_name(body.get("display_name"))
        await hs.devices.rename(user_id, device_id, name)
        await admin.audit(request, requester, "user.device_rename", user_id)
        return 200, {}

    async def delete_device(
        request: MatrixRequest, user_id: str, device_id: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        await hs.devices.delete_devices(user_id, [device_id])
        await admin.audit(request, requester, "user.device_delete", user_id)
        return 200, {}

    async def delete_devices(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        body = parse_json_object(request)
        devices = body.get("devices")
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise bad_json("devices must be a list of device IDs")
        await hs.devices.delete_devices(user_id, devices)
        await admin.audit(request, requester, "user.device_delete", user_id)
        return 200, {}

    async def joined_rooms(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        rooms = await hs.stores.events.get_rooms_for_user(user_id, ["join"])
        await admin.audit(request, requester, "user.joined_rooms", user_id)
        return 200, {"joined_rooms": sorted(rooms), "total": len(rooms)}

    async def memberships(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        result: dict[str, str] = {}
        for membership in ("join", "invite", "knock", "leave", "ban"):
            for room_id in await hs.stores.events.get_rooms_for_user(user_id, [membership]):
                result[room_id] = membership
        await admin.audit(request, requester, "user.memberships", user_id)
        return 200, {"memberships": result, "total": len(result)}

    async def pushers(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        found = [p for _, p in await hs.stores.push.get_pushers(user_id)]
        await admin.audit(request, requester, "user.pushers", user_id)
        return 200, {"pushers": found, "total": len(found)}

    async def account_data(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        global_data: dict[str, Any] = {}
        rooms: dict[str, Any] = {}
        for room_id, data_type, content in await hs.stores.account_data.get_all_for_user(user_id):
            if room_id:
                rooms.setdefault(room_id, {})[data_type] = content
            else:
                global_data[data_type] = content
        await admin.audit(request, requester, "user.account_data", user_id)
        return 200, {"account_data": {"global": global_data, "rooms": rooms}}

    async def user_media(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        offset, limit = page(request)
        direction = query_string(request, "dir", "f", ("f", "b"))
        order_by = query_string(request, "order_by", None, tuple(USER_MEDIA_ORDERS))
        rows, total = await store.user_media(
            user_id, order_by or "created_ts", offset, limit, direction == "f"
        )
        media = [
            {"media_id": r[0], "media_type": r[1], "upload_name": r[2], "media_length": r[3],
             "created_ts": r[4], "last_access_ts": r[4], "quarantined_by": r[5],
             "safe_from_quarantine": bool(r[6])}
            for r in rows
        ]  # fmt: skip
        await admin.audit(request, requester, "user.media", user_id)
        return 200, paged("media", media, offset, total)

    async def set_suspended(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        body = parse_json_object(request)
        value = body.get("suspend")
        if not isinstance(value, bool):
            raise bad_json("suspend must be a boolean")
        await store.set_flag(user_id, "suspended", value)
        hs.auth.account_state_changed()
        await admin.audit(request, requester, "user.suspend", user_id, details={"on": value})
        return 200, {f"user_{user_id}_suspended": value}

    async def shadow_ban(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        value = request.method == b"POST"
        await store.set_flag(user_id, "shadow_banned", value)
        hs.auth.account_state_changed()
        await admin.audit(request, requester, "user.shadow_ban", user_id, details={"on": value})
        return 200, {}

    async def user_by_threepid(
        request: MatrixRequest, medium: str, address: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        owner = await hs.threepids.store.owner(medium, address.lower())
        if owner is None:
            raise not_found("No user has this address")
        await admin.audit(request, requester, "user.by_threepid", owner)
        details = await admin.user_details(await admin.require_user(owner))
        return 200, {"user_id": owner, **details}

    async def user_by_external_id(
        request: MatrixRequest, provider: str, external_id: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        owner = await hs.stores.users.external_id_owner(provider, external_id)
        if owner is None:
            raise not_found("User not found")
        await admin.audit(request, requester, "user.by_external_id", owner)
        return 200, {"user_id": owner}

    async def request_export(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        export_id = await hs.exports.request(user_id, requester.user_id)
        await admin.audit(request, requester, "user.export", user_id, details={"id": export_id})
        return 200, {"export_id": export_id}

    async def export_status(
        request: MatrixRequest, user_id: str, export_id: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        return 200, await hs.exports.status(export_id, user_id, requester.user_id)

    async def export_download(
        request: MatrixRequest, user_id: str, export_id: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        path, name = await hs.exports.finished_file(export_id, user_id, requester.user_id)
        await admin.audit(request, requester, "user.export.download", user_id,
                          details={"id": export_id})  # fmt: skip
        return 200, FileBody(path, "application/zip", name)

    async def renew_account(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        # Accounts here do not expire, so there is nothing to renew (Synapse answers the
        # same when its account validity feature is off).
        raise MatrixError(400, Codes.UNKNOWN, "Account validity feature is disabled")

    async def get_override(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        found = hs.ratelimiter.overrides.get(user_id)
        if found is None:
            return 200, {}
        return 200, {"messages_per_second": found[0], "burst_count": found[1]}

    async def set_override(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        if request.method == b"DELETE":
            await store.set_override(user_id, None)
            hs.ratelimiter.overrides.pop(user_id, None)
            return 200, {}
        body = parse_json_object(request, allow_empty=True)
        rate = body.get("messages_per_second", 0)
        burst = body.get("burst_count", 0)
        if not isinstance(rate, int | float) or isinstance(rate, bool) or rate < 0:
            raise bad_json("messages_per_second must be a non-negative number")
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
            raise bad_json("burst_count must be a non-negative integer")
        await store.set_override(user_id, (float(rate), burst))
        hs.ratelimiter.overrides[user_id] = (float(rate), burst)
        await admin.audit(request, requester, "user.override_ratelimit", user_id)
        return 200, {"messages_per_second": rate, "burst_count": burst}

    async def login_as(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        user = await admin.require_user(user_id)
        if not hs.config.admin.allow_login_as:
            raise MatrixError(403, Codes.FORBIDDEN, "Logging in as a user is switched off here")
        if user.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "Logging in as another admin is refused")
        session = await hs.devices.start_session(user_id, None, "Admin login")
        await admin.audit(request, requester, "user.login_as", user_id,
                          details={"device_id": session.device_id})  # fmt: skip
        return 200, {"access_token": session.access_token}

    async def sent_invite_count(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        since = query_int(request, "from_ts", 0, minimum=0)
        return 200, {"invite_count": await store.count_sent_invites(user_id, since)}

    async def joined_room_count(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        count = await store.count_joined_rooms_ever(user_id)
        return 200, {"cumulative_joined_room_count": count}

    async def experimental_features(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        if request.method == b"PUT":
            parse_json_object(request)
        return 200, {"features": {}}  # no per-user experiments exist here

    async def allow_key_replacement(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.require_user(user_id)
        until = hs.clock.time_msec() + 10 * 60 * 1000
        await store.allow_cross_signing_replacement(user_id, until)
        await admin.audit(request, requester, "user.allow_cross_signing_replacement", user_id)
        return 200, {"updatable_without_uia_before_ms": until}

    async def client_admin_state(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        """The spec's client-API admin calls: /admin/suspend and /admin/lock."""
        requester = await hs.auth.require_admin(request)
        user = await admin.require_user(user_id)
        flag = "suspended" if b"/admin/suspend/" in request.path else "locked"
        if request.method == b"GET":
            return 200, {flag: getattr(user, flag)}
        body = parse_json_object(request)
        value = body.get(flag)
        if not isinstance(value, bool):
            raise bad_json(f"{flag} must be a boolean")
        await store.set_flag(user_id, flag, value)
        hs.auth.account_state_changed()
        await admin.audit(request, requester, f"user.{flag}", user_id, details={"on": value})
        return 200, {flag: value}

    async def redact_user(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        # Other servers' users too: moderation tools redact spammers from anywhere.
        body = parse_json_object(request, allow_empty=True)
        rooms = body.get("rooms", [])
        if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
            raise bad_json("rooms must be a list of room IDs")
        params: dict[str, Any] = {"rooms": rooms, "admin": requester.user_id}
        if isinstance(body.get("reason"), str):
            params["reason"] = body["reason"]
        if isinstance(body.get("limit"), int):
            params["limit"] = body["limit"]
        task_id = await hs.tasks.schedule(REDACT_USER, user_id, params)
        await admin.audit(request, requester, "user.redact", user_id, details={"rooms": rooms})
        return 200, {"redact_id": task_id}

    async def redact_status(request: MatrixRequest, redact_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        task = await hs.tasks.get(redact_id, REDACT_USER)
        result = task.get("result") or {}
        failed = result.get("failed_redactions", {})
        return 200, {"status": task["status"], "failed_redactions": failed}

    add = router.add
    add("POST", f"{ADMIN}/v1/user/{{user_id}}/redact", redact_user, "admin_user_redact")
    add("GET", f"{ADMIN}/v1/user/redact_status/{{redact_id}}", redact_status,
        "admin_user_redact_status")  # fmt: skip
    override_path = f"{ADMIN}/v1/users/{{user_id}}/override_ratelimit"
    add("GET", override_path, get_override, "admin_override_ratelimit")
    add("POST", override_path, set_override, "admin_override_ratelimit")
    add("DELETE", override_path, set_override, "admin_override_ratelimit")
    add("POST", f"{ADMIN}/v1/users/{{user_id}}/login", login_as, "admin_login_as")
    add("GET", f"{ADMIN}/v1/users/{{user_id}}/sent_invite_count", sent_invite_count,
        "admin_sent_invite_count")  # fmt: skip
    add("GET", f"{ADMIN}/v1/users/{{user_id}}/cumulative_joined_room_count", joined_room_count,
        "admin_joined_room_count")  # fmt: skip
    for method in ("GET", "PUT"):
        add(method, f"{ADMIN}/v1/experimental_features/{{user_id}}", experimental_features,
            "admin_experimental_features")  # fmt: skip
    add("POST", f"{ADMIN}/v1/users/{{user_id}}/_allow_cross_signing_replacement_without_uia",
        allow_key_replacement, "admin_cross_signing_replacement")  # fmt: skip
    for kind in ("suspend", "lock"):
        for method in ("GET", "PUT"):
            add(method, f"/_matrix/client/v1/admin/{kind}/{{user_id}}", client_admin_state,
                f"client_admin_{kind}")  # fmt: skip
    add("GET", f"{ADMIN}/v2/users", list_users(False), "admin_users")
    add("GET", f"{ADMIN}/v3/users", list_users(True), "admin_users")
    add("GET", f"{ADMIN}/v2/users/{{user_id}}", get_user, "admin_user")
    add("PUT", f"{ADMIN}/v2/users/{{user_id}}", put_user, "admin_user")
    add("GET", f"{ADMIN}/v1/username_available", username_available, "admin_username_available")
    add("POST", f"{ADMIN}/v1/deactivate/{{user_id}}", deactivate, "admin_deactivate")
    add("POST", f"{ADMIN}/v1/reset_password/{{user_id}}", reset_password, "admin_reset_password")
    add("GET", f"{ADMIN}/v1/users/{{user_id}}/admin", get_admin, "admin_user_admin")
    add("PUT", f"{ADMIN}/v1/users/{{user_id}}/admin", put_admin, "admin_user_admin")
    add("GET", f"{ADMIN}/v1/whois/{{user_id}}", whois, "admin_whois")
    add("GET", f"{ADMIN}/v2/users/{{user_id}}/devices", list_devices, "admin_devices")
    add("POST", f"{ADMIN}/v2/users/{{user_id}}/devices", create_device, "admin_devices")
    add("POST", f"{ADMIN}/v2/users/{{user_id}}/delete_devices", delete_devices, "admin_devices")
    add("GET", f"{ADMIN}/v2/users/{{user_id}}/devices/{{device_id}}", get_device, "admin_device")
    add("PUT", f"{ADMIN}/v2/users/{{user_id}}/devices/{{device_id}}", put_device, "admin_device")
    add("DELETE", f"{ADMIN}/v2/users/{{user_id}}/devices/{{device_id}}", delete_device,
        "admin_device")  # fmt: skip
    add("GET", f"{ADMIN}/v1/users/{{user_id}}/joined_rooms", joined_rooms, "admin_joined_rooms")
    add("GET", f"{ADMIN}/v1/users/{{user_id}}/memberships", memberships, "admin_memberships")
    add("GET", f"{ADMIN}/v1/users/{{user_id}}/pushers", pushers, "admin_pushers")
    add("GET", f"{ADMIN}/v1/users/{{user_id}}/accountdata", account_data, "admin_account_data")
    add("GET", f"{ADMIN}/v1/users/{{user_id}}/media", user_media, "admin_user_media")
    add("PUT", f"{ADMIN}/v1/suspend/{{user_id}}", set_suspended, "admin_suspend")
    add("POST", f"{ADMIN}/v1/users/{{user_id}}/shadow_ban", shadow_ban, "admin_shadow_ban")
    add("DELETE", f"{ADMIN}/v1/users/{{user_id}}/shadow_ban", shadow_ban, "admin_shadow_ban")
    add("GET", f"{ADMIN}/v1/threepid/{{medium}}/users/{{address}}", user_by_threepid,
        "admin_user_by_threepid")  # fmt: skip
    add("POST", f"{ADMIN}/v1/account_validity/validity", renew_account, "admin_account_validity")
    add("POST", f"{ADMIN}/v1/users/{{user_id}}/export", request_export, "admin_export")
    add("GET", f"{ADMIN}/v1/users/{{user_id}}/export/{{export_id}}", export_status,
        "admin_export")  # fmt: skip
    add("GET", f"{ADMIN}/v1/users/{{user_id}}/export/{{export_id}}/download", export_download,
        "admin_export")  # fmt: skip
    add("GET", f"{ADMIN}/v1/auth_providers/{{provider}}/users/{{external_id}}",
        user_by_external_id, "admin_user_by_external_id")  # fmt: skip


def _threepids(value: Any) -> list[tuple[str, str]]:
    """The `threepids` of a user PUT: a list of {medium, address}."""
    if not isinstance(value, list) or not all(
        isinstance(t, dict) and isinstance(t.get("medium"), str)
        and isinstance(t.get("address"), str) for t in value
    ):  # fmt: skip
        raise bad_json("threepids must be a list of {medium, address}")
    return [(t["medium"], t["address"]) for t in value]


def _external_ids(value: Any) -> list[tuple[str, str]]:
    """The `external_ids` of a user PUT: a list of {auth_provider, external_id}."""
    if not isinstance(value, list) or not all(
        isinstance(e, dict) and isinstance(e.get("auth_provider"), str) and e["auth_provider"]
        and isinstance(e.get("external_id"), str) and e["external_id"] for e in value
    ):  # fmt: skip
        raise bad_json("external_ids must be a list of {auth_provider, external_id}")
    return list(dict.fromkeys((e["auth_provider"], e["external_id"]) for e in value))
