"""Profiles: display name, avatar and the extended profile fields."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache

from homeserver.errors import Codes, MatrixError, forbidden, invalid_param, not_found
from homeserver.federation.client import FederationError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

_KEY_RE = re.compile(r"^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$")
MAX_KEY_BYTES = 255
MAX_PROFILE_BYTES = 64 * 1024
MAX_DISPLAYNAME_LENGTH = 256
ROOM_MEMBER_FIELDS = ("displayname", "avatar_url")
logger = logging.getLogger(__name__)


class ProfileService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.profiles
        self.users = hs.stores.users
        # Other servers' users' profiles, for a minute (directory look-ups, invites).
        self._remote_cache: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=5_000, ttl=60)

    def check_key(self, key: str) -> None:
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise MatrixError(400, Codes.KEY_TOO_LARGE, "Profile key is longer than 255 bytes")
        if not _KEY_RE.match(key):
            raise invalid_param("Invalid profile key")

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        if not self.hs.accounts.is_local(user_id):
            return await self._remote_profile(user_id)
        user = await self.users.get_user(user_id)
        if user is None:
            raise not_found("Profile not found")
        return await self.store.get_profile(user_id)

    async def _remote_profile(self, user_id: str) -> dict[str, Any]:
        """Asked of the user's own server (query/profile), kept briefly."""
        cached = self._remote_cache.get(user_id)
        if cached is not None:
            return cached
        server = user_id.split(":", 1)[1] if ":" in user_id else ""
        try:
            answer = await self.hs.federation_client.get_json(
                server, "/_matrix/federation/v1/query/profile", query={"user_id": user_id},
                timeout_ms=10_000,
            )  # fmt: skip
        except FederationError as e:
            if e.code == 404:
                raise not_found("Profile not found") from None
            raise MatrixError(502, Codes.UNKNOWN, f"{server} did not answer: {e}") from None
        profile = {k: v for k, v in answer.items()} if isinstance(answer, dict) else {}
        self._remote_cache[user_id] = profile
        return profile

    async def get_field(self, user_id: str, key: str) -> Any:
        self.check_key(key)
        profile = await self.get_profile(user_id)
        if key not in profile:
            raise not_found(f"User has no {key}")
        return profile[key]

    @staticmethod
    def _check_value(key: str, value: Any) -> None:
        if key == "displayname":
            if not isinstance(value, str):
                raise MatrixError(400, Codes.BAD_JSON, "displayname must be a string")
            if len(value) > MAX_DISPLAYNAME_LENGTH:
                raise invalid_param(f"displayname is longer than {MAX_DISPLAYNAME_LENGTH}")
        elif key == "avatar_url":
            if not isinstance(value, str) or (value and not value.startswith("mxc://")):
                raise MatrixError(400, Codes.BAD_JSON, "avatar_url must be an mxc:// URI")
        elif key == "m.tz" and not isinstance(value, str):
            raise MatrixError(400, Codes.BAD_JSON, "m.tz must be a string")

    async def set_field(self, requester_id: str, user_id: str, key: str, value: Any) -> None:
        if requester_id != user_id:
            raise forbidden("You can only change your own profile")
        self.check_key(key)
        self._check_value(key, value)
        profile = await self.store.get_profile(user_id)
        profile[key] = value
        if len(json.dumps(profile, ensure_ascii=False).encode("utf-8")) > MAX_PROFILE_BYTES:
            raise MatrixError(400, Codes.PROFILE_TOO_LARGE, "Profile would exceed 64 KiB")
        await self.store.set_field(user_id, key, value)
        if key in ROOM_MEMBER_FIELDS:
            await self._update_member_events(user_id)

    async def delete_field(self, requester_id: str, user_id: str, key: str) -> None:
        if requester_id != user_id:
            raise forbidden("You can only change your own profile")
        self.check_key(key)
        await self.store.delete_field(user_id, key)
        if key in ROOM_MEMBER_FIELDS:
            await self._update_member_events(user_id)

    async def _update_member_events(self, user_id: str) -> None:
        """Rooms show display names and avatars from member events: send fresh ones."""
        profile = await self.store.get_profile(user_id)
        for room_id in await self.hs.stores.events.get_rooms_for_user(user_id, ["join"]):
            content: dict[str, Any] = {"membership": "join"}
            content.update({k: profile[k] for k in ROOM_MEMBER_FIELDS if k in profile})
            try:
                await self.hs.room_events.send(
                    room_id, user_id, "m.room.member", content, state_key=user_id
                )
            except MatrixError as e:
                logger.warning("Could not update %s's member event in %s: %s", user_id, room_id, e)
