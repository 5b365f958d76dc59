"""Push: users' rules, evaluating them on every event, unread counts, pushers and delivery
to push gateways (in the background: a gateway that is down never slows a send)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from twisted.internet import defer

from homeserver.caches import MeasuredLRU
from homeserver.errors import Codes, MatrixError, not_found
from homeserver.http.outbound import BlockedAddress, filtered_web_agent, parse_http_url
from homeserver.storage.events import StoredEvent
from homeserver.storage.push import EventNotifications
from rooms import push_rules
from rooms.events import relates_to
from rooms.power_levels import power_levels_from_state

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_DELIVERY_ATTEMPTS = 6
FIRST_RETRY_MS = 1_000


MAX_THREAD_HOPS = 3


def _split_notifications(
    thread: str,
    answers: dict[str, list[str]],
    actions_of: dict[str, list[Any]],
    outsider: str | None,
) -> EventNotifications:
    """The joined members' most common answer stored once for the room, when it notifies
    and is shared; rows of their own for the others (and for a notified outsider)."""

    def joined_count(actions_json: str) -> int:
        return sum(1 for u in answers[actions_json] if u != outsider)

    common = max(answers, key=joined_count)
    shared = None
    if push_rules.notifies(actions_of[common]) and joined_count(common) > 1:
        shared = (common, int(push_rules.highlights(actions_of[common])))
    rows = []
    for actions_json, users in answers.items():
        actions = actions_of[actions_json]
        notify = push_rules.notifies(actions)
        high = int(push_rules.highlights(actions))
        for user_id in users:
            if shared is not None and actions_json == common and user_id != outsider:
                continue  # the shared row is theirs
            if notify:
                rows.append((user_id, actions_json, high, 1))
            elif shared is not None and user_id != outsider:
                rows.append((user_id, "[]", 0, 0))  # joined, but not notified
    return EventNotifications(thread, shared, rows)


class PushService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.push
        self._rules: LRUCache[str, JsonDict] = MeasuredLRU("push_rules")
        # Evaluated on every event for every member: the merged ruleset is kept ready.
        self._effective: LRUCache[str, dict[str, list[JsonDict]]] = MeasuredLRU(
            "effective_push_rules"
        )
        self._compiled: LRUCache[str, push_rules.CompiledRules] = MeasuredLRU("compiled_push_rules")
        self._pushers: LRUCache[str, list[JsonDict]] = MeasuredLRU("pushers")
        self._gateway_agent: Any = None

    # Rules

    async def thread_of(self, event: JsonDict) -> str:
        """The thread an event belongs to: follow its relations (at most three hops, as
        the spec suggests) until an m.thread relation names the root."""
        current = event
        for _ in range(MAX_THREAD_HOPS):
            parent, rel_type = relates_to(current)
            if parent is None:
                return "main"
            if rel_type == "m.thread":
                return parent
            stored = await self.hs.room_events.get_event(parent)
            if stored is None:
                return "main"
            current = stored.data
        return "main"

    async def stored_rules(self, user_id: str) -> JsonDict:
        rules = self._rules.get(user_id)
        if rules is None:
            rules = await self.store.get_rules(user_id) or push_rules.empty_user_rules()
            self._rules[user_id] = rules
        return rules

    async def ruleset(self, user_id: str) -> dict[str, list[JsonDict]]:
        rules = self._effective.get(user_id)
        if rules is None:
            rules = push_rules.effective_rules(user_id, await self.stored_rules(user_id))
            self._effective[user_id] = rules
        return rules

    async def compiled_rules(self, user_id: str) -> push_rules.CompiledRules:
        compiled = self._compiled.get(user_id)
        if compiled is None:
            compiled = push_rules.CompiledRules(await self.ruleset(user_id), user_id)
            self._compiled[user_id] = compiled
        return compiled

    async def push_rules_event(self, user_id: str) -> JsonDict:
        """The user's rules as the m.push_rules account data event clients read at start."""
        return {"type": "m.push_rules", "content": {"global": await self.ruleset(user_id)}}

    async def _save(self, user_id: str, rules: JsonDict) -> None:
        await self.store.set_rules(user_id, rules)
        self._rules[user_id] = rules
        self._effective.pop(user_id, None)
        self._compiled.pop(user_id, None)
        # Clients learn of the change through m.push_rules account data.
        await self.hs.account_data.write(
            user_id, "", "m.push_rules", {"global": await self.ruleset(user_id)}
        )

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in push_rules.KINDS:
            raise MatrixError(400, Codes.INVALID_PARAM, f"Unknown push rule kind {kind!r}")

    async def find_rule(self, user_id: str, kind: str, rule_id: str) -> JsonDict:
        self._check_kind(kind)
        for rule in (await self.ruleset(user_id))[kind]:
            if rule["rule_id"] == rule_id:
                return rule
        raise not_found("Push rule not found")

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        body: JsonDict,
        before: str | None,
        after: str | None,
    ) -> None:
        self._check_kind(kind)
        try:
            rule = push_rules.validate_rule(kind, rule_id, body)
        except push_rules.InvalidRule as e:
            raise MatrixError(400, Codes.INVALID_PARAM, str(e)) from None
        stored = json.loads(json.dumps(await self.stored_rules(user_id)))
        own: list[JsonDict] = stored["rules"][kind]
        existing = next((i for i, r in enumerate(own) if r["rule_id"] == rule_id), None)
        if existing is not None:
            rule["enabled"] = own[existing].get("enabled", True)
            own.pop(existing)
        anchor = before or after
        if anchor is not None:
            position = next((i for i, r in enumerate(own) if r["rule_id"] == anchor), None)
            if position is None:
                raise MatrixError(400, Codes.UNKNOWN, f"before/after rule not found: {anchor}")
            own.insert(position if before else position + 1, rule)
        elif existing is not None:
            own.insert(existing, rule)
        else:
            own.insert(0, rule)
        await self._save(user_id, stored)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        self._check_kind(kind)
        if rule_id.startswith("."):
            raise MatrixError(400, Codes.INVALID_PARAM, "Server-default rules cannot be deleted")
        stored = json.loads(json.dumps(await self.stored_rules(user_id)))
        own = stored["rules"][kind]
        remaining = [r for r in own if r["rule_id"] != rule_id]
        if len(remaining) == len(own):
            raise not_found("Push rule not found")
        stored["rules"][kind] = remaining
        await self._save(user_id, stored)

    async def set_attribute(
        self, user_id: str, kind: str, rule_id: str, attribute: str, value: Any
    ) -> None:
        await self.find_rule(user_id, kind, rule_id)  # 404 if absent
        if attribute == "enabled":
            if not isinstance(value, bool):
                raise MatrixError(400, Codes.BAD_JSON, "enabled must be a boolean")
        else:
            try:
                value = push_rules.validate_actions(value)
            except push_rules.InvalidRule as e:
                raise MatrixError(400, Codes.INVALID_PARAM, str(e)) from None
        stored = json.loads(json.dumps(await self.stored_rules(user_id)))
        if rule_id.startswith("."):
            stored["defaults"].setdefault(rule_id, {})[attribute] = value
        else:
            for rule in stored["rules"][kind]:
                if rule["rule_id"] == rule_id:
                    rule[attribute] = value
        await self._save(user_id, stored)

    # Evaluating new events

    async def evaluate_event(
        self, data: JsonDict, room_id: str, state_before: int, event_id: str
    ) -> tuple[EventNotifications | None, list[tuple[str, list[Any]]]]:
        """The notifications an event makes for the room's local members (never its
        sender), to store with the event, and (user, actions) for push delivery."""
        sender = data.get("sender")
        joined = await self.hs.room_events.joined_users(room_id)
        is_local = self.hs.accounts.is_local
        ours = ":" + self.hs.config.server_name  # (is_local, without a call per member)
        members = [u for u in joined if u.endswith(ours) and u != sender]
        outsider = None
        if data.get("type") == "m.room.member" and data.get("state_key") not in joined:
            target = str(data.get("state_key"))
            if target != sender and is_local(target):
                outsider = target  # an invitee is not joined yet
                members.append(target)
        if not members:
            return None, []
        rulesets = await self._compiled_rules_of(members)
        state_ids = await self.hs.room_events.state_ids(state_before)
        # Member events only for the display names some rule looks at (the server
        # defaults look at none): not a hundred cache reads per event in a large room.
        wanted = [("m.room.power_levels", ""), ("m.room.create", "")] + [
            ("m.room.member", u) for u, rules in rulesets.items() if rules.uses_display_name
        ]
        events = await self.hs.room_events.get_events(
            state_ids[key] for key in wanted if key in state_ids
        )
        state = {key: events[state_ids[key]].data for key in wanted if state_ids.get(key) in events}
        version = await self.hs.room_events.room_version(room_id)
        power = power_levels_from_state(state, version)
        sender_power = power.user_level(str(sender))
        evaluation = push_rules.EventEvaluation(data)
        named = evaluation.named(members)
        # Members grouped by their answer (actions as JSON): most share one.
        answers: dict[str, list[str]] = {}
        actions_of: dict[str, list[Any]] = {}
        for user_id in members:
            rules = rulesets[user_id]
            answer = evaluation.shared_answer(rules, user_id in named)
            if answer is None:
                display_name = None
                if rules.uses_display_name:
                    member = state.get(("m.room.member", user_id))
                    name = (member.get("content") or {}).get("displayname") if member else None
                    display_name = name if isinstance(name, str) else None
                ctx = push_rules.PushContext(
                    user_id, display_name, len(joined), sender_power, power.notifications
                )
                answer = evaluation.first_match(rules, ctx)
            actions, actions_json = answer
            group = answers.get(actions_json)
            if group is None:
                group = answers[actions_json] = []
                actions_of[actions_json] = actions
            group.append(user_id)
        notified = [
            (user_id, actions_of[actions_json])
            for actions_json, users in answers.items()
            if push_rules.notifies(actions_of[actions_json])
            for user_id in users
        ]
        if not notified:
            return None, []
        return (
            _split_notifications(await self.thread_of(data), answers, actions_of, outsider),
            notified,
        )

    async def _compiled_rules_of(self, user_ids: list[str]) -> dict[str, push_rules.CompiledRules]:
        found = {}
        for user_id in user_ids:
            compiled = self._compiled.get(user_id)
            found[user_id] = (
                compiled if compiled is not None else await self.compiled_rules(user_id)
            )
        return found

    # Pushers and delivery

    def forget_user(self, user_id: str) -> None:
        """An erased user: nothing of theirs stays cached."""
        for cache in (self._rules, self._effective, self._compiled, self._pushers):
            cache.pop(user_id, None)

    async def pushers_of(self, user_ids: list[str]) -> dict[str, list[JsonDict]]:
        """The users' pushers: the ones not cached read in one query (an event in a large
        room must not cost a query per member, nor one per member per concurrent send)."""
        found: dict[str, list[JsonDict]] = {}
        missing: list[str] = []
        for user_id in user_ids:
            pushers = self._pushers.get(user_id)
            if pushers is None:
                missing.append(user_id)
            else:
                found[user_id] = pushers
        if missing:
            loaded = await self.store.get_pushers_of(missing)
            for user_id, pushers in loaded.items():
                self._pushers[user_id] = pushers
            found.update(loaded)
        return found

    async def set_pusher(self, user_id: str, body: JsonDict) -> None:
        pushkey = body.get("pushkey")
        app_id = body.get("app_id")
        if not isinstance(pushkey, str) or not isinstance(app_id, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "pushkey and app_id are required")
        if len(pushkey) > 512 or len(app_id) > 64:
            raise MatrixError(400, Codes.INVALID_PARAM, "pushkey or app_id is too long")
        kind = body.get("kind")
        if kind is None:
            await self.store.delete_pusher(user_id, app_id, pushkey)
            self._pushers.pop(user_id, None)
            return
        if kind not in ("http", "email"):
            raise MatrixError(400, Codes.INVALID_PARAM, "kind must be 'http', 'email' or null")
        data = body.get("data")
        if not isinstance(data, dict):
            raise MatrixError(400, Codes.MISSING_PARAM, "data is required")
        if kind == "http" and parse_http_url(data.get("url")) is None:
            raise MatrixError(400, Codes.INVALID_PARAM, "data.url must be an http(s) URL")
        if kind == "email":
            raise MatrixError(400, Codes.INVALID_PARAM, "Email pushers are not supported")
        for key in ("app_display_name", "device_display_name", "lang"):
            if not isinstance(body.get(key), str):
                raise MatrixError(400, Codes.MISSING_PARAM, f"{key} is required")
        pusher = {
            "pushkey": pushkey, "kind": kind, "app_id": app_id,
            "app_display_name": body["app_display_name"],
            "device_display_name": body["device_display_name"],
            "profile_tag": body.get("profile_tag") if isinstance(body.get("profile_tag"), str)
            else None,
            "lang": body["lang"], "data": data,
        }  # fmt: skip
        append = body.get("append", False)
        await self.store.set_pusher(user_id, pusher, bool(append), self.hs.clock.time_msec())
        # Another user may have lost this pushkey too: forget every cached list.
        self._pushers.clear()

    async def deliver(self, event: StoredEvent, notified: list[tuple[str, list[Any]]]) -> None:
        """Send notifications to the users' push gateways (in the background)."""
        try:
            pushers = await self.pushers_of([user_id for user_id, _ in notified])
            for user_id, actions in notified:
                for pusher in pushers.get(user_id, []):
                    if pusher.get("kind") == "http":
                        await self._deliver(user_id, pusher, event, actions, 0)
        except Exception:
            logger.exception("Push delivery for %s failed", event.event_id)

    def _gateways(self) -> Any:
        """The agent for push gateways: a pusher's URL is the client's choice, so every
        connection's resolved address is checked against the outbound blacklist (a check
        made before the request would resolve the name again, and DNS can change its answer
        in between), and redirects are not followed."""
        if self._gateway_agent is None:
            from twisted.web.client import HTTPConnectionPool

            client = self.hs.federation_client
            self._gateway_agent = filtered_web_agent(
                self.hs.reactor, client.address_filter, client.tls_creator,
                HTTPConnectionPool(self.hs.reactor, persistent=True),
            )  # fmt: skip
        return self._gateway_agent

    async def _deliver(
        self, user_id: str, pusher: JsonDict, event: StoredEvent, actions: list[Any], attempt: int
    ) -> None:
        import treq

        data = event.data
        tweaks = {a["set_tweak"]: a.get("value", True) for a in actions if isinstance(a, dict)}
        unread, _, _ = await self.store.get_unread_counts(user_id, event.room_id)
        device_data = {k: v for k, v in pusher["data"].items() if k != "url"}
        notification: JsonDict = {
            "event_id": event.event_id, "room_id": event.room_id, "type": data.get("type"),
            "sender": data.get("sender"), "prio": "high" if tweaks.get("highlight") else "low",
            "counts": {"unread": unread},
            "devices": [{"app_id": pusher["app_id"], "pushkey": pusher["pushkey"],
                         "data": device_data, "tweaks": tweaks}],
        }  # fmt: skip
        if device_data.get("format") != "event_id_only":
            notification["content"] = data.get("content")
        target = parse_http_url(pusher["data"].get("url"))
        if target is None:
            logger.warning("Not pushing for %s: the pusher's URL is unusable", user_id)
            return
        _, host, _ = target
        try:
            response = await treq.post(
                pusher["data"]["url"], json={"notification": notification}, timeout=10,
                agent=self._gateways(), allow_redirects=False,
            )  # fmt: skip
            body = await response.json() if response.code == 200 else {}
            if response.code == 200:
                if pusher["pushkey"] in (body.get("rejected") or []):
                    await self.store.delete_pusher(user_id, pusher["app_id"], pusher["pushkey"])
                    self._pushers.pop(user_id, None)
                return
            if 300 <= response.code < 500:
                return  # refused (or sent elsewhere, which is not followed): final
            raise RuntimeError(f"gateway answered {response.code}")
        except BlockedAddress as e:
            logger.warning("Not pushing to %s for %s: %s", host, user_id, e)
            return
        except Exception as e:
            if attempt + 1 >= MAX_DELIVERY_ATTEMPTS:
                logger.warning("Giving up pushing %s to %s: %s", event.event_id, user_id, e)
                return
            delay = FIRST_RETRY_MS * 2**attempt
            self.hs.clock.call_later(
                delay,
                lambda: defer.ensureDeferred(
                    self._deliver(user_id, pusher, event, actions, attempt + 1)
                ),
            )
