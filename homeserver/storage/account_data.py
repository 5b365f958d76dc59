"""SQL for global and per-room account data."""

from __future__ import annotations

import json
from typing import Any

from homeserver.storage.engine import Database, Txn


class AccountDataStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_max_stream_id(self) -> int:
        row = await self.db.run(
            "account_data_max_stream",
            lambda txn: txn.select_one("SELECT MAX(stream_id) FROM account_data"),
        )
        return int(row[0]) if row and row[0] is not None else 0

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        row = await self.db.run(
            "get_account_data",
            lambda txn: txn.select_one(
                "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? "
                "AND data_type = ?",
                (user_id, room_id, data_type),
            ),
        )
        return json.loads(row[0]) if row else None

    async def put(
        self, user_id: str, room_id: str, data_type: str, content: dict[str, Any], stream_id: int
    ) -> None:
        encoded = json.dumps(content, ensure_ascii=False)

        def txn_fn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, room_id, data_type) "
                "DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
                (user_id, room_id, data_type, encoded, stream_id),
            )

        await self.db.run("put_account_data", txn_fn)

    async def get_all_for_user(self, user_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        rows = await self.db.run(
            "get_all_account_data",
            lambda txn: txn.select(
                "SELECT room_id, data_type, content FROM account_data WHERE user_id = ? "
                "ORDER BY stream_id",
                (user_id,),
            ),
        )
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    async def users_with(self, data_type: str) -> list[tuple[str, dict[str, Any]]]:
        """(user, content) of every user with this global account data."""
        rows = await self.db.run(
            "users_with_account_data",
            lambda txn: txn.select(
                "SELECT user_id, content FROM account_data WHERE room_id = '' AND data_type = ?",
                (data_type,),
            ),
        )
        return [(r[0], json.loads(r[1])) for r in rows]

    async def delete_all_for_user(self, user_id: str) -> None:
        await self.db.run(
            "delete_all_account_data",
            lambda txn: txn.execute("DELETE FROM account_data WHERE user_id = ?", (user_id,)),
        )
