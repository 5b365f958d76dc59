"""Push rules, notifications and pushers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import (
    client_paths,
    parse_json_object,
    query_int,
    query_string,
    require,
)
from homeserver.streams import parse_event_position, parse_position

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(hs: HomeServer, router: Router) -> None:
    push = hs.push

    async def all_rules(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, {"global": await push.ruleset(requester.user_id)}

    async def global_rules(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await push.ruleset(requester.user_id)

    async def kind_rules(request: MatrixRequest, kind: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        push._check_kind(kind)
        return 200, (await push.ruleset(requester.user_id))[kind]

    async def get_rule(request: MatrixRequest, kind: str, rule_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await push.find_rule(requester.user_id, kind, rule_id)

    async def put_rule(request: MatrixRequest, kind: str, rule_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        if rule_id.startswith("."):
            raise MatrixError(400, Codes.INVALID_PARAM, "Cannot replace a server-default rule")
        await push.put_rule(
            requester.user_id, kind, rule_id, body,
            query_string(request, "before"), query_string(request, "after"),
        )  # fmt: skip
        return 200, {}

    async def delete_rule(request: MatrixRequest, kind: str, rule_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await push.delete_rule(requester.user_id, kind, rule_id)
        return 200, {}

    def attribute_handlers(attribute: str) -> tuple[Any, Any]:
        async def get_attribute(request: MatrixRequest, kind: str, rule_id: str) -> tuple[int, Any]:
            requester = await hs.auth.get_user_by_req(request)
            rule = await push.find_rule(requester.user_id, kind, rule_id)
            return 200, {attribute: rule.get(attribute, True if attribute == "enabled" else [])}

        async def put_attribute(request: MatrixRequest, kind: str, rule_id: str) -> tuple[int, Any]:
            requester = await hs.auth.get_user_by_req(request)
            body = parse_json_object(request)
            value = require(body, attribute, bool if attribute == "enabled" else list)
            await push.set_attribute(requester.user_id, kind, rule_id, attribute, value)
            return 200, {}

        return get_attribute, put_attribute

    async def notifications(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        limit = query_int(request, "limit", 20, minimum=1, maximum=100)
        only = query_string(request, "only")
        token = query_string(request, "from")
        before = None
        if token is not None:
            # Our own next_token (a bare position, exclusive), or any timeline token a
            # client holds, meaning "up to and including that event".
            before = parse_position(token)
            if before is None:
                position = parse_event_position(token)
                before = position + 1 if position is not None else None
            if before is None:
                raise MatrixError(400, Codes.INVALID_PARAM, "Invalid 'from' token")
        rows = await hs.stores.push.get_notifications(
            requester.user_id, before, limit, only == "highlight"
        )
        events = await hs.room_events.get_events(event_id for _, event_id, _, _, _ in rows)
        visible = {
            e.event_id
            for e in await hs.room_access.filter_visible(requester.user_id, list(events.values()))
        }
        serialized = {
            e["event_id"]: e
            for e in await hs.room_access.serialize_many(
                [events[e] for e in visible], (requester.user_id, requester.device_id)
            )
        }
        chunk = []
        for room_id, event_id, stream, actions, read_upto in rows:
            if event_id not in serialized:
                continue
            chunk.append({
                "actions": json.loads(actions), "event": serialized[event_id],
                "read": stream <= read_upto, "room_id": room_id,
                "ts": serialized[event_id].get("origin_server_ts", 0),
            })  # fmt: skip
        response: dict[str, Any] = {"notifications": chunk}
        if len(rows) == limit:
            response["next_token"] = str(rows[-1][2])
        return 200, response

    async def get_pushers(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        pushers = await hs.stores.push.get_pushers(requester.user_id)
        return 200, {"pushers": [p for _, p in pushers]}

    async def set_pusher(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await push.set_pusher(requester.user_id, parse_json_object(request))
        return 200, {}

    add = router.add
    add("GET", client_paths("/pushrules/") + client_paths("/pushrules"), all_rules, "pushrules")
    add("GET", client_paths("/pushrules/global/"), global_rules, "pushrules")
    add("GET", client_paths("/pushrules/global/{kind}/"), kind_rules, "pushrules")
    rule_path = client_paths("/pushrules/global/{kind}/{rule_id}")
    add("GET", rule_path, get_rule, "pushrule")
    add("PUT", rule_path, put_rule, "pushrule")
    add("DELETE", rule_path, delete_rule, "pushrule")
    for attribute in ("enabled", "actions"):
        getter, setter = attribute_handlers(attribute)
        path = client_paths("/pushrules/global/{kind}/{rule_id}/" + attribute)
        add("GET", path, getter, "pushrule_" + attribute)
        add("PUT", path, setter, "pushrule_" + attribute)
    add("GET", client_paths("/notifications"), notifications, "notifications")
    add("GET", client_paths("/pushers"), get_pushers, "pushers")
    add("POST", client_paths("/pushers/set"), set_pusher, "pushers_set")
