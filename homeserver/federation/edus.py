"""EDUs from other servers: typing and read receipts of their users, applied as if their
users had sent them here, after checking the origin speaks only for its own users."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

REMOTE_TYPING_TIMEOUT_MS = 30_000


def _from(origin: str, user_id: Any) -> bool:
    return isinstance(user_id, str) and user_id.endswith(":" + origin) and user_id.startswith("@")


class FederationEdus:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def on_edu(self, origin: str, edu: Any) -> None:
        if not isinstance(edu, dict) or not isinstance(edu.get("content"), dict):
            return
        edu_type, content = edu.get("edu_type"), edu["content"]
        try:
            if edu_type == "m.typing":
                await self._typing(origin, content)
            elif edu_type == "m.receipt":
                await self._receipts(origin, content)
            elif edu_type in ("m.device_list_update", "m.signing_key_update"):
                await self.hs.federation_e2ee.on_device_list_update(origin, content)
            elif edu_type == "m.direct_to_device":
                await self.hs.federation_e2ee.on_direct_to_device(origin, content)
            elif edu_type == "m.presence":
                updates = content.get("push")
                for update in updates[:100] if isinstance(updates, list) else []:
                    await self.hs.presence.apply_remote(origin, update)
        except MatrixError as e:
            logger.info("Ignoring %s from %s: %s", edu_type, origin, e)
        except Exception:  # an EDU never fails the transaction it came in
            logger.exception("Ignoring a malformed %s from %s", edu_type, origin)

    async def _typing(self, origin: str, content: dict[str, Any]) -> None:
        room_id, user_id = content.get("room_id"), content.get("user_id")
        if not isinstance(room_id, str) or not isinstance(user_id, str):
            return
        if not _from(origin, user_id) or not await self.hs.federation_acl.allows(origin, room_id):
            return
        await self.hs.typing.set_typing(
            user_id, room_id, content.get("typing") is True, REMOTE_TYPING_TIMEOUT_MS
        )

    async def _receipts(self, origin: str, content: dict[str, Any]) -> None:
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict):
                continue
            if not await self.hs.federation_acl.allows(origin, room_id):
                continue
            read = by_type.get("m.read")
            if not isinstance(read, dict):
                continue
            for user_id, receipt in read.items():
                if not _from(origin, user_id) or not isinstance(receipt, dict):
                    continue
                event_ids = receipt.get("event_ids")
                data = receipt.get("data") if isinstance(receipt.get("data"), dict) else {}
                thread = data.get("thread_id") if isinstance(data, dict) else None
                if not isinstance(event_ids, list):
                    continue
                for event_id in event_ids[:1]:
                    if isinstance(event_id, str):
                        await self.hs.receipts.put_receipt(
                            user_id, room_id, "m.read", event_id,
                            thread if isinstance(thread, str) else None,
                        )  # fmt: skip
