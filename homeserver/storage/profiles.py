"""SQL for profile fields, each stored as JSON text."""

from __future__ import annotations

import json
from typing import Any

from homeserver.storage.engine import Database, Txn


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        rows = await self.db.run(
            "get_profile",
            lambda txn: txn.select(
                "SELECT field, value FROM profiles WHERE user_id = ?", (user_id,)
            ),
        )
        return {field: json.loads(value) for field, value in rows}

    async def set_field(self, user_id: str, field: str, value: Any) -> None:
        encoded = json.dumps(value, ensure_ascii=False)

        def txn_fn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO profiles (user_id, field, value) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
                (user_id, field, encoded),
            )

        await self.db.run("set_profile_field", txn_fn)

    async def delete_field(self, user_id: str, field: str) -> None:
        await self.db.run(
            "delete_profile_field",
            lambda txn: txn.execute(
                "DELETE FROM profiles WHERE user_id = ? AND field = ?", (user_id, field)
            ),
        )

    async def delete_profile(self, user_id: str) -> None:
        await self.db.run(
            "delete_profile",
            lambda txn: txn.execute("DELETE FROM profiles WHERE user_id = ?", (user_id,)),
        )

    async def avatar_media_ids(self, server_name: str) -> set[str]:
        """Media IDs of our own server's media that are somebody's avatar."""
        rows = await self.db.run(
            "avatar_media_ids",
            lambda txn: txn.select("SELECT value FROM profiles WHERE field = 'avatar_url'"),
        )
        prefix = f"mxc://{server_name}/"
        found = set()
        for (value,) in rows:
            uri = json.loads(value)
            if isinstance(uri, str) and uri.startswith(prefix):
                found.add(uri[len(prefix) :])
        return found
