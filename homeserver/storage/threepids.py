"""SQL for e-mail addresses on accounts and their validation sessions."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.engine import Database, Txn


@dataclass(frozen=True)
class Validation:
    sid: str
    client_secret: str
    medium: str
    address: str
    purpose: str
    token_hash: str
    send_attempt: int
    validated_ts: int | None
    expires_ts: int


class ThreepidStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find_session(
        self, client_secret: str, address: str, purpose: str
    ) -> Validation | None:
        row = await self.db.run(
            "find_threepid_session",
            lambda txn: txn.select_one(
                f"SELECT {_COLUMNS} FROM threepid_validations "
                "WHERE client_secret = ? AND address = ? AND purpose = ?",
                (client_secret, address, purpose),
            ),
        )
        return Validation(*row) if row else None

    async def get_session(self, sid: str) -> Validation | None:
        row = await self.db.run(
            "get_threepid_session",
            lambda txn: txn.select_one(
                f"SELECT {_COLUMNS} FROM threepid_validations WHERE sid = ?", (sid,)
            ),
        )
        return Validation(*row) if row else None

    async def save_session(self, v: Validation) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM threepid_validations WHERE sid = ?", (v.sid,))
            txn.execute(
                f"INSERT INTO threepid_validations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (v.sid, v.client_secret, v.medium, v.address, v.purpose, v.token_hash,
                 v.send_attempt, v.validated_ts, v.expires_ts),
            )  # fmt: skip

        await self.db.run("save_threepid_session", txn_fn)

    async def mark_validated(self, sid: str, now_ms: int) -> None:
        await self.db.run(
            "validate_threepid_session",
            lambda txn: txn.execute(
                "UPDATE threepid_validations SET validated_ts = ? WHERE sid = ?", (now_ms, sid)
            ),
        )

    async def delete_session(self, sid: str) -> None:
        await self.db.run(
            "delete_threepid_session",
            lambda txn: txn.execute("DELETE FROM threepid_validations WHERE sid = ?", (sid,)),
        )

    async def owner(self, medium: str, address: str) -> str | None:
        row = await self.db.run(
            "threepid_owner",
            lambda txn: txn.select_one(
                "SELECT user_id FROM user_threepids WHERE medium = ? AND address = ?",
                (medium, address),
            ),
        )
        return str(row[0]) if row else None

    async def add(
        self, user_id: str, medium: str, address: str, validated_ts: int, now_ms: int
    ) -> bool:
        """False if the address belongs to someone already."""

        def txn_fn(txn: Txn) -> bool:
            row = txn.select_one(
                "SELECT user_id FROM user_threepids WHERE medium = ? AND address = ?",
                (medium, address),
            )
            if row is not None:
                return str(row[0]) == user_id
            txn.execute(
                "INSERT INTO user_threepids (medium, address, user_id, validated_ts, added_ts) "
                "VALUES (?, ?, ?, ?, ?)",
                (medium, address, user_id, validated_ts, now_ms),
            )
            return True

        return await self.db.run("add_threepid", txn_fn)

    async def list_for_user(self, user_id: str) -> list[tuple[str, str, int, int]]:
        rows = await self.db.run(
            "list_threepids",
            lambda txn: txn.select(
                "SELECT medium, address, validated_ts, added_ts FROM user_threepids "
                "WHERE user_id = ? ORDER BY added_ts",
                (user_id,),
            ),
        )
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    async def remove(self, user_id: str, medium: str, address: str) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "DELETE FROM user_threepids WHERE user_id = ? AND medium = ? AND address = ?",
                (user_id, medium, address),
            )
            return txn.rowcount > 0

        return await self.db.run("remove_threepid", txn_fn)

    async def remove_all(self, user_id: str) -> None:
        await self.db.run(
            "remove_all_threepids",
            lambda txn: txn.execute("DELETE FROM user_threepids WHERE user_id = ?", (user_id,)),
        )


_COLUMNS = (
    "sid, client_secret, medium, address, purpose, token_hash, send_attempt, validated_ts, "
    "expires_ts"
)
