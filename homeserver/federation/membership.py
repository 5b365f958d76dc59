"""Joining, leaving and inviting across servers, both ways.

Our users entering a room held elsewhere: ``make_join`` on a resident server, our signed
join back with ``send_join``, the room's state and auth chain checked and kept, then the
join persisted on top of that state. Other servers' users entering ours: we answer
``make_join``/``send_join`` (and the leave pair) from the room's writer. Invites to remote
users are countersigned by their server before we persist them.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from homeserver.errors import Codes, MatrixError, bad_json, forbidden, not_found
from homeserver.federation.client import FederationError
from homeserver.federation.event_checks import InvalidPdu, verify_pdu
from homeserver.services.room_events import (
    EventRejected,
    MissingPrevEvents,
    SoftFailed,
    reference_id,
)
from homeserver.storage.events import StateIds, StoredEvent
from rooms.auth import AuthError, check_auth
from rooms.events import add_content_hash, check_pdu_format, compute_event_id, sign_event
from rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

SUPPORTED_VERSIONS = list(KNOWN_ROOM_VERSIONS)


def domain_of(identifier: str) -> str:
    return identifier.split(":", 1)[1] if ":" in identifier else ""


def pdu_json(event: StoredEvent) -> JsonDict:
    """An event as it goes over federation: the stored signed JSON, nothing added."""
    data: JsonDict = json.loads(event.json_text)
    return data


def _q(value: str) -> str:
    return quote(value, safe="")


class FederationMembership:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.events = hs.room_events
        self.server_name = hs.config.server_name

    # Our users, rooms elsewhere

    async def needs_remote_join(self, room_id: str) -> bool:
        """True when this server cannot build the join itself: it does not know the room,
        or holds only an invite to it, or none of its users is in it any more."""
        try:
            await self.events.room_version(room_id)
        except MatrixError:
            return True
        create = ("m.room.create", "")
        if create not in await self.hs.stores.events.get_current_state_ids_for(room_id, [create]):
            return True
        joined = await self.events.joined_users(room_id)
        return self.server_name not in joined.servers() and bool(joined)

    async def join_remote(
        self, user_id: str, room_id: str, servers: list[str], content: JsonDict
    ) -> StoredEvent:
        """Join ``room_id`` through the first of ``servers`` that lets us."""
        errors = []
        for server in [s for s in dict.fromkeys(servers) if s and s != self.server_name]:
            try:
                return await self._join_via(server, user_id, room_id, content)
            except FederationError as e:
                if e.code == 403:
                    message = _remote_message(e, "The room refused the join")
                    raise MatrixError(403, e.errcode or Codes.FORBIDDEN, message) from None
                errors.append(str(e))
            except (InvalidPdu, EventRejected, ValueError) as e:
                errors.append(f"{server}: {e}")
        raise MatrixError(
            404, Codes.NOT_FOUND, "No server in the room could be reached: " + "; ".join(errors)
        )

    async def _join_via(
        self, server: str, user_id: str, room_id: str, content: JsonDict
    ) -> StoredEvent:
        client = self.hs.federation_client
        query = urlencode([("ver", v) for v in SUPPORTED_VERSIONS])
        template = await client.get_json(
            server, f"/_matrix/federation/v1/make_join/{_q(room_id)}/{_q(user_id)}?{query}"
        )
        version = get_room_version(str(template.get("room_version", "1")))
        event = template.get("event")
        if version is None or not isinstance(event, dict):
            raise ValueError("make_join answered with an unusable template")
        event = self._complete(event, version, user_id, room_id, "join", content)
        event_id = compute_event_id(event, version)
        answer = await client.put_json(
            server, f"/_matrix/federation/v2/send_join/{_q(room_id)}/{_q(event_id)}", event
        )
        if not isinstance(answer, dict):
            raise ValueError("send_join answered with something that is not an object")
        returned = answer.get("event")
        if isinstance(returned, dict) and compute_event_id(returned, version) == event_id:
            event = returned  # countersigned by the resident server (restricted joins)
        state_ids = await self._accept_room_state(server, room_id, version, answer)
        await self._ensure_room(room_id, version, state_ids)
        return await self.events.persist_received(
            event, version, state_before=state_ids, replace_current_state=True
        )

    def _complete(
        self,
        template: JsonDict,
        version: RoomVersion,
        user_id: str,
        room_id: str,
        membership: str,
        content: JsonDict,
    ) -> JsonDict:
        """Our membership event from another server's template: checked to be what we
        asked for, then timed, hashed and signed by us."""
        if (
            template.get("type") != "m.room.member"
            or template.get("state_key") != user_id
            or template.get("sender") != user_id
            or template.get("room_id") != room_id
        ):
            raise ValueError("the template is not the membership event we asked for")
        event = {
            k: v
            for k, v in template.items()
            if k not in ("signatures", "hashes", "unsigned", "event_id")
        }
        offered = template.get("content")
        base: JsonDict = offered if isinstance(offered, dict) else {}
        event["content"] = {**base, **content, "membership": membership}
        event["origin"] = self.server_name
        event["origin_server_ts"] = self.hs.clock.time_msec()
        if version.event_id_format == 1:
            event["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
        add_content_hash(event)
        sign_event(event, version, self.server_name, self.hs.signing_key)
        return event

    async def _accept_room_state(
        self, origin: str, room_id: str, version: RoomVersion, answer: JsonDict
    ) -> StateIds:
        """Check the state and auth chain a resident server sent, keep them as outliers
        (rejected where the rules refuse them), and return the state as IDs."""
        state, chain = answer.get("state"), answer.get("auth_chain")
        if not isinstance(state, list) or not isinstance(chain, list):
            raise ValueError("send_join answer lacks state or auth_chain")
        verified: dict[str, JsonDict] = {}
        for pdu in chain + state:
            if not isinstance(pdu, dict):
                continue
            if pdu.get("room_id", room_id) != room_id:
                continue
            try:
                event = await verify_pdu(self.hs.keyring, pdu, version)
            except InvalidPdu as e:
                logger.info("Dropping an event of %s's answer: %s", origin, e)
                continue
            verified[compute_event_id(event, version)] = event
        rejected = _check_auth_chain(verified, version)
        await self.hs.stores.federation.store_outliers(
            [
                (event_id, room_id, _canonical(event), event_id in rejected)
                for event_id, event in verified.items()
            ]
        )
        for event_id in verified:
            self.events.invalidate_event(event_id)
        state_ids: StateIds = {}
        for pdu in state:
            if not isinstance(pdu, dict):
                continue
            try:
                event_id = compute_event_id(pdu, version)
            except (ValueError, KeyError, TypeError):
                continue
            if event_id in verified and event_id not in rejected and "state_key" in pdu:
                state_ids[(str(pdu["type"]), str(pdu["state_key"]))] = event_id
        if ("m.room.create", "") not in state_ids and not version.room_id_from_create_event:
            raise ValueError("the room state has no create event")
        return state_ids

    async def _ensure_room(self, room_id: str, version: RoomVersion, state: StateIds) -> None:
        create_id = state.get(("m.room.create", "")) or "$" + room_id[1:]
        create = await self.events.get_event(create_id)
        creator = str(create.data.get("sender")) if create is not None else ""
        await self.hs.stores.events.store_room(
            room_id, version.identifier, creator, self.hs.clock.time_msec()
        )

    async def knock_remote(
        self, user_id: str, room_id: str, servers: list[str], content: JsonDict
    ) -> StoredEvent:
        """Knock on a room held elsewhere; the knock and the room state the resident server
        describes are kept so the user sees the room as knocked."""
        client = self.hs.federation_client
        errors = []
        query = urlencode([("ver", v) for v in SUPPORTED_VERSIONS])
        for server in [s for s in dict.fromkeys(servers) if s and s != self.server_name]:
            try:
                template = await client.get_json(
                    server,
                    f"/_matrix/federation/v1/make_knock/{_q(room_id)}/{_q(user_id)}?{query}",
                )
                version = get_room_version(str(template.get("room_version", "1")))
                if version is None or not isinstance(template.get("event"), dict):
                    raise ValueError("unusable make_knock template")
                event = self._complete(template["event"], version, user_id, room_id, "knock",
                                       content)  # fmt: skip
                event_id = compute_event_id(event, version)
                answer = await client.put_json(
                    server,
                    f"/_matrix/federation/v1/send_knock/{_q(room_id)}/{_q(event_id)}",
                    event,
                )
                stripped = answer.get("knock_room_state") if isinstance(answer, dict) else None
                if not isinstance(stripped, list):
                    stripped = []
                await self.hs.stores.federation.store_invite_state(
                    event_id, room_id, [e for e in stripped if isinstance(e, dict)][:50]
                )
                await self.hs.stores.events.store_room(
                    room_id, version.identifier, "", self.hs.clock.time_msec()
                )
                return await self.events.persist_received(
                    event, version, state_before={}, replace_current_state=True, trusted=True
                )
            except FederationError as e:
                if e.code == 403:
                    message = _remote_message(e, "The room refused the knock")
                    raise MatrixError(403, e.errcode or Codes.FORBIDDEN, message) from None
                errors.append(str(e))
            except (ValueError, InvalidPdu) as e:
                errors.append(f"{server}: {e}")
        raise MatrixError(
            404, Codes.NOT_FOUND, "No server in the room could be reached: " + "; ".join(errors)
        )

    async def leave_remote(self, user_id: str, room_id: str, servers: list[str]) -> StoredEvent:
        """Leave (or reject an invite to) a room this server cannot write to itself."""
        client = self.hs.federation_client
        errors = []
        for server in [s for s in dict.fromkeys(servers) if s and s != self.server_name]:
            try:
                template = await client.get_json(
                    server, f"/_matrix/federation/v1/make_leave/{_q(room_id)}/{_q(user_id)}"
                )
                version = get_room_version(str(template.get("room_version", "1")))
                if version is None or not isinstance(template.get("event"), dict):
                    raise ValueError("unusable make_leave template")
                event = self._complete(template["event"], version, user_id, room_id, "leave", {})
                event_id = compute_event_id(event, version)
                await client.put_json(
                    server,
                    f"/_matrix/federation/v2/send_leave/{_q(room_id)}/{_q(event_id)}",
                    event,
                )
                return await self.events.persist_received(
                    event, version, state_before={}, replace_current_state=True, trusted=True
                )
            except (FederationError, ValueError, InvalidPdu) as e:
                errors.append(f"{server}: {e}")
        raise MatrixError(
            502, Codes.UNKNOWN, "Could not leave through any server: " + "; ".join(errors)
        )

    # Other servers' users, our rooms

    async def make_membership(
        self, origin: str, room_id: str, user_id: str, membership: str, versions: list[str]
    ) -> JsonDict:
        if domain_of(user_id) != origin:
            raise forbidden("A server may only ask for its own users' memberships")
        version = await self.events.room_version(room_id)
        if membership in ("join", "knock") and version.identifier not in versions:
            raise MatrixError(
                400, Codes.INCOMPATIBLE_ROOM_VERSION,
                f"Your server does not support room version {version.identifier}",
                room_version=version.identifier,
            )  # fmt: skip
        await self._check_acl(origin, room_id)
        content: JsonDict = {"membership": membership}
        if membership == "join":
            await self.hs.rooms.authorise_restricted_join(room_id, version, user_id, content)
        template, _ = await self.events.build_template(
            room_id, user_id, "m.room.member", content, user_id
        )
        return {"event": template, "room_version": version.identifier}

    async def send_membership(
        self, origin: str, room_id: str, event_id: str, membership: str, body: Any
    ) -> tuple[StoredEvent, JsonDict]:
        version = await self.events.room_version(room_id)
        await self._check_acl(origin, room_id)
        try:
            # The shape first: nothing below may meet a list where an object belongs.
            check_pdu_format(body, version)
        except ValueError as e:
            raise bad_json(f"Invalid event: {e}") from None
        via = body["content"].get("join_authorised_via_users_server")
        if membership == "join" and isinstance(via, str) and domain_of(via) == self.server_name:
            # We are the authorising server of a restricted join: our signature is what
            # the joining server asks for (the rules below still decide).
            body = {k: v for k, v in body.items() if k != "unsigned"}
            try:
                sign_event(body, version, self.server_name, self.hs.signing_key)
            except (TypeError, ValueError, KeyError) as e:
                raise bad_json(f"Invalid event: {e}") from None
        try:
            event = await verify_pdu(self.hs.keyring, body, version)
        except InvalidPdu as e:
            raise bad_json(f"Invalid event: {e}") from None
        content = event.get("content") or {}
        user_id = event.get("state_key")
        if (
            event.get("type") != "m.room.member"
            or content.get("membership") != membership
            or user_id != event.get("sender")
            or not isinstance(user_id, str)
            or domain_of(user_id) != origin
            or event.get("room_id") != room_id
        ):
            raise bad_json(f"Not a {membership} of one of your users in this room")
        if compute_event_id(event, version) != event_id:
            raise bad_json("The event ID does not match the event")
        try:
            stored = await self.events.persist_received(event, version)
        except (EventRejected, SoftFailed) as e:
            raise forbidden(f"The rules refuse this {membership}: {e.reason}") from None
        except MissingPrevEvents:
            raise bad_json(f"The {membership} must build on events this server has") from None
        return stored, event

    async def join_answer(self, stored: StoredEvent, event: JsonDict) -> JsonDict:
        """The state before the join and its auth chain, as send_join v2 answers."""
        state = await self.events.state_events(stored.state_before)
        chain = await self.auth_chain([e.event_id for e in state.values()] + [stored.event_id])
        joined = await self.events.joined_users(stored.room_id)
        return {
            "origin": self.server_name,
            "state": [pdu_json(e) for e in state.values()],
            "auth_chain": [pdu_json(e) for e in chain],
            "event": event,
            "members_omitted": False,
            "servers_in_room": sorted(joined.servers()),
        }

    async def auth_chain(self, event_ids: list[str]) -> list[StoredEvent]:
        seen: dict[str, StoredEvent] = {}
        frontier = set(event_ids)
        first = True
        while frontier:
            loaded = await self.events.get_events(frontier)
            frontier = set()
            for event_id, event in loaded.items():
                if not first:
                    seen[event_id] = event
                for ref in event.data.get("auth_events") or []:
                    auth_id = reference_id(ref)
                    if auth_id not in seen:
                        frontier.add(auth_id)
            first = False
        return sorted(seen.values(), key=lambda e: int(e.data.get("depth", 0)))

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: Any) -> JsonDict:
        """A remote server invites one of our users: countersign, and remember the invite
        (with the room state it described) so the user sees it."""
        if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
            raise bad_json("Missing event")
        version = get_room_version(str(body.get("room_version", "1")))
        if version is None:
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION, "Unsupported room version",
                              room_version=body.get("room_version"))  # fmt: skip
        try:
            event = await verify_pdu(self.hs.keyring, body["event"], version)
        except InvalidPdu as e:
            raise bad_json(f"Invalid event: {e}") from None
        target = event.get("state_key")
        if (
            event.get("type") != "m.room.member"
            or (event.get("content") or {}).get("membership") != "invite"
            or not isinstance(target, str)
            or not self.hs.accounts.is_local(target)
            or domain_of(str(event.get("sender"))) != origin
            or event.get("room_id") != room_id
            or compute_event_id(event, version) != event_id
        ):
            raise bad_json("Not an invite of one of our users from one of yours")
        user = await self.hs.stores.users.get_user(target)
        if user is None or user.deactivated:
            raise not_found("No such user")
        sign_event(event, version, self.server_name, self.hs.signing_key)
        stripped = body.get("invite_room_state")
        if not isinstance(stripped, list):
            unsigned = body["event"].get("unsigned")
            stripped = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
            if not isinstance(stripped, list):
                stripped = []
        await self.hs.stores.federation.store_invite_state(
            event_id, room_id, [s for s in stripped if isinstance(s, dict)][:50]
        )
        if await self.needs_remote_join(room_id):
            await self.hs.stores.events.store_room(
                room_id, version.identifier, str(event.get("sender")), self.hs.clock.time_msec()
            )
            await self.events.persist_received(
                event, version, state_before={}, replace_current_state=True, trusted=True
            )
        else:
            try:
                await self.events.persist_received(event, version)
            except (EventRejected, SoftFailed, MissingPrevEvents) as e:
                logger.info("Could not persist an invite into a room we are in: %s", e)
        return {"event": event}

    async def invite_remote(self, event: JsonDict, version: RoomVersion) -> JsonDict:
        """Ask the invitee's server to countersign an invite we built."""
        target = str(event["state_key"])
        event_id = compute_event_id(event, version)
        stripped = await self.hs.sync.stripped_state(str(event["room_id"]), str(event["sender"]))
        answer = await self.hs.federation_client.put_json(
            domain_of(target),
            f"/_matrix/federation/v2/invite/{_q(str(event['room_id']))}/{_q(event_id)}",
            {"room_version": version.identifier, "event": event, "invite_room_state": stripped},
        )
        signed = answer.get("event") if isinstance(answer, dict) else None
        if not isinstance(signed, dict) or compute_event_id(signed, version) != event_id:
            raise MatrixError(502, Codes.UNKNOWN, "The invitee's server returned another event")
        try:
            await verify_pdu(self.hs.keyring, signed, version)
        except InvalidPdu as e:
            raise MatrixError(502, Codes.UNKNOWN, f"Bad countersigned invite: {e}") from None
        if not (signed.get("signatures") or {}).get(domain_of(target)):
            raise MatrixError(502, Codes.UNKNOWN, "The invitee's server did not sign the invite")
        return {k: v for k, v in signed.items() if k != "unsigned"}

    async def _check_acl(self, origin: str, room_id: str) -> None:
        """Server ACLs are applied to every request about a room (see acl.py)."""
        if not await self.hs.federation_acl.allows(origin, room_id):
            raise forbidden("Server is banned from this room")


def _remote_message(error: FederationError, default: str) -> str:
    if isinstance(error.body, dict) and isinstance(error.body.get("error"), str):
        return str(error.body["error"])
    return default


def _canonical(event: JsonDict) -> str:
    from crypto.canonical import canonical_json

    return canonical_json(event).decode("utf-8")


def _check_auth_chain(events: dict[str, JsonDict], version: RoomVersion) -> set[str]:
    """The IDs, among ``events``, that their own auth events do not allow (checked oldest
    first, so a rejected auth event rejects what cites it)."""
    rejected: set[str] = set()
    order = sorted(events, key=lambda e: (int(events[e].get("depth", 0)), e))
    for event_id in order:
        event = {**events[event_id], "event_id": event_id}
        auth_state: dict[tuple[str, str], JsonDict] = {}
        bad = False
        for ref in event.get("auth_events") or []:
            auth_id = reference_id(ref)
            if auth_id in rejected:
                bad = True
            auth = events.get(auth_id)
            if auth is None or auth_id in rejected:
                continue
            auth_state[(str(auth.get("type")), str(auth.get("state_key")))] = {
                **auth, "event_id": auth_id,
            }  # fmt: skip
        if version.room_id_from_create_event and event.get("type") != "m.room.create":
            room_id = str(event.get("room_id", ""))
            create = events.get("$" + room_id[1:])
            if create is not None:
                auth_state[("m.room.create", "")] = {**create, "event_id": "$" + room_id[1:]}
        try:
            if bad:
                raise AuthError("cites a rejected auth event")
            check_auth(event, auth_state, version)
        except AuthError as e:
            logger.info("Rejecting %s from a room's auth chain: %s", event_id, e)
            rejected.add(event_id)
    return rejected
