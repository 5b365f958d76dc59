"""End-to-end encryption across servers: device-list and cross-signing changes announced
to the servers that share a room with the user, keys of remote users asked of their
servers (in parallel, bounded by the client's timeout), to-device messages carried as
EDUs. The server only relays public keys and ciphertext, as it does locally.

Remote users' keys are not cached: every query goes to their server, and an update from
it only marks the user as changed so that clients query again (the gap-free ``prev_id``
chain a cache would need is left for later).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from homeserver.federation.client import FederationError
from rooms.auth import domain_of

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 30_000


def _from(origin: str, user_id: Any) -> bool:
    return isinstance(user_id, str) and user_id.startswith("@") and domain_of(user_id) == origin


class FederationE2ee:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.server_name = hs.config.server_name

    # Ours, announced

    async def _servers_sharing_rooms(self, user_id: str) -> set[str]:
        servers: set[str] = set()
        for room_id in await self.hs.stores.events.get_rooms_for_user(user_id, ["join"]):
            servers |= await self.hs.federation_sender.servers_in_room(room_id)
        return servers

    async def device_changed(
        self, user_id: str, device_id: str, stream_id: int, deleted: bool
    ) -> None:
        servers = await self._servers_sharing_rooms(user_id)
        if not servers:
            return
        content: JsonDict = {
            "user_id": user_id,
            "device_id": device_id,
            "stream_id": stream_id,
            "prev_id": [],  # no chain: receivers resync with /user/devices
            "deleted": deleted,
        }
        if not deleted:
            keys = await self.hs.e2ee.store.get_device_keys(user_id, device_id)
            if keys is not None:
                content["keys"] = keys
            device = await self.hs.stores.devices.get_device(user_id, device_id)
            if device is not None and device.display_name:
                content["device_display_name"] = device.display_name
        await self.hs.federation_sender.send_edu(servers, "m.device_list_update", content)

    async def cross_signing_changed(self, user_id: str) -> None:
        servers = await self._servers_sharing_rooms(user_id)
        if not servers:
            return
        keys = (await self.hs.e2ee.store.get_cross_signing_keys([user_id])).get(user_id, {})
        content: JsonDict = {"user_id": user_id}
        if "master" in keys:
            content["master_key"] = keys["master"]
        if "self_signing" in keys:
            content["self_signing_key"] = keys["self_signing"]
        await self.hs.federation_sender.send_edu(servers, "m.signing_key_update", content)

    async def send_to_device(
        self, sender: str, event_type: str, message_id: str, messages: dict[str, JsonDict]
    ) -> None:
        """Remote recipients' messages, one EDU per server (delivered once: the receiver
        remembers ``message_id``)."""
        by_server: dict[str, dict[str, JsonDict]] = {}
        for user_id, by_device in messages.items():
            by_server.setdefault(domain_of(user_id), {})[user_id] = by_device
        for server, server_messages in by_server.items():
            unique = hashlib.sha256(f"{message_id}|{server}".encode()).hexdigest()[:32]
            content = {
                "sender": sender, "type": event_type, "message_id": unique,
                "messages": server_messages,
            }  # fmt: skip
            await self.hs.federation_sender.send_edu({server}, "m.direct_to_device", content)

    # Theirs, received

    async def on_device_list_update(self, origin: str, content: JsonDict) -> None:
        user_id = content.get("user_id")
        if not _from(origin, user_id) or domain_of(str(user_id)) == self.server_name:
            return
        await self.hs.e2ee.remote_user_changed(str(user_id))

    async def on_direct_to_device(self, origin: str, content: JsonDict) -> None:
        sender, event_type = content.get("sender"), content.get("type")
        message_id, messages = content.get("message_id"), content.get("messages")
        if not _from(origin, sender) or not isinstance(event_type, str):
            return
        if not isinstance(message_id, str) or not isinstance(messages, dict):
            return
        local = {
            user_id: by_device
            for user_id, by_device in messages.items()
            if isinstance(by_device, dict) and self.hs.accounts.is_local(user_id)
        }
        await self.hs.e2ee.deliver_to_device(
            str(sender), f"federation:{origin}", message_id, event_type, local
        )

    # Theirs, asked for

    async def query_remote_keys(
        self, wanted: dict[str, list[str]], timeout_ms: int
    ) -> tuple[JsonDict, JsonDict]:
        """(merged answers, failures by server) of ``user/keys/query`` to every server
        named in ``wanted``, all at once."""
        by_server: dict[str, dict[str, list[str]]] = {}
        for user_id, devices in wanted.items():
            by_server.setdefault(domain_of(user_id), {})[user_id] = devices
        merged: JsonDict = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        failures: JsonDict = {}

        async def ask(server: str, users: dict[str, list[str]]) -> None:
            try:
                answer = await self.hs.federation_client.post_json(
                    server, "/_matrix/federation/v1/user/keys/query", {"device_keys": users},
                    timeout_ms=timeout_ms,
                )  # fmt: skip
            except FederationError as e:
                failures[server] = {"status": e.code or 503, "message": str(e)[:200]}
                return
            if not isinstance(answer, dict):
                failures[server] = {"status": 502, "message": "answer is not an object"}
                return
            for field in merged:
                values = answer.get(field)
                if not isinstance(values, dict):
                    continue
                for user_id, value in values.items():
                    # A server speaks only for its own users, and only those asked about.
                    if user_id in users and isinstance(value, dict):
                        merged[field][user_id] = value

        await defer.gatherResults(
            [defer.ensureDeferred(ask(s, u)) for s, u in by_server.items() if s],
            consumeErrors=True,
        )
        return merged, failures

    async def claim_remote_keys(
        self, wanted: dict[str, dict[str, str]], timeout_ms: int
    ) -> tuple[JsonDict, JsonDict]:
        by_server: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, devices in wanted.items():
            by_server.setdefault(domain_of(user_id), {})[user_id] = devices
        claimed: JsonDict = {}
        failures: JsonDict = {}

        async def ask(server: str, users: dict[str, dict[str, str]]) -> None:
            try:
                answer = await self.hs.federation_client.post_json(
                    server, "/_matrix/federation/v1/user/keys/claim", {"one_time_keys": users},
                    timeout_ms=timeout_ms,
                )  # fmt: skip
            except FederationError as e:
                failures[server] = {"status": e.code or 503, "message": str(e)[:200]}
                return
            keys = answer.get("one_time_keys") if isinstance(answer, dict) else None
            for user_id, by_device in (keys or {}).items() if isinstance(keys, dict) else ():
                if user_id in users and isinstance(by_device, dict):
                    claimed[user_id] = by_device

        await defer.gatherResults(
            [defer.ensureDeferred(ask(s, u)) for s, u in by_server.items() if s],
            consumeErrors=True,
        )
        return claimed, failures

    async def remote_master_key(self, user_id: str) -> JsonDict | None:
        merged, _ = await self.query_remote_keys({user_id: []}, DEFAULT_TIMEOUT_MS)
        key = merged["master_keys"].get(user_id)
        return key if isinstance(key, dict) else None

    # Ours, asked for by other servers

    async def user_devices(self, origin: str, user_id: str) -> JsonDict:
        if not self.hs.accounts.is_local(user_id):
            raise ValueError("not a user of this server")
        devices = []
        keys = {
            device_id: (device_keys, name)
            for _, device_id, device_keys, name in await self.hs.e2ee.store.query_device_keys(
                [user_id]
            )
        }
        for device in await self.hs.stores.devices.get_devices(user_id):
            entry: JsonDict = {"device_id": device.device_id}
            if device.device_id in keys:
                entry["keys"] = keys[device.device_id][0]
            if device.display_name:
                entry["device_display_name"] = device.display_name
            devices.append(entry)
        answer: JsonDict = {
            "user_id": user_id,
            "stream_id": self.hs.e2ee.device_lists.current,
            "devices": devices,
        }
        cross = (await self.hs.e2ee.store.get_cross_signing_keys([user_id])).get(user_id, {})
        if "master" in cross:
            answer["master_key"] = cross["master"]
        if "self_signing" in cross:
            answer["self_signing_key"] = cross["self_signing"]
        return answer
