"""Admin API for the server itself: version, statistics, background work, federation
destinations, media information, and the audit log (read-only: no API changes it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.api.admin.users import ADMIN, page, paged
from homeserver.errors import bad_json, not_found
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import parse_json_object, query_string, query_ts
from homeserver.storage.admin import MEDIA_STATS_ORDERS

if TYPE_CHECKING:
    from homeserver.server import HomeServer

SERVER_VERSION = "homeserver 0.1.0"


def register(hs: HomeServer, router: Router) -> None:
    admin = hs.admin

    async def server_version(request: MatrixRequest) -> tuple[int, Any]:
        return 200, {"server_version": SERVER_VERSION}

    async def media_statistics(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        offset, limit = page(request)
        order_by = query_string(request, "order_by", None, tuple(MEDIA_STATS_ORDERS))
        # Biggest uploaders first unless asked otherwise.
        default_dir = "b" if order_by in (None, "media_count", "media_length") else "f"
        rows, total = await admin.store.media_statistics(
            query_string(request, "search_term"),
            query_ts(request, "from_ts"),
            query_ts(request, "until_ts"),
            order_by or "media_length",
            query_string(request, "dir", default_dir, ("f", "b")) == "f",
            offset, limit,
        )  # fmt: skip
        users = [
            {"user_id": user_id, "displayname": displayname, "media_count": int(count),
             "media_length": int(length)}
            for user_id, displayname, count, length in rows
        ]  # fmt: skip
        return 200, paged("users", users, offset, total)

    async def room_sizes(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        sizes = await admin.store.room_event_counts()
        return 200, {"rooms": [{"room_id": r, "estimated_size": s} for r, s in sizes]}

    async def background_updates(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        # Schema changes run as migrations at start-up: nothing runs in the background.
        return 200, {"enabled": True, "current_updates": {}}

    async def scheduled_tasks(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        status = query_string(request, "job_status") or query_string(request, "status")
        tasks = await hs.tasks.store.tasks(
            resource_id=query_string(request, "resource_id"),
            statuses=(status,) if status else None,
        )
        action = query_string(request, "action_name")
        latest = query_ts(request, "max_timestamp")
        found = [
            {"id": t["id"], "action": t["action"], "status": t["status"],
             "timestamp_ms": t["updated_ts"], "resource_id": t["resource_id"],
             "result": t["result"], "error": t["error"]}
            for t in tasks
            if (action is None or t["action"] == action)
            and (latest is None or t["updated_ts"] <= latest)
        ]  # fmt: skip
        return 200, {"scheduled_tasks": found}

    async def audit_log(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        offset, limit = page(request)

        entries, total = await admin.store.audit_entries(
            query_string(request, "admin"), query_string(request, "target_user"),
            query_string(request, "action"), query_ts(request, "since"),
            query_ts(request, "until"), offset, limit,
        )  # fmt: skip
        return 200, paged("entries", entries, offset, total)

    async def destinations(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        offset, limit = page(request)
        rows = await hs.stores.federation.list_destinations()
        found = [_destination(r) for r in rows]
        search = query_string(request, "destination")
        if search:
            found = [d for d in found if search.lower() in d["destination"].lower()]
        order_by = query_string(request, "order_by", None, _DESTINATION_ORDERS) or "destination"
        found.sort(key=lambda d: (d[order_by] is not None, d[order_by] or 0, d["destination"]))
        if query_string(request, "dir", "f", ("f", "b")) == "b":
            found.reverse()
        return 200, paged("destinations", found[offset : offset + limit], offset, len(found), str)

    async def destination(request: MatrixRequest, name: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        for row in await hs.stores.federation.list_destinations():
            if row[0] == name:
                return 200, _destination(row)
        raise not_found("Unknown destination")

    async def destination_rooms(request: MatrixRequest, name: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        if name not in {row[0] for row in await hs.stores.federation.list_destinations()}:
            raise not_found("Unknown destination")
        offset, limit = page(request)
        rooms = await hs.stores.federation.rooms_shared_with(name)
        if query_string(request, "dir", "f", ("f", "b")) == "b":
            rooms.reverse()
        chunk = [{"room_id": room_id, "stream_ordering": position}
                 for room_id, position in rooms[offset : offset + limit]]  # fmt: skip
        return 200, paged("rooms", chunk, offset, len(rooms), str)

    async def reset_connection(request: MatrixRequest, name: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        await hs.stores.federation.set_destination(name, None, 0, hs.clock.time_msec())
        hs.federation_sender.wake(name)
        return 200, {}

    async def media_info(
        request: MatrixRequest, server_name: str, media_id: str
    ) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        info = (
            await hs.media.get_info(media_id)
            if server_name == hs.config.server_name
            else await hs.media.store.get_remote(server_name, media_id)
        )
        if info is None:
            raise not_found("Unknown media")
        if server_name == hs.config.server_name:
            quarantined_by, protected = await hs.media.store.quarantined_by(media_id)
        else:
            quarantined_by = await hs.media.store.remote_quarantined_by(server_name, media_id)
            protected = False
        return 200, {"media_info": {
            "media_origin": server_name, "user_id": info.user_id or None,
            "media_id": media_id, "media_type": info.content_type,
            "media_length": info.size, "upload_name": info.upload_name,
            "created_ts": info.created_ts, "last_access_ts": info.created_ts,
            "quarantined_by": quarantined_by, "safe_from_quarantine": protected,
        }}  # fmt: skip

    async def send_notice(request: MatrixRequest, txn_id: str | None = None) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        body = parse_json_object(request)
        user_id = body.get("user_id")
        content = body.get("content")
        if not isinstance(user_id, str) or not isinstance(content, dict):
            raise bad_json("user_id (a string) and content (an object) are required")
        event_type = body.get("type", "m.room.message")
        state_key = body.get("state_key")
        if not isinstance(event_type, str):
            raise bad_json("type must be a string")
        if state_key is not None and not isinstance(state_key, str):
            raise bad_json("state_key must be a string")
        txn = (requester.user_id, txn_id) if txn_id is not None else None
        event_id = await hs.server_notices.send(user_id, content, event_type, state_key, txn)
        await admin.audit(request, requester, "user.server_notice", user_id)
        return 200, {"event_id": event_id}

    add = router.add
    add("POST", f"{ADMIN}/v1/send_server_notice", send_notice, "admin_server_notice")
    add("PUT", f"{ADMIN}/v1/send_server_notice/{{txn_id}}", send_notice, "admin_server_notice")
    add("GET", f"{ADMIN}/v1/server_version", server_version, "admin_server_version")
    add("GET", f"{ADMIN}/v1/statistics/users/media", media_statistics, "admin_statistics")
    add("GET", f"{ADMIN}/v1/statistics/database/rooms", room_sizes, "admin_statistics")
    add("GET", f"{ADMIN}/v1/background_updates/status", background_updates,
        "admin_background_updates")  # fmt: skip
    add("GET", f"{ADMIN}/v1/background_updates/enabled", background_updates,
        "admin_background_updates")  # fmt: skip
    add("GET", f"{ADMIN}/v1/scheduled_tasks", scheduled_tasks, "admin_scheduled_tasks")
    add("GET", f"{ADMIN}/v1/audit_log", audit_log, "admin_audit_log")
    add("GET", f"{ADMIN}/v1/federation/destinations", destinations, "admin_destinations")
    add("GET", f"{ADMIN}/v1/federation/destinations/{{name}}", destination, "admin_destination")
    add("GET", f"{ADMIN}/v1/federation/destinations/{{name}}/rooms", destination_rooms,
        "admin_destination_rooms")  # fmt: skip
    add("POST", f"{ADMIN}/v1/federation/destinations/{{name}}/reset_connection",
        reset_connection, "admin_destination")  # fmt: skip
    add("GET", f"{ADMIN}/v1/media/{{server_name}}/{{media_id}}", media_info, "admin_media_info")


_DESTINATION_ORDERS = ("destination", "retry_last_ts", "retry_interval", "failure_ts",
                       "last_successful_stream_ordering")  # fmt: skip


def _destination(row: tuple[Any, ...]) -> dict[str, Any]:
    name, failure_ts, interval, last_success = row
    return {
        "destination": name,
        "retry_last_ts": failure_ts or 0,
        "retry_interval": int(interval or 0),
        "failure_ts": failure_ts,
        # We keep when a send last succeeded, not a stream position.
        "last_successful_stream_ordering": None,
        "last_success_ts": last_success,
    }
