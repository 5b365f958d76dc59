"""Server signing keys: ours as published, and other servers' as fetched and cached.

Other servers' keys come from the server itself (``/_matrix/key/v2/server``) or, when it
cannot be reached, from the configured notaries (``trusted_key_servers``). Each answer must
be signed by the keys it lists (and by the notary, for a notary's). Keys are kept with
their validity; expired ones stay to verify old events.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from signedjson.key import encode_verify_key_base64, get_verify_key
from twisted.internet import defer

from crypto.canonical import sign, verify
from homeserver.caches import MeasuredLRU
from homeserver.federation.client import FederationError
from homeserver.storage.federation import StoredKey

if TYPE_CHECKING:
    from homeserver.federation.client import FederationClient
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

# A server that did not give us a key is asked again at most this often.
REFETCH_INTERVAL_MS = 60_000


class KeyNotFound(Exception):
    """No key with that ID, valid at the time asked, could be found for that server."""


def parse_key_response(response: Any, server_name: str | None = None) -> dict[str, StoredKey]:
    """The keys of a ``/_matrix/key/v2/server`` answer after checking that each current key
    signed it. Raises ValueError for anything malformed or unsigned."""
    if not isinstance(response, dict):
        raise ValueError("key response is not an object")
    name = response.get("server_name")
    if not isinstance(name, str) or (server_name is not None and name != server_name):
        raise ValueError("key response names another server")
    valid_until = response.get("valid_until_ts")
    if not isinstance(valid_until, int) or isinstance(valid_until, bool):
        raise ValueError("key response lacks valid_until_ts")
    verify_keys = response.get("verify_keys")
    if not isinstance(verify_keys, dict) or not verify_keys:
        raise ValueError("key response lacks verify_keys")
    keys: dict[str, StoredKey] = {}
    for key_id, value in verify_keys.items():
        key = value.get("key") if isinstance(value, dict) else None
        if not isinstance(key, str) or not key_id.startswith("ed25519:"):
            continue
        if not verify(response, name, key_id, key):
            raise ValueError(f"key response is not signed by {key_id}")
        keys[key_id] = StoredKey(key, valid_until, None)
    if not keys:
        raise ValueError("key response has no ed25519 key")
    old = response.get("old_verify_keys")
    if isinstance(old, dict):
        for key_id, value in old.items():
            if not isinstance(value, dict):
                continue
            key, expired = value.get("key"), value.get("expired_ts")
            if isinstance(key, str) and isinstance(expired, int) and key_id not in keys:
                keys[key_id] = StoredKey(key, expired, expired)
    return keys


def key_valid_at(key: StoredKey, at_ms: int | None) -> bool:
    """May this key have signed something at ``at_ms`` (None: at any time, e.g. the
    signature on an old event whose time we do not judge)?"""
    if at_ms is None:
        return True
    limit = key.expired_ts if key.expired_ts is not None else key.valid_until_ts
    return limit >= at_ms


class Keyring:
    def __init__(self, hs: HomeServer, client: FederationClient) -> None:
        self.hs = hs
        self.client = client
        self.store = hs.stores.federation
        self.clock = hs.clock
        self.server_name = hs.config.server_name
        self.config = hs.config.federation
        self._cache: LRUCache[str, dict[str, StoredKey]] = MeasuredLRU("server_keys")
        self._fetching: dict[str, defer.Deferred[None]] = {}
        self._last_fetch: LRUCache[str, int] = MeasuredLRU("server_key_fetches")
        self._published: tuple[int, JsonDict] | None = None
        key = hs.signing_key
        self.own_key_id = f"{key.alg}:{key.version}"
        self.own_verify_key = encode_verify_key_base64(get_verify_key(key))

    # Ours

    def published_keys(self) -> JsonDict:
        """Our signed ``/_matrix/key/v2/server`` answer, re-signed when half its validity
        has passed (so that a cached copy is always usable for a while)."""
        now = self.clock.time_msec()
        validity = self.config.key_validity_ms
        if self._published is not None and self._published[0] > now + validity // 2:
            return self._published[1]
        valid_until = now + validity
        response: JsonDict = {
            "server_name": self.server_name,
            "valid_until_ts": valid_until,
            "verify_keys": {self.own_key_id: {"key": self.own_verify_key}},
            "old_verify_keys": {
                key_id: {"key": old.key, "expired_ts": old.expired_ts}
                for key_id, old in self.config.old_verify_keys.items()
            },
        }
        signed = sign(response, self.server_name, self.hs.signing_key)
        self._published = (valid_until, signed)
        return signed

    # Theirs

    async def verify_key(self, server_name: str, key_id: str, at_ms: int | None) -> str:
        """The base64 verify key ``server_name`` signs with as ``key_id``, valid at ``at_ms``."""
        if server_name == self.server_name:
            if key_id == self.own_key_id:
                return self.own_verify_key
            old = self.config.old_verify_keys.get(key_id)
            if old is not None and (at_ms is None or old.expired_ts >= at_ms):
                return old.key
            raise KeyNotFound(f"{server_name} has no key {key_id}")
        found = await self._known(server_name, key_id, at_ms)
        if found is not None:
            return found
        await self._fetch_once(server_name)
        found = await self._known(server_name, key_id, at_ms)
        if found is None:
            raise KeyNotFound(f"no valid key {key_id} for {server_name}")
        return found

    async def _known(self, server_name: str, key_id: str, at_ms: int | None) -> str | None:
        keys = self._cache.get(server_name)
        if keys is None:
            keys = await self.store.get_server_keys(server_name)
            self._cache[server_name] = keys
        key = keys.get(key_id)
        return key.verify_key if key is not None and key_valid_at(key, at_ms) else None

    async def _fetch_once(self, server_name: str) -> None:
        """One fetch per server at a time, and not more often than REFETCH_INTERVAL_MS."""
        running = self._fetching.get(server_name)
        if running is not None:
            await running
            return
        now = self.clock.time_msec()
        last = self._last_fetch.get(server_name)
        if last is not None and now - last < REFETCH_INTERVAL_MS:
            return
        self._last_fetch[server_name] = now
        done: defer.Deferred[None] = defer.Deferred()
        self._fetching[server_name] = done
        try:
            await self._fetch(server_name)
        finally:
            del self._fetching[server_name]
            done.callback(None)

    async def _fetch(self, server_name: str) -> None:
        try:
            response = await self.client.get_json(
                server_name, "/_matrix/key/v2/server", signed=False, timeout_ms=15_000
            )
            await self._remember(server_name, parse_key_response(response, server_name), response)
            return
        except (FederationError, ValueError) as e:
            logger.info("Fetching %s's keys directly failed: %s", server_name, e)
        for notary in self.config.trusted_key_servers:
            try:
                await self._fetch_from_notary(notary.server_name, notary.verify_keys, server_name)
                return
            except (FederationError, ValueError, KeyNotFound) as e:
                logger.info("Notary %s had no keys for %s: %s", notary.server_name, server_name, e)

    async def _fetch_from_notary(
        self, notary: str, notary_keys: dict[str, str], server_name: str
    ) -> None:
        answer = await self.client.post_json(
            notary,
            "/_matrix/key/v2/query",
            {"server_keys": {server_name: {}}},
            signed=False,
            timeout_ms=15_000,
        )
        responses = answer.get("server_keys") if isinstance(answer, dict) else None
        if not isinstance(responses, list):
            raise ValueError("notary answer lacks server_keys")
        for response in responses:
            if not isinstance(response, dict) or response.get("server_name") != server_name:
                continue
            keys = parse_key_response(response, server_name)
            if not await self._signed_by_notary(response, notary, notary_keys):
                raise ValueError(f"answer is not signed by the notary {notary}")
            await self._remember(server_name, keys, None)
            return
        raise KeyNotFound(f"{notary} returned no keys for {server_name}")

    async def _signed_by_notary(
        self, response: JsonDict, notary: str, notary_keys: dict[str, str]
    ) -> bool:
        signatures = (response.get("signatures") or {}).get(notary) or {}
        for key_id in signatures:
            key = notary_keys.get(key_id)
            if key is None and not notary_keys:
                try:
                    key = await self.verify_key(notary, key_id, self.clock.time_msec())
                except KeyNotFound:
                    continue
            if key is not None and verify(response, notary, key_id, key):
                return True
        return False

    async def _remember(
        self, server_name: str, keys: dict[str, StoredKey], response: JsonDict | None
    ) -> None:
        await self.store.store_server_keys(server_name, keys, response, self.clock.time_msec())
        self._cache.pop(server_name, None)

    # Notary

    async def notary_response(
        self, server_name: str, minimum_valid_until_ts: int
    ) -> list[JsonDict]:
        """What we know of ``server_name``'s keys, signed by us too (fetched if stale)."""
        if server_name == self.server_name:
            return [self.published_keys()]
        response = await self.store.get_key_response(server_name)
        if response is None or int(response.get("valid_until_ts", 0)) < minimum_valid_until_ts:
            await self._fetch_once(server_name)
            response = await self.store.get_key_response(server_name)
        if response is None:
            return []
        return [sign(response, self.server_name, self.hs.signing_key)]
