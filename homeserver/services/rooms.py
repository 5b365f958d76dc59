"""Room actions: create rooms, change membership, send, set state, redact, aliases, directory."""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, bad_json, forbidden, invalid_param, not_found
from homeserver.federation.client import FederationError
from homeserver.services.auth import Requester
from homeserver.storage.events import StoredEvent, TxnKey
from homeserver.streams import parse_position
from rooms.power_levels import creators, default_power_levels_content, power_levels_from_state
from rooms.versions import RoomVersion, get_room_version

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

_ALIAS_LOCALPART_RE = re.compile(r"^[^:\s#]+$")
_PRESETS = ("private_chat", "public_chat", "trusted_private_chat")


_DESCRIPTION_FIELDS = {
    "name": ("m.room.name", "name"),
    "topic": ("m.room.topic", "topic"),
    "canonical_alias": ("m.room.canonical_alias", "alias"),
    "avatar_url": ("m.room.avatar", "url"),
    "room_type": ("m.room.create", "type"),
}


def describe_room(room_id: str, state: dict[tuple[str, str], StoredEvent]) -> JsonDict:
    """The summary a directory or space hierarchy shows of a room, from its current state."""

    def value(event_type: str, key: str) -> Any:
        event = state.get((event_type, ""))
        return (event.data.get("content") or {}).get(key) if event else None

    summary: JsonDict = {
        "room_id": room_id,
        "num_joined_members": sum(
            1 for (t, _), e in state.items()
            if t == "m.room.member" and (e.data.get("content") or {}).get("membership") == "join"
        ),
        "world_readable": value("m.room.history_visibility", "history_visibility")
        == "world_readable",
        "guest_can_join": value("m.room.guest_access", "guest_access") == "can_join",
        "join_rule": value("m.room.join_rules", "join_rule") or "invite",
    }  # fmt: skip
    for key, (event_type, field) in _DESCRIPTION_FIELDS.items():
        found = value(event_type, field)
        if isinstance(found, str):
            summary[key] = found
    return summary


def valid_user_id(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("@") and ":" in value and len(value) <= 255


class RoomService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.events = hs.room_events
        self.store = hs.stores.events
        self.server_name = hs.config.server_name

    # Resolving identifiers

    async def resolve_room(self, room_id_or_alias: str) -> str:
        room_id, _ = await self.resolve_room_and_servers(room_id_or_alias)
        return room_id

    async def resolve_room_and_servers(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """The room ID, and servers that can help join it (from a remote alias look-up)."""
        if room_id_or_alias.startswith("#"):
            if ":" not in room_id_or_alias:
                raise invalid_param("Not a room alias")
            alias_server = room_id_or_alias.split(":", 1)[1]
            if alias_server != self.server_name and self.hs.config.federation.enabled:
                return await self._remote_alias(room_id_or_alias, alias_server)
            found = await self.store.get_alias(room_id_or_alias)
            if found is None:
                raise not_found("Room alias not found")
            return found[0], []
        if not room_id_or_alias.startswith("!"):
            raise invalid_param(f"{room_id_or_alias!r} is neither a room ID nor an alias")
        return room_id_or_alias, []

    async def _remote_alias(self, alias: str, server: str) -> tuple[str, list[str]]:
        try:
            answer = await self.hs.federation_client.get_json(
                server, "/_matrix/federation/v1/query/directory", query={"room_alias": alias}
            )
        except FederationError as e:
            if e.code == 404:
                raise not_found("Room alias not found") from None
            raise MatrixError(504, Codes.UNKNOWN, f"Could not ask {server}: {e}") from None
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        servers = answer.get("servers") if isinstance(answer, dict) else None
        if not isinstance(room_id, str):
            raise not_found("Room alias not found")
        return room_id, [s for s in servers or [] if isinstance(s, str)] or [server]

    async def require_room(self, room_id: str) -> RoomVersion:
        return await self.events.room_version(room_id)

    # Creating rooms

    async def create_room(self, requester: Requester, body: JsonDict) -> JsonDict:
        self.require_active(requester)
        await self.hs.consent.require(requester.user_id)
        user_id = requester.user_id
        version_id = body.get("room_version", self.hs.config.rooms.default_room_version)
        version = get_room_version(version_id) if isinstance(version_id, str) else None
        if version is None:
            raise MatrixError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"Room version {version_id!r} is not supported"
            )
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise invalid_param("visibility must be 'public' or 'private'")
        preset = body.get("preset", "public_chat" if visibility == "public" else "private_chat")
        if preset not in _PRESETS:
            raise invalid_param(f"preset must be one of {', '.join(_PRESETS)}")
        invites = body.get("invite", [])
        if not isinstance(invites, list) or not all(valid_user_id(u) for u in invites):
            raise bad_json("invite must be a list of user IDs")
        creation_content = body.get("creation_content", {})
        initial_state = body.get("initial_state", [])
        override = body.get("power_level_content_override")
        if not isinstance(creation_content, dict):
            raise bad_json("creation_content must be an object")
        if not isinstance(initial_state, list) or not all(
            isinstance(s, dict) and isinstance(s.get("type"), str)
            and isinstance(s.get("content"), dict) and isinstance(s.get("state_key", ""), str)
            for s in initial_state
        ):  # fmt: skip
            raise bad_json("initial_state must be a list of {type, state_key, content}")
        if override is not None and not isinstance(override, dict):
            raise bad_json("power_level_content_override must be an object")
        for key in ("name", "topic", "room_alias_name"):
            if key in body and not isinstance(body[key], str):
                raise bad_json(f"{key} must be a string")
        alias = None
        if "room_alias_name" in body:
            localpart = body["room_alias_name"]
            if not _ALIAS_LOCALPART_RE.match(localpart):
                raise invalid_param("room_alias_name is not a valid alias localpart")
            alias = f"#{localpart}:{self.server_name}"
            if await self.store.get_alias(alias) is not None:
                raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")

        content = dict(creation_content)
        content["room_version"] = version.identifier
        if not version.implicit_room_creator:
            content["creator"] = user_id
        room_id = None
        if not version.room_id_from_create_event:
            room_id = f"!{secrets.token_urlsafe(18)}:{self.server_name}"
        create = await self.events.create_room_event(version, user_id, content, room_id)
        room_id = create.room_id

        profile = await self.hs.stores.profiles.get_profile(user_id)
        await self.events.send(room_id, user_id, "m.room.member", self._member_content(
            "join", profile), state_key=user_id)  # fmt: skip

        power = default_power_levels_content([user_id], version)
        if preset == "trusted_private_chat":
            for invitee in invites:
                power["users"][invitee] = 100
        if override:
            power.update(override)
        await self.events.send(room_id, user_id, "m.room.power_levels", power, state_key="")
        if alias is not None:
            await self.store.create_alias(alias, room_id, user_id)
            await self.events.send(
                room_id, user_id, "m.room.canonical_alias", {"alias": alias}, state_key=""
            )
        join_rule = "public" if preset == "public_chat" else "invite"
        preset_state = [
            ("m.room.join_rules", {"join_rule": join_rule}),
            ("m.room.history_visibility", {"history_visibility": "shared"}),
        ]
        if preset != "public_chat":
            preset_state.append(("m.room.guest_access", {"guest_access": "can_join"}))
        initial_keys = {(s["type"], s.get("state_key", "")) for s in initial_state}
        for event_type, event_content in preset_state:
            if (event_type, "") not in initial_keys:
                await self.events.send(room_id, user_id, event_type, event_content, state_key="")
        for state in initial_state:
            if state["type"] in ("m.room.create", "m.room.member", "m.room.power_levels"):
                continue  # these come from the request's own fields
            await self.events.send(
                room_id, user_id, state["type"], state["content"],
                state_key=state.get("state_key", ""),
            )  # fmt: skip
        if "name" in body:
            await self.events.send(room_id, user_id, "m.room.name", {"name": body["name"]}, "")
        if "topic" in body:
            await self.events.send(room_id, user_id, "m.room.topic", {"topic": body["topic"]}, "")
        if visibility == "public":
            await self.store.set_room_public(room_id, True)
        for invitee in invites:
            await self.change_membership(
                requester, room_id, invitee, "invite", is_direct=bool(body.get("is_direct"))
            )
        response: JsonDict = {"room_id": room_id}
        if alias:
            response["room_alias"] = alias
        return response

    # Upgrading

    async def upgrade_room(self, requester: Requester, room_id: str, version_id: str) -> str:
        """Replace the room with a new one of ``version_id``: its state carried over, the
        old one tombstoned and silenced, local aliases moved, invite-only rooms' members
        invited again. Returns the new room's ID."""
        self.require_active(requester)
        user_id = requester.user_id
        old_version = await self.require_room(room_id)
        new_version = get_room_version(version_id)
        if new_version is None:
            raise MatrixError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"Room version {version_id!r} is not supported"
            )
        if not await self._has_state_power(user_id, room_id, "m.room.tombstone"):
            raise forbidden("You may not upgrade this room")
        state = await self.events.current_state_events(room_id)

        def content(key: tuple[str, str]) -> JsonDict:
            event = state.get(key)
            return dict(event.data.get("content") or {}) if event else {}

        old_create = content(("m.room.create", ""))
        extremities = await self.events.get_events(await self.events.forward_extremities(room_id))
        latest = max(extremities.values(), key=lambda e: e.stream_ordering).event_id
        creation: JsonDict = {"predecessor": {"room_id": room_id, "event_id": latest}}
        for key in ("type", "m.federate"):
            if key in old_create:
                creation[key] = old_create[key]
        initial_state = []
        for (event_type, state_key), event in state.items():
            if event_type not in UPGRADE_COPIED_STATE:
                continue
            event_content = dict(event.data.get("content") or {})
            if event_type == "m.room.join_rules":
                event_content = _join_rule_for(event_content, new_version)
            initial_state.append(
                {"type": event_type, "state_key": state_key, "content": event_content}
            )
        old_levels = content(("m.room.power_levels", ""))
        old_creators = creators(state[("m.room.create", "")].data, old_version)
        new_levels = _levels_for(old_levels, old_creators, user_id, new_version)
        working_levels = json.loads(json.dumps(new_levels))
        if not new_version.creators_infinite_power:
            # Enough power to carry everything over; the real levels come last.
            working_levels["users"][user_id] = max(100, working_levels["users"].get(user_id, 0))
        room = await self.store.get_room(room_id)
        created = await self.create_room(requester, {
            "room_version": new_version.identifier,
            "creation_content": creation,
            "initial_state": initial_state,
            "power_level_content_override": working_levels,
            "preset": "private_chat",
            "visibility": "public" if room and room[2] else "private",
        })  # fmt: skip
        new_room_id = str(created["room_id"])
        if working_levels != new_levels:
            await self.events.send(new_room_id, user_id, "m.room.power_levels", new_levels, "")
        for (event_type, target), event in state.items():
            if (
                event_type == "m.room.member"
                and (event.data.get("content") or {}).get("membership") == "ban"
            ):
                await self.events.send(new_room_id, user_id, "m.room.member",
                                       {"membership": "ban"}, state_key=target)  # fmt: skip
        await self.events.send(
            room_id, user_id, "m.room.tombstone",
            {"body": "This room has been replaced", "replacement_room": new_room_id}, "",
        )  # fmt: skip
        await self._move_aliases(user_id, room_id, new_room_id, content)
        # Nobody but moderators speaks or invites in the old room any more.
        silenced = dict(old_levels)
        restricted = max(50, _int(old_levels.get("users_default"), 0) + 1)
        silenced["events_default"] = max(restricted, _int(old_levels.get("events_default"), 0))
        silenced["invite"] = max(restricted, _int(old_levels.get("invite"), 0))
        await self.events.send(room_id, user_id, "m.room.power_levels", silenced, "")
        if content(("m.room.join_rules", "")).get("join_rule", "invite") != "public":
            joined = await self.events.joined_users(room_id)
            for member in sorted(joined - {user_id}):
                try:
                    await self.change_membership(requester, new_room_id, member, "invite")
                except MatrixError as e:
                    logger.info("Could not re-invite %s to %s: %s", member, new_room_id, e)
        return new_room_id

    async def _move_aliases(self, user_id: str, old_room: str, new_room: str, content: Any) -> None:
        aliases = await self.store.get_aliases_for_room(old_room)
        for alias in aliases:
            found = await self.store.get_alias(alias)
            creator = found[1] if found else user_id
            await self.store.delete_alias(alias)
            await self.store.create_alias(alias, new_room, creator)
        canonical = content(("m.room.canonical_alias", ""))
        if canonical:
            await self.events.send(new_room, user_id, "m.room.canonical_alias", canonical, "")
            await self.events.send(old_room, user_id, "m.room.canonical_alias", {}, "")

    @staticmethod
    def _member_content(membership: str, profile: JsonDict, reason: str | None = None) -> JsonDict:
        content: JsonDict = {"membership": membership}
        for key in ("displayname", "avatar_url"):
            if isinstance(profile.get(key), str):
                content[key] = profile[key]
        if reason:
            content["reason"] = reason
        return content

    # Membership

    async def change_membership(
        self,
        requester: Requester,
        room_id: str,
        target: str,
        membership: str,
        reason: str | None = None,
        is_direct: bool = False,
        txn: TxnKey | None = None,
        servers: list[str] | None = None,
    ) -> StoredEvent:
        if membership != "leave":
            self.require_active(requester)
        federation = self.hs.federation_membership
        remote = (
            target == requester.user_id
            and membership in ("join", "knock", "leave")
            and self.hs.config.federation.enabled
            and (membership != "leave" or await self.store.get_room(room_id) is not None)
            and await federation.needs_remote_join(room_id)
        )
        version = None if remote else await self.require_room(room_id)
        if not valid_user_id(target):
            raise invalid_param("user_id must be a user ID")
        if membership in ("invite", "join", "knock") and self.hs.accounts.is_local(target):
            target_user = await self.hs.stores.users.get_user(target)
            if target_user is None or target_user.deactivated:
                raise not_found(f"Unknown user {target}")
        profile: JsonDict = {}
        if membership in ("join", "invite", "knock") and self.hs.accounts.is_local(target):
            profile = await self.hs.stores.profiles.get_profile(target)
        content = self._member_content(membership, profile, reason)
        if is_direct:
            content["is_direct"] = True
        if remote:
            servers = list(servers or []) + await self._servers_to_ask(room_id, target)
            if membership == "join":
                return await federation.join_remote(target, room_id, servers, content)
            if membership == "knock":
                return await federation.knock_remote(target, room_id, servers, content)
            return await federation.leave_remote(target, room_id, servers)
        assert version is not None
        if membership in ("join", "invite", "knock") and await self.hs.admin.store.blocked_by(
            room_id
        ):
            raise forbidden("This room has been blocked on this server")
        if membership == "join":
            await self.authorise_restricted_join(room_id, version, target, content)
        cosign = None
        if membership == "invite" and not self.hs.accounts.is_local(target):
            cosign = federation.invite_remote
        return await self.events.send(
            room_id, requester.user_id, "m.room.member", content, state_key=target, txn=txn,
            cosign=cosign,
        )  # fmt: skip

    async def _servers_to_ask(self, room_id: str, user_id: str) -> list[str]:
        """Who may help us into (or out of) a room held elsewhere: the server that invited
        the user, those of the room's members we know of, the room ID's own server."""
        servers = []
        current = await self.store.get_current_state_ids(room_id)
        member_id = current.get(("m.room.member", user_id))
        member = await self.events.get_event(member_id) if member_id else None
        if member is not None:
            servers.append(str(member.data.get("sender", "")).split(":", 1)[-1])
        servers += sorted(
            {k.split(":", 1)[1] for t, k in current if t == "m.room.member" and ":" in k}
        )
        if ":" in room_id:
            servers.append(room_id.split(":", 1)[1])
        return [s for s in servers if s and s != self.server_name]

    async def authorise_restricted_join(
        self, room_id: str, version: RoomVersion, user_id: str, content: JsonDict
    ) -> None:
        """For restricted rooms, find a local member who may invite to vouch for the join."""
        # Two entries decide most joins: not the whole state of a room of thousands.
        state = await self.events.current_state_events(
            room_id, [("m.room.join_rules", ""), ("m.room.member", user_id)]
        )
        rules = state.get(("m.room.join_rules", ""))
        rule_content = (rules.data.get("content") or {}) if rules else {}
        if rule_content.get("join_rule") not in ("restricted", "knock_restricted"):
            return
        member = state.get(("m.room.member", user_id))
        if member and (member.data.get("content") or {}).get("membership") in ("join", "invite"):
            return
        allowed_rooms = [
            a.get("room_id")
            for a in rule_content.get("allow") or []
            if isinstance(a, dict) and a.get("type") == "m.room_membership"
        ]
        joined = set(await self.store.get_rooms_for_user(user_id, ["join"]))
        if not any(r in joined for r in allowed_rooms):
            raise forbidden("You are not a member of a room that grants access to this one")
        state = await self.events.current_state_events(room_id)  # who may vouch for it
        power = power_levels_from_state({k: v.data for k, v in state.items()}, version)
        for (event_type, state_key), event in state.items():
            if (
                event_type == "m.room.member"
                and self.hs.accounts.is_local(state_key)
                and (event.data.get("content") or {}).get("membership") == "join"
                and power.user_level(state_key) >= power.invite
            ):
                content["join_authorised_via_users_server"] = state_key
                return
        raise forbidden("No member of this server can authorise the join")

    async def forget(self, requester: Requester, room_id: str) -> None:
        membership = await self.hs.room_access.membership(requester.user_id, room_id)
        if membership is None:
            raise not_found("You have never been in this room")
        if membership in ("join", "invite", "knock"):
            raise MatrixError(400, Codes.UNKNOWN, "Leave the room before forgetting it")
        await self.store.forget_room(requester.user_id, room_id)

    # Sending

    async def send_state(
        self, requester: Requester, room_id: str, event_type: str, state_key: str, content: JsonDict
    ) -> StoredEvent:
        self.require_active(requester)
        await self.hs.consent.require(requester.user_id)
        await self.require_room(room_id)
        if event_type == "m.room.canonical_alias":
            await self._check_canonical_alias(room_id, content)
        current = await self.events.current_state_events(room_id)
        existing = current.get((event_type, state_key))
        if (
            existing is not None
            and existing.data.get("sender") == requester.user_id
            and existing.data.get("content") == content
            and not existing.redacted_by
        ):
            return existing  # an identical state change is a no-op, as clients expect
        if event_type == "m.room.member":
            membership = content.get("membership")
            if not isinstance(membership, str):
                raise bad_json("m.room.member content needs a membership")
        return await self.events.send(
            room_id, requester.user_id, event_type, content, state_key=state_key
        )

    async def _check_canonical_alias(self, room_id: str, content: JsonDict) -> None:
        aliases = []
        if "alias" in content and content["alias"] is not None:
            aliases.append(content["alias"])
        alt = content.get("alt_aliases", [])
        if not isinstance(alt, list):
            raise bad_json("alt_aliases must be a list")
        aliases.extend(alt)
        for alias in aliases:
            if not isinstance(alias, str) or not alias.startswith("#") or ":" not in alias:
                raise invalid_param(f"{alias!r} is not a room alias")
            if alias.endswith(":" + self.server_name):
                found = await self.store.get_alias(alias)
                if found is None or found[0] != room_id:
                    raise MatrixError(400, "M_BAD_ALIAS", f"{alias} does not point to this room")

    @staticmethod
    def require_active(requester: Requester) -> None:
        """A suspended account reads but does not act in rooms."""
        if requester.suspended:
            raise MatrixError(403, "M_USER_SUSPENDED", "This account is suspended")

    @staticmethod
    def shadow_event_id(requester: Requester) -> str | None:
        """For a shadow-banned user: an event ID to answer with, nothing being sent."""
        return "$" + secrets.token_urlsafe(32) if requester.shadow_banned else None

    async def send_message(
        self, requester: Requester, room_id: str, event_type: str, content: JsonDict, txn_id: str
    ) -> StoredEvent:
        self.require_active(requester)
        await self.hs.consent.require(requester.user_id)
        await self.require_room(room_id)
        self.hs.ratelimiter.check("message", requester.user_id)
        txn = TxnKey(requester.user_id, requester.device_id, f"send {room_id} {event_type}", txn_id)
        # A repeated transaction ID returns the first event (checked under the room lock).
        return await self.events.send(room_id, requester.user_id, event_type, content, txn=txn)

    async def redact(
        self, requester: Requester, room_id: str, event_id: str, reason: str | None, txn_id: str
    ) -> StoredEvent:
        self.require_active(requester)
        version = await self.require_room(room_id)
        txn = TxnKey(requester.user_id, requester.device_id, f"redact {room_id} {event_id}", txn_id)
        existing = await self.events.event_for_txn(txn)
        if existing is not None:
            return existing
        try:
            target = await self.hs.room_access.check_event_visible(
                requester.user_id, room_id, event_id
            )
            if target.data.get("sender") != requester.user_id:
                state = await self.events.current_state_events(room_id)
                power = power_levels_from_state({k: v.data for k, v in state.items()}, version)
                if power.user_level(requester.user_id) < power.redact:
                    raise forbidden("You may not redact other users' events")
        except MatrixError as refusal:
            return await self.events.first_of_retry(txn, refusal)
        content: JsonDict = {"reason": reason} if reason else {}
        return await self.events.send(
            room_id, requester.user_id, "m.room.redaction", content, txn=txn, redacts=event_id
        )

    # Aliases and the directory

    async def create_alias(self, requester: Requester, alias: str, room_id: str) -> None:
        if not alias.startswith("#") or ":" not in alias:
            raise invalid_param("Not a room alias")
        if not alias.endswith(":" + self.server_name):
            raise invalid_param("Aliases can only be created for this server")
        await self.require_room(room_id)
        rules = self.hs.config.rooms
        restricted = rules.require_membership_for_aliases or rules.require_power_for_aliases
        if restricted and not await self._is_server_admin(requester.user_id):
            await self._check_may_alias(requester.user_id, room_id)
        if not await self.store.create_alias(alias, room_id, requester.user_id):
            raise MatrixError(409, Codes.UNKNOWN, "Room alias already exists")

    async def _check_may_alias(self, user_id: str, room_id: str) -> None:
        """Only the room's own members point names at it (anyone else could give a private
        room a public name); with ``require_power_for_aliases`` only those who may set its
        canonical alias."""
        if self.hs.config.rooms.require_power_for_aliases:
            if not await self._has_state_power(user_id, room_id, "m.room.canonical_alias"):
                raise forbidden("You may not create aliases for this room")
            return
        members = await self.hs.stores.events.get_joined_users(room_id)
        if user_id not in members:
            raise forbidden("You must be in the room to create an alias for it")

    async def delete_alias(self, requester: Requester, alias: str) -> None:
        found = await self.store.get_alias(alias)
        if found is None:
            raise not_found("Room alias not found")
        room_id, creator = found
        if (
            creator != requester.user_id
            and not await self._is_server_admin(requester.user_id)
            and not await self._has_state_power(
                requester.user_id, room_id, "m.room.canonical_alias"
            )
        ):
            raise forbidden("You may not delete this alias")
        await self.store.delete_alias(alias)

    async def grant_top_power(self, room_id: str, target: str) -> None:
        """Give ``target`` the highest power a local member holds, sent by that member (the
        admin API's make_room_admin)."""
        version = await self.require_room(room_id)
        state = await self.events.current_state_events(room_id)
        levels_event = state.get(("m.room.power_levels", ""))
        power = power_levels_from_state({k: v.data for k, v in state.items()}, version)
        candidates = [
            (power.user_level(k), k) for (t, k), e in state.items()
            if t == "m.room.member" and self.hs.accounts.is_local(k)
            and (e.data.get("content") or {}).get("membership") == "join"
        ]  # fmt: skip
        if not candidates:
            raise forbidden("No member of this server can grant power in this room")
        level, granter = max(candidates, key=lambda c: (c[0], c[1]))
        content = dict(levels_event.data.get("content") or {}) if levels_event else {}
        users = dict(content.get("users") or {})
        top = 100 if level == float("inf") else int(level)
        if version.creators_infinite_power and target in creators(
            state[("m.room.create", "")].data, version
        ):
            return  # a creator already holds all power
        users[target] = top
        content["users"] = users
        if target not in (await self.events.joined_users(room_id)):
            await self.events.send(room_id, granter, "m.room.member", {"membership": "invite"},
                                   state_key=target)  # fmt: skip
        await self.events.send(room_id, granter, "m.room.power_levels", content, state_key="")

    async def _has_state_power(self, user_id: str, room_id: str, event_type: str) -> bool:
        version = await self.require_room(room_id)
        state = await self.events.current_state_events(room_id)
        member = state.get(("m.room.member", user_id))
        if member is None or (member.data.get("content") or {}).get("membership") != "join":
            return False
        power = power_levels_from_state({k: v.data for k, v in state.items()}, version)
        return power.user_level(user_id) >= power.event_level(event_type, True)

    async def set_directory_visibility(
        self, requester: Requester, room_id: str, visibility: str
    ) -> None:
        if visibility not in ("public", "private"):
            raise invalid_param("visibility must be 'public' or 'private'")
        # Server admins may list or unlist any room (moderating the directory is theirs).
        if not await self._is_server_admin(requester.user_id) and not await self._has_state_power(
            requester.user_id, room_id, "m.room.canonical_alias"
        ):
            raise forbidden("You may not change this room's directory visibility")
        await self.require_room(room_id)
        await self.store.set_room_public(room_id, visibility == "public")

    async def _is_server_admin(self, user_id: str) -> bool:
        user = await self.hs.stores.users.get_user(user_id)
        return bool(user and user.is_admin)

    async def remote_public_rooms(
        self, server: str, query: dict[str, str] | None, body: JsonDict | None
    ) -> JsonDict:
        """Another server's public room directory, asked over federation."""
        client = self.hs.federation_client
        path = "/_matrix/federation/v1/publicRooms"
        try:
            if body is None:
                answer = await client.get_json(server, path, query=query, timeout_ms=15_000)
            else:
                answer = await client.post_json(server, path, body, timeout_ms=15_000)
        except FederationError as e:
            raise MatrixError(502, Codes.UNKNOWN, f"{server} did not answer: {e}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
            raise MatrixError(502, Codes.UNKNOWN, f"{server} answered with no room list")
        return answer

    async def public_rooms(
        self,
        limit: int,
        since: str | None,
        search: str | None,
        room_types: list[str | None] | None = None,
    ) -> JsonDict:
        """The public room directory, largest rooms first, paginated by offset tokens.
        ``room_types`` keeps only rooms of those types (None in it: rooms with no type)."""
        offset = 0
        if since is not None:
            parsed = parse_position(since[1:]) if since.startswith("o") else None
            if parsed is None:
                raise invalid_param("Invalid 'since' token")
            offset = parsed
        entries = []
        for room_id in await self.store.get_public_room_ids():
            entry = describe_room(room_id, await self.events.current_state_events(room_id))
            if search:
                haystack = " ".join(
                    str(entry.get(k, "")) for k in ("name", "topic", "canonical_alias", "room_id")
                ).lower()
                if search.lower() not in haystack:
                    continue
            if room_types is not None and entry.get("room_type") not in room_types:
                continue
            entries.append(entry)
        entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
        page = entries[offset : offset + limit]
        response: JsonDict = {"chunk": page, "total_room_count_estimate": len(entries)}
        if offset + limit < len(entries):
            response["next_batch"] = f"o{offset + limit}"
        if offset > 0:
            response["prev_batch"] = f"o{max(0, offset - limit)}"
        return response


UPGRADE_COPIED_STATE = frozenset({
    "m.room.name", "m.room.topic", "m.room.avatar", "m.room.encryption",
    "m.room.history_visibility", "m.room.guest_access", "m.room.join_rules",
    "m.room.server_acl", "m.space.parent", "m.space.child",
})  # fmt: skip


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _join_rule_for(content: JsonDict, version: RoomVersion) -> JsonDict:
    """The join rule carried to the new room, or the closest one its version knows."""
    rule = content.get("join_rule")
    if rule == "knock_restricted" and not version.knock_restricted_join_rule:
        rule = "restricted" if version.restricted_join_rule else "invite"
    if rule == "restricted" and not version.restricted_join_rule:
        rule = "invite"
    if rule == "knock" and not version.knock_join_rule:
        rule = "invite"
    result = dict(content)
    result["join_rule"] = rule
    if rule not in ("restricted", "knock_restricted"):
        result.pop("allow", None)
    return result


def _levels_for(
    old: JsonDict, old_creators: set[str], upgrader: str, version: RoomVersion
) -> JsonDict:
    """The old room's power levels as the new version needs them: integers, and creators
    (infinite in v12, absent from ``users``) given 100 in older versions and the reverse."""
    levels = json.loads(json.dumps(old))
    for key in ("users_default", "events_default", "state_default", "ban", "kick", "redact",
                "invite"):  # fmt: skip
        if key in levels:
            levels[key] = _int(levels[key], 0)
    users = {u: _int(v, 0) for u, v in (levels.get("users") or {}).items()}
    for creator in old_creators:
        users[creator] = max(users.get(creator, 0), 100)
    if version.creators_infinite_power:
        users.pop(upgrader, None)  # the upgrader creates the new room: infinite there
    levels["users"] = users
    for key in ("events", "notifications"):
        if isinstance(levels.get(key), dict):
            levels[key] = {k: _int(v, 0) for k, v in levels[key].items()}
    return levels
