"""Admin API for rooms and reports, on Synapse's paths and in its shapes. Reading a
room's state or messages is audited."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from homeserver.api.admin.users import ADMIN, page, paged, query_flag
from homeserver.api.client.discovery_extras import space_hierarchy
from homeserver.errors import Codes, MatrixError, bad_json, not_found
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import (
    parse_json_object,
    query_int,
    query_json_object,
    query_string,
    query_ts,
)
from homeserver.services.auth import Requester
from homeserver.services.room_access import EventFilter
from homeserver.services.room_shutdown import DELETE_ROOM, PURGE_HISTORY
from homeserver.streams import parse_position

if TYPE_CHECKING:
    from homeserver.server import HomeServer

ROOM_ORDERS = (
    "name", "canonical_alias", "joined_members", "joined_local_members", "version", "creator",
    "encryption", "federatable", "public", "join_rules", "guest_access", "history_visibility",
    "state_events", "room_id",
)  # fmt: skip


def register(hs: HomeServer, router: Router) -> None:
    admin = hs.admin
    access = hs.room_access

    async def list_rooms(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        offset, limit = page(request)
        order_by = query_string(request, "order_by", "name")
        if order_by not in ROOM_ORDERS:
            raise MatrixError(400, Codes.INVALID_PARAM, "Unknown order_by")
        direction = query_string(request, "dir", "f", ("f", "b"))
        term = (query_string(request, "search_term") or "").lower()
        public = query_flag(request, "public_rooms")
        empty = query_flag(request, "empty_rooms")
        rooms = []
        for room_id in await admin.store.all_room_ids():
            try:
                rooms.append(await admin.room_json(room_id))
            except MatrixError as e:
                if e.code != 404:
                    raise  # (a 404 is a room purged while the list was being read)
        if term:
            rooms = [
                r for r in rooms
                if term in r["room_id"].lower() or term in (r["name"] or "").lower()
                or term in (r["canonical_alias"] or "").lower()
            ]  # fmt: skip
        if public is not None:
            rooms = [r for r in rooms if r["public"] == public]
        if empty is not None:
            rooms = [r for r in rooms if (r["joined_members"] == 0) == empty]
        key = "joined_members" if order_by == "joined_members" else order_by
        rooms.sort(key=lambda r: (r[key] is None, r[key] if r[key] is not None else "",
                                  r["room_id"]), reverse=direction == "b")  # fmt: skip
        if order_by in ("joined_members", "joined_local_members", "state_events") and (
            request.query_arg("dir") is None
        ):
            rooms.reverse()  # Synapse lists the biggest first unless asked otherwise
        chunk = rooms[offset : offset + limit]
        body: dict[str, Any] = {"rooms": chunk, "offset": offset, "total_rooms": len(rooms)}
        if offset + limit < len(rooms):
            body["next_batch"] = offset + limit
        if offset > 0:
            body["prev_batch"] = max(0, offset - limit)
        return 200, body

    async def room_details(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        return 200, await admin.room_json(room_id, full=True)

    async def room_members(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.room_json(room_id)
        joined = sorted(await hs.room_events.joined_users(room_id))
        await admin.audit(request, requester, "room.members", room_id=room_id)
        return 200, {"members": joined, "total": len(joined)}

    async def room_state(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.room_json(room_id)
        state = await hs.room_events.current_state_events(room_id)
        event_type = query_string(request, "type")
        events = [e for (t, _), e in state.items() if event_type is None or t == event_type]
        await admin.audit(request, requester, "room.state", room_id=room_id)
        return 200, {"state": await access.serialize_many(events)}

    async def room_messages(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.room_json(room_id)
        messages = await hs.room_reads.messages(
            requester, room_id, query_string(request, "from"), query_string(request, "to"),
            query_string(request, "dir", "f", ("f", "b")) == "b",
            query_int(request, "limit", 10, minimum=1, maximum=1000),
            EventFilter(query_json_object(request, "filter")), as_admin=True,
        )  # fmt: skip
        await admin.audit(request, requester, "room.messages", room_id=room_id)
        return 200, messages

    async def room_context(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        await admin.room_json(room_id)
        limit = query_int(request, "limit", 10, minimum=0, maximum=100)
        context = await hs.room_reads.context(requester, room_id, event_id, limit, as_admin=True)
        await admin.audit(request, requester, "room.context", room_id=room_id)
        return 200, context

    async def timestamp_to_event(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        await admin.room_json(room_id)
        ts = query_ts(request, "ts", required=True)
        forwards = query_string(request, "dir", "f", ("f", "b")) == "f"
        event_id = await hs.stores.events.get_event_by_timestamp(room_id, ts, forwards)
        event = await hs.room_events.get_event(event_id) if event_id else None
        if event is None:
            raise not_found("No event found")
        return 200, {"event_id": event.event_id, "origin_server_ts": event.data["origin_server_ts"]}

    async def forward_extremities(request: MatrixRequest, room: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        room_id = await hs.rooms.resolve_room(room)
        await admin.room_json(room_id)
        events = await hs.room_events.get_events(await hs.room_events.forward_extremities(room_id))
        result = [
            {"event_id": e.event_id, "state_group": e.state_after,
             "depth": e.data.get("depth"), "received_ts": e.data.get("origin_server_ts")}
            for e in events.values()
        ]  # fmt: skip
        return 200, {"count": len(result), "results": result}

    async def delete_forward_extremities(request: MatrixRequest, room: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        room_id = await hs.rooms.resolve_room(room)
        await admin.room_json(room_id)
        deleted = await hs.room_events.drop_extremities(room_id)
        await admin.audit(request, requester, "room.forward_extremities.delete", room_id=room_id,
                          details={"deleted": deleted})  # fmt: skip
        return 200, {"deleted": deleted}

    async def hierarchy(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        answer = await space_hierarchy(hs, request, requester, room_id, as_admin=True)
        await admin.audit(request, requester, "room.hierarchy", room_id=room_id)
        return 200, answer

    async def get_block(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        by = await admin.store.blocked_by(room_id)
        return 200, {"block": by is not None, **({"user_id": by} if by else {})}

    async def put_block(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        body = parse_json_object(request)
        block = body.get("block")
        if not isinstance(block, bool):
            raise bad_json("block must be a boolean")
        await admin.store.set_blocked(room_id, requester.user_id if block else None,
                                      hs.clock.time_msec())  # fmt: skip
        await admin.audit(request, requester, "room.block", room_id=room_id,
                          details={"block": block})  # fmt: skip
        return 200, {"block": block}

    async def room_media(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        listing = await admin.room_media(room_id)
        await admin.audit(request, requester, "room.media", room_id=room_id)
        return 200, listing

    # Reports

    def report_handlers(kind: str) -> None:
        """List, show and delete one kind of report, each under v1/{kind}_reports."""

        async def list_reports(request: MatrixRequest) -> tuple[int, Any]:
            await hs.auth.require_admin(request)
            offset, limit = page(request)
            filters = {column: value for column, value in (
                ("room_id", query_string(request, "room_id")),
                ("reporter", query_string(request, "user_id")),
                ("target_user_id", query_string(request, "target_user_id")),
            ) if value is not None}  # fmt: skip
            forwards = query_string(request, "dir", "b", ("f", "b")) == "f"
            rows, total = await hs.discovery.store.list_reports(
                kind, filters, forwards, limit, offset
            )
            chunk = [await _report(hs, row, full=False) for row in rows]
            return 200, paged(f"{kind}_reports", chunk, offset, total)

        async def show_report(request: MatrixRequest, report_id: str) -> tuple[int, Any]:
            requester = await hs.auth.require_admin(request)
            report = await _report(hs, await _find_report(hs, kind, report_id), full=True)
            await admin.audit(request, requester, "report.read",
                              report.get("sender") or report.get("target_user_id"),
                              report.get("room_id"))  # fmt: skip
            return 200, report

        async def delete_report(request: MatrixRequest, report_id: str) -> tuple[int, Any]:
            requester = await hs.auth.require_admin(request)
            report = await _find_report(hs, kind, report_id)
            await hs.discovery.store.delete_report(int(report[0]))
            await admin.audit(request, requester, "report.delete", details={"id": int(report[0])})
            return 200, {}

        base = f"{ADMIN}/v1/{kind}_reports"
        add("GET", base, list_reports, f"admin_{kind}_reports")
        add("GET", f"{base}/{{report_id}}", show_report, f"admin_{kind}_report")
        add("DELETE", f"{base}/{{report_id}}", delete_report, f"admin_{kind}_report")

    async def fetch_event(request: MatrixRequest, event_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        event = await hs.room_events.get_event(event_id)
        if event is None or event.is_outlier:
            raise not_found("Event not found")
        await admin.audit(request, requester, "event.read", event.data.get("sender"),
                          event.room_id)  # fmt: skip
        return 200, {"event": (await access.serialize_many([event]))[0]}

    async def delete_room(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        body = parse_json_object(request, allow_empty=True)
        params: dict[str, Any] = {"admin": requester.user_id}
        for key, kind in (("new_room_user_id", str), ("room_name", str), ("message", str),
                          ("block", bool), ("purge", bool), ("force_purge", bool)):  # fmt: skip
            if key in body:
                if not isinstance(body[key], kind):
                    raise bad_json(f"{key} must be a {kind.__name__}")
                params[key] = body[key]
        new_owner = params.get("new_room_user_id")
        if new_owner is not None and not hs.accounts.is_local(new_owner):
            raise bad_json("new_room_user_id must be a user of this server")
        if await hs.stores.events.get_room(room_id) is None and not params.get("block"):
            raise not_found("Room not found")
        task_id = await hs.tasks.schedule(DELETE_ROOM, room_id, params)
        await admin.audit(request, requester, "room.delete", room_id=room_id,
                          details={k: v for k, v in params.items() if k != "admin"})  # fmt: skip
        return 200, {"delete_id": task_id}

    def delete_status(task: dict[str, Any]) -> dict[str, Any]:
        status = {"scheduled": "shutting_down", "active": "purging"}.get(
            task["status"], task["status"]
        )
        result = (task.get("result") or {}).get("shutdown_room") or {
            "kicked_users": [], "failed_to_kick_users": [], "local_aliases": [],
            "new_room_id": None,
        }  # fmt: skip
        body = {"delete_id": task["id"], "status": status, "shutdown_room": result}
        if task.get("error"):
            body["error"] = task["error"]
        return body

    async def room_delete_status(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        tasks = await hs.tasks.for_resource(room_id, DELETE_ROOM)
        if not tasks:
            raise not_found("No delete task for this room")
        return 200, {"results": [delete_status(t) for t in tasks]}

    async def delete_status_by_id(request: MatrixRequest, delete_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        return 200, delete_status(await hs.tasks.get(delete_id, DELETE_ROOM))

    async def purge_history(
        request: MatrixRequest, room_id: str, event_id: str | None = None
    ) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        body = parse_json_object(request, allow_empty=True)
        if await hs.stores.events.get_room(room_id) is None:
            raise not_found("Room not found")
        delete_local = body.get("delete_local_events", False)
        if not isinstance(delete_local, bool):
            raise bad_json("delete_local_events must be a boolean")
        event_id = event_id or body.get("purge_up_to_event_id")
        if event_id is not None:
            if not isinstance(event_id, str):
                raise bad_json("purge_up_to_event_id must be a string")
            event = await hs.room_events.get_event(event_id)
            if event is None or event.is_outlier or event.room_id != room_id:
                raise not_found("Event not found in this room")
            before = event.stream_ordering
        elif "purge_up_to_ts" in body:
            ts = body["purge_up_to_ts"]
            if not isinstance(ts, int) or isinstance(ts, bool):
                raise bad_json("purge_up_to_ts must be an integer")
            found = await hs.stores.events.last_event_before_ts(room_id, ts)
            if found is None:
                raise not_found("No event in this room before purge_up_to_ts")
            event_id, before = found
        else:
            raise MatrixError(400, Codes.MISSING_PARAM,
                              "Give purge_up_to_event_id or purge_up_to_ts")  # fmt: skip
        params = {"before": before, "event_id": event_id, "delete_local_events": delete_local}
        purge_id = await hs.tasks.schedule(PURGE_HISTORY, room_id, params)
        await admin.audit(request, requester, "room.purge_history", room_id=room_id,
                          details=params)  # fmt: skip
        return 200, {"purge_id": purge_id}

    async def purge_history_status(request: MatrixRequest, purge_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        task = await hs.tasks.get(purge_id, PURGE_HISTORY)
        status = "active" if task["status"] == "scheduled" else task["status"]
        answer: dict[str, Any] = {"status": status, **(task.get("result") or {})}
        if task.get("error"):
            answer["error"] = task["error"]
        return 200, answer

    async def force_join(request: MatrixRequest, room: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        body = parse_json_object(request)
        user_id = body.get("user_id")
        if not isinstance(user_id, str) or not hs.accounts.is_local(user_id):
            raise bad_json("user_id must be a user of this server")
        await admin.require_user(user_id)
        room_id, servers = await hs.rooms.resolve_room_and_servers(room)
        await hs.rooms.change_membership(Requester(user_id, "", ""), room_id, user_id, "join",
                                         servers=servers)  # fmt: skip
        await admin.audit(request, requester, "room.force_join", user_id, room_id)
        return 200, {"room_id": room_id}

    async def make_room_admin(request: MatrixRequest, room: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        body = parse_json_object(request, allow_empty=True)
        target = body.get("user_id", requester.user_id)
        if not isinstance(target, str):
            raise bad_json("user_id must be a string")
        room_id = await hs.rooms.resolve_room(room)
        await hs.rooms.grant_top_power(room_id, target)
        await admin.audit(request, requester, "room.make_admin", target, room_id)
        return 200, {}

    add = router.add
    add("DELETE", f"{ADMIN}/v2/rooms/{{room_id}}", delete_room, "admin_room_delete")
    add("DELETE", f"{ADMIN}/v1/rooms/{{room_id}}", delete_room, "admin_room_delete")
    add("GET", f"{ADMIN}/v2/rooms/{{room_id}}/delete_status", room_delete_status,
        "admin_room_delete_status")  # fmt: skip
    add("GET", f"{ADMIN}/v2/rooms/delete_status/{{delete_id}}", delete_status_by_id,
        "admin_room_delete_status")  # fmt: skip
    add("POST", f"{ADMIN}/v1/join/{{room}}", force_join, "admin_join")
    add("POST", f"{ADMIN}/v1/rooms/{{room}}/make_room_admin", make_room_admin,
        "admin_make_room_admin")  # fmt: skip
    add("GET", f"{ADMIN}/v1/rooms", list_rooms, "admin_rooms")
    add("GET", f"{ADMIN}/v1/rooms/{{room_id}}", room_details, "admin_room")
    add("GET", f"{ADMIN}/v1/rooms/{{room_id}}/members", room_members, "admin_room_members")
    add("GET", f"{ADMIN}/v1/rooms/{{room_id}}/state", room_state, "admin_room_state")
    add("GET", f"{ADMIN}/v1/rooms/{{room_id}}/messages", room_messages, "admin_room_messages")
    add("GET", f"{ADMIN}/v1/rooms/{{room_id}}/context/{{event_id}}", room_context,
        "admin_room_context")  # fmt: skip
    add("GET", f"{ADMIN}/v1/rooms/{{room_id}}/timestamp_to_event", timestamp_to_event,
        "admin_timestamp_to_event")  # fmt: skip
    add("GET", f"{ADMIN}/v1/rooms/{{room}}/forward_extremities", forward_extremities,
        "admin_forward_extremities")  # fmt: skip
    add("DELETE", f"{ADMIN}/v1/rooms/{{room}}/forward_extremities", delete_forward_extremities,
        "admin_forward_extremities")  # fmt: skip
    add("GET", f"{ADMIN}/v1/rooms/{{room_id}}/hierarchy", hierarchy, "admin_room_hierarchy")
    add("GET", f"{ADMIN}/v1/rooms/{{room_id}}/block", get_block, "admin_room_block")
    add("PUT", f"{ADMIN}/v1/rooms/{{room_id}}/block", put_block, "admin_room_block")
    add("GET", f"{ADMIN}/v1/room/{{room_id}}/media", room_media, "admin_room_media")
    add("POST", f"{ADMIN}/v1/purge_history/{{room_id}}", purge_history, "admin_purge_history")
    add("POST", f"{ADMIN}/v1/purge_history/{{room_id}}/{{event_id}}", purge_history,
        "admin_purge_history")  # fmt: skip
    add("GET", f"{ADMIN}/v1/purge_history_status/{{purge_id}}", purge_history_status,
        "admin_purge_history_status")  # fmt: skip
    for kind in ("event", "room", "user"):
        report_handlers(kind)
    add("GET", f"{ADMIN}/v1/fetch_event/{{event_id}}", fetch_event, "admin_fetch_event")


def _report_kind(row: tuple[Any, ...]) -> str:
    event_id, target_user_id = row[3], row[4]
    return "event" if event_id else "user" if target_user_id else "room"


async def _find_report(hs: HomeServer, kind: str, report_id: str) -> tuple[Any, ...]:
    number = parse_position(report_id)
    if number is None:
        raise MatrixError(400, Codes.INVALID_PARAM, "The report ID must be an integer")
    row = await hs.discovery.store.get_report(number)
    if row is None or _report_kind(row) != kind:
        raise not_found("Report not found")
    return row


async def _report(hs: HomeServer, row: tuple[Any, ...], full: bool) -> dict[str, Any]:
    report_id, reporter, room_id, event_id, target_user_id, reason, score, received = row
    event = await hs.room_events.get_event(event_id) if event_id else None
    name = None
    alias = None
    if room_id and await hs.stores.events.get_room(room_id) is not None:
        details = await hs.admin.room_json(room_id)
        name, alias = details["name"], details["canonical_alias"]
    report: dict[str, Any] = {
        "id": int(report_id), "received_ts": int(received), "room_id": room_id,
        "name": name, "event_id": event_id, "user_id": reporter, "reason": reason,
        "score": score, "sender": None,
        "canonical_alias": alias,
    }  # fmt: skip
    if _report_kind(row) == "event":
        report["sender"] = event.data.get("sender") if event else None
    else:
        del report["event_id"], report["sender"], report["score"]
    if target_user_id:
        report["target_user_id"] = target_user_id
    if full and event is not None:
        report["event_json"] = json.loads(event.json_text)
    return report
